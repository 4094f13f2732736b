use super::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use stemvault_vault::{FileEntry, FileStatus};

/// Records by task id; `fail` makes every load fail with that error. Signs `key` as
/// `signed:<key>?expires=<secs>` (or fails when `fail_signing`) and remembers what it
/// signed.
#[derive(Default)]
pub(crate) struct MemoryPorts {
    pub records: HashMap<String, TaskRecord>,
    pub fail: Option<StoreError>,
    pub signed: Mutex<Vec<String>>,
    pub fail_signing: bool,
    /// Task items written by registrations.
    pub put: Mutex<Vec<TaskRecord>>,
    /// Tasks with a parked callback.
    pub parked: Vec<String>,
    /// Looking for parked callbacks fails.
    pub parked_unreadable: bool,
    /// Recorded (by a replay) while the parked callbacks are listed, its body gone.
    pub replayed_while_listing: Option<TaskRecord>,
    /// How many completions find the task changed by another writer (a callback or a
    /// download): each such write moves the version on and refuses the completion.
    pub written_meanwhile: Mutex<u32>,
    /// Every load waits for ever (a table that does not answer).
    pub hangs: bool,
    /// Every load panics (a bug in the handling).
    pub panics: bool,
    /// The clock's time, when not the default whole second.
    pub at: Option<Timestamp>,
}

impl MemoryPorts {
    pub(crate) fn with(ids: &[&str]) -> MemoryPorts {
        MemoryPorts { records: ids.iter().map(|id| (id.to_string(), record(id))).collect(), ..Default::default() }
    }
}

impl Clock for MemoryPorts {
    fn now(&self) -> Timestamp {
        self.at.unwrap_or(Timestamp::from_unix_ms(1_800_000_000_000))
    }

    async fn sleep(&self, _: Duration) {}
}

impl LoadTask for MemoryPorts {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        assert!(!self.panics, "load switched to panic");
        match &self.fail {
            Some(e) => Err(e.clone()),
            // The latest write, else the record as it was.
            None => Ok(self
                .put
                .lock()
                .unwrap()
                .iter()
                .rfind(|r| r.task_id == task_id.as_str())
                .cloned()
                .or_else(|| self.records.get(task_id.as_str()).cloned())),
        }
    }
}

impl SaveTask for MemoryPorts {
    async fn save_task(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        let id = TaskId::parse(&after.task_id).unwrap();
        let mut current = match (self.load_task(&id).await?, before) {
            (None, None) => {
                self.put.lock().unwrap().push(after.clone());
                return Ok(());
            }
            (Some(current), Some(before)) if current.version == before.version => current,
            _ => return Err(StoreError::Conflict),
        };
        let mut meanwhile = self.written_meanwhile.lock().unwrap();
        if *meanwhile > 0 {
            *meanwhile -= 1;
            current.version += 1;
            current.deliveries += 1;
            self.put.lock().unwrap().push(current);
            return Err(StoreError::Conflict);
        }
        drop(meanwhile);
        self.put.lock().unwrap().push(after.clone());
        Ok(())
    }
}

impl IsParked for MemoryPorts {
    async fn is_parked(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        if self.parked_unreadable {
            return Err(StoreError::Unavailable("AccessDenied".into()));
        }
        if let Some(replayed) = &self.replayed_while_listing {
            self.put.lock().unwrap().push(replayed.clone());
        }
        Ok(self.parked.iter().any(|t| t == task_id.as_str()))
    }
}

impl PresignDownload for MemoryPorts {
    async fn presign_download(&self, key: &str, expires_in: Duration) -> Result<String, StorageError> {
        if self.fail_signing {
            return Err(StorageError::transient(crate::error::PRESIGN, "no credentials"));
        }
        self.signed.lock().unwrap().push(key.to_owned());
        Ok(format!("signed:{key}?expires={}", expires_in.as_secs()))
    }
}

pub(crate) fn file(key: &str, status: FileStatus) -> FileEntry {
    FileEntry {
        status,
        attempts: 1,
        ..FileEntry::pending(&format!("https://cdn.example/{key}?sig=secret"), key.into(), Stage::Complete)
    }
}

/// A task with one stored, one failed and one still downloading file.
pub(crate) fn record(task_id: &str) -> TaskRecord {
    let mut stored = file(&format!("tasks/{task_id}/tracks/a/audio.mp3"), FileStatus::Stored);
    stored.bytes = Some(1234);
    stored.sha256 = Some("ab".repeat(32));
    stored.content_type = Some("audio/mpeg".into());
    let mut failed = file(&format!("tasks/{task_id}/tracks/a/image.jpeg"), FileStatus::Failed);
    failed.error = Some("source answered 404".into());
    failed.error_code = Some(stemvault_vault::reason::FailureCode::SourceExpired);
    let mut retrying = file(&format!("tasks/{task_id}/tracks/b/audio.mp3"), FileStatus::Downloading);
    retrying.error = Some("connection reset".into());
    // As an item of an earlier failure reopened by a hand might keep it: not shown while open.
    retrying.error_code = Some(stemvault_vault::reason::FailureCode::DeadLettered);
    let files = BTreeMap::from([
        ("tracks/a/audio".to_owned(), stored),
        ("tracks/a/image".to_owned(), failed),
        ("tracks/b/audio".to_owned(), retrying),
    ]);
    TaskRecord {
        last_received_at: "2026-01-01T00:01:00.000Z".parse().unwrap(),
        deliveries: 3,
        files,
        vault: VaultState::Pending,
        version: 7,
        ..TaskRecord::new(
            task_id,
            Family::Music,
            Stage::Complete,
            200,
            "All generated successfully.",
            "2026-01-01T00:00:00.000Z".parse().unwrap(),
        )
    }
}

fn id(raw: &str) -> TaskId {
    TaskId::parse(raw).unwrap()
}

#[tokio::test]
async fn presigns_stored_files_only_and_hides_errors_of_open_files() {
    let ports = MemoryPorts::with(&["t1"]);
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap() else {
        panic!("the task");
    };

    assert_eq!((view.task_id.as_str(), view.family, view.stage), ("t1", Family::Music, Stage::Complete));
    assert_eq!(
        (view.code, view.message.as_str(), view.vault),
        (200, "All generated successfully.", VaultState::Pending)
    );
    let names: Vec<_> = view.files.iter().map(|f| f.file.name.as_str()).collect();
    assert_eq!(names, ["tracks/a/audio", "tracks/a/image", "tracks/b/audio"]);

    let [stored, failed, open] = &view.files[..] else { panic!("three files expected") };
    assert_eq!(stored.file.status, PublicFileStatus::Stored);
    assert_eq!(stored.download_url.as_deref(), Some("signed:tasks/t1/tracks/a/audio.mp3?expires=90"));
    assert_eq!((stored.file.bytes, stored.file.content_type.as_deref()), (Some(1234), Some("audio/mpeg")));
    assert_eq!(failed.file.status, PublicFileStatus::Failed);
    assert_eq!(failed.file.error.as_deref(), Some("source answered 404"));
    let code = serde_json::to_value(failed.file.error_code).unwrap();
    assert_eq!(code, "source_expired", "the code a program matches");
    assert_eq!(failed.download_url, None);
    assert_eq!(open.file.status, PublicFileStatus::Pending);
    assert_eq!((open.file.error.as_deref(), open.download_url.as_deref()), (None, None));
    assert_eq!(open.file.error_code, None);
    // Why it is still pending: its last copy failed and is tried again.
    assert_eq!((open.attempts, open.last_attempt_error.clone()), (Some(1), Some(Some("connection reset".into()))));
    assert_eq!((failed.attempts, failed.last_attempt_error.clone()), (Some(1), Some(None)), "its error says why");
    assert_eq!((stored.attempts, stored.last_attempt_error.clone()), (Some(1), Some(None)));
    assert_eq!(*ports.signed.lock().unwrap(), ["tasks/t1/tracks/a/audio.mp3"]);
}

/// `record` as its settle leaves it, but for its manifest's key: its open files gone, the
/// vault partial.
fn settle(record: &mut TaskRecord) {
    record.files.retain(|_, f| f.status.is_settled());
    record.vault = VaultState::Partial;
}

/// A settled task's answer says where its manifest is, and a GET links it, as its files; a
/// key outside the task's prefix (an item edited by hand) is neither shown nor signed.
#[tokio::test]
async fn an_answer_names_and_links_the_manifest_once_written() {
    let mut ports = MemoryPorts::with(&["t1"]);
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap() else {
        panic!("the task");
    };
    assert_eq!((view.manifest_key, view.manifest_url), (None, None), "not settled yet");
    settle(ports.records.get_mut("t1").unwrap());
    ports.records.get_mut("t1").unwrap().manifest_key = Some("tasks/t1/manifest.json".into());
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap() else {
        panic!("the task");
    };
    assert_eq!(view.manifest_key.as_deref(), Some("tasks/t1/manifest.json"));
    assert_eq!(view.manifest_url.as_deref(), Some("signed:tasks/t1/manifest.json?expires=90"));
    ports.records.get_mut("t1").unwrap().manifest_key = Some("elsewhere/manifest.json".into());
    ports.signed.lock().unwrap().clear();
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap() else {
        panic!("the task");
    };
    assert_eq!((view.manifest_key, view.manifest_url), (None, None));
    assert!(!ports.signed.lock().unwrap().iter().any(|k| k.contains("elsewhere")));
}

/// An answer links at most MAX_LINKS stored files and says how many it left without a
/// link; one within the bound says nothing of it.
#[tokio::test]
async fn an_answer_links_at_most_max_links_files() {
    let mut ports = MemoryPorts::with(&["t1"]);
    assert!(ports.records["t1"].files.len() < MAX_LINKS);
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(1)).await.unwrap() else {
        panic!("the task");
    };
    assert_eq!(view.links_omitted, None);
    let record = ports.records.get_mut("t1").unwrap();
    for i in 0..MAX_LINKS + 5 {
        let key = format!("tasks/t1/result/{i:04}.mp3");
        record.files.insert(format!("result/{i:04}"), file(&key, FileStatus::Stored));
    }
    // A stored file outside the task's prefix (an item edited by hand) never has a link:
    // past the bound too, it is not counted as one left out.
    record.files.insert("zzzz/outside".into(), file("elsewhere/outside.mp3", FileStatus::Stored));
    let own = |f: &&FileEntry| f.status == FileStatus::Stored && f.key.starts_with("tasks/t1/");
    let stored = record.files.values().filter(own).count();
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(1)).await.unwrap() else {
        panic!("the task");
    };
    let linked = view.files.iter().filter(|f| f.download_url.is_some()).count();
    assert_eq!((linked, view.links_omitted), (MAX_LINKS, Some(stored - MAX_LINKS)));
    assert_eq!(ports.signed.lock().unwrap().len(), 1 + MAX_LINKS, "none signed past the bound");
}

/// An answer lists files up to MAX_ANSWER_FILES_BYTES of JSON and counts the rest (the last by
/// name): a task swollen to tens of thousands of files would otherwise pass Lambda's 6 MB
/// response limit, every GET of it failing.
#[tokio::test]
async fn an_answer_lists_files_up_to_its_byte_bound() {
    let mut ports = MemoryPorts::with(&["t1"]);
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(1)).await.unwrap() else {
        panic!("the task");
    };
    assert_eq!(view.files_omitted, None);
    let record = ports.records.get_mut("t1").unwrap();
    for i in 0..30_000 {
        record.files.insert(format!("x/{i:05}"), file(&format!("tasks/t1/x/{i:05}.mp3"), FileStatus::Pending));
    }
    let names: Vec<String> = record.files.keys().cloned().collect();
    let total = names.len();
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(1)).await.unwrap() else {
        panic!("the task");
    };
    let omitted = view.files_omitted.expect("files left out");
    assert_eq!(view.files.len() + omitted, total);
    let listed: usize = view.files.iter().map(|f| serde_json::to_vec(f).unwrap().len() + 1).sum();
    assert!(listed <= MAX_ANSWER_FILES_BYTES && listed + 2_000 > MAX_ANSWER_FILES_BYTES, "{listed}");
    let listed_names: Vec<&str> = view.files.iter().map(|f| f.file.name.as_str()).collect();
    assert_eq!(listed_names, names[..view.files.len()], "the first by name");
    assert!(serde_json::to_vec(&*view).unwrap().len() < 5_000_000);
}

/// Both bounds at once: the links stop at MAX_LINKS, then the byte bound leaves files out;
/// `links_omitted` counts the listed files without a link, `files_omitted` the rest, and no
/// file is in both.
#[tokio::test]
async fn the_link_and_byte_bounds_count_each_file_once() {
    let mut ports = MemoryPorts::with(&["t1"]);
    let record = ports.records.get_mut("t1").unwrap();
    record.files.clear();
    let long = "n".repeat(900);
    for i in 0..3_000 {
        let name = format!("x/{i:04}-{long}");
        record.files.insert(name.clone(), file(&format!("tasks/t1/{name}.mp3"), FileStatus::Stored));
    }
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(1)).await.unwrap() else {
        panic!("the task");
    };
    let linked = view.files.iter().filter(|f| f.download_url.is_some()).count();
    let (listed, files_omitted) = (view.files.len(), view.files_omitted.expect("files left out"));
    assert_eq!((linked, listed + files_omitted), (MAX_LINKS, 3_000));
    assert_eq!(view.links_omitted, Some(listed - MAX_LINKS), "the listed files without a link");
}

/// A settled vault is answered pending while a file is open (a later callback's file
/// item whose task item write did not follow): clients stop waiting on a settled one.
/// Every file settled before the task item says so (the settle's Task Vaulted goes out
/// before its write) is answered as that settle will write it, so a receiver reading the
/// task on the event sees what it said; not while a request adding files marked the task.
#[tokio::test]
async fn a_vault_is_answered_as_its_files_are_settled() {
    let mut ports = MemoryPorts::with(&["t1", "t2", "t3", "t4", "t5", "t6", "t7"]);
    for (task, vault) in [("t1", VaultState::Partial), ("t2", VaultState::Complete)] {
        let record = ports.records.get_mut(task).unwrap();
        record.vault = vault;
        record.manifest_key = Some(format!("tasks/{task}/manifest.json"));
    }
    for task in ["t2", "t3", "t4", "t5"] {
        ports.records.get_mut(task).unwrap().files.retain(|_, f| f.status != FileStatus::Downloading);
    }
    ports.records.get_mut("t4").unwrap().adding = Some(2);
    ports.records.get_mut("t6").unwrap().files.retain(|_, f| f.status == FileStatus::Stored);
    // Settled, but its manifest due again (a registration moved its generation on): its
    // settle keeps the vault and watches its expired file.
    let due_again = ports.records.get_mut("t7").unwrap();
    due_again.files.retain(|_, f| f.status != FileStatus::Downloading);
    due_again.vault = VaultState::Partial;
    let registered = ports.records.get_mut("t5").unwrap();
    (registered.stage, registered.files) = (Stage::Submitted, BTreeMap::new());
    let expected = [
        ("t1", VaultState::Pending, false),
        ("t2", VaultState::Complete, true),
        // Not done: its failed file's URL expired (404), the settle starts a watch for it.
        ("t3", VaultState::Partial, false),
        ("t4", VaultState::Pending, false),
        ("t5", VaultState::Pending, false),
        ("t6", VaultState::Complete, true),
        ("t7", VaultState::Partial, false),
    ];
    for (task, vault, done) in expected {
        let Some(Found::Task(view)) = task_view(&ports, &id(task), Duration::from_secs(1)).await.unwrap() else {
            panic!("the task");
        };
        assert_eq!((view.vault, view.done), (vault, done), "{task}");
        // The manifest of a settle, not while a file opened since is in none.
        let manifest = (task == "t2").then(|| format!("tasks/{task}/manifest.json"));
        assert_eq!(view.manifest_key, manifest, "{task}");
    }
}

/// A task is done once given up, or at a final stage with every file settled and nothing
/// the reconciler may still bring; not at `first`, nor while a file is open, nor while a
/// failed file may be reopened (the task watched).
#[tokio::test]
async fn done_says_when_a_client_may_stop_asking() {
    let settled = |stage: Stage, vault: VaultState, watched: bool| {
        let mut r = record("t1");
        r.files.retain(|_, f| f.status != FileStatus::Downloading);
        (r.stage, r.vault, r.manifest_key) = (stage, vault, Some("tasks/t1/manifest.json".into()));
        r.reconcile = watched.then(|| stemvault_vault::RECONCILE_DUE.to_owned());
        r
    };
    let given_up = Some(Abandoned {
        reason: stemvault_vault::GiveUpReason::Abandoned,
        at: "2026-01-15T00:00:00.000Z".parse().unwrap(),
    });
    let abandoned = TaskRecord { abandoned: given_up.clone(), ..settled(Stage::First, VaultState::Complete, false) };
    // Given up at `first` while its track is still being copied.
    let abandoned_copying = TaskRecord { abandoned: given_up, stage: Stage::First, ..record("t1") };
    let mut all_stored = settled(Stage::Complete, VaultState::Complete, true);
    all_stored.files.retain(|_, f| f.status == FileStatus::Stored);
    let cases = [
        (settled(Stage::Complete, VaultState::Partial, false), true),
        (settled(Stage::Error, VaultState::Complete, false), true),
        // Its failed file's URL expired (404): a poll may bring a fresh one.
        (settled(Stage::Complete, VaultState::Partial, true), false),
        // Watched still, but with nothing left to bring: the reconciler's next run ends it.
        (all_stored, true),
        (settled(Stage::First, VaultState::Complete, false), false),
        (record("t1"), false),
        (abandoned, true),
        (abandoned_copying, false),
        // A request adding a file has marked it, its file items not written yet.
        (TaskRecord { adding: Some(2), ..settled(Stage::Complete, VaultState::Partial, false) }, false),
    ];
    for (i, (record, done)) in cases.into_iter().enumerate() {
        let mut ports = MemoryPorts::with(&["t1"]);
        ports.records.insert("t1".into(), record);
        let answered = answer(&ports, "t1").await;
        assert_eq!(answered["done"], done, "case {i}: {answered}");
        assert_eq!(answered["generation"], 1, "case {i}");
    }
}

/// A failure that came after the task's success is answered as `late_failure` (it moved no
/// stage: `stage` and `code` stay the success's); none, no such key.
#[tokio::test]
async fn a_failure_after_success_is_answered_beside_it() {
    let mut ports = MemoryPorts::with(&["t1", "t2"]);
    ports.records.get_mut("t1").unwrap().failure = Some(FailureEntry {
        stage: Stage::Error,
        code: 531,
        message: "generation failed, credits refunded".into(),
        received_at: "2026-01-01T00:05:00.000Z".parse().unwrap(),
    });
    let answered = answer(&ports, "t1").await;
    assert_eq!((answered["stage"].as_str(), answered["code"].as_i64()), (Some("complete"), Some(200)));
    assert_eq!(
        answered["late_failure"],
        serde_json::json!({"stage": "error", "code": 531, "message": "generation failed, credits refunded",
                           "received_at": "2026-01-01T00:05:00.000Z"})
    );
    assert!(answer(&ports, "t2").await.get("late_failure").is_none());
}

/// The GET answer for `id`, links valid 90 s, as JSON.
async fn answer(ports: &MemoryPorts, id: &str) -> serde_json::Value {
    match task_view(ports, &TaskId::parse(id).unwrap(), Duration::from_secs(90)).await.unwrap() {
        Some(Found::Task(view)) => serde_json::to_value(view).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// What is no file (lyrics, MIDI notes, voice ids, track metadata) and the live streams
/// are answered too; absent, neither key is.
#[tokio::test]
async fn details_and_streams_are_answered_as_recorded() {
    let mut ports = MemoryPorts::with(&["t1", "t2"]);
    let lyrics = serde_json::json!({"kind": "lyrics", "variants": [{"title": "A", "text": "la la"}]});
    let with = ports.records.get_mut("t1").unwrap();
    with.details = Some(lyrics.clone());
    with.streams.insert("tracks/a/stream".into(), "https://cdn.example/live/a".into());
    // Kept before ingest took only http(s) streams: not answered.
    with.streams.insert("tracks/b/stream".into(), "javascript:alert(1)".into());
    let answered = answer(&ports, "t1").await;
    assert_eq!(answered["details"], lyrics);
    assert_eq!(answered["streams"], serde_json::json!({"tracks/a/stream": "https://cdn.example/live/a"}));
    let plain = answer(&ports, "t2").await;
    assert!(plain.get("details").is_none() && plain.get("streams").is_none(), "{plain}");
}

/// Details too large for the task item are answered as their pointer and a link to the
/// object holding them whole; a pointer from before they were kept apart (the archived body
/// alone), or to another task's object, gets no link.
#[tokio::test]
async fn details_kept_apart_are_linked() {
    let mut ports = MemoryPorts::with(&["t1", "t2", "t3"]);
    let pointer = |key: Option<&str>| {
        let mut p = serde_json::json!({"kind": "in_body", "details_kind": "midi", "bytes": 70_000,
            "body_key": "tasks/t1/callbacks/final-ab.json"});
        if let Some(key) = key {
            p["details_key"] = key.into();
        }
        p
    };
    ports.records.get_mut("t1").unwrap().details = Some(pointer(Some("tasks/t1/details/final-ab.json")));
    ports.records.get_mut("t2").unwrap().details = Some(pointer(None));
    ports.records.get_mut("t3").unwrap().details = Some(pointer(Some("tasks/t1/details/final-ab.json")));
    let linked = answer(&ports, "t1").await;
    assert_eq!(linked["details"], pointer(Some("tasks/t1/details/final-ab.json")));
    assert_eq!(linked["details_url"], "signed:tasks/t1/details/final-ab.json?expires=90");
    for id in ["t2", "t3"] {
        let unlinked = answer(&ports, id).await;
        assert!(unlinked.get("details_url").is_none(), "{unlinked}");
    }
    assert!(!ports.signed.lock().unwrap().iter().any(|k| k.contains("callbacks")), "never a body");
}

/// A stored file whose item names a key outside its task's prefix (an item edited by hand)
/// gets no link.
#[tokio::test]
async fn only_a_file_under_its_task_s_prefix_is_linked() {
    let mut ports = MemoryPorts::with(&["t1"]);
    let record = ports.records.get_mut("t1").unwrap();
    let stored: Vec<String> =
        record.files.iter().filter(|(_, f)| f.status == FileStatus::Stored).map(|(n, _)| n.clone()).collect();
    assert!(!stored.is_empty());
    for name in &stored {
        record.files.get_mut(name).unwrap().key = "tasks/t2/tracks/a/audio.mp3".into();
    }
    let answered = answer(&ports, "t1").await;
    let linked: Vec<&serde_json::Value> =
        answered["files"].as_array().unwrap().iter().filter(|f| !f["download_url"].is_null()).collect();
    assert!(linked.is_empty(), "{answered}");
    assert!(ports.signed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_task_is_none() {
    let view = task_view(&MemoryPorts::default(), &id("nope"), Duration::from_secs(1)).await;
    assert_eq!(view, Ok(None));
}

/// A task the table does not know, with a callback parked: received, not recorded yet.
#[tokio::test]
async fn a_task_known_only_by_a_parked_callback_is_parked() {
    let ports = MemoryPorts { parked: vec!["t2".into()], ..MemoryPorts::with(&["t1"]) };
    let found = |task: &'static str| {
        let ports = &ports;
        async move { task_view(ports, &id(task), Duration::from_secs(1)).await.unwrap() }
    };
    assert_eq!(found("t2").await, Some(Found::Parked));
    assert!(matches!(found("t1").await, Some(Found::Task(_))));
    assert_eq!(found("t3").await, None);

    // The parked bodies cannot be listed: unavailable, not unknown.
    let blind = MemoryPorts { parked: vec!["t2".into()], parked_unreadable: true, ..Default::default() };
    let answer = task_view(&blind, &id("t2"), Duration::from_secs(1)).await;
    assert!(matches!(&answer, Err(e) if e.caller_may_retry()), "{answer:?}");
}

/// The reconciler recorded the parked callback between the table's read and the listing: the
/// task is found, not unknown, whether its body was deleted by then or is still listed (the
/// replay queues the files and publishes the events before it deletes the body).
#[tokio::test]
async fn a_task_replayed_while_parked_callbacks_are_listed_is_found() {
    for still_listed in [false, true] {
        let parked = if still_listed { vec!["t2".into()] } else { vec![] };
        let ports = MemoryPorts { replayed_while_listing: Some(record("t2")), parked, ..Default::default() };
        let found = task_view(&ports, &id("t2"), Duration::from_secs(1)).await.unwrap();
        assert!(matches!(&found, Some(Found::Task(view)) if view.task_id == "t2"), "{still_listed}: {found:?}");
    }
}

#[tokio::test]
async fn failures_say_whether_to_retry() {
    let unavailable = MemoryPorts { fail: Some(StoreError::Unavailable("timeout".into())), ..Default::default() };
    let err = task_view(&unavailable, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
    assert!(err.caller_may_retry(), "{err}");

    let malformed = MemoryPorts { fail: Some(StoreError::Malformed("files: not a map".into())), ..Default::default() };
    let err = task_view(&malformed, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
    assert!(!err.caller_may_retry(), "{err}");

    let broken_signer = MemoryPorts { fail_signing: true, ..MemoryPorts::with(&["t1"]) };
    let err = task_view(&broken_signer, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err, ResultsError::Presign(StorageError::transient(crate::error::PRESIGN, "no credentials")));
    assert!(err.caller_may_retry());
}

/// The right to register is not the right to read results: a registration's answer has no
/// details nor streams, as it has no links.
#[tokio::test]
async fn a_registrations_answer_carries_no_results_nor_streams() {
    let mut ports = MemoryPorts::with(&["t1"]);
    let recorded = ports.records.get_mut("t1").unwrap();
    recorded.details = Some(serde_json::json!({"kind": "lyrics", "variants": [{"title": "A", "text": "la la"}]}));
    recorded.streams.insert("tracks/a/stream".into(), "https://cdn.example/live/a".into());
    settle(recorded);
    recorded.manifest_key = Some("tasks/t1/manifest.json".into());
    let reg = Registration { family: Family::Music, client_ref: None };
    let now: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
    let answer = register(&ports, &id("t1"), &reg, now, Duration::from_secs(1)).await.unwrap();
    let Registered::Existing(view) = answer else { panic!("{answer:?}") };
    let json = serde_json::to_value(&view).unwrap();
    assert!(json.get("details").is_none() && json.get("streams").is_none(), "{json}");
    // Where the manifest is, but no link to it.
    assert!(json["manifest_key"] == "tasks/t1/manifest.json" && json.get("manifest_url").is_none(), "{json}");
    assert!(ports.signed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_registration_writes_once_and_answers_the_task_as_it_is() {
    let ports = MemoryPorts::default();
    let now: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
    let reg = Registration { family: Family::Wav, client_ref: Some("order-17".into()) };
    let second = Duration::from_secs(1);
    let Registered::Created(view) = register(&ports, &id("t9"), &reg, now, second * 600).await.unwrap() else {
        panic!("a new task is created")
    };
    assert_eq!(
        (view.stage, view.vault, view.client_ref.as_deref()),
        (Stage::Submitted, VaultState::Pending, Some("order-17"))
    );
    assert!(view.files.is_empty());
    let written = ports.put.lock().unwrap()[0].clone();
    assert_eq!((written.reconcile.as_deref(), written.reconcile_at), (Some("due"), Some(now.plus(second * 600))));

    let again = register(&ports, &id("t9"), &reg, now, second * 600).await.unwrap();
    assert!(matches!(again, Registered::Existing(ref v) if v.client_ref.as_deref() == Some("order-17")), "{again:?}");
    let other = Registration { client_ref: Some("order-18".into()), ..reg.clone() };
    let refused = register(&ports, &id("t9"), &other, now, second * 600).await.unwrap();
    assert!(matches!(refused, Registered::Disagrees { .. }), "{refused:?}");
    assert_eq!(ports.put.lock().unwrap().len(), 1, "written once");

    // A task a callback recorded first takes the client_ref it has none of, once.
    let called_back = MemoryPorts::with(&["t1"]);
    let music_17 = Registration { family: Family::Music, client_ref: Some("order-17".into()) };
    let completed = register(&called_back, &id("t1"), &music_17, now, second).await.unwrap();
    assert!(
        matches!(&completed, Registered::Existing(v) if v.client_ref.as_deref() == Some("order-17")),
        "{completed:?}"
    );
    let written = called_back.put.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].version, called_back.records["t1"].version + 1, "over the version read");

    // A task a callback recorded first keeps what it has; its family is the callback's.
    let called_back = MemoryPorts::with(&["t1"]);
    let music = Registration { family: Family::Music, client_ref: None };
    let known = register(&called_back, &id("t1"), &music, now, second).await.unwrap();
    assert!(matches!(known, Registered::Existing(ref v) if v.stage == Stage::Complete), "{known:?}");
    assert!(called_back.put.lock().unwrap().is_empty());
    // Its stored file is shown, without a link or its copies' history: registering is not
    // reading the files.
    let Registered::Existing(view) = known else { unreachable!() };
    assert!(view.files.iter().any(|f| f.file.status == PublicFileStatus::Stored), "{view:?}");
    assert!(view.files.iter().all(|f| f.download_url.is_none()), "{view:?}");
    let shown = serde_json::to_value(&view.files).unwrap();
    for file in shown.as_array().unwrap() {
        assert!(file.get("attempts").is_none() && file.get("last_attempt_error").is_none(), "{file}");
    }
}

/// Another writer moves the task on between the read and the completion: the completion
/// reads again and is applied over the newer version, keeping what that writer wrote;
/// a task that never stops changing is a retryable error, not a lost client_ref.
#[tokio::test]
async fn a_completion_refused_by_a_concurrent_write_is_retried_over_it() {
    let now: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
    let reg = Registration { family: Family::Music, client_ref: Some("order-17".into()) };
    let ports = MemoryPorts { written_meanwhile: Mutex::new(2), ..MemoryPorts::with(&["t1"]) };
    let read = ports.records["t1"].clone();

    let completed = register(&ports, &id("t1"), &reg, now, Duration::from_secs(1)).await.unwrap();
    assert!(
        matches!(&completed, Registered::Existing(v) if v.client_ref.as_deref() == Some("order-17")),
        "{completed:?}"
    );
    let last = ports.load_task(&id("t1")).await.unwrap().unwrap();
    assert_eq!(last.client_ref.as_deref(), Some("order-17"));
    assert_eq!(last.deliveries, read.deliveries + 2, "both other writes kept");
    assert_eq!(last.version, read.version + 3);

    let busy = MemoryPorts { written_meanwhile: Mutex::new(u32::MAX), ..MemoryPorts::with(&["t1"]) };
    let err = register(&busy, &id("t1"), &reg, now, Duration::from_secs(1)).await.unwrap_err();
    assert!(err.caller_may_retry(), "{err}");
}

/// Links are signed at whole seconds (`X-Amz-Date`): their expiry is stated from the
/// second the signing began, never later than they stop working.
#[tokio::test]
async fn links_expire_at_counts_from_the_second_the_signing_began() {
    let ports = MemoryPorts { at: Some(Timestamp::from_unix_ms(1_800_000_000_789)), ..MemoryPorts::with(&["t1"]) };
    let view = view_of(&ports, &ports.records["t1"], Some(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(view.links_expire_at, Some(Timestamp::from_unix_ms(1_800_003_600_000)));
}

/// README's `GET` example holds fields a settled task's answer has, in the order the answer
/// writes them, its file's too (the answer may hold more: its manifest's links).
#[tokio::test]
async fn the_readme_get_example_is_in_the_answers_shape() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let example = readme
        .split("```json\n")
        .skip(1)
        .filter_map(|block| serde_json::from_str::<serde_json::Value>(block.split_once("```")?.0).ok())
        .find(|value| value.get("links_expire_at").is_some())
        .expect("README shows a GET answer");
    let mut settled = record("t1");
    settled.files.retain(|name, _| name == "tracks/a/audio");
    settled.vault = VaultState::Complete;
    let ports = MemoryPorts { records: HashMap::from([("t1".to_owned(), settled)]), ..Default::default() };
    let Some(Found::Task(view)) = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap() else {
        panic!("the task");
    };
    let answer = serde_json::to_value(&view).unwrap();
    // The order below is the written one only while JSON objects keep it (serde_json's
    // preserve_order, which the workspace turns on): otherwise this would check less.
    let kept: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
    assert_eq!(kept.as_object().unwrap().keys().next().map(String::as_str), Some("b"), "objects keep their order");
    let keys = |value: &serde_json::Value| -> Vec<String> {
        value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };
    // Each shown key is written, after the one shown before it.
    let in_order = |shown: &[String], written: &[String]| {
        let mut rest = written.iter();
        shown.iter().all(|key| rest.any(|w| w == key))
    };
    let (shown, written) = (keys(&example), keys(&answer));
    assert!(shown.len() > 5 && in_order(&shown, &written), "README {shown:?}, the answer {written:?}");
    let (shown, written) = (keys(&example["files"][0]), keys(&answer["files"][0]));
    assert!(shown.len() > 5 && in_order(&shown, &written), "README {shown:?}, the answer {written:?}");
}

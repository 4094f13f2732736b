use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tracing::Level;

use stemvault_vault::enqueue::memory::MemoryTableAndQueue;
use stemvault_vault::register::Registration;
use stemvault_vault::{Clock, FileStatus, VaultState};
use suno_callbacks::{Stage, parse_callback};

use super::*;

const T0: i64 = 1_800_000_000_000;
/// The documented kie.ai vocal-removal record-info answer (two stems).
const SUCCESS: &[u8] =
    include_bytes!("../../../../fixtures/polls/poll-vocal-removal-record-info__kie__200-separate_vocal.json");
const TASK: &str = "3e63b4cc88d52611159371f6af5571e7";
/// The documented callback of the same task.
const CALLBACK: &[u8] =
    include_bytes!("../../../../fixtures/callbacks/separate-vocals__seed-000__200-separate_vocal.json");
/// A music task's `first` and `complete` callbacks (copies of our own fixtures: `fixtures/`).
const MUSIC: &str = "7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c";
const MUSIC_FIRST: &[u8] = include_bytes!("fixtures/generate-music__own__200-first.json");
const MUSIC_COMPLETE: &[u8] = include_bytes!("fixtures/generate-music__own__200-complete.json");

/// Park the music task's `complete`, then its `first`, under their keys; the keys, in that order.
fn park_music_stages(ports: &MemoryPorts) -> [String; 2] {
    [("complete", MUSIC_COMPLETE), ("first", MUSIC_FIRST)].map(|(stage, body)| {
        let key = format!("parked/{MUSIC}/{stage}-{}.json", stemvault_vault::accept::body_sha256_hex(body));
        ports.park(&key, body);
        key
    })
}

/// A music `first` callback for [`TASK`]: one track of two has its audio.
const FIRST_OF_TASK: &[u8] =
    br#"{"code":200,"msg":"first","data":{"callbackType":"first","task_id":"3e63b4cc88d52611159371f6af5571e7","data":[
    {"id":"a1","audio_url":"https://cdn1.suno.ai/a1.mp3","image_url":"","stream_audio_url":"","title":"x"},
    {"id":"a2","audio_url":"","image_url":"","stream_audio_url":"","title":"y"}]}}"#;

fn pending() -> ProviderAnswer {
    let body = format!(r#"{{"code":200,"msg":"success","data":{{"taskId":"{TASK}","successFlag":"PENDING"}}}}"#);
    ProviderAnswer::Http { status: 200, body: body.into_bytes() }
}

fn status(status: u16) -> ProviderAnswer {
    ProviderAnswer::Http { status, body: br#"{"code":500,"msg":"busy"}"#.to_vec() }
}

/// The provider's answer for a task it does not know: a 200 whose `code` is 404.
fn unknown() -> ProviderAnswer {
    ProviderAnswer::Http { status: 200, body: br#"{"code":404,"msg":"task not found","data":null}"#.to_vec() }
}

fn success() -> ProviderAnswer {
    ProviderAnswer::Http { status: 200, body: SUCCESS.to_vec() }
}

/// The table and queue in memory on a virtual clock, archived bodies, and a provider that
/// answers from a script (its last answer again once the script runs out).
struct MemoryPorts {
    table: MemoryTableAndQueue,
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    script: Mutex<VecDeque<ProviderAnswer>>,
    polls: Mutex<Vec<(Family, String)>>,
    events: Mutex<Vec<events::TaskEvent>>,
    parked_reads: std::sync::atomic::AtomicUsize,
    /// Parked keys whose reads fail.
    unreadable: Mutex<std::collections::HashSet<String>>,
    /// Parked bodies another run deletes between the listing and their read.
    deleted_since_listed: Mutex<std::collections::HashSet<String>>,
    /// Whether a key is still parked cannot be told (its listing fails).
    still_parked_fails: std::sync::atomic::AtomicBool,
    /// When each parked body was parked (none: unknown).
    parked_at: Mutex<HashMap<String, Timestamp>>,
    /// The provider never answers.
    polls_hang: std::sync::atomic::AtomicBool,
    /// How long until the provider's next turn (zero: at once; not waited for in tests).
    next_turn_in: Mutex<Duration>,
    /// How long the provider takes to answer.
    poll_latency: Mutex<Duration>,
    /// How far each poll moves the table's clock on.
    poll_moves_clock: Mutex<Duration>,
    /// A record written right after the next publish (a callback landing just then).
    after_publish: Mutex<Option<TaskRecord>>,
    /// A record written while the next poll is out (a registration landing just then).
    during_poll: Mutex<Option<TaskRecord>>,
    /// A record written between a put-off task's read and its postponed poll.
    before_postpone: Mutex<Option<TaskRecord>>,
    /// Publishing fails (nothing is published).
    publish_fails: std::sync::atomic::AtomicBool,
    /// A failed publish also makes the table refuse the next writes (an outage of both).
    publish_failure_takes_the_table: std::sync::atomic::AtomicBool,
    /// Reading a parked body never answers.
    parked_reads_hang: std::sync::atomic::AtomicBool,
    /// Archiving a body fails (S3 refusing the put).
    archive_fails: std::sync::atomic::AtomicBool,
    /// Publishes tried, whether they failed or not.
    publishes_tried: std::sync::atomic::AtomicUsize,
    /// Every measure emitted, in order.
    measures: Mutex<Vec<Measure>>,
    /// Index entries that lag their task item (the index is eventually consistent): the
    /// `reconcile_at` the index still lists a task at, by task id.
    index_lags: Mutex<HashMap<String, String>>,
}

stemvault_vault::delegate_enqueue_ports!(MemoryPorts => table);

impl MemoryPorts {
    /// A callback `body` parked under `key`, as ingest parks one.
    fn park(&self, key: &str, body: &[u8]) {
        self.bodies.lock().unwrap().insert(key.to_owned(), body.to_vec());
    }

    fn new(script: Vec<ProviderAnswer>) -> MemoryPorts {
        MemoryPorts {
            table: MemoryTableAndQueue::with_virtual_clock(Timestamp::from_unix_ms(T0)),
            bodies: Mutex::default(),
            script: Mutex::new(script.into()),
            polls: Mutex::default(),
            events: Mutex::default(),
            parked_reads: Default::default(),
            unreadable: Mutex::default(),
            deleted_since_listed: Mutex::default(),
            still_parked_fails: Default::default(),
            parked_at: Mutex::default(),
            polls_hang: Default::default(),
            next_turn_in: Mutex::default(),
            poll_latency: Mutex::default(),
            poll_moves_clock: Mutex::default(),
            after_publish: Mutex::default(),
            during_poll: Mutex::default(),
            before_postpone: Mutex::default(),
            publish_fails: Default::default(),
            publish_failure_takes_the_table: Default::default(),
            parked_reads_hang: Default::default(),
            publishes_tried: Default::default(),
            archive_fails: Default::default(),
            measures: Mutex::default(),
            index_lags: Mutex::default(),
        }
    }

    fn record(&self) -> TaskRecord {
        self.table.record(TASK).expect("the task")
    }

    /// Move the clock to the task's next poll.
    fn until_due(&self) {
        let at = self.record().reconcile_at.expect("scheduled");
        let now = self.table.now();
        if at > now {
            self.table.advance(Duration::from_millis((at.unix_ms - now.unix_ms) as u64));
        }
    }
}

impl EmitMetrics<Measure> for MemoryPorts {
    fn emit_metrics(&self, measure: &Measure) {
        self.measures.lock().unwrap().push(*measure);
    }
}

impl accept::ArchiveBody for MemoryPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), stemvault_vault::StorageError> {
        if self.archive_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(stemvault_vault::StorageError::transient("PutObject", "AccessDenied"));
        }
        self.park(key, body);
        Ok(())
    }
}

impl events::PublishEvents for MemoryPorts {
    async fn publish_events(&self, published: &[events::TaskEvent]) -> Result<(), events::PublishError> {
        self.publishes_tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.publish_fails.load(std::sync::atomic::Ordering::SeqCst) {
            if self.publish_failure_takes_the_table.load(std::sync::atomic::Ordering::SeqCst) {
                self.table.fail_saves(10, StoreError::Unavailable("throttled".into()));
            }
            let total = published.len();
            return Err(events::PublishError { failed: total, total, reason: "throttled".into() });
        }
        self.events.lock().unwrap().extend_from_slice(published);
        if let Some(record) = self.after_publish.lock().unwrap().take() {
            self.table.put_record(record);
        }
        Ok(())
    }
}

/// The parked bodies are the `parked/` keys of `bodies` (one bucket, as in S3).
impl crate::replay::ListParked for MemoryPorts {
    async fn list_parked(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<stemvault_vault::accept::ParkedBody>, StoreError> {
        let listed = |k: &&String| k.starts_with("parked/") && after.is_none_or(|after| k.as_str() > after);
        let mut keys: Vec<String> = self.bodies.lock().unwrap().keys().filter(listed).cloned().collect();
        keys.sort();
        let parked_at = self.parked_at.lock().unwrap();
        Ok(keys
            .into_iter()
            .take(limit)
            .map(|key| stemvault_vault::accept::ParkedBody { parked_at: parked_at.get(&key).copied(), key })
            .collect())
    }
}

impl crate::replay::StillParked for MemoryPorts {
    async fn still_parked(&self, key: &str) -> Result<bool, StoreError> {
        if self.still_parked_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("ListObjectsV2 (parked): slow down".into()));
        }
        Ok(self.bodies.lock().unwrap().contains_key(key))
    }
}

impl crate::replay::ReadParked for MemoryPorts {
    async fn read_parked(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.parked_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.parked_reads_hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.unreadable.lock().unwrap().contains(key) {
            return Err(StoreError::Unavailable("GetObject: access denied".into()));
        }
        // Replayed and deleted by another run since the listing: S3's 403 to this role.
        if self.deleted_since_listed.lock().unwrap().remove(key) {
            self.bodies.lock().unwrap().remove(key);
            return Err(StoreError::Unavailable("GetObject: access denied".into()));
        }
        Ok(self.bodies.lock().unwrap().get(key).cloned())
    }
}

impl crate::replay::DeleteParked for MemoryPorts {
    async fn delete_parked(&self, key: &str) -> Result<(), StoreError> {
        self.bodies.lock().unwrap().remove(key);
        Ok(())
    }
}

/// The `reconcile-due` index as DynamoDB keeps it: from the task items' `reconcile` and
/// `reconcile_at` attributes, whether the rest of the record reads or not.
impl ListDueTasks for MemoryPorts {
    async fn list_due_tasks(&self, due_by: Timestamp, limit: usize) -> Result<Vec<DueTask>, StoreError> {
        let text = |item: &serde_dynamo::Item, name: &str| match item.get(name) {
            Some(serde_dynamo::AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        };
        let lags = self.index_lags.lock().unwrap().clone();
        let mut due: Vec<(String, String)> = self
            .table
            .task_items()
            .into_iter()
            .filter(|(_, item)| text(item, "reconcile").as_deref() == Some(RECONCILE_DUE))
            .filter_map(|(id, item)| {
                let at = lags.get(&id).cloned().or_else(|| text(&item, "reconcile_at"));
                Some((at.filter(|at| *at <= due_by.rfc3339())?, id))
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(at, task_id)| DueTask { task_id, reconcile_at: at.parse().ok() })
            .collect())
    }
}

impl PostponePoll for MemoryPorts {
    async fn postpone_poll(
        &self,
        task_id: &str,
        due_by: Timestamp,
        read_version: Option<u64>,
        until: Timestamp,
    ) -> Result<Conditional, StoreError> {
        use serde_dynamo::AttributeValue;
        if let Some(record) = self.before_postpone.lock().unwrap().take() {
            self.table.put_record(record);
        }
        let applied = self.table.update_task_item(task_id, |item| {
            if !matches!(item.get("reconcile"), Some(AttributeValue::S(due)) if due == RECONCILE_DUE) {
                return false;
            }
            if read_version.is_some_and(
                |read| !matches!(item.get("version"), Some(AttributeValue::N(v)) if *v == read.to_string()),
            ) {
                return false;
            }
            if !matches!(item.get("reconcile_at"), Some(AttributeValue::S(at)) if *at <= due_by.rfc3339()) {
                return false;
            }
            item.insert("reconcile_at".into(), AttributeValue::S(until.rfc3339()));
            true
        });
        Ok(if applied { Conditional::Applied } else { Conditional::Conflict })
    }
}

impl AwaitPollTurn for MemoryPorts {
    async fn await_poll_turn(&self, within: Duration) -> bool {
        *self.next_turn_in.lock().unwrap() <= within
    }
}

impl PollProvider for MemoryPorts {
    async fn poll_provider(&self, family: Family, task_id: &TaskId) -> ProviderAnswer {
        self.polls.lock().unwrap().push((family, task_id.as_str().to_owned()));
        if self.polls_hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let latency = *self.poll_latency.lock().unwrap();
        tokio::time::sleep(latency).await;
        self.table.advance(*self.poll_moves_clock.lock().unwrap());
        if let Some(record) = self.during_poll.lock().unwrap().take() {
            self.table.put_record(record);
        }
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 { script.pop_front().unwrap() } else { script.front().cloned().unwrap_or_else(pending) }
    }
}

fn settings() -> Settings {
    Settings::default()
}

/// Ports answering polls with `script`, a task registered on them, and their clock at its
/// give-up time, no poll made.
fn registered_at_its_give_up_time(script: Vec<ProviderAnswer>) -> MemoryPorts {
    let ports = MemoryPorts::new(script);
    register(&ports);
    ports.table.advance(settings().give_up_after);
    ports
}

fn register(ports: &MemoryPorts) {
    let registration = Registration { family: Family::VocalSeparation, client_ref: Some("order-17".into()) };
    let record = registration.record(&TaskId::parse(TASK).unwrap(), ports.table.now(), Duration::from_secs(600));
    ports.table.put_record(record);
}

async fn run(ports: &MemoryPorts) -> Outcome {
    reconcile(ports, &settings(), "run", ports.table.now().plus(Duration::from_secs(60))).await.unwrap()
}

#[tokio::test]
async fn a_registered_task_without_a_callback_is_vaulted_by_polling() {
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    assert!(run(&ports).await.is_idle(), "not due before RECONCILE_AFTER_SECONDS");
    assert!(ports.polls.lock().unwrap().is_empty());

    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.polls, outcome.results), (1, 1, 1), "{outcome:?}");
    assert!(!outcome.is_idle());
    assert_eq!(*ports.polls.lock().unwrap(), [(Family::VocalSeparation, TASK.to_owned())]);

    let record = ports.record();
    assert_eq!(
        (record.stage, record.vault, record.client_ref.as_deref()),
        (Stage::Final, VaultState::Pending, Some("order-17"))
    );
    let names: Vec<&str> = record.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["instrumental", "vocal"]);
    assert!(record.files.values().all(|f| f.status == FileStatus::Queued));
    assert_eq!((record.reconcile.as_deref(), record.reconcile_at, record.polls), (None, None, 1));
    assert_eq!(record.last_poll.unwrap().outcome, "result:final");
    assert_eq!(ports.table.messages().len(), 2);
    // The answer is archived like a callback body.
    let keys: Vec<String> = ports.bodies.lock().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with(&format!("tasks/{TASK}/callbacks/final-")), "{keys:?}");
    // Its callback URL redacted, and named by the digest of what is archived.
    let archived = ports.bodies.lock().unwrap()[&keys[0]].clone();
    let text = String::from_utf8_lossy(&archived);
    assert!(!text.contains("ngrok-free.app") && text.contains(crate::redact::REDACTED), "{text}");
    assert_eq!(archived, crate::redact::callback_urls(SUCCESS).into_owned());
    assert!(keys[0].ends_with(&format!("-{}.json", accept::body_sha256_hex(&archived))), "{keys:?}");

    // Settled by its result: never polled again.
    ports.table.advance(Duration::from_secs(7200));
    assert_eq!(run(&ports).await.tasks_due, 0);
}

/// A poll that brings no word of its task (no answer, a page, a redirect, a rate limit, the
/// provider failing) is counted apart, for the alarm on a provider that stopped answering;
/// an answer about the task, or a refusal alarmed on apart, is not.
#[tokio::test]
async fn polls_that_bring_no_word_of_the_task_are_counted() {
    let page = ProviderAnswer::Http { status: 200, body: b"<html>maintenance</html>".to_vec() };
    let failing = ProviderAnswer::Http { status: 200, body: br#"{"code":500,"msg":"busy"}"#.to_vec() };
    let no_word = [
        ProviderAnswer::Unreachable("timed out".into()),
        page,
        status(302),
        status(404),
        status(503),
        status(429),
        failing,
    ];
    let about_the_task = ProviderAnswer::Http { status: 200, body: br#"{"code":400,"msg":"bad task id"}"#.to_vec() };
    let word = [pending(), unknown(), about_the_task, status(401), status(402), success()];
    for (answer, unanswered) in no_word.into_iter().map(|a| (a, 1)).chain(word.into_iter().map(|a| (a, 0))) {
        let ports = MemoryPorts::new(vec![answer.clone()]);
        register(&ports);
        ports.until_due();
        assert_eq!(run(&ports).await.unanswered, unanswered, "{answer:?}");
        let counted = ports.measures.lock().unwrap().last().copied();
        assert!(
            matches!(counted, Some(Measure::Reconciled { polls: 1, unanswered: u, .. }) if u == unanswered),
            "{answer:?}: {counted:?}"
        );
    }
}

#[tokio::test]
async fn a_flapping_provider_is_polled_with_growing_waits_until_it_answers() {
    let ports = MemoryPorts::new(vec![
        pending(),
        status(429),
        status(500),
        ProviderAnswer::Unreachable("timed out".into()),
        success(),
    ]);
    register(&ports);
    let mut waits = Vec::new();
    for _ in 0..4 {
        ports.until_due();
        let before = ports.table.now();
        let outcome = run(&ports).await;
        assert_eq!((outcome.polls, outcome.pending), (1, 1), "{outcome:?}");
        let record = ports.record();
        waits.push((record.reconcile_at.unwrap().unix_ms - before.unix_ms) / 1000);
        assert!(record.files.is_empty() && record.stage == Stage::Submitted);
    }
    assert_eq!(waits, [30, 60, 120, 240]);
    assert_eq!(ports.record().last_poll.unwrap().outcome, "unreachable");
    ports.until_due();
    assert_eq!(run(&ports).await.results, 1);
    let record = ports.record();
    assert_eq!((record.stage, record.polls, record.files.len()), (Stage::Final, 5, 2));
    assert_eq!(ports.table.messages().len(), 2, "each file sent once");
}

#[tokio::test]
async fn a_refused_key_changes_nothing_but_the_poll_bookkeeping() {
    for refusal in
        [status(401), ProviderAnswer::Http { status: 200, body: br#"{"code":401,"msg":"bad key"}"#.to_vec() }]
    {
        let ports = MemoryPorts::new(vec![refusal]);
        register(&ports);
        ports.until_due();
        let before = ports.record();
        let outcome = run(&ports).await;
        assert_eq!((outcome.polls, outcome.unauthorized, outcome.refused), (1, 1, true), "{outcome:?}");
        let counted = ports.measures.lock().unwrap().last().copied();
        assert_eq!(
            counted,
            Some(Measure::Reconciled {
                polls: 1,
                unanswered: 0,
                refused: 1,
                unpaid: 0,
                given_up: 0,
                failed: 0,
                broken: 0,
                oldest_due_seconds: 0,
            }),
            "alarmed on"
        );
        let after = ports.record();
        assert_eq!(after.polls, 1);
        assert!(after.last_poll.as_ref().unwrap().outcome.ends_with("_401"));
        let bookkeeping_only = TaskRecord {
            polls: before.polls,
            last_poll: before.last_poll.clone(),
            reconcile_at: before.reconcile_at,
            poll_interval_seconds: before.poll_interval_seconds,
            version: before.version,
            ..after
        };
        assert_eq!(bookkeeping_only, before);
        assert!(ports.table.messages().is_empty() && ports.bodies.lock().unwrap().is_empty());
    }
}

/// Credits run out (402): the task stays watched, polled as pending, and the run is counted
/// for its alarm.
#[tokio::test]
async fn polls_refused_for_credits_are_counted() {
    let unpaid_body = br#"{"code":402,"msg":"insufficient credits"}"#.to_vec();
    for unpaid in [
        ProviderAnswer::Http { status: 402, body: unpaid_body.clone() },
        ProviderAnswer::Http { status: 200, body: unpaid_body },
    ] {
        let captured = stemvault_aws::log_capture::capture_logs();
        let ports = MemoryPorts::new(vec![unpaid]);
        register(&ports);
        ports.until_due();
        let outcome = run(&ports).await;
        assert_eq!((outcome.polls, outcome.unpaid, outcome.pending, outcome.unauthorized), (1, 1, 0, 0), "{outcome:?}");
        let logs = captured.text();
        let said = captured.lines_with("credits (402)");
        assert!(said.len() == 1 && said[0].is(Level::ERROR, &[]), "one error line a run: {logs}");
        let counted = ports.measures.lock().unwrap().last().copied();
        let alarmed = Measure::Reconciled {
            polls: 1,
            unanswered: 0,
            refused: 0,
            unpaid: 1,
            given_up: 0,
            failed: 0,
            broken: 0,
            oldest_due_seconds: 0,
        };
        assert_eq!(counted, Some(alarmed));
        let after = ports.record();
        assert!(after.reconcile_at.is_some() && after.last_poll.unwrap().outcome.ends_with("_402"), "still watched");
    }
}

/// docs.sunoapi.org's codes read as its documentation gives them (PROVIDER=sunoapi): its 429,
/// "insufficient credits", is a poll refused for the credits (the run's polls end, counted
/// for `provider-credits-refused`), not a rate limit; its 404, "invalid request method or
/// path", is no word of the task (no run of "not found" starts, so a wrong setting gives
/// nothing up). With kie, each means what kie says.
#[tokio::test]
async fn sunoapi_codes_are_read_as_its_documentation_gives_them() {
    use suno_callbacks::poll::Site;
    let code = |code: u16| ProviderAnswer::Http { status: 200, body: format!(r#"{{"code":{code}}}"#).into_bytes() };
    let polled = |site: Site, answer: ProviderAnswer| async move {
        let ports = MemoryPorts::new(vec![answer]);
        register(&ports);
        ports.until_due();
        let settings = Settings { site, ..settings() };
        let outcome = reconcile(&ports, &settings, "run", ports.table.now().plus(Duration::from_secs(60))).await;
        (outcome.unwrap(), ports.record())
    };
    let (outcome, record) = polled(Site::SunoApi, code(429)).await;
    assert_eq!((outcome.unpaid, outcome.refused, outcome.rate_limited), (1, true, false), "{outcome:?}");
    assert_eq!(record.last_poll.unwrap().outcome, "provider_402");
    let (outcome, _) = polled(Site::Kie, code(429)).await;
    assert_eq!((outcome.unpaid, outcome.rate_limited), (0, true), "{outcome:?}");

    let (outcome, record) = polled(Site::SunoApi, code(404)).await;
    assert_eq!((outcome.polls, outcome.not_found, outcome.unanswered), (1, 0, 1), "{outcome:?}");
    assert_eq!((record.last_poll.unwrap().outcome.as_str(), record.not_found_since), ("unreadable", None));
    let (outcome, record) = polled(Site::Kie, code(404)).await;
    assert_eq!((outcome.not_found, record.not_found_since.is_some()), (1, true), "{outcome:?}");
}

#[tokio::test]
async fn a_callback_after_a_poll_and_a_poll_after_a_callback_add_nothing() {
    // Poll first, then the provider's late callback.
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    ports.until_due();
    run(&ports).await;
    let event = parse_callback(CALLBACK).unwrap();
    let late = accept(&ports, &accept::Settings::default(), &event, CALLBACK, "req-1", None).await.unwrap();
    assert_eq!(late.files_queued, 0);
    assert_eq!(ports.table.messages().len(), 2);
    assert_eq!(ports.record().files.len(), 2);

    // A `first` callback, then a poll that still says `first` (nothing new), then one that
    // says complete: each file is sent once.
    let poll_first =
        br#"{"code":200,"msg":"success","data":{"taskId":"3e63b4cc88d52611159371f6af5571e7","status":"FIRST_SUCCESS",
        "response":{"sunoData":[{"id":"a1","audioUrl":"https://cdn1.suno.ai/a1.mp3"},{"id":"a2","audioUrl":""}]}}}"#;
    let poll_complete = br#"{"code":200,"msg":"success","data":{"taskId":"3e63b4cc88d52611159371f6af5571e7","status":"SUCCESS",
        "response":{"sunoData":[{"id":"a1","audioUrl":"https://cdn1.suno.ai/a1.mp3"},{"id":"a2","audioUrl":"https://cdn1.suno.ai/a2.mp3"}]}}}"#;
    let ports = MemoryPorts::new(vec![
        ProviderAnswer::Http { status: 200, body: poll_first.to_vec() },
        ProviderAnswer::Http { status: 200, body: poll_complete.to_vec() },
    ]);
    let event = parse_callback(FIRST_OF_TASK).unwrap();
    assert_eq!(event.stage, Stage::First);
    accept(&ports, &accept::Settings::default(), &event, FIRST_OF_TASK, "req-1", None).await.unwrap();
    assert_eq!(ports.record().reconcile.as_deref(), Some("due"), "stuck at first: watched");
    ports.until_due();
    assert_eq!(run(&ports).await.results, 1);
    assert_eq!((ports.record().stage, ports.table.messages().len()), (Stage::First, 1));
    ports.until_due();
    assert_eq!(run(&ports).await.results, 1);
    let record = ports.record();
    assert_eq!((record.stage, record.reconcile.as_deref()), (Stage::Complete, None));
    let sent: Vec<String> = ports.table.messages().into_iter().map(|(_, job)| job.name).collect();
    assert_eq!(sent, ["tracks/a1/audio", "tracks/a2/audio"]);
}

/// A task whose polls came late (the runs behind: never polled, here) gets a poll when its
/// give-up time has come, and is given up once a poll answers that it is still pending; one
/// the provider does not answer (a rate limit) is asked again; one whose last poll brings its
/// result is recorded, not given up.
#[tokio::test]
async fn a_task_polled_late_gets_a_last_poll_before_it_is_given_up() {
    let ports = registered_at_its_give_up_time(vec![pending()]);
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.polls), (0, 1), "its last poll: {outcome:?}");
    assert!(ports.record().abandoned.is_none());
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.polls), (1, 0), "{outcome:?}");
    let counted = ports.measures.lock().unwrap().last().copied();
    assert!(matches!(counted, Some(Measure::Reconciled { given_up: 1, .. })), "{counted:?}");

    // A last poll the provider does not answer (a rate limit) is owed again: not given up.
    let limited = registered_at_its_give_up_time(vec![status(430), pending()]);
    let outcome = run(&limited).await;
    assert_eq!((outcome.abandoned, outcome.polls), (0, 1), "{outcome:?}");
    limited.until_due();
    assert_eq!(run(&limited).await.polls, 1, "asked again, answered pending");
    limited.until_due();
    assert_eq!(run(&limited).await.abandoned, 1);

    // Reached three days past its give-up time, and rate-limited then: asked again within the
    // day that poll began, not given up at its next run.
    let late = MemoryPorts::new(vec![status(430), pending()]);
    register(&late);
    late.table.advance(settings().give_up_after + Duration::from_secs(3 * 24 * 3600));
    assert_eq!(run(&late).await.polls, 1);
    assert!(late.record().last_chance_from.is_some(), "its last chance began");
    late.until_due();
    let outcome = run(&late).await;
    assert_eq!((outcome.abandoned, outcome.polls), (0, 1), "{outcome:?}");
    late.until_due();
    assert_eq!(run(&late).await.abandoned, 1);

    let found = registered_at_its_give_up_time(vec![success()]);
    let outcome = run(&found).await;
    assert_eq!((outcome.abandoned, outcome.results), (0, 1), "{outcome:?}");
    assert_eq!(found.record().stage, Stage::Final);
}

/// A last poll past the give-up time whose result the table refuses (recorded `unrecorded`)
/// marks the task's last chance as any other poll does, and is owed again: the next run polls
/// it rather than giving it up, and records the result.
#[tokio::test]
async fn an_unrecorded_last_poll_is_marked_and_asked_again() {
    let ports = registered_at_its_give_up_time(vec![success(), success()]);
    ports.table.fail_saves(1, StoreError::Rejected("item too large".into()));
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_failed, outcome.results, outcome.abandoned), (1, 0, 0), "{outcome:?}");
    let record = ports.record();
    assert_eq!(record.last_poll.as_ref().map(|p| p.outcome.as_str()), Some("unrecorded"));
    assert!(record.last_chance_from.is_some(), "its last chance began");
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.results), (0, 1), "{outcome:?}");
    assert_eq!(ports.record().stage, Stage::Final);
}

/// Polled on time until its retention ran out, a task is given up as it comes due, without
/// another poll.
#[tokio::test]
async fn a_task_still_without_a_result_is_given_up_after_the_retention() {
    let ports = MemoryPorts::new(vec![pending(), pending()]);
    register(&ports);
    ports.until_due();
    ports.table.advance(settings().give_up_after - Duration::from_secs(600 + 60));
    assert_eq!(run(&ports).await.polls, 1, "its last poll, a minute before its time");
    assert!(ports.record().last_chance_from.is_none(), "a poll on time is no last chance");
    ports.table.advance(Duration::from_secs(60));
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.polls), (1, 0), "{outcome:?}");
    let counted = ports.measures.lock().unwrap().last().copied();
    assert_eq!(
        counted,
        Some(Measure::Reconciled {
            polls: 0,
            unanswered: 0,
            refused: 0,
            unpaid: 0,
            given_up: 1,
            failed: 0,
            broken: 0,
            // Due 30 s after that last poll (the first interval), a minute before this run.
            oldest_due_seconds: 30,
        }),
        "alarmed on"
    );
    let record = ports.record();
    assert_eq!(record.abandoned.as_ref().map(|a| a.reason.as_str()), Some("abandoned"));
    let published = ports.events.lock().unwrap().clone();
    let ids: Vec<&str> = published.iter().map(|e| e.detail.event_id.as_str()).collect();
    assert_eq!(ids, [given_up_id("abandoned", &record)]);
    assert_eq!((record.reconcile, record.open, record.vault), (None, None, VaultState::Pending));
    ports.table.advance(Duration::from_secs(3600));
    assert_eq!(run(&ports).await.tasks_due, 0);

    // A settle that read the task before the give-up puts a watch back (a file expired): the
    // next run takes it away, polling nothing and publishing nothing more.
    let mut rewatched = ports.record();
    reconcile::watch(&mut rewatched, ports.table.now(), Duration::from_secs(30));
    ports.table.put_record(rewatched);
    ports.table.advance(Duration::from_secs(60));
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.unwatched, outcome.polls), (1, 1, 0), "{outcome:?}");
    assert_eq!(ports.record().reconcile, None);
    assert_eq!(ports.events.lock().unwrap().len(), 1, "no second Task Failed");
}

/// A late callback that brings a task given up a new stage revives it, and its wait starts
/// again: it is polled, not given up again at its next run.
#[tokio::test]
async fn a_task_revived_by_a_late_callback_is_waited_for_again() {
    let music_pending = format!(r#"{{"code":200,"msg":"success","data":{{"taskId":"{TASK}","status":"PENDING"}}}}"#);
    let ports = MemoryPorts::new(vec![ProviderAnswer::Http { status: 200, body: music_pending.into_bytes() }]);
    let registration = Registration { family: Family::Music, client_ref: None };
    let registered = registration.record(&TaskId::parse(TASK).unwrap(), ports.table.now(), Duration::from_secs(600));
    ports.table.put_record(registered);
    ports.table.advance(settings().give_up_after);
    assert_eq!(run(&ports).await.polls, 1, "never polled: a last poll first");
    ports.until_due();
    assert_eq!(run(&ports).await.abandoned, 1);
    let first_given_up = ports.record();

    let event = parse_callback(FIRST_OF_TASK).unwrap();
    accept(&ports, &settings().accept, &event, FIRST_OF_TASK, "req-1", None).await.unwrap();
    assert_eq!((ports.record().abandoned, ports.record().reconcile.as_deref()), (None, Some("due")));
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.polls, outcome.pending), (0, 1, 1), "{outcome:?}");

    // Given up once more only `give_up_after` after the stage came.
    let revived_at = ports.record().callbacks.values().next().expect("the late callback").received_at;
    ports.table.advance(settings().give_up_after);
    assert_eq!(run(&ports).await.polls, 1, "last polled long before: a last poll first");
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.abandoned, outcome.polls), (1, 0), "{outcome:?}");
    let abandoned = ports.record().abandoned.expect("given up");
    assert!(abandoned.at >= revived_at.plus(settings().give_up_after), "{abandoned:?}");
    // Each give-up its own event: consumers deduplicating by id see the second.
    let published = ports.events.lock().unwrap().clone();
    let ids: Vec<&str> =
        published.iter().filter(|e| e.kind == events::EventType::Failed).map(|e| e.detail.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [given_up_id("abandoned", &first_given_up), format!("{TASK}.failed.abandoned.{}.first", revived_at.unix_ms)]
    );
}

/// A music task at `first` (its one file queued) at its give-up time, its last poll made.
async fn first_at_its_give_up_time() -> MemoryPorts {
    let ports = MemoryPorts::new(vec![pending(), pending()]);
    let event = parse_callback(FIRST_OF_TASK).unwrap();
    accept(&ports, &settings().accept, &event, FIRST_OF_TASK, "req-1", None).await.unwrap();
    ports.table.advance(settings().give_up_after);
    assert_eq!(run(&ports).await.polls, 1, "a last poll first");
    ports.until_due();
    ports
}

/// The id of the `Task Failed` giving `record` up for `reason`: the wait it ends (since the
/// task's stage came, or since the provider first said it did not know it) and its stage.
fn given_up_id(reason: &str, record: &TaskRecord) -> String {
    let since = match reason {
        "not_found" => record.not_found_since.expect("said not found"),
        _ => reconcile::waiting_since(record),
    };
    format!("{TASK}.failed.{reason}.{}.{}", since.unix_ms, record.stage.as_str())
}

/// The ids of the give-ups' `Task Failed` events published so far, in order.
fn give_up_ids(ports: &MemoryPorts) -> Vec<String> {
    let published = ports.events.lock().unwrap().clone();
    published.into_iter().filter(|e| e.detail.given_up.is_some()).map(|e| e.detail.event_id).collect()
}

/// The first event's id (the callback's), and every later one's id and `done`.
fn said_since_the_callback(ports: &MemoryPorts) -> (String, Vec<(String, bool)>) {
    let published = ports.events.lock().unwrap().clone();
    let said = published.iter().skip(1).map(|e| (e.detail.event_id.clone(), e.detail.done)).collect();
    (published[0].detail.event_id.clone(), said)
}

/// `record` as a downloader leaves it once it stored every file and settled the task.
fn settled_by_a_downloader(record: &TaskRecord) -> TaskRecord {
    let mut settled = record.clone();
    for file in settled.files.values_mut() {
        (file.status, file.claim, file.lease_until) = (FileStatus::Stored, None, None);
    }
    (settled.vault, settled.manifest_key) = (VaultState::Complete, Some(format!("tasks/{TASK}/manifest.json")));
    settled.version += 1;
    settled
}

/// A task given up at `first` while its file is still copied says `done: false`; a downloader
/// that settles the task between that event and the give-up write said `false` too (the
/// task not given up when it read it). Once the give-up write applies, the task is done and
/// nothing else would say so: a `Task Vaulted` of its own (`….given_up`) says it.
#[tokio::test]
async fn a_task_settled_between_its_give_up_event_and_write_is_said_done() {
    let ports = first_at_its_give_up_time().await;
    // The downloader stores the file and settles the task while the give-up's event goes out.
    *ports.after_publish.lock().unwrap() = Some(settled_by_a_downloader(&ports.record()));
    let outcome = run(&ports).await;
    assert_eq!(outcome.abandoned, 1, "{outcome:?}");
    let (callbacks, said) = said_since_the_callback(&ports);
    assert_eq!(callbacks, format!("{TASK}.stage.first"), "the callback's");
    let generation = ports.record().generation;
    assert_eq!(
        said,
        [
            (given_up_id("abandoned", &ports.record()), false),
            (format!("{TASK}.vaulted.{generation}.first.given_up"), true),
        ]
    );
    let (_, done) = ports.record().shown_vault_state();
    assert!(done, "GET says done too");
}

/// The same, the give-up's write failing the first time: the next run gives the task up
/// again under the first event's id, now saying `done: true`, which consumers drop as its
/// duplicate; the `Task Vaulted` of the task given up still says it.
#[tokio::test]
async fn a_task_settled_before_its_give_up_is_tried_again_is_said_done() {
    let ports = first_at_its_give_up_time().await;
    ports.table.fail_saves(1, StoreError::Unavailable("the table timed out".into()));
    assert_eq!(run(&ports).await.abandoned, 0, "its write failed");
    ports.table.put_record(settled_by_a_downloader(&ports.record()));
    ports.until_due();
    assert_eq!(run(&ports).await.abandoned, 1);
    let (_, said) = said_since_the_callback(&ports);
    let generation = ports.record().generation;
    let failed = given_up_id("abandoned", &ports.record());
    let vaulted = format!("{TASK}.vaulted.{generation}.first.given_up");
    assert_eq!(said, [(failed.clone(), false), (failed, true), (vaulted, true)]);
}

/// A give-up whose write failed, tried again after writes that revive nothing moved the
/// task's generation (a registration giving its client_ref; the sweeper sending its stranded
/// file again): the same id, so consumers drop the second as the first's duplicate.
#[tokio::test]
async fn a_give_up_tried_again_after_other_writes_keeps_its_id() {
    for write in ["client_ref", "sweep"] {
        let ports = first_at_its_give_up_time().await;
        ports.table.fail_saves(1, StoreError::Unavailable("the table timed out".into()));
        assert_eq!(run(&ports).await.abandoned, 0, "its write failed");
        let read = ports.record();
        let written = match write {
            "client_ref" => {
                let registration = Registration { family: read.family, client_ref: Some("order-17".into()) };
                let mut registered = read.clone();
                registration.completion(&read, ports.table.now()).expect("a client_ref to add").apply(&mut registered);
                registered
            }
            _ => {
                let sweeper =
                    stemvault_vault::ingest::Claimant { id: "sweep-1".into(), lease: Duration::from_secs(900) };
                let (claimed, _) = stemvault_vault::ingest::reclaim(&read, &sweeper, ports.table.now(), &[]);
                claimed.expect("its file, queued long ago, is stranded")
            }
        };
        assert_eq!(written.generation, read.generation + 1, "{write} moved the generation");
        ports.table.put_record(written);
        ports.until_due();
        assert_eq!(run(&ports).await.abandoned, 1, "{write}");
        let id = given_up_id("abandoned", &read);
        assert_eq!(give_up_ids(&ports), [id.clone(), id], "{write}: one give-up, one id");
    }
}

/// A give-up published by a run without a provider key whose write failed, tried again once
/// a key was set: that run owes the task its last poll first (it was never polled), which
/// moves its polls; the give-up after it keeps the first one's id.
#[tokio::test]
async fn a_give_up_tried_again_after_its_last_poll_keeps_its_id() {
    let ports = MemoryPorts::new(vec![pending()]);
    let event = parse_callback(FIRST_OF_TASK).unwrap();
    accept(&ports, &settings().accept, &event, FIRST_OF_TASK, "req-1", None).await.unwrap();
    ports.table.advance(settings().give_up_after);
    ports.table.fail_saves(1, StoreError::Unavailable("the table timed out".into()));
    let keyless = Settings { polls: false, ..settings() };
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    assert_eq!(reconcile(&ports, &keyless, "run", stop_at).await.unwrap().abandoned, 0, "its write failed");
    let read = ports.record();
    ports.until_due();
    assert_eq!(run(&ports).await.polls, 1, "a key since: its last poll");
    ports.until_due();
    assert_eq!(run(&ports).await.abandoned, 1);
    let id = given_up_id("abandoned", &read);
    assert_eq!(give_up_ids(&ports), [id.clone(), id], "one give-up, one id");
}

/// A task given up and settled whose settle recorded saying so (its `announced`: it read the
/// task given up, so its own `….given_up` went out) gets no second one from the reconciler;
/// one whose settle said it before the give-up does.
#[tokio::test]
async fn a_task_given_up_settled_is_said_done_once() {
    let ports = first_at_its_give_up_time().await;
    let task = TaskId::parse(TASK).unwrap();
    let mut given_up = settled_by_a_downloader(&ports.record());
    given_up.abandoned = Some(stemvault_vault::Abandoned { reason: GiveUpReason::Abandoned, at: ports.table.now() });
    let key = given_up.manifest_key.clone().expect("settled");
    given_up.announced = Some(events::announcement(&given_up, given_up.vault, &key));
    ports.table.put_record(given_up.clone());
    let before = ports.events.lock().unwrap().len();
    task::done_once_given_up(&ports, &settings(), &task).await;
    assert_eq!(ports.events.lock().unwrap().len(), before, "its settle said it");

    let unabandoned = TaskRecord { abandoned: None, ..given_up.clone() };
    given_up.announced = Some(events::announcement(&unabandoned, given_up.vault, &key));
    ports.table.put_record(given_up);
    task::done_once_given_up(&ports, &settings(), &task).await;
    let published = ports.events.lock().unwrap().clone();
    assert_eq!(published.len(), before + 1);
    assert!(published[before].detail.event_id.ends_with(".given_up") && published[before].detail.done);
}

/// A given-up task read again without an answer, or a task the table does not hold, is said
/// nothing more; the same task read again once the table answers is.
#[tokio::test]
async fn a_given_up_task_not_read_again_is_not_said_done() {
    let ports = first_at_its_give_up_time().await;
    let task = TaskId::parse(TASK).unwrap();
    let mut given_up = settled_by_a_downloader(&ports.record());
    given_up.abandoned = Some(stemvault_vault::Abandoned { reason: GiveUpReason::Abandoned, at: ports.table.now() });
    ports.table.put_record(given_up);
    let before = ports.events.lock().unwrap().len();
    ports.table.fail_loads(1, StoreError::Unavailable("the table timed out".into()));
    task::done_once_given_up(&ports, &settings(), &task).await;
    let gone = TaskId::parse("0123456789abcdef0123456789abcdef").unwrap();
    task::done_once_given_up(&ports, &settings(), &gone).await;
    assert_eq!(ports.events.lock().unwrap().len(), before, "neither read");

    task::done_once_given_up(&ports, &settings(), &task).await;
    assert_eq!(ports.events.lock().unwrap().len(), before + 1, "read");
}

/// Best effort: a publish that fails leaves the task as given up (an ERROR in the log).
#[tokio::test]
async fn a_given_up_tasks_task_vaulted_that_cannot_be_published_is_given_up() {
    let ports = first_at_its_give_up_time().await;
    let mut given_up = settled_by_a_downloader(&ports.record());
    given_up.abandoned = Some(stemvault_vault::Abandoned { reason: GiveUpReason::Abandoned, at: ports.table.now() });
    ports.table.put_record(given_up.clone());
    let before = ports.events.lock().unwrap().len();
    ports.publish_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let tried = ports.publishes_tried.load(std::sync::atomic::Ordering::SeqCst);
    task::done_once_given_up(&ports, &settings(), &TaskId::parse(TASK).unwrap()).await;
    assert_eq!(ports.publishes_tried.load(std::sync::atomic::Ordering::SeqCst), tried + 1, "tried once");
    assert_eq!(ports.events.lock().unwrap().len(), before, "nothing published");
    assert_eq!(ports.record(), given_up, "the task as it was");
}

/// A task the provider keeps saying it does not know (registered under the wrong family, say)
/// is given up after a day of such answers, not polled for the 14-day retention.
#[tokio::test]
async fn a_task_the_provider_does_not_know_is_given_up_after_a_day_of_not_found() {
    let ports = MemoryPorts::new(vec![unknown(), status(503), unknown()]);
    register(&ports);
    let mut runs = 0;
    let first = loop {
        ports.until_due();
        let outcome = run(&ports).await;
        runs += 1;
        if outcome.abandoned == 1 {
            assert_eq!(outcome.polls, 0, "{outcome:?}");
            break ports.record();
        }
        assert_eq!(outcome.polls, 1, "{outcome:?}");
        assert!(runs < 60, "never given up");
    };
    let since = first.not_found_since.expect("dated");
    let waited = ports.table.now().unix_ms - since.unix_ms;
    let day = reconcile::NOT_FOUND_GIVE_UP_AFTER.as_millis() as i64;
    // At the run after the first poll a day on (polls an hour apart at most).
    assert!(waited >= day && waited < day + 2 * 3_600_000, "given up {waited} ms after the first not found");
    assert!(runs < 40, "{runs} polls");
    assert_eq!(first.abandoned.as_ref().map(|a| a.reason.as_str()), Some("not_found"));
    let published = ports.events.lock().unwrap().clone();
    let ids: Vec<&str> = published.iter().map(|e| e.detail.event_id.as_str()).collect();
    assert_eq!(ids, [given_up_id("not_found", &first)]);
    assert_eq!((first.reconcile, first.open), (None, None));
}

/// Runs, each when the task is due, until one gives it up; the task then.
async fn run_until_given_up(ports: &MemoryPorts) -> TaskRecord {
    for _ in 0..60 {
        ports.until_due();
        if run(ports).await.abandoned == 1 {
            return ports.record();
        }
    }
    panic!("never given up");
}

/// A task given up as not found, registered again under another family (its polls asked the
/// wrong endpoint) and given up there too: each give-up its own event id.
#[tokio::test]
async fn a_task_given_up_again_after_a_registration_gets_its_own_task_failed() {
    let ports = MemoryPorts::new(vec![unknown()]);
    register(&ports);
    let first = run_until_given_up(&ports).await;
    let other = Registration { family: Family::Music, client_ref: Some("order-17".into()) };
    let mut corrected = first.clone();
    other.completion(&first, ports.table.now()).expect("the family").apply(&mut corrected);
    ports.table.put_record(corrected);
    let second = run_until_given_up(&ports).await;
    assert_eq!((second.family, second.generation), (Family::Music, first.generation + 1));
    let published = ports.events.lock().unwrap().clone();
    let ids: Vec<&str> = published.iter().map(|e| e.detail.event_id.as_str()).collect();
    assert!(second.not_found_since > first.not_found_since, "not found at the other family's endpoint since");
    assert_eq!(ids, [given_up_id("not_found", &first), given_up_id("not_found", &second)]);
}

/// `record` corrected to `family` by a registration at `now`, as the results function writes it.
fn corrected(record: &TaskRecord, family: Family, now: Timestamp) -> TaskRecord {
    let registration = Registration { family, client_ref: record.client_ref.clone() };
    let mut corrected = record.clone();
    registration.completion(record, now).expect("a correction").apply(&mut corrected);
    corrected
}

/// A registration giving the task another family while a poll of the old family's endpoint
/// is out: what that endpoint said is not recorded against the new family (which would count
/// towards a give-up there and open the family to any registration again).
#[tokio::test]
async fn a_poll_of_the_family_a_registration_corrected_meanwhile_is_not_recorded() {
    let ports = MemoryPorts::new(vec![unknown()]);
    register(&ports);
    ports.until_due();
    run(&ports).await;
    let before = ports.record();
    assert!(before.not_found_since.is_some());
    ports.until_due();
    *ports.during_poll.lock().unwrap() = Some(corrected(&before, Family::Music, ports.table.now()));
    assert_eq!(run(&ports).await.polls, 1);
    let after = ports.record();
    assert_eq!((after.family, after.not_found_since, after.last_poll), (Family::Music, None, None));
    assert_eq!(after.polls, before.polls, "the old endpoint's answer is not counted");
    assert!(after.reconcile_at.is_some_and(|at| at <= ports.table.now()), "due at once at the new endpoint");
}

/// A registration giving the task another family between the Task Failed event and the
/// give-up write: not given up (its polls start afresh at the new family's endpoint).
#[tokio::test]
async fn a_registration_just_before_the_give_up_write_wins() {
    let ports = registered_at_its_give_up_time(vec![unknown()]);
    assert_eq!(run(&ports).await.polls, 1, "a last poll first");
    let record = ports.record();
    assert!(record.not_found_since.is_some());
    *ports.after_publish.lock().unwrap() = Some(corrected(&record, Family::Music, ports.table.now()));
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!(ports.events.lock().unwrap().len(), 1, "the event went out");
    assert_eq!(outcome.abandoned, 0, "{outcome:?}");
    let after = ports.record();
    assert_eq!((after.family, after.abandoned, after.reconcile.as_deref()), (Family::Music, None, Some("due")));
}

/// A callback that lands between the Task Failed event and the write that gives the task up
/// wins: the task is not given up (nor counted so), though the event went out.
#[tokio::test]
async fn a_callback_just_before_the_give_up_write_wins() {
    let ports = MemoryPorts::new(vec![unknown()]);
    register(&ports);
    for _ in 0..40 {
        ports.until_due();
        run(&ports).await;
        // Given up at the next run: a poll a day on said it again.
        let record = ports.record();
        let day_on = record.not_found_since.map(|since| since.plus(reconcile::NOT_FOUND_GIVE_UP_AFTER));
        if day_on.is_some_and(|day_on| record.last_poll.as_ref().is_some_and(|poll| poll.at >= day_on)) {
            break;
        }
    }
    let mut called_back = ports.record();
    reconcile::after_merge(&mut called_back, Some(Stage::Submitted), ports.table.now(), Duration::from_secs(600));
    called_back.version += 1;
    *ports.after_publish.lock().unwrap() = Some(called_back);
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!(ports.events.lock().unwrap().len(), 1, "the event went out");
    assert_eq!((outcome.abandoned, outcome.polls), (0, 0), "{outcome:?}");
    assert_eq!(ports.record().abandoned, None);
}

/// Ports answering `script`, CALLBACK accepted; the record it left.
async fn accepted(script: Vec<ProviderAnswer>) -> (MemoryPorts, TaskRecord) {
    let ports = MemoryPorts::new(script);
    let event = parse_callback(CALLBACK).unwrap();
    accept(&ports, &accept::Settings::default(), &event, CALLBACK, "req-1", None).await.unwrap();
    let record = ports.record();
    (ports, record)
}

/// The index may still list a task due that its item now says is due later (polled since, by
/// another run; the index is eventually consistent): it is not polled again before its time.
#[tokio::test]
async fn a_task_the_index_lists_due_late_is_not_polled_before_its_time() {
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    ports.index_lags.lock().unwrap().insert(TASK.into(), ports.table.now().rfc3339());
    let outcome = run(&ports).await;
    assert_eq!(outcome.polls, 0, "{outcome:?}");
    assert!(ports.polls.lock().unwrap().is_empty());
}

/// A poll that could not be sent for want of a key (the provider secret unreadable since
/// start-up) is kept on an unanswered poll's schedule (recorded `unreachable`, polled again
/// later), but counted apart: not as a poll the provider left unanswered.
#[tokio::test]
async fn a_poll_not_sent_for_want_of_a_key_is_rescheduled_but_not_counted_as_a_poll() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let ports = MemoryPorts::new(vec![ProviderAnswer::NoKey("no provider API key".into())]);
    register(&ports);
    ports.until_due();
    let due_at = ports.record().reconcile_at;
    let outcome = run(&ports).await;
    assert_eq!((outcome.polls, outcome.unanswered, outcome.not_sent), (0, 0, 1), "{outcome:?}");
    let record = ports.record();
    assert_eq!(record.last_poll.map(|p| p.outcome), Some("unreachable".to_owned()));
    assert!(record.reconcile_at > due_at, "polled again later");
    let measures = ports.measures.lock().unwrap().clone();
    assert!(matches!(measures[..], [Measure::Reconciled { polls: 0, unanswered: 0, .. }]), "{measures:?}");
    // A warning for the run, pointing at the secret, not at the provider.
    let logs = captured.text();
    let said = captured.lines_with("due tasks not polled");
    assert!(said.len() == 1 && said[0].is(Level::WARN, &[r#""not_sent":1"#]), "{logs}");
}

/// A registered task polled once, due, answered `answer`: the run's outcome, and the ports.
async fn polled_once(answer: ProviderAnswer) -> (Outcome, MemoryPorts) {
    let ports = MemoryPorts::new(vec![answer]);
    register(&ports);
    ports.until_due();
    (run(&ports).await, ports)
}

#[tokio::test]
async fn not_found_answers_are_counted_as_such() {
    let (outcome, ports) = polled_once(unknown()).await;
    assert_eq!((outcome.polls, outcome.not_found, outcome.pending), (1, 1, 0), "{outcome:?}");
    assert_eq!(ports.record().last_poll.unwrap().outcome, "provider_404");
}

/// A success that holds no record (`data` null: the family's endpoint does not hold the task,
/// registered under another family, say) is not found: its run starts, and a day of them gives
/// the task up, where an unreadable answer would poll it for the whole retention.
#[tokio::test]
async fn a_success_without_a_record_is_not_found() {
    let body = include_bytes!("../../../../fixtures/polls/own/poll-any-record-info__own__200-no-task.json");
    let ports = MemoryPorts::new(vec![ProviderAnswer::Http { status: 200, body: body.to_vec() }]);
    register(&ports);
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.polls, outcome.not_found, outcome.unreadable), (1, 1, 0), "{outcome:?}");
    let record = ports.record();
    assert_eq!(record.last_poll.unwrap().outcome, "no_record");
    assert!(record.not_found_since.is_some());
}

/// An HTTP 404 or 422 (a wrong PROVIDER_BASE_URL: a gateway's HTML page, or its JSON error
/// with a `code`) does not say the task is unknown: no run of "not found" starts, so nothing is
/// given up for it.
#[tokio::test]
async fn an_http_404_or_422_is_not_not_found() {
    let bodies: [&[u8]; 3] = [
        b"<html><body>Not Found</body></html>",
        br#"{"code":404,"msg":"no such endpoint"}"#,
        br#"{"code":422,"msg":"unprocessable"}"#,
    ];
    for (status, body) in [404, 422].into_iter().flat_map(|s| bodies.map(|b| (s, b))) {
        let page = ProviderAnswer::Http { status, body: body.to_vec() };
        let ports = MemoryPorts::new(vec![page]);
        register(&ports);
        ports.until_due();
        let outcome = run(&ports).await;
        assert_eq!((outcome.polls, outcome.not_found), (1, 0), "{status}: {outcome:?}");
        let record = ports.record();
        assert_eq!(record.last_poll.unwrap().outcome, "unreadable", "{status}");
        assert_eq!(record.not_found_since, None, "{status}");
    }
}

/// A PROVIDER_BASE_URL that is no API root (a site answering a web page, JSON without the
/// provider's `code`, a redirect, an HTTP 404) is said as an error, not as a task pending or
/// an answer it could not read; every other poll would meet it too, so the run polls no
/// other task (one error a run, not one a task), and those left are still due.
#[tokio::test]
async fn a_redirect_or_a_web_page_for_an_answer_is_an_error_that_holds_the_run() {
    for (answer, outcome) in [
        (ProviderAnswer::Http { status: 301, body: Vec::new() }, "http_301"),
        (ProviderAnswer::Http { status: 200, body: b"<html><body>Welcome</body></html>".to_vec() }, "unreadable"),
        (ProviderAnswer::Http { status: 200, body: br#"{"status":"ok"}"#.to_vec() }, "unreadable"),
        (ProviderAnswer::Http { status: 404, body: br#"{"code":404,"msg":"no such path"}"#.to_vec() }, "unreadable"),
    ] {
        let captured = stemvault_aws::log_capture::capture_logs();
        let (ports, due_before) = two_due(answer);
        let run_outcome = run(&ports).await;
        assert_eq!((run_outcome.tasks_due, run_outcome.polls), (2, 1), "{outcome}: {run_outcome:?}");
        assert!(run_outcome.misdirected && !run_outcome.rate_limited, "{run_outcome:?}");
        assert_eq!(ports.table.record("first-1").unwrap().last_poll.unwrap().outcome, outcome);
        assert_eq!((ports.record().polls, ports.record().reconcile_at), (0, due_before), "left due");
        let logs = captured.text();
        let said = captured.lines_with("is it the provider's API root");
        assert!(said.len() == 1 && said[0].is(Level::ERROR, &[]), "{outcome}: {logs}");
    }
    // A JSON answer without a usable record is the provider's, about its task: the run goes on.
    let (ports, _) = two_due(ProviderAnswer::Http { status: 200, body: br#"{"code":200,"data":7}"#.to_vec() });
    let run_outcome = run(&ports).await;
    assert_eq!((run_outcome.polls, run_outcome.misdirected), (2, false), "{run_outcome:?}");
    // So is a voice task's HTTP 404, which may be its generation record's answer.
    let not_served = ProviderAnswer::Http { status: 404, body: br#"{"code":404,"msg":"no such path"}"#.to_vec() };
    let (ports, _) = two_due(not_served);
    let mut voice = ports.table.record("first-1").unwrap();
    (voice.family, voice.version) = (Family::Voice, voice.version + 1);
    ports.table.put_record(voice);
    let run_outcome = run(&ports).await;
    assert_eq!((run_outcome.polls, run_outcome.misdirected), (2, false), "{run_outcome:?}");
}

/// An answer for another task, a result or still pending (a cache or proxy mixing answers
/// up), is unreadable and logged, not read as this task's: its pending would look like the
/// normal wait for the whole retention.
#[tokio::test]
async fn an_answer_for_another_task_is_unreadable_pending_or_not() {
    let other = "0123456789abcdef0123456789abcdef";
    let pending = format!(r#"{{"code":200,"msg":"success","data":{{"taskId":"{other}","successFlag":"PENDING"}}}}"#);
    let result = String::from_utf8(SUCCESS.to_vec()).unwrap().replace(TASK, other);
    for body in [pending, result] {
        let captured = stemvault_aws::log_capture::capture_logs();
        let ports = MemoryPorts::new(vec![ProviderAnswer::Http { status: 200, body: body.into_bytes() }]);
        register(&ports);
        ports.until_due();
        assert_eq!(run(&ports).await.polls, 1);
        let record = ports.record();
        assert_eq!((record.last_poll.unwrap().outcome.as_str(), record.stage), ("unreadable", Stage::Submitted));
        let logs = captured.text();
        assert!(logs.contains("the provider answered for another task") && logs.contains(other), "{logs}");
    }
}

/// The provider's error message is logged without the links it quotes (a callback URL's
/// token, a file link) and cut to its first 200 characters.
#[tokio::test]
async fn a_provider_error_message_is_logged_without_its_links() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let msg = format!("callBackUrl https://h.example/callback/tok3n-secret is invalid {}", "x".repeat(300));
    let body = serde_json::to_vec(&serde_json::json!({"code": 422, "msg": msg, "data": null})).unwrap();
    let ports = MemoryPorts::new(vec![ProviderAnswer::Http { status: 200, body }]);
    register(&ports);
    ports.until_due();
    assert_eq!(run(&ports).await.polls, 1);
    let logs = captured.text();
    let line = logs.lines().find(|l| l.contains("the provider answered an error code"));
    let line = line.unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("https://h.example/… (sha256 ") && !line.contains("tok3n"), "{line}");
    assert!(!line.contains(&"x".repeat(200)), "cut: {line}");
}

/// An answer without the provider's `code` is logged as an error without the links its
/// message quotes (a signed file link's query).
#[tokio::test]
async fn an_answer_without_a_code_is_logged_without_its_links() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let body = br#"{"msg":"moved to https://h.example/a.mp3?X-Amz-Signature=s3cr3t","data":null}"#.to_vec();
    let ports = MemoryPorts::new(vec![ProviderAnswer::Http { status: 200, body }]);
    register(&ports);
    ports.until_due();
    assert_eq!(run(&ports).await.polls, 1);
    assert_eq!(ports.record().last_poll.unwrap().outcome, "unreadable");
    let logs = captured.text();
    let line = logs.lines().find(|l| l.contains("without the provider's JSON answer"));
    let line = line.unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("https://h.example/… (sha256 ") && !line.contains("s3cr3t"), "{line}");
}

/// An answer too large to read is unreadable (a warning), not the provider unreachable.
#[tokio::test]
async fn an_answer_too_large_to_read_is_unreadable() {
    let ports = MemoryPorts::new(vec![ProviderAnswer::TooLarge { limit: 6 * 1024 * 1024 }]);
    register(&ports);
    ports.until_due();
    assert_eq!(run(&ports).await.polls, 1);
    assert_eq!(ports.record().last_poll.unwrap().outcome, "unreadable");
}

/// An answer holding too many values to read (a few MiB of tiny objects would take more
/// memory than the function has) is that task's unreadable answer, polled again: not a wrong
/// PROVIDER_BASE_URL (its `code` is not read either), so the run polls the next task.
#[tokio::test]
async fn an_answer_with_too_many_values_is_unreadable_and_the_run_goes_on() {
    let objects = vec![r#"{"a":0}"#; suno_callbacks::parse::MAX_JSON_MARKS / 2].join(",");
    let body = format!(
        r#"{{"code":200,"msg":"success","data":{{"taskId":"first-1","response":{{"sunoData":[{objects}]}}}}}}"#
    );
    let (ports, _) = two_due(ProviderAnswer::Http { status: 200, body: body.into_bytes() });
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.polls, outcome.misdirected), (2, 2, false), "{outcome:?}");
    let first = ports.table.record("first-1").unwrap();
    assert_eq!(first.last_poll.unwrap().outcome, "unreadable");
    assert!(first.reconcile_at.is_some(), "polled again");
}

/// Register another task, `broken-1`, due before [`TASK`].
fn register_broken(ports: &MemoryPorts) {
    let registration = Registration { family: Family::VocalSeparation, client_ref: None };
    let broken = registration.record(&TaskId::parse("broken-1").unwrap(), ports.table.now(), Duration::ZERO);
    ports.table.put_record(broken);
}

/// The task item of [`register_broken`]'s task.
fn broken_item(ports: &MemoryPorts) -> serde_dynamo::Item {
    ports.table.task_items().into_iter().find(|(id, _)| id == "broken-1").expect("registered").1
}

/// A task whose handling panics (a bug its record reaches) fails alone: it is put behind an
/// hour, as a failure no retry mends, and the run polls the others.
#[tokio::test]
async fn a_task_that_panics_is_put_behind_and_the_others_are_polled() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    register_broken(&ports);
    ports.table.panic_loading(Some("broken-1"));
    ports.until_due();
    let outcome = reconcile(&ports, &settings(), "run", ports.table.now().plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!((outcome.tasks_due, outcome.tasks_failed, outcome.polls), (2, 1, 1), "{outcome:?}");
    let counted = ports.measures.lock().unwrap().last().copied();
    assert_eq!(
        counted,
        Some(Measure::Reconciled {
            polls: 1,
            unanswered: 0,
            refused: 0,
            unpaid: 0,
            given_up: 0,
            failed: 1,
            broken: 1,
            // The broken task was due at once, 600 s before the other.
            oldest_due_seconds: 600,
        }),
        "alarmed on"
    );
    assert_eq!(*ports.polls.lock().unwrap(), [(Family::VocalSeparation, TASK.to_owned())]);
    let task = broken_item(&ports);
    let later = ports.table.now().plus(reconcile::MAX_POLL_INTERVAL).rfc3339();
    assert_eq!(task.get("reconcile_at"), Some(&serde_dynamo::AttributeValue::S(later)), "put behind an hour");
}

/// A parked body whose replay panics is held, as one whose record an operator must fix: the
/// other tasks' bodies are replayed, and the held one is not tried again until its recheck.
#[tokio::test]
async fn a_replay_that_panics_is_held_and_the_others_are_replayed() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let panicking = format!("parked/{TASK}/final-{}.json", "cd".repeat(32));
    ports.park(&panicking, CALLBACK);
    let replayable = format!("parked/{MUSIC}/first-{}.json", stemvault_vault::accept::body_sha256_hex(MUSIC_FIRST));
    ports.park(&replayable, MUSIC_FIRST);
    ports.table.panic_loading(Some(TASK));
    let held = HeldTasks::default();
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 1, callbacks_still_parked: 1, callbacks_refused: 0 });
    assert!(!ports.bodies.lock().unwrap().contains_key(&replayable), "replayed and deleted");
    let reads = ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    let again = replay_parked(&ports, &settings().accept, &held, "run-2", 50, stop_at).await.unwrap();
    assert_eq!(again.callbacks_still_parked, 1);
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), reads, "held: not read again");
    ports.table.panic_loading(None);
    let fixed = replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-3", 50, stop_at).await.unwrap();
    assert_eq!(fixed.callbacks_replayed, 1, "{fixed:?}");
}

/// A task whose record cannot be read (an item this version cannot read) would fail first in
/// every run, ahead of every other due task: its next poll is put off an hour each time.
#[tokio::test]
async fn an_unreadable_task_is_put_off_and_the_others_are_polled() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    register_broken(&ports);
    // Its version, of all things, is what cannot be read.
    let unreadable = serde_dynamo::AttributeValue::S("three".into());
    ports.table.update_task_item("broken-1", |item| item.insert("version".into(), unreadable.clone()).is_some());

    // One task per run: the unreadable one is due first.
    let one = Settings { max_tasks: 1, ..settings() };
    ports.until_due();
    let first = reconcile(&ports, &one, "run", ports.table.now().plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!((first.unreadable, first.tasks_failed, first.polls), (1, 0, 0), "{first:?}");
    let task = broken_item(&ports);
    let later = ports.table.now().plus(reconcile::MAX_POLL_INTERVAL).rfc3339();
    assert_eq!(task.get("reconcile_at"), Some(&serde_dynamo::AttributeValue::S(later)));
    assert_eq!(task.get("version"), Some(&unreadable), "nothing else touched");
    let second = reconcile(&ports, &one, "run", ports.table.now().plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!((second.tasks_failed, second.polls), (0, 1), "the other task's turn: {second:?}");
    assert_eq!(*ports.polls.lock().unwrap(), [(Family::VocalSeparation, TASK.to_owned())]);
}

/// A task that has its result, watched only because a file's URL expired, is not given up
/// as failed after the retention: it only stops being watched.
#[tokio::test]
async fn a_task_with_its_result_watched_for_an_expired_file_is_only_unwatched_after_the_retention() {
    let (ports, mut record) = accepted(vec![success()]).await;
    assert!(!reconcile::awaits_result(&record), "{:?}", record.stage);
    let file = record.files.values_mut().next().expect("a file");
    file.status = FileStatus::Failed;
    file.error = Some("source answered 410 Gone".into());
    reconcile::watch(&mut record, ports.table.now(), Duration::from_secs(60));
    ports.table.put_record(record);

    ports.table.advance(settings().give_up_after);
    let outcome = run(&ports).await;
    assert_eq!((outcome.unwatched, outcome.abandoned, outcome.polls), (1, 0, 0), "{outcome:?}");
    let record = ports.record();
    assert_eq!((record.abandoned, record.reconcile), (None, None));
    let published = ports.events.lock().unwrap().clone();
    assert!(published.iter().all(|e| !e.detail.event_id.contains(".failed.")), "no Task Failed");
    ports.table.advance(Duration::from_secs(3600));
    assert_eq!(run(&ports).await.tasks_due, 0);
}

/// A settled task watched for a fresh URL of an expired file is done once the watch ends
/// without one: a `Task Vaulted` says so (its settle's said `done: false`), published before
/// the write that ends the watch, so a failed publish leaves the task due and the next run
/// says it again, under the same id.
#[tokio::test]
async fn a_watch_that_ends_without_a_fresh_url_says_the_task_is_done() {
    let (ports, mut record) = accepted(vec![success()]).await;
    for file in record.files.values_mut() {
        file.status = FileStatus::Failed;
        file.error = Some("source answered 410 Gone".into());
    }
    (record.vault, record.manifest_key, record.open) = (VaultState::Partial, Some("manifest".into()), None);
    reconcile::watch(&mut record, ports.table.now(), Duration::from_secs(60));
    assert!(!record.is_done(record.vault), "watched for a fresh URL");
    ports.table.put_record(record);
    ports.events.lock().unwrap().clear();
    ports.table.advance(settings().give_up_after);

    ports.publish_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = run(&ports).await;
    assert_eq!((failed.unwatched, failed.tasks_failed), (0, 1), "{failed:?}");
    assert!(ports.record().reconcile.is_some(), "still due");
    ports.publish_fails.store(false, std::sync::atomic::Ordering::SeqCst);
    ports.table.advance(Duration::from_secs(3600));
    let outcome = run(&ports).await;
    assert_eq!(outcome.unwatched, 1, "{outcome:?}");
    let record = ports.record();
    assert!(record.is_done(record.vault), "GET says done");
    let published = ports.events.lock().unwrap().clone();
    let said: Vec<(&str, bool, VaultState)> =
        published.iter().map(|e| (e.detail.event_id.as_str(), e.detail.done, e.detail.vault)).collect();
    let id = format!("{TASK}.vaulted.{}.{}.watch_ended", record.generation, record.stage.as_str());
    assert_eq!(said, [(id.as_str(), true, VaultState::Partial)]);
    assert_eq!(published[0].kind, events::EventType::Vaulted);
}

/// A done answer without the task's files is nothing new for a task that has its result
/// (watched for an expired file: the provider spoke), and no answer for one still without it
/// (polled again, counted unanswered).
#[tokio::test]
async fn a_done_answer_without_files_is_nothing_new_or_no_answer_by_whether_the_task_has_its_result() {
    let body = format!(
        r#"{{"code":200,"msg":"success","data":{{"taskId":"{TASK}","successFlag":"SUCCESS","response":null}}}}"#
    );
    let no_files = || ProviderAnswer::Http { status: 200, body: body.clone().into_bytes() };
    let (ports, mut record) = accepted(vec![no_files()]).await;
    let file = record.files.values_mut().next().expect("a file");
    (file.status, file.error) = (FileStatus::Failed, Some("source answered 410 Gone".into()));
    reconcile::watch(&mut record, ports.table.now(), Duration::ZERO);
    ports.table.put_record(record);
    let outcome = run(&ports).await;
    assert_eq!((outcome.polls, outcome.pending, outcome.unanswered), (1, 1, 0), "{outcome:?}");

    let (outcome, ports) = polled_once(no_files()).await;
    assert_eq!((outcome.polls, outcome.pending, outcome.unanswered), (1, 1, 1), "{outcome:?}");
    assert_eq!(ports.record().last_poll.unwrap().outcome, "unreadable");
}

/// A poll repeating the URL of a dead-lettered file (a source outage, or no fresh link in
/// time), once the file's wait is over, reopens and queues it; the poll's own write keeps the
/// task watched while the file is copied, so that its failing again finds the task watched
/// (the settle would also watch it again) and the next reopen comes.
#[tokio::test]
async fn a_dead_lettered_file_is_reopened_by_a_poll_and_its_task_stays_watched() {
    for reason in [
        "dead_lettered: source answered 503 Service Unavailable (receive 8, the last)",
        "dead_lettered: source answered 403 Forbidden; no fresh link yet: the provider answered 500 (receive 8, the last)",
    ] {
        let ports = MemoryPorts::new(vec![success()]);
        register(&ports);
        ports.until_due();
        assert_eq!(run(&ports).await.results, 1);
        let mut record = ports.record();
        let name = record.files.keys().next().expect("a file").clone();
        let file = record.files.get_mut(&name).unwrap();
        (file.status, file.failed_at, file.error) = (FileStatus::Failed, Some(ports.table.now()), Some(reason.into()));
        (record.vault, record.manifest_key, record.open) = (VaultState::Partial, Some("m".into()), None);
        reconcile::watch(&mut record, ports.table.now(), Duration::from_secs(60));
        ports.table.put_record(record);
        let sent = ports.table.messages().len();

        ports.until_due();
        run(&ports).await;
        assert_eq!(ports.record().files[&name].status, FileStatus::Failed, "{reason}: its hour is not over");
        ports.table.advance(reconcile::FIRST_RELINK_AFTER);
        ports.until_due();
        assert_eq!(run(&ports).await.polls, 1);
        let record = ports.record();
        let file = &record.files[&name];
        assert_eq!((file.status, file.relinks), (FileStatus::Queued, 1), "{reason}");
        assert_eq!(ports.table.messages().len(), sent + 1, "{reason}: its message sent");
        let watched = (record.vault, record.reconcile.as_deref());
        assert_eq!(watched, (VaultState::Pending, Some(stemvault_vault::RECONCILE_DUE)), "{reason}");
    }
}

/// With no provider key (or no endpoint for the family), no poll repeats a dead-lettered
/// file's URL: once its wait is over, the run reopens it at its own URL (pending, in the
/// sweeper's index, which sends it), polling nothing; a file failed for good stays so.
#[tokio::test]
async fn with_no_poll_a_dead_lettered_file_is_reopened_at_its_own_url() {
    let keyless = Settings { polls: false, ..settings() };
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    ports.until_due();
    assert_eq!(run(&ports).await.results, 1);
    let mut record = ports.record();
    let names: Vec<String> = record.files.keys().take(2).cloned().collect();
    let [reopened, for_good] = [&names[0], &names[1]];
    let failed_at = Some(ports.table.now());
    let fail = |file: &mut stemvault_vault::FileEntry, reason: &str| {
        (file.status, file.failed_at, file.error) = (FileStatus::Failed, failed_at, Some(reason.into()));
    };
    fail(record.files.get_mut(reopened).unwrap(), "dead_lettered: S3 PutObject failed: 503 (receive 8, the last)");
    fail(record.files.get_mut(for_good).unwrap(), "source answered 400 Bad Request");
    for file in record.files.values_mut().filter(|f| f.status != FileStatus::Failed) {
        file.status = FileStatus::Stored;
    }
    (record.vault, record.manifest_key, record.open) = (VaultState::Partial, Some("m".into()), None);
    reconcile::watch(&mut record, ports.table.now(), Duration::from_secs(60));
    ports.table.put_record(record);
    let run_keyless =
        || async { reconcile(&ports, &keyless, "run", ports.table.now().plus(Duration::from_secs(60))).await };

    ports.until_due();
    let outcome = run_keyless().await.unwrap();
    assert_eq!((outcome.reopened, outcome.put_off), (0, 1), "its hour is not over: {outcome:?}");
    ports.table.advance(reconcile::FIRST_RELINK_AFTER);
    ports.until_due();
    let outcome = run_keyless().await.unwrap();
    assert_eq!((outcome.reopened, outcome.polls), (1, 0), "{outcome:?}");
    let record = ports.record();
    let file = &record.files[reopened];
    assert_eq!((file.status, file.relinks, file.error.as_deref()), (FileStatus::Pending, 1, None));
    assert_eq!(record.files[for_good].status, FileStatus::Failed, "failed for good");
    assert_eq!((record.vault, record.open.as_deref()), (VaultState::Pending, Some(stemvault_vault::OPEN_MARKER)));
    assert!(record.generation > 0 && file.generation == Some(record.generation), "a new file set");
    assert_eq!(ports.polls.lock().unwrap().len(), 1, "only the first run's poll, with its key");

    // Copied since, and the other file failed for good: nothing left to wait for, unwatched.
    let mut copied = ports.record();
    copied.files.get_mut(reopened).unwrap().status = FileStatus::Stored;
    (copied.vault, copied.manifest_key, copied.open) = (VaultState::Partial, Some("m".into()), None);
    reconcile::watch(&mut copied, ports.table.now(), Duration::ZERO);
    ports.table.put_record(copied);
    ports.until_due();
    let outcome = run_keyless().await.unwrap();
    assert_eq!((outcome.unwatched, outcome.put_off), (1, 0), "{outcome:?}");
    assert_eq!(ports.record().reconcile, None);
}

/// A poll's result that reopened an expired file but whose task item write failed (the table
/// down, say) left the file item reopened and the task item settled. The poll's bookkeeping,
/// the next write of the task item, commits the reopen: the vault is pending and the task
/// open again, so the sweeper sends the file; else the task, no longer waiting for an expired
/// file, would be unwatched and the file never sent.
#[tokio::test]
async fn the_poll_bookkeeping_commits_a_reopen_whose_task_write_failed() {
    let (ports, mut record) = accepted(vec![ProviderAnswer::Unreachable("timed out".into())]).await;
    let settled_generation = record.generation;
    (record.vault, record.manifest_key) = (VaultState::Partial, Some(format!("tasks/{TASK}/manifest.json")));
    record.open = None; // as the settle write leaves it
    reconcile::watch(&mut record, ports.table.now(), Duration::from_secs(60));
    let (name, file) = record.files.iter_mut().next().expect("a file");
    let name = name.clone();
    // As merge_files reopens a file: a new URL under the reopening request's claim, stamped
    // with the generation its task item write would have committed.
    (file.status, file.error, file.url) = (FileStatus::Enqueuing, None, "https://h/fresh.mp3".into());
    (file.claim, file.lease_until) =
        (Some("req-2".into()), Some(stemvault_vault::LeaseEnd::at(ports.table.now()).plus(Duration::from_secs(30))));
    file.generation = Some(settled_generation + 1);
    assert_eq!(record.open, None);
    ports.table.put_record(record);

    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!(outcome.polls, 1, "{outcome:?}");
    let record = ports.record();
    assert_eq!((record.vault, record.manifest_key.as_deref()), (VaultState::Pending, None));
    assert_eq!(record.open.as_deref(), Some(stemvault_vault::OPEN_MARKER), "in the sweeper's index");
    assert_eq!(record.generation, settled_generation + 1);
    assert_eq!(record.files[&name].status, FileStatus::Enqueuing);
}

/// A polled result the table refuses (for good, here) is counted as failed, and the task
/// stays on its poll schedule, backing off, rather than due: due, it would come first in
/// every run, ahead of the others.
#[tokio::test]
async fn a_result_the_table_refuses_keeps_the_task_on_its_poll_schedule() {
    // Polled once already: the next wait doubles, to 2 minutes.
    let ports = a_result_refused(1, Some(60)).await;
    let record = ports.record();
    assert_eq!(record.last_poll.as_ref().map(|p| p.outcome.as_str()), Some("unrecorded"));
    let doubled = ports.table.now().plus(Duration::from_secs(120));
    assert_eq!(record.reconcile_at, Some(doubled), "its schedule stands: not put behind (30 s, or an hour)");
    assert_eq!(run(&ports).await.tasks_due, 0, "not due again at once");
}

/// A registered task whose polled result the table refuses `saves` times, after one run (its
/// poll interval `interval` before): nothing recorded, the task failed.
async fn a_result_refused(saves: u32, interval: Option<u64>) -> MemoryPorts {
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    let mut polled = ports.record();
    polled.poll_interval_seconds = interval;
    ports.table.put_record(polled);
    ports.until_due();
    ports.table.fail_saves(saves, StoreError::Rejected("item too large".into()));
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_failed, outcome.results), (1, 0), "{outcome:?}");
    assert_eq!(ports.record().stage, Stage::Submitted, "nothing recorded");
    ports
}

/// A result the table refuses every write for (the result's, then the poll's bookkeeping): no
/// retry can mend it, so the task is put off by the longest poll interval, not 30 s (it
/// would be polled, first, in every run).
#[tokio::test]
async fn a_task_whose_every_write_the_table_refuses_is_put_off_an_hour() {
    let ports = a_result_refused(10, None).await;
    let hour_later = ports.table.now().plus(reconcile::MAX_POLL_INTERVAL);
    assert_eq!(ports.record().reconcile_at, Some(hour_later), "put off an hour, not 30 s");
}

/// Without a provider key, a task the provider said it did not know (before the key went) is
/// not given up as `not_found` on those old answers: it is put off, and given up as
/// `abandoned` at its time.
#[tokio::test]
async fn without_a_key_old_not_found_answers_give_nothing_up() {
    let ports = MemoryPorts::new(vec![]);
    register(&ports);
    let mut unknown = ports.record();
    unknown.not_found_since = Some(ports.table.now());
    ports.table.put_record(unknown);
    ports.table.advance(reconcile::NOT_FOUND_GIVE_UP_AFTER + Duration::from_secs(60));
    ports.until_due();
    let keyless = Settings { polls: false, ..settings() };
    let outcome = reconcile(&ports, &keyless, "run", ports.table.now().plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!((outcome.abandoned, outcome.polls), (0, 0), "{outcome:?}");
    assert_eq!(ports.record().abandoned, None);
}

/// A task whose family is unknown has no endpoint to poll: it is put off, not polled (each
/// poll was an `unreachable` write until its give-up).
#[tokio::test]
async fn a_task_of_unknown_family_is_put_off_not_polled() {
    let ports = MemoryPorts::new(vec![pending()]);
    let registration = Registration { family: Family::Unknown, client_ref: None };
    ports.table.put_record(registration.record(&TaskId::parse(TASK).unwrap(), ports.table.now(), Duration::ZERO));
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.put_off, outcome.polls), (1, 0), "{outcome:?}");
    assert!(ports.polls.lock().unwrap().is_empty());
    let next = ports.table.now().plus(reconcile::MAX_POLL_INTERVAL);
    assert_eq!(ports.record().reconcile_at, Some(next));
    assert_eq!(ports.record().last_poll, None, "no poll recorded");
}

/// A registration giving an unknown-family task its family between the run's read and the
/// put-off schedules its first poll at once: that stands (the put-off, conditional on the
/// version read, is refused), so the task is polled at its family's endpoint within the next
/// run, not an hour later.
#[tokio::test]
async fn a_registration_during_a_put_off_keeps_its_poll_now() {
    let ports = MemoryPorts::new(vec![pending()]);
    let task = TaskId::parse(TASK).unwrap();
    let unknown = Registration { family: Family::Unknown, client_ref: None };
    ports.table.put_record(unknown.record(&task, ports.table.now(), Duration::ZERO));
    ports.until_due();
    let read = ports.record();
    let given = TaskRecord {
        family: Family::Wav,
        registered_family: Some(Family::Wav),
        version: read.version + 1,
        ..read.clone()
    };
    *ports.before_postpone.lock().unwrap() = Some(given);
    let outcome = run(&ports).await;
    assert_eq!((outcome.put_off, outcome.polls), (0, 0), "{outcome:?}");
    assert_eq!(ports.record().reconcile_at, read.reconcile_at, "the registration's schedule stands");
    assert_eq!(ports.record().family, Family::Wav);
}

/// A poll the provider does not answer in time to record it (here never: a key re-read and a
/// request at each of a voice task's records could take as long) is cut off and recorded as
/// unanswered, so its next polls back off as any unanswered poll's; left unrecorded, it was
/// due again 30 s on, in every run, until its give-up (and a last chance of a week).
#[tokio::test(start_paused = true)]
async fn a_poll_the_provider_does_not_answer_in_time_is_recorded_unanswered() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    ports.polls_hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut waits = Vec::new();
    for _ in 0..3 {
        ports.until_due();
        let (started, before) = (tokio::time::Instant::now(), ports.table.now());
        let outcome = run(&ports).await;
        assert_eq!((outcome.tasks_failed, outcome.polls, outcome.unanswered), (0, 1, 1), "{outcome:?}");
        assert_eq!(started.elapsed(), TASK_BUDGET - FAILURE_RECORD_RESERVE);
        let record = ports.record();
        assert_eq!(record.last_poll.unwrap().outcome, "unreachable");
        waits.push((record.reconcile_at.unwrap().unix_ms - before.unix_ms) / 1000);
    }
    assert_eq!(waits, [30, 60, 120]);
    assert_eq!(ports.record().polls, 3);
}

/// A task that hangs otherwise (here its read: the table stalls) is given up after
/// TASK_BUDGET and counted as failed, so the run ends before its deadline; the next run takes
/// it, after the tasks due now (a task failing every time must not take its budget out of
/// every run first).
#[tokio::test(start_paused = true)]
async fn a_task_that_hangs_is_left_after_its_budget() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    ports.until_due();
    ports.table.set_table_stalled(true);
    let started = tokio::time::Instant::now();
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.tasks_failed, outcome.polls), (1, 1, 0), "{outcome:?}");
    assert_eq!(started.elapsed(), TASK_BUDGET);
    ports.table.set_table_stalled(false);
    let behind = ports.table.now().plus(stemvault_vault::reconcile::FIRST_POLL_INTERVAL);
    assert_eq!(ports.record().reconcile_at, Some(behind), "due again, behind the tasks due now");
    assert_eq!(ports.record().reconcile.as_deref(), Some(RECONCILE_DUE), "still watched");
}

/// A result polled late in the task's budget (the provider slow, then the table): its accept
/// gets what is left of the budget, less the time to record its failure, so a cut-off accept
/// (which may have saved the result but not published its events) leaves the task watched,
/// and the next poll's duplicate publishes them. Cut off by the task's budget instead, the
/// task was unwatched with its events unpublished.
#[tokio::test(start_paused = true)]
async fn a_result_polled_late_in_the_task_s_budget_stays_watched_until_its_events_are_out() {
    // The task's read takes a second, then the poll: 2 s left for the accept, then none.
    for left in [Duration::from_secs(2), Duration::ZERO] {
        let ports = MemoryPorts::new(vec![success()]);
        register(&ports);
        ports.until_due();
        let poll = TASK_BUDGET - FAILURE_RECORD_RESERVE - Duration::from_secs(1) - left;
        *ports.poll_latency.lock().unwrap() = poll;
        ports.table.set_latency(Duration::from_secs(1));
        let outcome = run(&ports).await;
        assert_eq!(outcome.tasks_failed, 1, "{left:?}: {outcome:?}");
        let record = ports.record();
        assert_eq!(record.reconcile.as_deref(), Some(RECONCILE_DUE), "{left:?}: still watched: {record:?}");
        if left.is_zero() {
            assert_eq!(record.stage, Stage::Submitted, "no accept started");
        }

        *ports.poll_latency.lock().unwrap() = Duration::ZERO;
        ports.table.set_latency(Duration::ZERO);
        ports.until_due();
        assert_eq!(run(&ports).await.results, 1);
        let published = ports.events.lock().unwrap().clone();
        assert!(published.iter().any(|e| e.kind == events::EventType::StageChanged), "{left:?}: {published:?}");
    }
}

/// A poll answered pending reads the task once and writes it once: its bookkeeping is
/// written over the record the run read (each table call here takes a second).
#[tokio::test(start_paused = true)]
async fn a_pending_poll_costs_one_read_and_one_write() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    ports.until_due();
    ports.table.set_latency(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    assert_eq!(run(&ports).await.pending, 1);
    assert_eq!(started.elapsed(), Duration::from_secs(2), "one load, one save");
    assert_eq!(ports.record().polls, 1);
}

#[tokio::test]
async fn a_run_stops_at_its_deadline_and_the_next_continues() {
    let ports = MemoryPorts::new(vec![pending()]);
    register(&ports);
    ports.until_due();
    // Past its stop already (the replay used the time): not even the due list is read.
    let outcome = reconcile(&ports, &settings(), "run", ports.table.now()).await.unwrap();
    assert_eq!((outcome.tasks_due, outcome.polls, outcome.stopped_early), (0, 0, true));
    assert_eq!(run(&ports).await.polls, 1);

    // Two tasks due, the first one's poll taking the run past its stop: the second waits.
    let registration = Registration { family: Family::VocalSeparation, client_ref: None };
    let other = registration.record(&TaskId::parse("other-1").unwrap(), ports.table.now(), Duration::ZERO);
    ports.table.put_record(other);
    ports.until_due();
    *ports.poll_moves_clock.lock().unwrap() = Duration::from_secs(61);
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.polls, outcome.stopped_early), (2, 1, true), "{outcome:?}");
    *ports.poll_moves_clock.lock().unwrap() = Duration::ZERO;
    assert_eq!(run(&ports).await.polls, 1, "the one left, in the next run");

    // The provider's next turn further off than the run's stop (a slow pace): the run polls
    // nothing rather than starting a task it would spend waiting; the tasks stay due.
    ports.until_due();
    *ports.next_turn_in.lock().unwrap() = Duration::from_secs(61);
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_due, outcome.polls, outcome.stopped_early), (2, 0, true), "{outcome:?}");
    assert_eq!(outcome.left_due, 2, "both read, left due");
    *ports.next_turn_in.lock().unwrap() = Duration::from_secs(59);
    assert_eq!(run(&ports).await.polls, 2, "a turn within the run's time is waited for");
}

/// Two tasks due, `first-1` before the registered one, answered `first` and then pending;
/// with the registered one's `reconcile_at`.
fn two_due(first: ProviderAnswer) -> (MemoryPorts, Option<Timestamp>) {
    let ports = MemoryPorts::new(vec![first, pending()]);
    register(&ports);
    let registration = Registration { family: Family::VocalSeparation, client_ref: None };
    let first = registration.record(&TaskId::parse("first-1").unwrap(), ports.table.now(), Duration::ZERO);
    ports.table.put_record(first);
    ports.until_due();
    let due_before = ports.record().reconcile_at;
    (ports, due_before)
}

/// A 429 is the account's limit (no task is polled more than every 30 s): the run polls no
/// other task, and those left are still due, first in the next run. So do docs.sunoapi.org's
/// rate-limit codes and either site's maintenance, as the body's code or the HTTP status.
#[tokio::test]
async fn a_run_stops_polling_when_the_provider_answers_429() {
    let code = |code: u16| ProviderAnswer::Http {
        status: 200,
        body: format!(r#"{{"code":{code},"msg":"slow down"}}"#).into_bytes(),
    };
    for answer in [status(429), status(430), status(455), code(429), code(405), code(430), code(455)] {
        let (ports, due_before) = two_due(answer);

        let outcome = run(&ports).await;
        assert_eq!((outcome.tasks_due, outcome.polls, outcome.pending), (2, 1, 1), "{outcome:?}");
        assert!(outcome.rate_limited && !outcome.stopped_early, "{outcome:?}");
        assert_eq!(ports.table.record("first-1").unwrap().polls, 1, "the refused poll is booked: it backs off");
        assert_eq!((ports.record().polls, ports.record().reconcile_at), (0, due_before), "left due");

        let next = run(&ports).await;
        assert_eq!((next.polls, next.rate_limited), (1, false), "{next:?}");
        let polled: Vec<String> = ports.polls.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(polled, ["first-1", TASK]);
    }
}

/// A refusal that stands (the key, after a re-read; the credits) would meet every other task
/// too: the run polls no other, and those left are still due, first in the next run.
#[tokio::test]
async fn a_run_stops_polling_when_the_provider_refuses_the_key_or_the_credits() {
    let code = |code: u16| ProviderAnswer::Http { status: 200, body: format!(r#"{{"code":{code}}}"#).into_bytes() };
    for answer in [status(401), status(402), status(403), code(401), code(402), code(403)] {
        let (ports, due_before) = two_due(answer.clone());

        let outcome = run(&ports).await;
        assert_eq!((outcome.tasks_due, outcome.polls), (2, 1), "{answer:?}: {outcome:?}");
        assert!(outcome.refused && !outcome.rate_limited && !outcome.stopped_early, "{outcome:?}");
        assert_eq!((ports.record().polls, ports.record().reconcile_at), (0, due_before), "left due");

        let next = run(&ports).await;
        assert_eq!((next.polls, next.pending, next.refused), (1, 1, false), "{next:?}");
        let polled: Vec<String> = ports.polls.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(polled, ["first-1", TASK]);
    }
}

/// Polls held (a refusal that stands, a rate limit, a turn past the run's time) stop no
/// give-up: a task whose time came and that is owed no poll (its last one, a minute before
/// its time, was answered) is given up in the same run, after a task polled and refused.
#[tokio::test]
async fn a_run_whose_polls_are_held_still_gives_up_the_tasks_owed_no_poll() {
    for held in [status(402), status(401), status(429), status(455)] {
        let ports = MemoryPorts::new(vec![pending(), held.clone(), pending()]);
        register(&ports);
        ports.until_due();
        ports.table.advance(settings().give_up_after - Duration::from_secs(600 + 60));
        assert_eq!(run(&ports).await.polls, 1, "its last poll, a minute before its time");
        ports.table.advance(Duration::from_secs(60));
        // Due before it, and polled first: the answer that holds the polls.
        let registration = Registration { family: Family::VocalSeparation, client_ref: None };
        let earlier = Timestamp::from_unix_ms(ports.table.now().unix_ms - 50_000);
        ports.table.put_record(registration.record(&TaskId::parse("first-1").unwrap(), earlier, Duration::ZERO));

        let outcome = run(&ports).await;
        assert_eq!((outcome.polls, outcome.abandoned, outcome.left_due), (1, 1, 0), "{held:?}: {outcome:?}");
        assert!(outcome.refused || outcome.rate_limited, "{outcome:?}");
        assert_eq!(ports.record().abandoned.map(|a| a.reason), Some(GiveUpReason::Abandoned));
    }
    // A task to poll after the hold is left due, untouched.
    let (ports, due_before) = two_due(status(429));
    let outcome = run(&ports).await;
    assert_eq!((outcome.polls, outcome.left_due), (1, 1), "{outcome:?}");
    assert_eq!((ports.record().polls, ports.record().reconcile_at), (0, due_before));
}

/// Parked callbacks replayed by a run.
mod replay;

/// A polled result that ends the task, whose events fail and whose poll bookkeeping the
/// table then refuses too: the task stays watched (the result's own save keeps it so), and
/// the next poll's duplicate publishes the events; unwatched, they would never go out.
#[tokio::test]
async fn a_polled_result_whose_events_and_bookkeeping_fail_is_polled_again_and_published() {
    let ports = MemoryPorts::new(vec![success()]);
    register(&ports);
    ports.until_due();
    ports.publish_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    ports.publish_failure_takes_the_table.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = run(&ports).await;
    assert_eq!(outcome.tasks_failed, 1, "{outcome:?}");
    let record = ports.record();
    assert_eq!(record.stage, Stage::Final, "the result is saved");
    assert_eq!(record.reconcile.as_deref(), Some(RECONCILE_DUE), "still watched");
    assert!(ports.events.lock().unwrap().is_empty());

    ports.publish_fails.store(false, std::sync::atomic::Ordering::SeqCst);
    ports.table.fail_saves(0, StoreError::Unavailable("mended".into()));
    ports.until_due();
    let outcome = run(&ports).await;
    assert_eq!((outcome.tasks_failed, outcome.polls), (0, 1), "{outcome:?}");
    let kinds: Vec<_> = ports.events.lock().unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [events::EventType::StageChanged], "published by the duplicate");
    assert_eq!(ports.record().reconcile, None, "and no longer watched");
}

/// A polled result saved whose events failed (`unrecorded`), then a poll that brings nothing
/// (a 503, no answer): the task stays watched through it, and the next poll that brings the
/// result publishes the events; taken out of the index on the empty poll, a task polled
/// because its callback never came would never get them.
#[tokio::test]
async fn a_result_left_unfinished_stays_watched_through_polls_that_bring_nothing() {
    let unavailable = ProviderAnswer::Http { status: 503, body: b"busy".to_vec() };
    let ports =
        MemoryPorts::new(vec![success(), unavailable, ProviderAnswer::Unreachable("timed out".into()), success()]);
    register(&ports);
    ports.until_due();
    ports.publish_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = run(&ports).await;
    assert_eq!(outcome.tasks_failed, 1, "{outcome:?}");
    assert_eq!(ports.record().stage, Stage::Final, "the result is saved");
    ports.publish_fails.store(false, std::sync::atomic::Ordering::SeqCst);
    for nothing in ["http_503", "unreachable"] {
        ports.until_due();
        let _ = run(&ports).await;
        let record = ports.record();
        assert_eq!(record.last_poll.map(|p| p.outcome).as_deref(), Some(nothing));
        assert_eq!(record.reconcile.as_deref(), Some(RECONCILE_DUE), "still watched after {nothing}");
    }
    assert!(ports.events.lock().unwrap().is_empty());

    ports.until_due();
    let _ = run(&ports).await;
    let kinds: Vec<_> = ports.events.lock().unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [events::EventType::StageChanged], "published by the poll that brought the result");
    assert_eq!(ports.record().reconcile, None, "and no longer watched");
}

/// A task watched at one stage for long (here stuck at `first`) is polled again and again;
/// its stage's events go out once more at most (the first poll, after the callback's), not
/// on every poll (nor on the one after a poll that brought nothing), and a poll whose
/// publish failed is followed by one that publishes.
#[tokio::test]
async fn polls_of_a_task_stuck_at_one_stage_do_not_publish_its_events_each_time() {
    let first_body = br#"{"code":200,"msg":"first","data":{"callbackType":"first","task_id":"3e63b4cc88d52611159371f6af5571e7","data":[
        {"id":"a1","audio_url":"https://cdn1.suno.ai/a1.mp3","image_url":"","stream_audio_url":"","title":"x"}]}}"#;
    let poll_first =
        br#"{"code":200,"msg":"success","data":{"taskId":"3e63b4cc88d52611159371f6af5571e7","status":"FIRST_SUCCESS",
        "response":{"sunoData":[{"id":"a1","audioUrl":"https://cdn1.suno.ai/a1.mp3"}]}}}"#;
    let first = || ProviderAnswer::Http { status: 200, body: poll_first.to_vec() };
    let unavailable = ProviderAnswer::Http { status: 503, body: b"busy".to_vec() };
    // The fourth poll gets a 503: the poll after it publishes nothing again either.
    let ports = MemoryPorts::new(vec![first(), first(), first(), unavailable, first()]);
    let event = parse_callback(first_body).unwrap();
    accept(&ports, &accept::Settings::default(), &event, first_body, "req-1", None).await.unwrap();
    let stage_events =
        || ports.events.lock().unwrap().iter().filter(|e| e.kind == events::EventType::StageChanged).count();
    assert_eq!(stage_events(), 1, "the callback's");
    let mut published = Vec::new();
    for poll in 0..5 {
        // The first poll's publish fails: it is recorded unrecorded, and the next publishes.
        ports.publish_fails.store(poll == 0, std::sync::atomic::Ordering::SeqCst);
        ports.until_due();
        let _ = run(&ports).await;
        published.push(stage_events());
    }
    assert_eq!(ports.record().stage, Stage::First);
    assert_eq!(ports.record().polls, 5);
    // Once more, by the poll after the failed one (it cannot know the callback's went out).
    assert_eq!(published, [1, 2, 2, 2, 2]);
    assert_eq!(ports.record().last_poll.map(|p| p.outcome).as_deref(), Some("result:first"));
}

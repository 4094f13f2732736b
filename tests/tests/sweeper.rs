//! The sweeper against the emulator: the sparse `open-tasks` index finds the open task, the
//! orphaned files are sent once, and nothing else is touched; an open task whose files are
//! all settled gets a manifest job, which the downloader settles.

use std::collections::HashMap;
use std::time::Duration;
use stemvault_aws::FromEnv;

use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_sweeper::aws::AwsPorts;
use stemvault_sweeper::domain::CloseTask;
use stemvault_sweeper::{App, Config};
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_vault::download::MANIFEST_JOB_NAME;
use stemvault_vault::register::Registration;
use stemvault_vault::{
    CallbackEntry, Conditional, FileJob, FileStatus, LeaseEnd, Manifest, OPEN_MARKER, StoreError, TaskRecord,
    Timestamp, VaultState,
};
use suno_callbacks::{Family, TaskId, s3_key};

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A task whose ingest request died: delivered `age` ago, files (name, status) left as given,
/// `enqueuing` ones under a lapsed claim.
fn orphaned(age: Duration, files: &[(&str, FileStatus)]) -> TaskRecord {
    let task = new_task_id();
    let urls: Vec<(String, String)> =
        files.iter().map(|(n, _)| (n.to_string(), format!("https://cdn1.suno.ai/{n}.mp3?sig=secret"))).collect();
    let pairs: Vec<(&str, &str)> = urls.iter().map(|(n, u)| (n.as_str(), u.as_str())).collect();
    let mut record = queued_record(&task, Family::VocalSeparation, &pairs);
    let delivered = Timestamp::from_unix_ms(Timestamp::now().unix_ms - age.as_millis() as i64);
    record.first_received_at = delivered;
    record.last_received_at = delivered;
    for (name, status) in files {
        let file = record.files.get_mut(*name).unwrap();
        file.status = *status;
        if *status == FileStatus::Enqueuing {
            file.claim = Some("dead-request".into());
            file.lease_until = Some(LeaseEnd::at(delivered.plus(Duration::from_secs(15))));
        }
        if *status == FileStatus::Stored {
            (file.bytes, file.sha256, file.attempts) = (Some(3), Some("ab".repeat(32)), 1);
        }
        if *status == FileStatus::Failed {
            (file.error, file.attempts) = (Some("source answered 404".into()), 1);
        }
    }
    record
}

/// Store a record and read it back as stored (revisions and versions as the table has them).
async fn stored(env: &TestEnv, record: &TaskRecord) -> TaskRecord {
    env.put_record(record).await;
    env.task_record(&record.task_id).await
}

fn config(env: &TestEnv) -> Config {
    Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(env.resources.table_name.clone()),
        "QUEUE_URL" => Some(env.resources.queue_url.clone()),
        _ => None,
    })
    .unwrap()
}

fn app(env: &TestEnv) -> App {
    App::new(config(env), &env.config)
}

fn jobs_on_queue(messages: &[aws_sdk_sqs::types::Message]) -> Vec<FileJob> {
    let mut jobs: Vec<FileJob> =
        messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).expect("a FileJob body")).collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    jobs
}

/// A task's items as the table holds them, by sort key (one Query, as every reader makes).
async fn items(env: &TestEnv, task_id: &str) -> HashMap<String, HashMap<String, AttributeValue>> {
    let out = env
        .dynamo
        .query()
        .table_name(&env.resources.table_name)
        .key_condition_expression("task_id = :task")
        .expression_attribute_values(":task", AttributeValue::S(task_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("query the task's items");
    out.items.unwrap_or_default().into_iter().map(|item| (item["sk"].as_s().unwrap().clone(), item)).collect()
}

/// A scheduled invocation as Lambda makes it (`App::handle`): the sweep claims under the
/// invocation's request id and stops by its deadline, less the sweeper's margin.
#[tokio::test]
async fn a_scheduled_invocation_sweeps_by_its_deadline_under_its_request_id() {
    let env = TestEnv::new().await;
    let record = stored(&env, &orphaned(Duration::from_secs(600), &[("pending", FileStatus::Pending)])).await;
    let invocation = |request_id, deadline| stemvault_tests::scheduled_invocation(request_id, deadline, None);
    // Its deadline within the margin: nothing is taken.
    let margin = stemvault_sweeper::app::STOP_BEFORE_DEADLINE;
    let late = app(&env).handle(invocation("req-late", margin - Duration::from_secs(1))).await.expect("a run");
    assert_eq!((late.tasks_checked, late.stopped_early), (0, true), "{late:?}");
    let outcome = app(&env).handle(invocation("req-1", Duration::from_secs(60))).await.expect("a run");
    assert_eq!((outcome.tasks_checked, outcome.files_requeued), (1, 1), "{outcome:?}");
    let file = &env.task_record(&record.task_id).await.files["pending"];
    assert_eq!((file.status, file.claim.as_deref()), (FileStatus::Queued, Some("sweeper-req-1")));
}

#[tokio::test]
async fn orphaned_files_are_sent_once_and_marked_queued() {
    let env = TestEnv::new().await;
    let record = orphaned(
        Duration::from_secs(600),
        &[("enqueuing", FileStatus::Enqueuing), ("pending", FileStatus::Pending), ("queued", FileStatus::Queued)],
    );
    assert_eq!(record.open.as_deref(), Some("open"));
    let record = stored(&env, &record).await;
    // Delivered 10 s ago: its ingest request may still be sending.
    let fresh = stored(&env, &orphaned(Duration::from_secs(10), &[("pending", FileStatus::Pending)])).await;
    // Settled with its manifest (no `open`), so outside the index even with a pending file.
    let mut settled = orphaned(Duration::from_secs(600), &[("pending", FileStatus::Pending)]);
    settled.vault = VaultState::Complete;
    settled.manifest_key = Some(format!("tasks/{}/manifest.json", settled.task_id));
    settled.open = None; // as the settle write leaves it
    let settled = stored(&env, &settled).await;

    let stop_at = || Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at()).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 2, 0));
    assert_eq!(report.manifests_requested, 0);

    let messages = env.drain_queue(10).await;
    assert_eq!(jobs_on_queue(&messages), [job_of(&record, "enqueuing"), job_of(&record, "pending")]);
    let after = env.task_record(&record.task_id).await;
    let raw = items(&env, &record.task_id).await;
    for name in ["enqueuing", "pending"] {
        let file = &after.files[name];
        assert_eq!((file.status, file.claim.as_deref()), (FileStatus::Queued, Some("sweeper-run-1")), "{name}");
        // The file item says the sweeper's claim (one conditional put); the task item's
        // `queued` set (one update) makes it read as queued.
        let item = &raw[&format!("file#{name}")];
        assert_eq!(item["status"].as_s().map(String::as_str), Ok("enqueuing"), "{name}");
        assert_eq!(file.rev, record.files[name].rev + 1, "{name}");
    }
    let queued = raw["task"]["queued"].as_ss().expect("a queued set");
    assert!(["enqueuing", "pending"].iter().all(|n| queued.iter().any(|q| q == n)), "{queued:?}");
    assert_eq!(after.files["queued"], record.files["queued"]);
    assert_eq!(env.task_record(&fresh.task_id).await, fresh);
    assert_eq!(env.task_record(&settled.task_id).await, settled);

    let again = app(&env).run("run-2", stop_at()).await.expect("second sweep");
    assert_eq!((again.tasks_checked, again.files_requeued), (1, 0));
    assert!(env.drain_queue(10).await.is_empty(), "nothing sent twice");
}

/// A file whose message went to the dead-letter queue on a receive that could not write the
/// table stays `downloading` (or `queued`); once the queue can hold no message of it, the
/// sweeper sends it again, conditional on the file item as read.
#[tokio::test]
async fn a_file_left_downloading_when_its_message_cannot_be_on_the_queue_is_sent_again() {
    let env = TestEnv::new().await;
    let retention = stemvault_vault::download::DOWNLOAD_QUEUE_RETENTION;
    let mut record = orphaned(retention * 2, &[("gone", FileStatus::Downloading), ("live", FileStatus::Downloading)]);
    let lease_ended = |ago: Duration| Some(LeaseEnd::at(Timestamp::now().minus(ago)));
    for (name, ago) in [("gone", retention + Duration::from_secs(60)), ("live", retention - Duration::from_secs(60))] {
        let file = record.files.get_mut(name).unwrap();
        (file.claim, file.lease_until, file.attempts) = (Some("worker-gone".into()), lease_ended(ago), 8);
    }
    let record = stored(&env, &record).await;

    let stop_at = Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 1, 0));
    assert_eq!(jobs_on_queue(&env.drain_queue(10).await), [job_of(&record, "gone")]);
    let after = env.task_record(&record.task_id).await;
    let gone = &after.files["gone"];
    assert_eq!((gone.status, gone.claim.as_deref()), (FileStatus::Queued, Some("sweeper-run-1")));
    assert_eq!(gone.rev, record.files["gone"].rev + 1);
    assert_eq!(after.files["live"], record.files["live"]);
}

/// A task whose file is stored and whose manifest is recorded, received 10 minutes ago (its
/// `open` left as `orphaned` made it).
fn settled_record() -> TaskRecord {
    let mut record = orphaned(Duration::from_secs(600), &[("vocal", FileStatus::Stored)]);
    (record.vault, record.manifest_key) =
        (VaultState::Complete, Some(format!("tasks/{}/manifest.json", record.task_id)));
    record
}

/// A settled task as the settle write leaves it (no `open`), stored and read back.
async fn stored_settled(env: &TestEnv) -> TaskRecord {
    let read = stored(env, &TaskRecord { open: None, ..settled_record() }).await;
    assert!(read.is_settled() && read.open.is_none(), "{read:?}");
    read
}

/// A settled task left marked open (as a request that marked it and stopped before writing
/// any file leaves it), stored and read back.
async fn settled_marked_open(env: &TestEnv) -> TaskRecord {
    let record = settled_record();
    assert_eq!(record.open.as_deref(), Some("open"));
    stored(env, &record).await
}

/// A settled task left marked open is taken out of the index by one conditional update of
/// `open` alone (in a new version), and is not checked again.
#[tokio::test]
async fn a_settled_task_left_marked_open_leaves_the_index() {
    let env = TestEnv::new().await;
    let record = settled_marked_open(&env).await;

    let stop_at = || Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at()).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.manifests_requested), (1, 0, 0));
    let version = record.version + 1;
    assert_eq!(env.task_record(&record.task_id).await, TaskRecord { open: None, version, ..record });
    assert!(env.drain_queue(10).await.is_empty());
    let again = app(&env).run("run-2", stop_at()).await.expect("second sweep");
    assert_eq!(again.tasks_checked, 0, "{again:?}");
}

/// The close is refused once the task was marked again after the sweeper read it (a mark
/// moves `last_received_at`, not the version), and applied over the task as it now is.
#[tokio::test]
async fn a_close_is_refused_by_the_table_once_the_task_was_marked_again() {
    let env = TestEnv::new().await;
    let read = settled_marked_open(&env).await;
    env.mark_open(&read.task_id).await;

    let ports = AwsPorts::new(&config(&env), &env.config);
    assert_eq!(ports.close_task(&read).await, Ok(Conditional::Conflict));
    let marked = env.task_record(&read.task_id).await;
    assert_eq!((marked.open.as_deref(), marked.adding), (Some("open"), Some(read.generation + 1)));
    assert_eq!(ports.close_task(&marked).await, Ok(Conditional::Applied));
    assert_eq!(env.task_record(&read.task_id).await.adding, None, "the fence taken away with the mark");
    assert_eq!(env.task_record(&read.task_id).await.open, None);
}

/// A task item put (another body of a settled task: its callback item and the task item),
/// over a read taken before another request marked the task, is refused by the table: that
/// request is writing its file items, the version unmoved, and the put would take its mark
/// and its fence away (should it then stop, its files would wait unsent for the provider's
/// retry, out of the sweeper's sight). Read again, marked, the same save applies and keeps the
/// mark and the fence (its request may still be writing): the sweeper takes stale ones away.
/// A mark made again since, at the same generation, refuses it too (each mark's own time).
#[tokio::test]
async fn a_task_item_put_is_refused_once_the_task_was_marked_since_its_read() {
    let env = TestEnv::new().await;
    let read = stored_settled(&env).await;
    let another_body = |read: &TaskRecord| {
        let mut after = read.clone();
        let body = CallbackEntry {
            stage: read.stage,
            code: 200,
            message: "success".into(),
            received_at: Timestamp::now(),
            body_key: format!("tasks/{}/callbacks/other.json", read.task_id),
            bytes: 10,
            deliveries: 1,
        };
        after.callbacks.insert("complete-cd".into(), body);
        (after.version, after.deliveries, after.last_received_at) =
            (read.version + 1, read.deliveries + 1, Timestamp::now());
        after.sync_open_marker();
        after
    };

    env.mark_open(&read.task_id).await;
    assert_eq!(env.tasks().save(Some(&read), &another_body(&read)).await, Err(StoreError::Conflict));
    let marked = env.task_record(&read.task_id).await;
    assert_eq!(marked.open.as_deref(), Some(OPEN_MARKER), "the mark kept");

    assert_eq!(marked.adding, Some(read.generation + 1), "the fence set");

    env.mark_open(&read.task_id).await;
    let again = env.task_record(&read.task_id).await;
    assert_eq!((again.version, again.adding), (marked.version, marked.adding), "the same generation again");
    assert_ne!(again.adding_at, marked.adding_at, "each mark its own time");
    assert_eq!(env.tasks().save(Some(&marked), &another_body(&marked)).await, Err(StoreError::Conflict));

    assert_eq!(env.tasks().save(Some(&again), &another_body(&again)).await, Ok(()));
    let saved = env.task_record(&read.task_id).await;
    assert_eq!((saved.open.as_deref(), saved.callbacks.len()), (Some(OPEN_MARKER), again.callbacks.len() + 1));
    assert_eq!(saved.adding, marked.adding, "the fence kept");
}

/// A save reopening a settled task over a stale read is refused at its mark (the UpdateItem
/// of `open`, conditional on the version read) before any file item is written: the table's
/// own condition, not only the in-memory one.
#[tokio::test]
async fn a_reopen_over_a_stale_read_is_refused_at_its_mark_before_any_file_item() {
    let env = TestEnv::new().await;
    let read = stored_settled(&env).await;
    let moved_on = TaskRecord { deliveries: read.deliveries + 1, version: read.version + 1, ..read.clone() };
    env.rewrite_record(&read, &moved_on).await;

    let mut reopened = read.clone();
    let drums = queued_record(&read.task_id, Family::VocalSeparation, &[("drums", "https://cdn1.suno.ai/d.mp3")]);
    reopened.files.insert("drums".into(), drums.files["drums"].clone());
    (reopened.vault, reopened.manifest_key, reopened.generation) = (VaultState::Pending, None, read.generation + 1);
    reopened.last_received_at = Timestamp::now();
    reopened.sync_open_marker();
    reopened.version += 1;
    assert_eq!(env.tasks().save(Some(&read), &reopened).await, Err(StoreError::Conflict));
    let items = items(&env, &read.task_id).await;
    assert!(!items.contains_key("file#drums"), "no file item written: {:?}", items.keys());
    assert_eq!(env.task_record(&read.task_id).await, moved_on, "the task item as the other write left it");
}

/// A downloader that stopped between the manifest and the settle write leaves the vault
/// pending with every file settled; the sweeper's manifest job gets it settled.
#[tokio::test]
async fn an_open_task_whose_files_are_all_settled_is_settled_through_a_manifest_job() {
    let env = TestEnv::new().await;
    let stuck = orphaned(Duration::from_secs(600), &[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]);
    let stuck = stored(&env, &stuck).await;
    assert_eq!((stuck.vault, stuck.open.as_deref()), (VaultState::Pending, Some("open")));

    let stop_at = || Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at()).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.manifests_requested), (1, 0, 1));
    assert_eq!(env.task_record(&stuck.task_id).await, stuck, "the sweeper itself writes nothing");

    // The downloader takes it: one settle, its manifest written.
    let job = settle_through_manifest_job(&env).await;
    let task = TaskId::parse(&stuck.task_id).unwrap();
    let manifest_key = s3_key::manifest_key(&task);
    let expected = FileJob {
        task_id: stuck.task_id.clone(),
        name: MANIFEST_JOB_NAME.into(),
        url: String::new(),
        key: manifest_key,
    };
    assert_eq!(job, expected);
    let settled = env.task_record(&stuck.task_id).await;
    assert_eq!(
        (settled.vault, settled.open.as_deref(), settled.manifest_key.as_deref()),
        (VaultState::Partial, None, Some(expected.key.as_str()))
    );
    let manifest: Manifest = serde_json::from_slice(&env.object(&expected.key).await.expect("a manifest")).unwrap();
    assert_eq!((manifest.vault, manifest.files.len()), (VaultState::Partial, 2));

    // Out of the index now: the next run checks nothing and sends nothing.
    let again = app(&env).run("run-2", stop_at()).await.expect("second sweep");
    assert_eq!((again.tasks_checked, again.manifests_requested), (0, 0));
    assert!(env.drain_queue(10).await.is_empty());
}

/// A callback adding a file to a task whose files are all settled, whose request stops after
/// its file item (a crash: nothing after it runs), while a downloader that read the task
/// before that item settles it: the mark's fence refuses that settle (the table's own
/// condition), a settle check reading the task now does not settle it either, and once the
/// grace period is over the sweeper takes the fence away, commits the file and sends it.
/// Without the fence the settle would take the task out of the index, the file unsent.
#[tokio::test]
async fn a_settle_read_before_a_stopped_save_added_a_file_is_refused_and_the_sweeper_sends_it() {
    use stemvault_download::domain::{SettleTask, SettleWrite};
    use stemvault_vault::download::{SettlePlan, settle_plan};
    let env = TestEnv::new().await;
    let read = stored(&env, &orphaned(Duration::from_secs(600), &[("vocal", FileStatus::Stored)])).await;
    let task = TaskId::parse(&read.task_id).unwrap();
    let SettlePlan::Settle(plan) = settle_plan(&read, &task, Timestamp::now()) else { panic!("all files settled") };

    // The adding save's mark (the adapter's own write), 10 minutes ago, then its file item.
    let marked_at = Timestamp::from_unix_ms(Timestamp::now().unix_ms - 600_000);
    let mark = stemvault_vault::items::MarkOpen {
        version: read.version,
        last_received_at: AttributeValue::S(marked_at.rfc3339()).into(),
        read: None,
        generation: read.generation + 1,
        at: marked_at.unix_ms as u64,
    };
    assert_eq!(env.tasks().mark_open(&read.task_id, &mark).await, Ok(Conditional::Applied));
    let added = orphaned(Duration::from_secs(600), &[("drums", FileStatus::Pending)]);
    let drums = added.files["drums"].clone();
    // Under this task's prefix (`orphaned` makes a task of its own).
    let key = s3_key::file_key(&task, "drums", &drums.url);
    let drums = stemvault_vault::FileEntry { generation: Some(read.generation + 1), key, ..drums };
    let item = stemvault_vault::items::file_item(&read.task_id, "drums", &drums).unwrap();
    let item: HashMap<String, AttributeValue> = item.into_inner().into_iter().map(|(k, v)| (k, v.into())).collect();
    env.dynamo.put_item().table_name(&env.resources.table_name).set_item(Some(item)).send().await.unwrap();

    let downloader = env.download_ports();
    assert_eq!(downloader.settle_task(&task, &plan).await, Ok(SettleWrite::Refused));
    let left = env.task_record(&read.task_id).await;
    let fenced = (VaultState::Pending, Some(OPEN_MARKER), Some(read.generation + 1));
    assert_eq!((left.vault, left.open.as_deref(), left.adding), fenced);
    assert!(left.has_uncommitted_files());
    assert_eq!(settle_plan(&left, &task, Timestamp::now()), SettlePlan::Open);

    let stop_at = Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 1, 0), "{report:?}");
    let sent = jobs_on_queue(&env.drain_queue(10).await);
    assert_eq!(sent.iter().map(|job| job.name.as_str()).collect::<Vec<_>>(), ["drums"]);
    let swept = env.task_record(&read.task_id).await;
    let committed = (None, read.generation + 1, FileStatus::Queued);
    assert_eq!((swept.adding, swept.generation, swept.files["drums"].status), committed);
    assert_eq!((swept.vault, swept.open.as_deref()), (VaultState::Pending, Some(OPEN_MARKER)));
}

/// Take the sweeper's one job off the queue and let the downloader handle it; the job.
async fn settle_through_manifest_job(env: &TestEnv) -> FileJob {
    let event = env.receive_event(1, 2).await;
    let job: FileJob = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    let download = env.download_app("cdn1.suno.ai", None).await;
    let response = env.run_download(&download, &event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    job
}

/// A task settled before anyone named its family gets a registration naming it (and a
/// client_ref): the registration moves the file set's generation on and reopens the task,
/// and the sweeper's next run has its manifest written again, with the family and client_ref,
/// over the one without them (through the real table, queue and bucket).
#[tokio::test]
async fn a_registration_completing_a_settled_task_has_its_manifest_written_again() {
    let env = TestEnv::new().await;
    let mut unknown = orphaned(Duration::from_secs(600), &[("vocal", FileStatus::Stored)]);
    unknown.family = Family::Unknown;
    let unknown = stored(&env, &unknown).await;
    let stop_at = || Timestamp::now().plus(Duration::from_secs(60));
    assert_eq!(app(&env).run("run-1", stop_at()).await.expect("sweep").manifests_requested, 1);
    let job = settle_through_manifest_job(&env).await;
    assert_eq!((job.task_id.as_str(), job.name.as_str()), (unknown.task_id.as_str(), MANIFEST_JOB_NAME));
    let key = s3_key::manifest_key(&TaskId::parse(&unknown.task_id).unwrap());
    let manifest = |bytes: Option<Vec<u8>>| serde_json::from_slice::<Manifest>(&bytes.expect("a manifest")).unwrap();
    let first = manifest(env.object(&key).await);
    assert_eq!((first.family, first.client_ref), (Family::Unknown, None));
    let settled = env.task_record(&unknown.task_id).await;
    assert!(settled.is_settled(), "{settled:?}");

    let body = r#"{"family":"vocal_separation","client_ref":"order-17"}"#;
    let put = lambda_http::http::Request::builder()
        .method("PUT")
        .uri(format!("/tasks/{}", unknown.task_id))
        .body(lambda_http::Body::Text(body.into()))
        .unwrap();
    let response = env.results_app(Duration::from_secs(300)).handle(put).await;
    assert_eq!(response.status(), 200, "{:?}", response.body());
    let completed = env.task_record(&unknown.task_id).await;
    assert_eq!(
        (completed.family, completed.generation, completed.open.as_deref(), completed.manifest_key.as_deref()),
        (Family::VocalSeparation, settled.generation + 1, Some("open"), None)
    );
    assert_eq!((completed.vault, completed.files["vocal"].status), (VaultState::Complete, FileStatus::Stored));

    let report = app(&env).run("run-2", stop_at()).await.expect("second sweep");
    assert_eq!((report.tasks_checked, report.manifests_requested), (1, 1));
    let job = settle_through_manifest_job(&env).await;
    assert_eq!((job.task_id.as_str(), job.name.as_str()), (unknown.task_id.as_str(), MANIFEST_JOB_NAME));
    let rewritten = manifest(env.object(&key).await);
    assert_eq!((rewritten.family, rewritten.client_ref.as_deref()), (Family::VocalSeparation, Some("order-17")));
    let resettled = env.task_record(&unknown.task_id).await;
    assert_eq!((resettled.vault, resettled.open.as_deref()), (VaultState::Complete, None));
    assert_eq!(resettled.manifest_key.as_deref(), Some(key.as_str()));
}

/// Issue 11: each run resumes after the last open task the previous run checked (a cursor
/// item in the table), wrapping around at the end, so tasks stuck open for good never hide a
/// newer orphan; the cursor item is no task to any reader.
#[tokio::test]
async fn each_run_resumes_after_the_cursor_kept_in_the_table_and_wraps_around() {
    use stemvault_sweeper::aws::{AwsPorts, CURSOR_SK, CURSOR_TASK_ID};
    use stemvault_sweeper::domain::{Settings, sweep};

    let env = TestEnv::new().await;
    // Oldest first: three tasks whose messages dead-lettered (queued for good), then an orphan.
    let mut stuck = Vec::new();
    for age in [900, 800, 700] {
        stuck.push(stored(&env, &orphaned(Duration::from_secs(age), &[("queued", FileStatus::Queued)])).await);
    }
    let orphan = stored(&env, &orphaned(Duration::from_secs(600), &[("pending", FileStatus::Pending)])).await;
    // Registered tasks still without a result, older than all: out of the index, so they take
    // none of a run's tasks.
    for age in [1000, 950] {
        let registered_at = Timestamp::from_unix_ms(Timestamp::now().unix_ms - age * 1000);
        let registration = Registration { family: Family::Music, client_ref: None };
        let task = TaskId::parse(&new_task_id()).unwrap();
        stored(&env, &registration.record(&task, registered_at, Duration::from_secs(600))).await;
    }
    let config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(env.resources.table_name.clone()),
        "QUEUE_URL" => Some(env.resources.queue_url.clone()),
        _ => None,
    })
    .unwrap();
    let ports = AwsPorts::new(&config, &env.config);
    let two = Settings { max_tasks: 2, ..Settings::default() };
    // Each run its own minute, as each scheduled run has.
    let stop_at = || Timestamp::now().plus(Duration::from_secs(60));
    let cursor = || async {
        let out = env
            .dynamo
            .get_item()
            .table_name(&env.resources.table_name)
            .key("task_id", AttributeValue::S(CURSOR_TASK_ID.into()))
            .key("sk", AttributeValue::S(CURSOR_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get the cursor");
        out.item.and_then(|item| item.get("after_task_id").and_then(|v| v.as_s().ok()).cloned())
    };

    let first = sweep(&ports, &two, "run-1", stop_at()).await.expect("sweep");
    assert_eq!((first.tasks_checked, first.files_requeued, first.stopped_early), (2, 0, true));
    assert_eq!(cursor().await, Some(stuck[1].task_id.clone()));

    let second = sweep(&ports, &two, "run-2", stop_at()).await.expect("sweep");
    assert_eq!((second.tasks_checked, second.files_requeued, second.wrapped), (2, 1, true));
    assert_eq!(jobs_on_queue(&env.drain_queue(10).await), [job_of(&orphan, "pending")]);
    assert_eq!(cursor().await, Some(orphan.task_id.clone()));

    let third = sweep(&ports, &two, "run-3", stop_at()).await.expect("sweep");
    assert_eq!((third.tasks_checked, third.files_requeued, third.wrapped), (2, 0, true));
    assert_eq!(cursor().await, Some(stuck[1].task_id.clone()), "around to the oldest two");

    // The cursor item is no task: not in the open-tasks index, no record under its id.
    let table = stemvault_aws::TaskTable::new(env.dynamo.clone(), env.resources.table_name.clone());
    assert_eq!(table.load(CURSOR_TASK_ID).await.expect("load"), None);
    let listed = env
        .dynamo
        .query()
        .table_name(&env.resources.table_name)
        .index_name(stemvault_vault::OPEN_TASKS_INDEX)
        .key_condition_expression("#open = :open")
        .expression_attribute_names("#open", "open")
        .expression_attribute_values(":open", AttributeValue::S("open".into()))
        .send()
        .await
        .expect("query the index");
    let mut ids: Vec<String> = listed.items().iter().map(|i| i["task_id"].as_s().unwrap().clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = stuck.iter().chain([&orphan]).map(|r| r.task_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

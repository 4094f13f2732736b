use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stemvault_aws::secrets::{SecretError, SecretText};
use stemvault_vault::ingest::{BodyInfo, Claimant, ingest_callback};
use stemvault_vault::{FileJob, FileStatus, LeaseEnd, TaskRecord, Timestamp};
use suno_callbacks::{CallbackEvent, Details, Family, FileRef, Stage, TaskId};
use tokio::sync::Barrier;

use super::*;
use crate::error::EnqueueError;
use crate::memory::MemoryPorts;

const T0: i64 = 1_763_910_000_000;
const TASK: &str = "3e63b4cc88d52611159371f6af5571e7";

fn event(stage: Stage, files: &[&str]) -> CallbackEvent {
    CallbackEvent {
        task_id: TaskId::parse(TASK).unwrap(),
        family: Family::VocalSeparation,
        stage,
        code: 200,
        message: "ok".into(),
        files: files.iter().map(|n| FileRef { name: (*n).into(), url: format!("https://h/s/{n}.mp3?sig=z") }).collect(),
        streams: vec![],
        details: Details::None,
    }
}

fn body_key(stage: &str, body: &[u8]) -> String {
    format!("tasks/{TASK}/callbacks/{stage}-{}.json", hex::encode(Sha256::digest(body)))
}

fn settings() -> Settings {
    Settings { bucket: "vault".into(), ..Settings::default() }
}

#[test]
fn claims_outlive_a_live_request_but_not_a_dead_one_by_much() {
    let lease = Settings::default().lease;
    assert!(lease >= FUNCTION_TIMEOUT, "{lease:?}");
    assert!(lease <= FUNCTION_TIMEOUT + Duration::from_secs(5), "{lease:?}: retries after a crash wait this long");
}

/// A MIDI result of `notes` notes.
fn midi(notes: usize) -> CallbackEvent {
    use suno_callbacks::{MidiInstrument, MidiNote};
    let note = MidiNote { pitch: 60, start: 0.5, end: 0.75, velocity: 1.0 };
    let instruments = vec![MidiInstrument { name: "Piano".into(), notes: vec![note; notes] }];
    CallbackEvent {
        family: Family::Midi,
        details: Details::Midi { state: None, instruments },
        ..event(Stage::Final, &[])
    }
}

/// The details of `e` as they are kept apart: JSON, named by its own SHA-256.
fn details_json(e: &CallbackEvent) -> Vec<u8> {
    serde_json::to_vec(&e.details).unwrap()
}

/// MIDI notes too many for the task item are kept whole as JSON beside the archived body, and
/// the record points at both (a retry writes them again, as it archives the body again); a
/// few stay in the task item alone.
#[tokio::test]
async fn results_too_large_for_the_task_item_are_kept_beside_the_body() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let (e, body) = (midi(5_000), b"{\"midi\":1}");
    ingest(&ports, &settings(), &e, body, "req-1").await.unwrap();
    let details_key = format!("tasks/{TASK}/details/final-{}.json", hex::encode(Sha256::digest(details_json(&e))));
    let kept = ports.body(&details_key).expect("the details kept");
    assert!(kept == serde_json::to_vec(&e.details).unwrap(), "as JSON, whole");
    assert_eq!(ports.body(&body_key("final", body)).as_deref(), Some(&body[..]));
    let pointer = ports.record(TASK).unwrap().details.expect("a pointer");
    assert_eq!((&pointer["details_key"], &pointer["body_key"]), (&details_key.into(), &body_key("final", body).into()));

    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &midi(10), b"{\"midi\":2}", "req-1").await.unwrap();
    assert_eq!(ports.body_keys(), [body_key("final", b"{\"midi\":2}")]);
}

/// The body archived but its kept details not: the answer fails (the provider retries), the
/// record already points at the details object, and the retry writes it.
#[tokio::test]
async fn kept_details_that_fail_to_write_are_written_by_the_retry() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let (e, body) = (midi(5_000), b"{\"midi\":1}");
    let details_key = format!("tasks/{TASK}/details/final-{}.json", hex::encode(Sha256::digest(details_json(&e))));
    ports.refuse_archive_under(Some(&format!("tasks/{TASK}/details/")));
    let err = ingest(&ports, &settings(), &e, body, "req-1").await.unwrap_err();
    assert!(matches!(&err, AcceptError::Archive(why) if why.message.contains("details")), "{err}");
    assert!(err.is_retryable());
    assert_eq!(ports.body_keys(), [body_key("final", body)], "the body archived, the details not");
    let pointer = ports.record(TASK).unwrap().details.expect("a pointer");
    assert_eq!(pointer["details_key"], details_key.as_str());

    ports.refuse_archive_under(None);
    assert!(ingest(&ports, &settings(), &e, body, "req-2").await.unwrap().duplicate);
    assert!(ports.body(&details_key) == Some(serde_json::to_vec(&e.details).unwrap()), "kept whole");
}

#[tokio::test]
async fn a_new_callback_is_recorded_archived_and_its_files_queued() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal", "instrumental"]);
    let outcome = ingest(&ports, &settings(), &e, b"{\"body\":1}", "req-1").await.unwrap();

    assert_eq!(outcome, Outcome { duplicate: false, task_stage: Stage::Final, files_queued: 2 });
    assert_eq!(ports.body(&body_key("final", b"{\"body\":1}")).as_deref(), Some(&b"{\"body\":1}"[..]));
    let record = ports.record(TASK).unwrap();
    let entry = &record.callbacks[&format!("final-{}", hex::encode(Sha256::digest(b"{\"body\":1}")))];
    assert_eq!((entry.body_key.clone(), entry.bytes), (body_key("final", b"{\"body\":1}"), 10));

    let messages = ports.messages();
    assert_eq!(messages.len(), 2);
    for (_, job) in &messages {
        let file = &record.files[&job.name];
        assert_eq!(file.status, FileStatus::Queued);
        assert_eq!(job.task_id, TASK);
        assert_eq!(job.url, format!("https://h/s/{}.mp3?sig=z", job.name));
        assert_eq!(job.key, format!("tasks/{TASK}/{}.mp3", job.name));
    }
}

#[tokio::test]
async fn a_duplicate_is_counted_and_sends_nothing() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap();
    ports.advance(Duration::from_secs(2));
    let again = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();

    assert_eq!(again, Outcome { duplicate: true, task_stage: Stage::Final, files_queued: 0 });
    assert_eq!(ports.messages().len(), 1);
    let record = ports.record(TASK).unwrap();
    assert_eq!(record.deliveries, 2);
    assert_eq!(record.last_received_at, Timestamp::from_unix_ms(T0 + 2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_deliveries_have_one_effect() {
    let ports = Arc::new(MemoryPorts::new());
    let e = Arc::new(event(Stage::Final, &["vocal", "drums", "bass"]));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (ports, e) = (ports.clone(), e.clone());
        tasks.spawn(async move { ingest(&*ports, &settings(), &e, b"{\"same\":true}", &format!("req-{i}")).await });
    }
    let outcomes: Vec<Outcome> = tasks.join_all().await.into_iter().map(Result::unwrap).collect();

    assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1);
    assert_eq!(outcomes.iter().map(|o| o.files_queued).sum::<usize>(), 3);
    assert_eq!(ports.record_count(), 1);
    let mut names: Vec<String> = ports.messages().into_iter().map(|(_, job)| job.name).collect();
    names.sort();
    assert_eq!(names, vec!["bass", "drums", "vocal"]);
    let record = ports.record(TASK).unwrap();
    assert_eq!(record.deliveries, 20);
    assert_eq!(record.callbacks.values().map(|c| c.deliveries).sum::<u64>(), 20);
    assert!(record.files.values().all(|f| f.status == FileStatus::Queued));
}

#[tokio::test]
async fn when_the_queue_fails_the_claims_are_released_and_the_retry_queues_them() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal", "drums"]);
    ports.set_enqueue_failing(true);
    let err = ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert_eq!(
        err,
        AcceptError::Enqueue(EnqueueError {
            failed: 2,
            total: 2,
            reason: "SQS SendMessageBatch failed: queue switched off".into()
        })
    );
    let record = ports.record(TASK).unwrap();
    assert!(record.files.values().all(|f| f.status == FileStatus::Pending && f.claim.is_none()));
    assert_eq!(ports.body_keys(), vec![body_key("final", b"{}")]);

    ports.set_enqueue_failing(false);
    let retry = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();
    assert_eq!(retry, Outcome { duplicate: true, task_stage: Stage::Final, files_queued: 2 });
    assert_eq!(ports.messages().len(), 2);
    assert!(ports.record(TASK).unwrap().files.values().all(|f| f.status == FileStatus::Queued));
}

/// A task without files is settled as it is recorded, and only its manifest job writes its
/// manifest (and `Task Vaulted`): a job the queue refuses fails the request (parked, the
/// provider's retry or the replay sends it again), before any event says the stage.
#[tokio::test]
async fn when_the_queue_refuses_a_manifest_job_the_request_fails_before_its_events() {
    use stemvault_vault::download::MANIFEST_JOB_NAME;
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &[]);
    ports.set_enqueue_failing(true);
    let err = ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert!(matches!(&err, AcceptError::Enqueue(EnqueueError { failed: 1, total: 1, .. })), "{err}");
    assert!(ports.events.published().is_empty(), "no event before its manifest job is sent");

    ports.set_enqueue_failing(false);
    ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();
    let jobs: Vec<String> = ports.messages().into_iter().map(|(_, job)| job.name).collect();
    assert_eq!(jobs, [MANIFEST_JOB_NAME]);
    assert_eq!(ports.events.published().len(), 1);
}

#[tokio::test]
async fn when_the_archive_fails_the_files_still_go_and_the_retry_archives() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ports.set_archive_failing(true);
    let err = ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert!(matches!(err, AcceptError::Archive(_)), "{err}");
    assert_eq!(ports.messages().len(), 1);
    assert!(ports.body_keys().is_empty());

    ports.set_archive_failing(false);
    let retry = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(ports.body_keys(), vec![body_key("final", b"{}")]);
    assert_eq!(ports.messages().len(), 1);
}

/// An archive write that does not answer (S3 stalled, the table and queue well) holds back
/// neither the files' messages nor the events: they are out when the deadline ends the
/// request, and only the answer waits for the archive.
#[tokio::test(start_paused = true)]
async fn a_stalled_archive_holds_back_neither_the_files_nor_the_events() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ports.set_archive_stalled(true);
    let e = event(Stage::Final, &["vocal", "drums"]);
    let err = ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert!(matches!(err, AcceptError::OutOfTime { .. }), "{err}");
    assert_eq!(ports.messages().len(), 2);
    assert!(ports.record(TASK).unwrap().files.values().all(|f| f.status == FileStatus::Queued));
    assert_eq!(ports.events.ids(), [(stemvault_vault::events::EventType::StageChanged, format!("{TASK}.stage.final"))]);
    assert!(ports.body_keys().is_empty());
}

#[tokio::test]
async fn record_failures_say_whether_to_retry() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ports.set_save_error(Some(StoreError::Unavailable("down".into())));
    assert_eq!(
        ingest(&ports, &settings(), &e, b"{}", "r").await,
        Err(AcceptError::Store(StoreError::Unavailable("down".into())))
    );
    ports.set_save_error(Some(StoreError::Conflict));
    let tight = Settings { max_save_attempts: 3, ..settings() };
    assert_eq!(ingest(&ports, &tight, &e, b"{}", "r").await, Err(AcceptError::Contention { attempts: 3 }));
    assert!(ports.messages().is_empty(), "nothing is queued without a record");
}

/// On paused time: the answer comes when the deadline cuts the slow call short, not after it.
#[tokio::test(start_paused = true)]
async fn slow_ports_get_a_retryable_timeout_by_the_deadline_and_the_retry_completes() {
    let ports = MemoryPorts::new();
    ports.set_latency(Duration::from_secs(2));
    let e = event(Stage::Final, &["vocal"]);
    let tight = Settings { deadline: Duration::from_millis(100), ..settings() };
    let started = tokio::time::Instant::now();
    let err = ingest(&ports, &tight, &e, b"{}", "req-1").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, AcceptError::OutOfTime { after: Duration::from_millis(100) });
    assert!(err.is_retryable());
    assert_eq!(took, Duration::from_millis(100), "answered at the deadline");

    ports.set_latency(Duration::ZERO);
    let retry = ingest(&ports, &tight, &e, b"{}", "req-2").await.unwrap();
    assert_eq!((retry.duplicate, retry.files_queued), (false, 1));
}

#[test]
fn the_whole_request_ends_before_the_lambda_and_its_claims() {
    let s = Settings::default();
    assert!(s.deadline < FUNCTION_TIMEOUT && s.deadline < s.lease, "{s:?}");
    assert!(ANSWER_WITHIN <= Duration::from_secs(9), "the provider waits 10 s at least");
    // The longest checks in front (a secret re-read), recording and parking end by then.
    let checks = stemvault_aws::secrets::REREAD_TIMEOUT;
    assert!(checks + PARK_TIMEOUT < ANSWER_WITHIN, "recording gets some time after a slow re-read");
    assert!(ANSWER_WITHIN < FUNCTION_TIMEOUT);
}

/// Recording gets what is left of [`ANSWER_WITHIN`] after the time already spent and the
/// park's: a request that spent 6 s in its checks records for 1 s at most, then parks.
#[tokio::test(start_paused = true)]
async fn recording_leaves_time_to_park_within_the_answer_time() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ports.set_latency(Duration::from_millis(600));
    let e = event(Stage::Final, &["vocal"]);
    // Paused time: where recording was given up, not how long anything took.
    let started = tokio::time::Instant::now();
    let spent = ANSWER_WITHIN - PARK_TIMEOUT - Duration::from_millis(300);
    let parked = ingest_or_park(&ports, &settings(), &e, b"{}", "req-1", spent, &Outage::default()).await.unwrap();
    assert!(matches!(parked, Ingested::Parked { because: AcceptError::OutOfTime { .. }, .. }), "{parked:?}");
    assert!(started.elapsed() < Duration::from_millis(300) + PARK_TIMEOUT, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_record_too_large_for_the_table_is_refused_and_nothing_is_written() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let small = event(Stage::First, &["vocal"]);
    ingest(&ports, &settings(), &small, b"1", "req-1").await.unwrap();
    let before = ports.record(TASK).unwrap();

    // One file's item is what would outgrow the table's 400 KB.
    let mut huge = event(Stage::Complete, &["vocal", "drums"]);
    huge.files[1].url = format!("https://h/drums.mp3?sig={}", "s".repeat(360_000));
    let err = ingest(&ports, &settings(), &huge, b"2", "req-2").await.unwrap_err();
    let AcceptError::TooLargeToRecord { bytes } = err else { panic!("{err}") };
    assert!(bytes > stemvault_vault::ingest::MAX_ITEM_ESTIMATE_BYTES, "{bytes}");
    assert!(!err.is_retryable());
    assert_eq!(ports.record(TASK).unwrap(), before, "the record is left as it was");
    assert_eq!(ports.messages().len(), 1, "only the first callback's file was queued");
    assert_eq!(ports.body_keys(), vec![body_key("first", b"1")], "the refused body is not archived");
}

/// A complete stage of `count` tracks, each URL carrying a signature of `sig_bytes`.
fn tracks_with_long_urls(count: usize, sig_bytes: usize) -> CallbackEvent {
    let names: Vec<String> = (0..count).map(|i| format!("track-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut many = event(Stage::Complete, &names);
    for file in &mut many.files {
        file.url = format!("https://h/{}.mp3?sig={}", file.name, "s".repeat(sig_bytes));
    }
    many
}

#[tokio::test]
async fn a_record_grown_past_one_query_page_is_refused_though_each_item_fits() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let many = tracks_with_long_urls(60, 20_000);
    let err = ingest(&ports, &settings(), &many, b"2", "req-2").await.unwrap_err();
    let AcceptError::TooLargeToRecord { bytes } = err else { panic!("{err}") };
    assert!(bytes > stemvault_vault::ingest::MAX_RECORD_ESTIMATE_BYTES, "{bytes}");
    assert_eq!(ports.record(TASK), None, "nothing is written");
    assert!(ports.messages().is_empty());
}

#[tokio::test]
async fn hundreds_of_files_with_long_urls_fit_an_item_each() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let many = tracks_with_long_urls(300, 1000);
    let outcome = ingest(&ports, &settings(), &many, b"2", "req-2").await.unwrap();
    assert_eq!(outcome.files_queued, 300);
    assert_eq!(ports.record(TASK).unwrap().files.len(), 300);
}

#[tokio::test]
async fn a_body_whose_record_fits_is_archived_even_when_the_put_fails() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ports.set_save_error(Some(StoreError::Unavailable("down".into())));
    ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert_eq!(ports.body_keys(), vec![body_key("final", b"{}")], "it fitted: archived beside the failed put");
}

/// Another request adding a file commits between this one's file item and its task item (it
/// read the task before this one's item was there, so a settle of its file set may publish a
/// `Task Vaulted` without this one's file): this one's retry moves its file on to a
/// generation of its own, whose settle sends an event with an id of its own.
#[tokio::test]
async fn a_file_written_before_another_requests_commit_gets_a_generation_of_its_own() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &event(Stage::First, &["vocal"]), b"1", "req-1").await.unwrap();
    let mut settled = ports.record(TASK).unwrap();
    settled.files.get_mut("vocal").unwrap().status = FileStatus::Stored;
    (settled.vault, settled.open) = (stemvault_vault::VaultState::Complete, None);
    settled.manifest_key = Some(format!("tasks/{TASK}/manifest.json"));
    ports.put_record(settled.clone());
    let g = settled.generation;

    let adds_drums = event(Stage::Complete, &["vocal", "drums"]);
    let info = BodyInfo { archive_key: body_key("complete", b"2"), sha256_hex: "2".into(), bytes: 1, arrived_at: None };
    let claimant = Claimant { id: "req-2".into(), lease: Duration::from_secs(30) };
    let mut other = ingest_callback(Some(&settled), &adds_drums, &info, &claimant, ports.now()).record;
    let drums = other.files.get_mut("drums").unwrap();
    (drums.status, drums.claim, drums.lease_until) = (FileStatus::Queued, None, None);
    assert_eq!(other.generation, g + 1);
    ports.commit_before_next_task_write(other);

    let adds_bass = event(Stage::Complete, &["vocal", "bass"]);
    let outcome = ingest(&ports, &settings(), &adds_bass, b"3", "req-3").await.unwrap();
    assert_eq!(outcome.files_queued, 1);
    let r = ports.record(TASK).unwrap();
    let generations = |r: &TaskRecord| r.files.iter().map(|(n, f)| (n.clone(), f.generation)).collect::<Vec<_>>();
    assert_eq!(r.generation, g + 2, "{:?}", generations(&r));
    assert_eq!(r.files["bass"].generation, Some(g + 2));
    assert_eq!(r.files["drums"].generation, Some(g + 1), "the other's file stays with its commit");
    assert_eq!((r.vault, r.adding), (stemvault_vault::VaultState::Pending, None), "committed: no fence left");
    assert_eq!(r.files["bass"].status, FileStatus::Queued);
}

/// A record whose files a request claimed and then abandoned (it crashed before sending).
fn abandoned(ports: &MemoryPorts, e: &CallbackEvent, body: &[u8]) {
    let sha256_hex = hex::encode(Sha256::digest(body));
    let info =
        BodyInfo { archive_key: body_key("final", body), sha256_hex, bytes: body.len() as u64, arrived_at: None };
    let claimant = Claimant { id: "crashed".into(), lease: Duration::from_secs(30) };
    ports.put_record(ingest_callback(None, e, &info, &claimant, ports.now()).record);
}

#[tokio::test]
async fn a_duplicate_waits_for_a_live_claim_within_its_budget() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    abandoned(&ports, &e, b"{}");
    let err = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap_err();
    assert_eq!(err, AcceptError::StillEnqueuing { files: 1 });
    assert!(ports.messages().is_empty());
    let waited = ports.now().unix_ms - T0;
    assert!((5_000..6_000).contains(&waited), "waited {waited} ms");
}

/// Its own files sent but not marked queued (that write failed), a request waiting for
/// another delivery's files does not send its own again on every look (they are still
/// `enqueuing` under its claim, but their messages are out).
#[tokio::test]
async fn a_request_waiting_for_others_sends_its_own_files_once() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    abandoned(&ports, &event(Stage::Final, &["vocal"]), b"{}");
    ports.set_mark_queued_failing(true);
    let err = ingest(&ports, &settings(), &event(Stage::Final, &["vocal", "drums"]), b"2", "req-2").await.unwrap_err();
    assert_eq!(err, AcceptError::StillEnqueuing { files: 1 });
    let drums = ports.messages().iter().filter(|(_, job)| job.name == "drums").count();
    assert_eq!(drums, 1, "{:?}", ports.messages());

    // And the files it takes over while waiting (their claims lapsed): once each too.
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    abandoned(&ports, &event(Stage::Final, &["vocal", "bass"]), b"{}");
    let mut record = ports.record(TASK).unwrap();
    let bass = record.files.get_mut("bass").unwrap();
    (bass.claim, bass.lease_until) = (Some("live".into()), Some(LeaseEnd::from_unix_seconds(T0 / 1000 + 50)));
    ports.put_record(record);
    ports.set_mark_queued_failing(true);
    let patient = Settings { wait_budget: Duration::from_secs(60), ..settings() };
    let e = event(Stage::Final, &["vocal", "bass", "drums"]);
    assert_eq!(ingest(&ports, &patient, &e, b"2", "req-2").await.unwrap().files_queued, 3);
    for name in ["vocal", "bass", "drums"] {
        let sent = ports.messages().iter().filter(|(_, job)| job.name == name).count();
        assert_eq!(sent, 1, "{name}: {:?}", ports.messages());
    }
}

#[tokio::test]
async fn a_lapsed_claim_is_taken_over() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal", "drums"]);
    abandoned(&ports, &e, b"{}");
    let patient = Settings { wait_budget: Duration::from_secs(60), ..settings() };
    let outcome = ingest(&ports, &patient, &e, b"{}", "req-2").await.unwrap();
    assert_eq!(outcome, Outcome { duplicate: true, task_stage: Stage::Final, files_queued: 2 });
    assert_eq!(ports.messages().len(), 2);
    assert!(ports.now().unix_ms - T0 >= 30_000);
    assert!(ports.record(TASK).unwrap().files.values().all(|f| f.status == FileStatus::Queued));
}

/// A claim that lapses on the wait's last look is taken over and sent: the request has
/// nothing left to wait for and finishes (manifest job, events), not answers "still enqueuing".
#[tokio::test]
async fn a_claim_taken_over_on_the_last_look_finishes_the_request() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    abandoned(&ports, &e, b"{}");
    let lease = ports.record(TASK).unwrap().files["vocal"].lease_until.unwrap();
    // The budget ends as the claim lapses (the second after `lease_until`): the look that
    // takes it over is the first past the deadline.
    let budget = Duration::from_secs((lease.unix_seconds + 1 - T0 / 1000).unsigned_abs());
    let outcome = ingest(&ports, &Settings { wait_budget: budget, ..settings() }, &e, b"{}", "req-2").await;
    assert_eq!(outcome, Ok(Outcome { duplicate: true, task_stage: Stage::Final, files_queued: 1 }));
    assert_eq!(ports.messages().len(), 1);
}

#[tokio::test]
async fn a_duplicate_returns_once_the_holder_has_queued_the_files() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    abandoned(&ports, &e, b"{}");
    let task = TaskId::parse(TASK).unwrap();
    let holder_finishes = async {
        ports.sleep(Duration::from_millis(10)).await;
        ports.mark_queued(&task, &["vocal".to_owned()]).await
    };
    let settings = settings();
    let (outcome, marked) = tokio::join!(ingest(&ports, &settings, &e, b"{}", "req-2"), holder_finishes);
    marked.unwrap();
    assert_eq!(outcome.unwrap(), Outcome { duplicate: true, task_stage: Stage::Final, files_queued: 0 });
    assert_eq!(ports.record(TASK).unwrap().files["vocal"].status, FileStatus::Queued);
    assert!(ports.messages().is_empty(), "the holder's message is the one");
}

/// Which two operations of [`Rendezvous`] wait for each other.
#[derive(PartialEq)]
enum Meeting {
    /// The first record write and the archive.
    SaveAndArchive,
    /// Marking the sent files queued and publishing the stage event.
    MarkAndPublish,
    /// Not a meeting: marking the sent files queued waits (a while) for a read of the task,
    /// as a slow mark would let one come first.
    MarkAfterALoad,
}

/// Ports whose two operations of `meeting` each wait for the other to start: the use-case
/// only gets through if it runs them at the same time.
struct Rendezvous {
    inner: MemoryPorts,
    barrier: Barrier,
    saved_once: AtomicBool,
    meeting: Meeting,
    loaded: tokio::sync::Notify,
}

impl Rendezvous {
    async fn meet(&self) -> Result<(), String> {
        // Generous: on a loaded machine the other operation may start late, but it starts.
        let waited = tokio::time::timeout(Duration::from_secs(10), self.barrier.wait()).await;
        waited.map(|_| ()).map_err(|_| "ran alone".to_owned())
    }
}

impl LoadTask for Rendezvous {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let loaded = self.inner.load_task(task_id).await;
        self.loaded.notify_waiters();
        loaded
    }
}
impl SaveTask for Rendezvous {
    async fn save_task(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        if self.meeting == Meeting::SaveAndArchive && !self.saved_once.swap(true, Ordering::SeqCst) {
            self.meet().await.map_err(StoreError::Unavailable)?;
        }
        self.inner.save_task(before, after).await
    }
}
impl ArchiveBody for Rendezvous {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), stemvault_vault::StorageError> {
        if self.meeting == Meeting::SaveAndArchive {
            self.meet().await.map_err(|why| stemvault_vault::StorageError::transient("PutObject", why))?;
        }
        self.inner.archive_body(key, body).await
    }
}
impl EnqueueFiles for Rendezvous {
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, stemvault_vault::QueueError>> {
        self.inner.enqueue_files(jobs).await
    }
}
impl MarkQueued for Rendezvous {
    async fn mark_queued(&self, task_id: &TaskId, names: &[String]) -> Result<(), StoreError> {
        if self.meeting == Meeting::MarkAndPublish {
            self.meet().await.map_err(StoreError::Unavailable)?;
        }
        if self.meeting == Meeting::MarkAfterALoad {
            let _ = tokio::time::timeout(Duration::from_millis(300), self.loaded.notified()).await;
        }
        self.inner.mark_queued(task_id, names).await
    }
}
impl ReleaseClaims for Rendezvous {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        self.inner.release_claims(task_id, claimant, names).await
    }
}
impl stemvault_vault::events::PublishEvents for Rendezvous {
    async fn publish_events(
        &self,
        events: &[stemvault_vault::events::TaskEvent],
    ) -> Result<(), stemvault_vault::events::PublishError> {
        if self.meeting == Meeting::MarkAndPublish {
            let met = self.meet().await;
            met.map_err(|reason| stemvault_vault::events::PublishError {
                failed: events.len(),
                total: events.len(),
                reason,
            })?;
        }
        self.inner.publish_events(events).await
    }
}
impl ReadSecret for Rendezvous {
    async fn read_secret(&self) -> Result<SecretText, SecretError> {
        self.inner.read_secret().await
    }
}
impl crate::credentials::ReadPreviousSecret for Rendezvous {
    async fn read_previous_secret(&self) -> Result<SecretText, SecretError> {
        self.inner.read_previous_secret().await
    }
}
impl Clock for Rendezvous {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }
    async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await
    }
}

#[tokio::test]
async fn the_body_is_archived_while_the_record_is_written() {
    let ports = rendezvous(Meeting::SaveAndArchive);
    let outcome = ingest(&ports, &settings(), &event(Stage::Final, &["vocal"]), b"{}", "r").await;
    assert_eq!(outcome.map(|o| o.files_queued), Ok(1));
    assert_eq!(ports.inner.body_keys().len(), 1);
}

fn rendezvous(meeting: Meeting) -> Rendezvous {
    rendezvous_over(MemoryPorts::new(), meeting)
}

fn rendezvous_over(inner: MemoryPorts, meeting: Meeting) -> Rendezvous {
    let loaded = tokio::sync::Notify::new();
    Rendezvous { inner, barrier: Barrier::new(2), saved_once: AtomicBool::new(false), meeting, loaded }
}

/// A request that sent its own files and waits for another's sends its own once, though
/// its mark of them is slow: it marks them first, and its reclaim leaves out what it sent
/// (either alone keeps it from sending them again). On paused time: the mark's wait for a
/// load ends at once when none can come.
#[tokio::test(start_paused = true)]
async fn a_request_that_waits_for_others_files_sends_its_own_once() {
    let ports = rendezvous_over(MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0)), Meeting::MarkAfterALoad);
    abandoned(&ports.inner, &event(Stage::Final, &["vocal"]), b"1");
    let patient = Settings { wait_budget: Duration::from_secs(60), ..settings() };
    let outcome = ingest(&ports, &patient, &event(Stage::Final, &["vocal", "drums"]), b"2", "req-2").await;
    assert_eq!(outcome.map(|o| o.files_queued), Ok(2), "drums at once, vocal once its claim lapsed");
    let mut sent: Vec<String> = ports.inner.messages().into_iter().map(|(_, job)| job.name).collect();
    sent.sort();
    assert_eq!(sent, ["drums", "vocal"]);
}

#[tokio::test]
async fn the_sent_files_are_marked_queued_while_the_event_is_published() {
    let ports = rendezvous(Meeting::MarkAndPublish);
    let outcome = ingest(&ports, &settings(), &event(Stage::Final, &["vocal", "drums"]), b"{}", "r").await;
    assert_eq!(outcome.map(|o| o.files_queued), Ok(2));
    assert_eq!(ports.inner.events.published().len(), 1);
    assert!(ports.inner.record(TASK).unwrap().files.values().all(|f| f.status == FileStatus::Queued));
}

/// A later stage adding a file to a task still being vaulted marks and fences the task item
/// before the file's item, so that no settle read before that item exists can take the task
/// out of the sweeper's index; the stage's task item write takes the fence away. Should that
/// write fail, the fence stays (the file uncommitted) until the retry commits the file.
#[tokio::test]
async fn a_stage_adding_files_fences_the_task_until_its_task_item_commits_them() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &event(Stage::First, &["a"]), b"1", "req-1").await.unwrap();
    let first = ports.record(TASK).unwrap();
    assert_eq!((first.adding, first.vault), (None, stemvault_vault::VaultState::Pending));

    ports.fail_task_writes(1);
    let complete = event(Stage::Complete, &["a", "b"]);
    assert!(ingest(&ports, &settings(), &complete, b"2", "req-2").await.is_err());
    let stopped = ports.record(TASK).unwrap();
    assert_eq!((stopped.stage, stopped.adding), (Stage::First, Some(first.generation + 1)));
    assert!(stopped.has_uncommitted_files());

    // The provider's retry, once the stopped request's claim on `b` has lapsed.
    ports.advance(Duration::from_secs(60));
    ingest(&ports, &settings(), &complete, b"2", "req-3").await.unwrap();
    let committed = ports.record(TASK).unwrap();
    assert_eq!(
        (committed.stage, committed.adding, committed.generation),
        (Stage::Complete, None, first.generation + 1)
    );
    assert_eq!(committed.files["b"].status, FileStatus::Queued);
}

#[tokio::test]
async fn a_failed_file_brought_again_with_a_new_url_is_requeued_and_reopens_the_vault() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &event(Stage::Final, &["vocal"]), b"1", "req-1").await.unwrap();
    // The downloader gave up on it and settled the task.
    let mut record = ports.record(TASK).unwrap();
    let vocal = record.files.get_mut("vocal").unwrap();
    vocal.status = FileStatus::Failed;
    vocal.error = Some("HTTP 403".into());
    record.vault = stemvault_vault::VaultState::Partial;
    ports.put_record(record);

    let mut again = event(Stage::Final, &["vocal"]);
    again.files[0].url = "https://h/s/renewed.mp3".into();
    let outcome = ingest(&ports, &settings(), &again, b"2", "req-2").await.unwrap();
    assert_eq!((outcome.duplicate, outcome.files_queued), (false, 1));
    let record = ports.record(TASK).unwrap();
    assert_eq!(record.vault, stemvault_vault::VaultState::Pending);
    let vocal = &record.files["vocal"];
    assert_eq!(
        (vocal.status, vocal.url.as_str(), vocal.error.as_deref()),
        (FileStatus::Queued, "https://h/s/renewed.mp3", None)
    );
    let messages = ports.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].1.url, "https://h/s/renewed.mp3");
}

#[tokio::test]
async fn the_stage_event_is_published_once_the_callback_is_recorded_and_its_files_queued() {
    use stemvault_vault::events::EventType;
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &event(Stage::Final, &["vocal", "drums"]), b"{}", "req-1").await.unwrap();

    let published = ports.events.published();
    assert_eq!(ports.events.ids(), [(EventType::StageChanged, format!("{TASK}.stage.final"))]);
    let detail = &published[0].detail;
    assert_eq!((detail.task_id.as_str(), detail.stage, detail.bucket.as_str()), (TASK, Stage::Final, "vault"));
    let mut names: Vec<&str> = detail.files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["drums", "vocal"]);
    assert_eq!(ports.messages().len(), 2, "queued before the event says so");

    // A callback for a stage the task is past changes no stage: nothing to publish.
    ingest(&ports, &settings(), &event(Stage::First, &["vocal"]), b"{\"late\":1}", "req-2").await.unwrap();
    assert_eq!(ports.events.published().len(), 1);
}

#[tokio::test]
async fn a_failure_result_publishes_its_stage_and_task_failed() {
    use stemvault_vault::events::EventType;
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let failure = CallbackEvent { code: 531, message: "generation failed".into(), ..event(Stage::Error, &[]) };
    ingest(&ports, &settings(), &failure, b"{\"code\":531}", "req-1").await.unwrap();

    assert_eq!(
        ports.events.ids(),
        [(EventType::StageChanged, format!("{TASK}.stage.error")), (EventType::Failed, format!("{TASK}.failed.error")),]
    );
    let failed = &ports.events.published()[1].detail;
    assert_eq!((failed.code, failed.message.as_str()), (531, "generation failed"));
}

#[tokio::test]
async fn a_failed_publish_is_retryable_and_the_retry_publishes_the_same_ids() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Complete, &["vocal", "drums"]);
    ports.events.fail_next(1);
    let err = ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap_err();
    assert!(matches!(err, AcceptError::Publish(_)), "{err:?}");
    assert!(err.is_retryable(), "the provider retries: answered 5xx");
    assert_eq!(err.reason_code(), "publish_failed");
    // Recorded and queued all the same; nothing published.
    assert_eq!(ports.record(TASK).unwrap().stage, Stage::Complete);
    assert_eq!(ports.messages().len(), 2);
    assert!(ports.events.published().is_empty());

    // The provider's retry: a duplicate, which queues nothing again and publishes the event.
    ports.advance(Duration::from_secs(5));
    let retry = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();
    assert_eq!(retry, Outcome { duplicate: true, task_stage: Stage::Complete, files_queued: 0 });
    assert_eq!(ports.messages().len(), 2);
    let ids: Vec<String> = ports.events.published().into_iter().map(|e| e.detail.event_id).collect();
    assert_eq!(ids, [format!("{TASK}.stage.complete")]);
    assert_eq!(ports.events.attempts(), 2);
}

// --- parking ------------------------------------------------------------------------------

fn parked_key(stage: &str, body: &[u8]) -> String {
    format!("parked/{TASK}/{stage}-{}.json", hex::encode(Sha256::digest(body)))
}

/// [`ingest_or_park`] with the default settings, nothing spent and no outage remembered.
async fn park_or_record(
    ports: &MemoryPorts,
    e: &CallbackEvent,
    body: &[u8],
    request_id: &str,
) -> Result<Ingested, AcceptError> {
    ingest_or_park(ports, &settings(), e, body, request_id, Duration::ZERO, &Outage::default()).await
}

/// A callback the table cannot take now is kept under `parked/` (named as its archive will
/// be), and nothing else is written; once the table is back, recording it works as before.
#[tokio::test]
async fn a_callback_the_table_cannot_take_is_parked() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ports.set_save_error(Some(StoreError::Unavailable("throttled".into())));
    let parked = park_or_record(&ports, &e, b"{\"p\":1}", "req-1").await.unwrap();
    let because = AcceptError::Store(StoreError::Unavailable("throttled".into()));
    assert_eq!(parked, Ingested::Parked { key: parked_key("final", b"{\"p\":1}"), because });
    // (Archived too: the archive goes beside the first write, which then failed.)
    assert!(ports.body_keys().contains(&parked_key("final", b"{\"p\":1}")), "{:?}", ports.body_keys());
    assert_eq!(ports.body(&parked_key("final", b"{\"p\":1}")).as_deref(), Some(&b"{\"p\":1}"[..]));
    assert!(ports.record(TASK).is_none() && ports.messages().is_empty());

    ports.set_save_error(None);
    let recorded = park_or_record(&ports, &e, b"{\"p\":1}", "req-2").await.unwrap();
    assert!(matches!(recorded, Ingested::Recorded(Outcome { duplicate: false, files_queued: 1, .. })), "{recorded:?}");
}

/// A callback recorded whose files' messages or events could not all be sent is parked too:
/// the provider's few retries no longer stand between an SQS or EventBridge outage and a
/// lost event, and the replay, a duplicate, sends what is missing with the same event ids.
#[tokio::test]
async fn a_recorded_callback_whose_messages_or_events_failed_is_parked_and_its_replay_finishes_it() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["a"]);
    ports.set_enqueue_failing(true);
    let parked = park_or_record(&ports, &e, b"{}", "req-1").await.unwrap();
    assert!(matches!(&parked, Ingested::Parked { because: AcceptError::Enqueue(_), .. }), "{parked:?}");
    assert!(ports.record(TASK).is_some(), "recorded");
    assert!(ports.events.published().is_empty(), "no event before its files are queued");
    ports.set_enqueue_failing(false);

    ports.events.fail_next(1);
    let parked = park_or_record(&ports, &e, b"{}", "replay-1").await.unwrap();
    assert!(matches!(&parked, Ingested::Parked { because: AcceptError::Publish(_), .. }), "{parked:?}");
    assert_eq!(ports.messages().len(), 1, "the file sent by the replay");

    let replayed = park_or_record(&ports, &e, b"{}", "replay-2").await.unwrap();
    assert!(matches!(replayed, Ingested::Recorded(Outcome { duplicate: true, .. })), "{replayed:?}");
    let ids: Vec<String> = ports.events.published().iter().map(|e| e.detail.event_id.clone()).collect();
    assert_eq!(ids, [format!("{TASK}.stage.final")]);
}

/// A verified callback for a task whose stored record cannot be read (an item edited by hand,
/// a value a rolled-back build does not know) is parked, not lost: the answer is 200 and the
/// replay records it once an operator fixed the record.
#[tokio::test]
async fn a_callback_for_a_task_whose_record_cannot_be_read_is_parked_for_after_the_fix() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ingest(&ports, &settings(), &event(Stage::Final, &["a"]), b"{}", "req-1").await.unwrap();
    // Its stage removed by hand: the record cannot be read.
    let mut removed = None;
    assert!(ports.update_task_item(TASK, |item| {
        removed = item.remove("stage");
        removed.is_some()
    }));

    let late = event(Stage::Final, &["a", "b"]);
    let parked = park_or_record(&ports, &late, b"{\"b\":1}", "req-2").await.unwrap();
    assert!(
        matches!(&parked, Ingested::Parked { because: AcceptError::Store(StoreError::Malformed(_)), .. }),
        "{parked:?}"
    );
    assert!(ports.body_keys().contains(&parked_key("final", b"{\"b\":1}")), "{:?}", ports.body_keys());

    assert!(ports.update_task_item(TASK, |item| item.insert("stage".into(), removed.unwrap()).is_none()));
    let replayed = park_or_record(&ports, &late, b"{\"b\":1}", "replay-1").await.unwrap();
    assert!(matches!(replayed, Ingested::Recorded(_)), "{replayed:?}");
    assert!(ports.record(TASK).unwrap().files.contains_key("b"));
}

/// A callback the table refuses for good is parked too (its body kept: the replay moves it
/// to its archive key); when parking fails, the failure is the answer.
#[tokio::test]
async fn a_refused_callback_is_parked_and_the_failure_is_the_answer_only_when_parking_fails() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));

    ports.set_save_error(Some(StoreError::Rejected("too large".into())));
    let parked = park_or_record(&ports, &event(Stage::Final, &["b"]), b"{}", "req-2").await.unwrap();
    let because = AcceptError::Store(StoreError::Rejected("too large".into()));
    assert_eq!(parked, Ingested::Parked { key: parked_key("final", b"{}"), because });
    ports.set_park_failing(true);
    let err = park_or_record(&ports, &event(Stage::Final, &["b"]), b"{}", "req-2").await.unwrap_err();
    assert!(matches!(err, AcceptError::Store(StoreError::Rejected(_))), "{err}");

    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ports.set_save_error(Some(StoreError::Unavailable("down".into())));
    ports.set_archive_failing(true);
    let err = park_or_record(&ports, &event(Stage::Final, &["c"]), b"{}", "req-3").await.unwrap_err();
    assert!(matches!(err, AcceptError::Store(StoreError::Unavailable(_))), "{err}");
    assert!(ports.body_keys().iter().all(|k| !k.starts_with("parked/")), "{:?}", ports.body_keys());
}

/// A park that does not answer within its time is given up: the answer is the table's
/// failure (503, the provider retries) after `PARK_TIMEOUT`, not a request hanging until
/// Lambda's timeout. With the archive hanging as well, recording runs out its deadline
/// first and the answer still comes by `ANSWER_WITHIN` (with no margin: the worst case).
#[tokio::test(start_paused = true)]
async fn a_park_that_hangs_is_given_up_in_time() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    ports.set_save_error(Some(StoreError::Unavailable("down".into())));
    ports.set_park_stalled(true);
    let started = tokio::time::Instant::now();
    let err = park_or_record(&ports, &event(Stage::Final, &["a"]), b"{}", "req-1").await.unwrap_err();
    assert!(matches!(err, AcceptError::Store(StoreError::Unavailable(_))), "{err}");
    let waited = started.elapsed();
    assert!(waited >= PARK_TIMEOUT && waited < PARK_TIMEOUT + Duration::from_secs(1), "{waited:?}");
    assert!(ports.body_keys().iter().all(|k| !k.starts_with("parked/")), "{:?}", ports.body_keys());

    ports.set_archive_stalled(true);
    let started = tokio::time::Instant::now();
    let err = park_or_record(&ports, &event(Stage::Final, &["b"]), b"{}", "req-2").await.unwrap_err();
    assert!(matches!(err, AcceptError::OutOfTime { .. }), "{err}");
    assert_eq!(started.elapsed(), ANSWER_WITHIN);
}

/// One task's record that kept changing, or another delivery holding its files, however long
/// it took, is no outage of the table: the next callbacks keep their whole time to record.
#[test]
fn a_contended_record_starts_no_outage_memory() {
    let (outage, now) = (Outage::default(), Timestamp::from_unix_ms(T0));
    let contended = Err(AcceptError::Contention { attempts: 3 });
    outage.observe(&contended, QUICK_RECORDING * 4, now);
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, now), ANSWER_WITHIN);
    let held = Err(AcceptError::StillEnqueuing { files: 2 });
    outage.observe(&held, QUICK_RECORDING * 4, now);
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, now), ANSWER_WITHIN, "another delivery's claims");
    let unavailable = Err(AcceptError::Store(StoreError::Unavailable("slow".into())));
    outage.observe(&unavailable, QUICK_RECORDING * 4, now);
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, now), QUICK_RECORDING, "a table failing slowly is");
    // Remembered by the wall clock: a clock stepped back before it ends it too.
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, now.minus(Duration::from_secs(1))), ANSWER_WITHIN);
}

/// A wait for another delivery's files that the answer's deadline cuts short is that task's
/// wait (`enqueue_in_progress`), not a table, bucket or queue failing slowly: the instance's
/// next callbacks keep their whole time to record.
#[tokio::test(start_paused = true)]
async fn a_wait_the_deadline_cuts_short_starts_no_outage_memory() {
    let ports = MemoryPorts::default();
    let e = event(Stage::Final, &["vocal"]);
    abandoned(&ports, &e, b"{}");
    let (outage, patient) = (Outage::default(), Settings { wait_budget: Duration::from_secs(60), ..settings() });
    let ingested = ingest_or_park(&ports, &patient, &e, b"{}", "req-2", Duration::ZERO, &outage).await.unwrap();
    let Ingested::Parked { because, .. } = &ingested else { panic!("{ingested:?}") };
    assert_eq!(because, &AcceptError::StillEnqueuing { files: 1 });
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, ports.now()), ANSWER_WITHIN);

    // But a table slow to answer the wait's own looks (a second a read, here) is slow for
    // every callback: out of time, and the next callbacks get QUICK_RECORDING.
    let ports = MemoryPorts::default();
    abandoned(&ports, &e, b"{}");
    ports.set_latency(Duration::from_secs(1));
    let outage = Outage::default();
    let ingested = ingest_or_park(&ports, &patient, &e, b"{}", "req-2", Duration::ZERO, &outage).await.unwrap();
    let Ingested::Parked { because, .. } = &ingested else { panic!("{ingested:?}") };
    assert!(matches!(because, AcceptError::OutOfTime { .. }), "{because:?}");
    assert_eq!(outage.recording_budget(ANSWER_WITHIN, ports.now()), QUICK_RECORDING);
}

/// A table that hangs: the first callback records until its deadline and is parked; while
/// the instance remembers it, the next ones get only `QUICK_RECORDING` before they are
/// parked (each answered in about 2 s, not 9). One recorded in that time ends it, and so does
/// the memory's end.
#[tokio::test(start_paused = true)]
async fn after_recording_failed_slowly_the_next_callbacks_are_parked_quickly() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let outage = Outage::default();
    let callback = |n: u8, request: &'static str| {
        let body = vec![n];
        let e = event(Stage::Final, &["vocal"]);
        let (ports, outage) = (&ports, &outage);
        async move {
            let started = tokio::time::Instant::now();
            let ingested = ingest_or_park(ports, &settings(), &e, &body, request, Duration::ZERO, outage).await;
            (ingested.unwrap(), started.elapsed())
        }
    };
    let parked = |ingested: &Ingested| matches!(ingested, Ingested::Parked { .. });
    ports.set_table_stalled(true);
    let (first, took) = callback(1, "req-1").await;
    assert!(parked(&first) && took >= ANSWER_WITHIN - PARK_TIMEOUT, "{first:?} in {took:?}");
    let (second, took) = callback(2, "req-2").await;
    assert!(parked(&second) && took >= QUICK_RECORDING && took < QUICK_RECORDING * 2, "{second:?} in {took:?}");

    // A callback the table refuses for good says nothing of its health: still quick after it.
    ports.set_table_stalled(false);
    ports.set_save_error(Some(StoreError::Rejected("too large".into())));
    let (refused, _) = callback(6, "req-6").await;
    assert!(matches!(&refused, Ingested::Parked { because, .. } if because.is_refused_for_good()), "{refused:?}");
    ports.set_save_error(None);
    ports.set_table_stalled(true);
    let (_, took) = callback(7, "req-7").await;
    assert!(took < QUICK_RECORDING * 2, "still quick: {took:?}");

    // The memory ends, by the wall clock (a frozen instance's monotonic clock may not have
    // moved): a callback gets its whole time again.
    ports.advance(OUTAGE_MEMORY);
    let (third, took) = callback(3, "req-3").await;
    assert!(parked(&third) && took >= ANSWER_WITHIN - PARK_TIMEOUT, "{third:?} in {took:?}");

    // The table answers again: recorded within the short time, which ends the memory.
    ports.set_table_stalled(false);
    let (fourth, _) = callback(4, "req-4").await;
    assert!(matches!(fourth, Ingested::Recorded(_)), "{fourth:?}");
    ports.set_table_stalled(true);
    let (_, took) = callback(5, "req-5").await;
    assert!(took >= ANSWER_WITHIN - PARK_TIMEOUT, "the whole time again: {took:?}");

    // A failure another try may mend, answered at once, starts no memory: only slow ones do.
    ports.advance(OUTAGE_MEMORY);
    ports.set_table_stalled(false);
    ports.set_save_error(Some(StoreError::Unavailable("throttled".into())));
    let (quick, took) = callback(8, "req-8").await;
    assert!(parked(&quick) && took < QUICK_RECORDING, "{quick:?} in {took:?}");
    ports.set_save_error(None);
    ports.set_table_stalled(true);
    let (_, took) = callback(9, "req-9").await;
    assert!(took >= ANSWER_WITHIN - PARK_TIMEOUT, "the whole time after a quick failure: {took:?}");
}

/// A duplicate's count is refused when the reconciler changed the task since its read (a
/// poll's "not found"), and the merge made again from a new read clears it.
#[tokio::test]
async fn a_duplicate_count_over_a_change_since_its_read_is_refused_and_merged_again() {
    let ports = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(T0));
    let e = event(Stage::Final, &["vocal"]);
    ingest(&ports, &settings(), &e, b"{}", "req-1").await.unwrap();
    let task = TaskId::parse(TASK).unwrap();
    let read = ports.load_task(&task).await.unwrap().unwrap();
    let sha256_hex = hex::encode(Sha256::digest(b"{}"));
    let info = BodyInfo { archive_key: body_key("final", b"{}"), sha256_hex, bytes: 2, arrived_at: None };
    let claimant = Claimant { id: "req-2".into(), lease: Duration::from_secs(15) };
    let merged = ingest_callback(Some(&read), &e, &info, &claimant, ports.now()).record;
    // A poll's "not found" since the read (dated as the task's last delivery, a time alike).
    let poll_said_not_found = ports.update_task_item(TASK, |item| {
        let since = item.get("last_received_at").cloned();
        since.is_some_and(|since| item.insert("not_found_since".into(), since).is_none())
    });
    assert!(poll_said_not_found);

    assert_eq!(ports.save_task(Some(&read), &merged).await, Err(StoreError::Conflict));
    let again = ingest(&ports, &settings(), &e, b"{}", "req-2").await.unwrap();
    assert!(again.duplicate);
    let record = ports.record(TASK).unwrap();
    assert_eq!((record.deliveries, record.not_found_since), (2, None));
}

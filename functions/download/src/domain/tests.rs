use sha2::{Digest, Sha256};
use stemvault_vault::register::Registration;
use stemvault_vault::{FileStatus, LeaseEnd, PublicFileStatus, RECONCILE_DUE, TaskRecord, Timestamp};
use suno_callbacks::{Family, Stage};
use tracing::Level;

use super::*;
use crate::error::FetchError;
use tokio::sync::oneshot;

use crate::memory::{
    ManifestGate, MemoryPorts, SETTINGS, Script, StoreCall, TASK, deterministic_bytes, job_body, record, serve, url,
};

/// The receive on which a URL answering as expired fails so.
const CONFIRMED: u32 = EXPIRY_CONFIRMED_ON_RECEIVE;

fn delivery(body: String, receive_count: u32) -> Delivery {
    Delivery {
        body,
        receipt_handle: Some(format!("receipt-{receive_count}")),
        receive_count,
        worker: format!("worker-{}", uuid::Uuid::new_v4()),
        stop_at: Instant::now() + Duration::from_secs(60),
        lease_until: LeaseEnd::from_unix_seconds(1_800_000_900),
    }
}

/// One delivery of the file `name` as a batch of one: the message, then its task's settle
/// check (when it asks for one), as the app runs them; a failed check retries the message.
async fn run(ports: &MemoryPorts, name: &str, receive_count: u32) -> Outcome {
    run_body(ports, job_body(name), receive_count).await.0
}

/// [`run`] for any body; also what the settle check came to, if one was made.
async fn run_body(
    ports: &MemoryPorts,
    body: String,
    receive_count: u32,
) -> (Outcome, Option<Result<Settling, DownloadError>>) {
    let d = delivery(body, receive_count);
    let mut outcome = process_message(ports, &SETTINGS, &d).await;
    let mut checked = None;
    if let Some(task_id) = settle_check_for(&d, &outcome) {
        let result = check_settled(ports, &task_id, None).await;
        if let Err(e) = &result {
            outcome = Outcome::Retry(e.clone());
        }
        checked = Some(result);
    }
    if outcome.is_failure() {
        delay_retry(ports, &d, &outcome).await;
    }
    (outcome, checked)
}

/// Hold the next manifest write where S3 would evaluate its condition: the first receiver
/// fires when it got there; it goes on when the sender fires.
fn hold_next_manifest(ports: &MemoryPorts) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (reached, at_gate) = oneshot::channel();
    let (release, released) = oneshot::channel();
    *ports.manifest_gate.lock().unwrap() = Some(ManifestGate { reached, release: released });
    (at_gate, release)
}

/// Wait for the held manifest write to be reached: a test fails, rather than hangs, when the
/// code under test never gets there.
async fn reached(at_gate: oneshot::Receiver<()>) {
    let reached = tokio::time::timeout(Duration::from_secs(30), at_gate).await;
    reached.expect("the manifest write was never reached").expect("the gate was dropped");
}

/// A task whose file `vocal` (`len` bytes of `seed`) was copied on its first receive but not
/// recorded (the table refused the `stored` write): the copy and its bytes.
async fn copied_but_not_recorded(len: usize, seed: u64) -> (MemoryPorts, Vec<u8>) {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    let data = deterministic_bytes(len, seed);
    // Longer than a part, without a declared length: a multipart upload (a declared body of
    // any length is one streamed PutObject).
    let declared = len <= SETTINGS.part_size;
    ports.source(&url("vocal"), Script::Body { data: data.clone(), declared, content_type: Some("audio/mpeg".into()) });
    *ports.stored_failures.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Store(_))), "{outcome:?}");
    (ports, data)
}

/// What ingest does when a callback brings a new file: the file, `queued`; a new generation;
/// the vault pending again.
fn add_file(ports: &MemoryPorts, name: &str) {
    let mut grown = ports.record(TASK);
    grown.files.insert(name.into(), record(&[(name, FileStatus::Queued)]).files[name].clone());
    (grown.generation, grown.version) = (grown.generation + 1, grown.version + 1);
    ports.put_record(grown);
}

#[tokio::test]
async fn a_queued_file_is_stored_and_recorded() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    let data = deterministic_bytes(100_000, 1);
    serve(&ports, "vocal", &data);

    let outcome = run(&ports, "vocal", 1).await;
    let Outcome::Stored(stored) = outcome else { panic!("{outcome:?}") };
    assert_eq!(stored.bytes, 100_000);
    assert_eq!(ports.store.object(&format!("tasks/{TASK}/vocal.mp3")).unwrap(), data);

    let r = ports.record(TASK);
    let f = &r.files["vocal"];
    assert_eq!(f.status, FileStatus::Stored);
    assert_eq!(f.bytes, Some(100_000));
    assert_eq!(f.sha256.as_deref(), Some(hex::encode(Sha256::digest(&data)).as_str()));
    assert_eq!(f.content_type.as_deref(), Some("audio/mpeg"));
    assert_eq!(f.stored_at, Some(ports.now()));
    assert_eq!((f.claim.as_deref(), f.lease_until, f.attempts), (None, None, 1));
    assert_eq!(f.rev, 2, "claim + stored, on the file's item");
    assert_eq!(r.version, 3, "the task item is not written for a file");
    // The other file is still open: no manifest yet.
    assert_eq!(r.vault, VaultState::Pending);
    assert!(ports.manifests.lock().unwrap().is_empty());
    assert!(ports.delays.lock().unwrap().is_empty());
    let measures = ports.measures.lock().unwrap().clone();
    assert!(
        matches!(measures.as_slice(), [Measure::Stored { bytes: 100_000, copy_seconds: Some(s) }] if *s >= 0.0),
        "{measures:?}"
    );
}

#[tokio::test]
async fn the_last_settled_file_writes_the_manifest_once() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    ports.source(&url("drums"), Script::http_error(410, "Gone"));

    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Stored(_)));
    let outcome = run(&ports, "drums", CONFIRMED).await;
    assert_eq!(outcome, Outcome::FailedForGood("source answered 410 Gone".into()));
    assert!(!outcome.is_failure(), "a permanent failure is not retried");

    let r = ports.record(TASK);
    assert_eq!(r.vault, VaultState::Partial);
    assert_eq!(r.manifest_key.as_deref(), Some(format!("tasks/{TASK}/manifest.json").as_str()));
    assert_eq!((r.open, r.version), (None, 4), "one settle write");
    assert_eq!(r.files["drums"].error.as_deref(), Some("source answered 410 Gone"));
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    let (key, manifest) = &manifests[0];
    assert_eq!(key, &format!("tasks/{TASK}/manifest.json"));
    assert!(!ports.heads.lock().unwrap().contains(key), "a first manifest is written without reading the key");
    assert_eq!(manifest.vault, VaultState::Partial);
    let statuses: Vec<(&str, PublicFileStatus)> = manifest.files.iter().map(|f| (f.name.as_str(), f.status)).collect();
    assert_eq!(statuses, vec![("drums", PublicFileStatus::Failed), ("vocal", PublicFileStatus::Stored)]);
    assert_eq!(manifest.files[1].bytes, Some(11));

    // One file stored, one failed for good (an expired URL), the vault settled 4,554,000 s
    // after the first callback.
    let measures = ports.measures.lock().unwrap().clone();
    assert!(matches!(measures[0], Measure::Stored { bytes: 11, copy_seconds: Some(_) }), "{measures:?}");
    assert_eq!(
        measures[1..],
        [Measure::Failed { reason: "source_expired" }, Measure::Settled { seconds: 4_554_000.0 }]
    );

    // Redeliveries of either message change nothing and write no second manifest.
    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    assert_eq!(run(&ports, "drums", 2).await, Outcome::AlreadySettled);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
    assert_eq!(ports.opened().len(), 2);
}

/// A poll that read the file still queued ends the task's watch while the settle that reads
/// it failed by expiry (and the task still watched) writes its manifest: the settle puts the
/// watch back, or nothing would poll the task for the file's new URL.
#[tokio::test]
async fn a_watch_ended_before_the_settle_lands_is_put_back_for_an_expired_file() {
    let mut watched = record(&[("vocal", FileStatus::Queued)]);
    watched.stage = Stage::Final;
    let schedule = Timestamp::from_unix_ms(1_795_446_000_000);
    (watched.reconcile, watched.reconcile_at) = (Some(RECONCILE_DUE.into()), Some(schedule));
    let ports = MemoryPorts::with_record(watched);
    ports.source(&url("vocal"), Script::http_error(410, "Gone"));
    let (at_gate, release) = hold_next_manifest(&ports);

    let settling = run(&ports, "vocal", CONFIRMED);
    let poll_ends_the_watch = async {
        reached(at_gate).await;
        let mut r = ports.record(TASK);
        (r.reconcile, r.reconcile_at, r.version) = (None, None, r.version + 1);
        ports.put_record(r);
        release.send(()).unwrap();
    };
    let (outcome, ()) = tokio::join!(settling, poll_ends_the_watch);
    assert_eq!(outcome, Outcome::FailedForGood("source answered 410 Gone".into()));
    let r = ports.record(TASK);
    assert_eq!(r.vault, VaultState::Partial);
    assert_eq!(r.reconcile.as_deref(), Some(RECONCILE_DUE), "watched again for the file's new URL");
    let first_poll = ports.now().plus(stemvault_vault::reconcile::FIRST_POLL_INTERVAL);
    assert_eq!(r.reconcile_at, Some(first_poll), "from the settle's first poll time");

    // A watch still there when the settle lands keeps its schedule.
    let mut watched = record(&[("vocal", FileStatus::Queued)]);
    watched.stage = Stage::Final;
    (watched.reconcile, watched.reconcile_at) = (Some(RECONCILE_DUE.into()), Some(schedule));
    let ports = MemoryPorts::with_record(watched);
    ports.source(&url("vocal"), Script::http_error(410, "Gone"));
    run(&ports, "vocal", CONFIRMED).await;
    let r = ports.record(TASK);
    assert_eq!(
        (r.vault, r.reconcile.as_deref(), r.reconcile_at),
        (VaultState::Partial, Some(RECONCILE_DUE), Some(schedule))
    );
}

/// Files failing together (a host's outage) come back apart: each wait is its backoff and a
/// random part of a fifth more.
#[tokio::test]
async fn retries_of_one_step_are_spread() {
    let ports = vocal_answering(503, "Service Unavailable");
    for _ in 0..20 {
        assert!(run(&ports, "vocal", 2).await.is_failure());
    }
    let delays: Vec<Duration> = ports.delays.lock().unwrap().iter().map(|(_, d)| *d).collect();
    let backoff = Duration::from_secs(60);
    assert!(delays.len() == 20 && delays.iter().all(|d| stemvault_vault::delay::is_spread(*d, backoff)), "{delays:?}");
    assert!(delays.iter().any(|d| *d != delays[0]), "not all alike: {delays:?}");
}

#[tokio::test]
async fn retryable_failures_release_the_file_and_back_off() {
    let ports = vocal_answering(503, "Service Unavailable");

    for count in 1..=3 {
        let outcome = run(&ports, "vocal", count).await;
        assert!(outcome.is_failure(), "{outcome:?}");
    }
    let r = ports.record(TASK);
    let f = &r.files["vocal"];
    assert_eq!(f.status, FileStatus::Queued, "pending again, its message still queued");
    assert_eq!(ports.file_item(TASK, "vocal").status, FileStatus::Pending, "never written as queued");
    assert_eq!(f.claim, None);
    // When its lease ended: should its message never come back, the sweeper counts from it.
    assert_eq!(f.lease_until, Some(LeaseEnd::at(ports.now())));
    assert_eq!(f.attempts, 3);
    assert_eq!(f.error.as_deref(), Some("source answered 503 Service Unavailable"));
    let delays: Vec<Duration> = ports.delays.lock().unwrap().iter().map(|(_, d)| *d).collect();
    let backoff = [30, 60, 120].map(Duration::from_secs);
    assert!(delays.iter().zip(backoff).all(|(d, b)| stemvault_vault::delay::is_spread(*d, b)), "{delays:?}");
    assert_eq!(delays.len(), 3);
    assert_eq!(ports.delays.lock().unwrap()[2].0, "receipt-3");

    // Then the source recovers.
    serve(&ports, "vocal", b"finally");
    assert!(matches!(run(&ports, "vocal", 4).await, Outcome::Stored(_)));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    assert_eq!(ports.record(TASK).open, None, "settling removes the open-tasks marker");
    // A retried copy is put whole (the SDK can retry that put); a first one streams.
    let puts: Vec<_> = ports.store.calls().into_iter().filter(|c| !matches!(c, StoreCall::Abort)).collect();
    assert!(matches!(puts.as_slice(), [StoreCall::Put { len: 7, .. }]), "{puts:?}");
    let first = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&first, "vocal", b"at once");
    assert!(matches!(run(&first, "vocal", 1).await, Outcome::Stored(_)));
    assert_eq!(
        first.store.calls(),
        [StoreCall::Streamed { key: first.record(TASK).files["vocal"].key.clone(), len: 7 }]
    );
}

/// A source that says when to come back (`Retry-After`) is left alone that long, within the
/// queue's limits, instead of the 30 s first delay; never less than the backoff (spread, as
/// any backoff: files asked to come back at once by one source's outage come back apart).
#[tokio::test]
async fn a_source_s_retry_after_is_honoured() {
    let busy = |status: u16, seconds: u64| {
        Script::Fail(FetchError::Status {
            status,
            reason: String::new(),
            retry_after: Some(Duration::from_secs(seconds)),
        })
    };
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    for (count, script) in [(1, busy(429, 600)), (2, busy(503, 5)), (3, busy(503, 7 * 24 * 3600))] {
        ports.source(&url("vocal"), script);
        assert!(run(&ports, "vocal", count).await.is_failure());
    }
    let delays: Vec<u64> = ports.delays.lock().unwrap().iter().map(|(_, d)| d.as_secs()).collect();
    let [asked, _, capped] = delays[..] else { panic!("three delays: {delays:?}") };
    assert_eq!((asked, capped), (600, 11 * 3600 + 30 * 60));
    // Shorter than the backoff: the backoff, spread as when no time is named (files a source
    // asked back at once come back apart, not in step).
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    for _ in 0..8 {
        ports.source(&url("vocal"), busy(503, 5));
        assert!(run(&ports, "vocal", 2).await.is_failure());
    }
    let backoffs: Vec<Duration> = ports.delays.lock().unwrap().iter().map(|(_, d)| *d).collect();
    assert!(backoffs.iter().all(|d| stemvault_vault::delay::is_spread(*d, Duration::from_secs(60))), "{backoffs:?}");
    assert!(backoffs.iter().any(|d| *d != backoffs[0]), "spread, not all alike: {backoffs:?}");
}

/// The claim was applied but its answer lost (a timeout, a reset connection), and the SDK's
/// retry of the same write found the file `downloading` under this very delivery: it is
/// ours to copy, not another worker's to wait for until our own lease runs out.
#[tokio::test]
async fn a_claim_refused_because_it_was_already_applied_for_this_delivery_copies() {
    let mut d = delivery(job_body("vocal"), 1);
    d.worker = "this-delivery".into();
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    (f.claim, f.lease_until, f.attempts) = (Some(d.worker.clone()), Some(d.lease_until), 1);
    let ports = MemoryPorts::with_record(r);
    serve(&ports, "vocal", b"vocal");

    let outcome = process_message(&ports, &SETTINGS, &d).await;
    let Outcome::Stored(stored) = outcome else { panic!("{outcome:?}") };
    assert_eq!(stored.bytes, 5);
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Stored);
}

/// The `stored` or `failed` write was applied but its answer lost, and the SDK's retry of
/// it was refused (the claim is gone): the item holds what was written, so the outcome is
/// the write's, and the task settles. On the message's last receive, a lost claim sent the
/// message of a settled file to the dead-letter queue.
#[tokio::test]
async fn a_finishing_write_whose_answer_was_lost_counts_as_applied() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    *ports.lost_answers.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", MAX_RECEIVE_COUNT).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    assert!(ports.delays.lock().unwrap().is_empty(), "not retried");

    let gone = Script::http_error(404, "Not Found");
    let unreachable = Script::http_error(503, "Service Unavailable");
    for (script, receive, failed_for_good) in [(gone, CONFIRMED, true), (unreachable, MAX_RECEIVE_COUNT, false)] {
        let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
        ports.source(&url("vocal"), script);
        *ports.lost_answers.lock().unwrap() = 1;
        let outcome = run(&ports, "vocal", receive).await;
        match failed_for_good {
            true => assert!(matches!(outcome, Outcome::FailedForGood(_)), "{outcome:?}"),
            false => assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}"),
        }
        assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    }
}

/// The file changed between our claim and our write, `stored` or `failed` (our lease ran
/// out): settled by another worker, the message has nothing left to do (and its task is
/// checked); held by another, the claim was lost.
#[tokio::test]
async fn a_finishing_write_refused_for_another_worker_s_file_is_not_taken_as_ours() {
    let finishing = [(FileStatus::Stored, None), (FileStatus::Downloading, Some("another"))];
    for ((status, claim), source_gone) in finishing.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
        match source_gone {
            false => serve(&ports, "vocal", b"vocal bytes"),
            true => ports.source(&url("vocal"), Script::http_error(404, "Not Found")),
        }
        let mut theirs = ports.file_item(TASK, "vocal");
        (theirs.status, theirs.claim, theirs.stored_at) =
            (status, claim.map(str::to_owned), Some(Timestamp::from_unix_ms(1)));
        *ports.changed_meanwhile.lock().unwrap() = Some(theirs);
        let outcome = run(&ports, "vocal", CONFIRMED).await;
        match status {
            FileStatus::Stored => {
                assert_eq!(outcome, Outcome::AlreadySettled);
                assert_eq!(ports.record(TASK).vault, VaultState::Complete, "its task checked and settled");
            }
            _ => assert!(matches!(outcome, Outcome::Retry(DownloadError::LostClaim)), "{outcome:?}"),
        }
        let measures = ports.measures.lock().unwrap().clone();
        let ours = measures.iter().any(|m| matches!(m, Measure::Stored { .. } | Measure::Failed { .. }));
        assert!(!ours, "nothing counted as ours: {measures:?}");
    }
}

/// A refused finishing write: another worker settled the file after our lease ran out (its
/// item differs from what we wrote): nothing is left to do for the message; a file neither
/// settled nor ours is a lost claim.
#[test]
fn a_refused_finishing_write_tells_our_write_from_another_worker_s() {
    let our_time = Timestamp::from_unix_ms(1_800_000_000_123);
    let ours = |f: &FileEntry| f.stored_at == Some(our_time);
    let mut file = record(&[("vocal", FileStatus::Stored)]).files.remove("vocal").unwrap();
    file.stored_at = Some(our_time);
    assert_eq!(after_refusal(FileWrite::Refused(Some(Box::new(file.clone()))), ours), Finished::Ours);
    assert_eq!(after_refusal(FileWrite::Applied, ours), Finished::Ours);
    // The same copy (same digest) by another worker, at another time.
    file.stored_at = Some(Timestamp::from_unix_ms(1_800_000_000_124));
    assert_eq!(after_refusal(FileWrite::Refused(Some(Box::new(file.clone()))), ours), Finished::ByAnother);
    (file.status, file.claim) = (FileStatus::Downloading, Some("another".into()));
    assert_eq!(after_refusal(FileWrite::Refused(Some(Box::new(file))), ours), Finished::NotHeld);
    assert_eq!(after_refusal(FileWrite::Refused(None), ours), Finished::NotHeld);
}

#[tokio::test]
async fn an_unexpired_claim_of_another_worker_is_left_alone_and_an_expired_one_taken_over() {
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    f.claim = Some("someone-else".into());
    f.lease_until = Some(LeaseEnd::from_unix_seconds(1_800_000_000 + 600));
    let ports = MemoryPorts::with_record(r);
    serve(&ports, "vocal", b"x");

    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Busy { .. })), "{outcome:?}");
    assert!(ports.opened().is_empty());
    // Kept away until a second after the lease, not the first retry's 30 s: redeliveries
    // before would meet the claim again, each spending a receive.
    assert_eq!(ports.delays.lock().unwrap().last().map(|(_, d)| *d), Some(Duration::from_secs(601)));

    *ports.now.lock().unwrap() = Some(Timestamp::from_unix_ms(1_800_000_601_000));
    assert_eq!(outcome.retry_after(ports.now()), Some(Duration::ZERO), "lapsed");
    assert!(matches!(run(&ports, "vocal", 2).await, Outcome::Stored(_)));
}

#[tokio::test]
async fn concurrent_copies_of_one_message_copy_once() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", &deterministic_bytes(5000, 2));
    let (a, b) = tokio::join!(run(&ports, "vocal", 1), run(&ports, "vocal", 1));
    let stored = [&a, &b].iter().filter(|o| matches!(o, Outcome::Stored(_))).count();
    assert_eq!(stored, 1, "{a:?} / {b:?}");
    assert!([&a, &b].iter().any(|o| matches!(o, Outcome::Retry(DownloadError::Busy { .. }))), "{a:?} / {b:?}");
    assert_eq!(ports.opened().len(), 1);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_record_url_wins_over_the_message_url() {
    let mut r = record(&[("vocal", FileStatus::Queued)]);
    r.files.get_mut("vocal").unwrap().url = "https://cdn1.suno.ai/newer.mp3".into();
    let ports = MemoryPorts::with_record(r);
    ports.source(
        "https://cdn1.suno.ai/newer.mp3",
        Script::Body { data: b"newer".to_vec(), declared: false, content_type: None },
    );
    assert!(matches!(run(&ports, "vocal", 1).await, Outcome::Stored(_)));
    assert_eq!(ports.opened(), vec!["https://cdn1.suno.ai/newer.mp3".to_owned()]);
    assert_eq!(ports.store.object(&format!("tasks/{TASK}/vocal.mp3")).unwrap(), b"newer");
}

/// A body no job can be read from goes on to the dead-letter queue (a failure, back after a
/// minute per receive, at once on its last); a job naming a task or file the table does not
/// have is dropped (nothing to do, ever).
#[tokio::test]
async fn unreadable_messages_go_on_and_messages_naming_nothing_known_are_dropped() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    let bodies = [
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"task_id":"../x","name":"vocal","url":"https://a/b","key":"k"}"#.to_owned(),
        r#"{"task_id":"abc","name":"","url":"https://a/b","key":"k"}"#.to_owned(),
    ];
    for body in bodies {
        let outcome = process_message(&ports, &SETTINGS, &delivery(body.clone(), 1)).await;
        assert!(matches!(outcome, Outcome::Unreadable(DownloadError::Malformed(_))), "{body}: {outcome:?}");
        assert!(outcome.is_failure(), "{body}");
        delay_retry(&ports, &delivery(body.clone(), 3), &outcome).await;
        assert_eq!(ports.delays.lock().unwrap().pop().map(|(_, delay)| delay), Some(3 * UNREADABLE_RETRY), "{body}");
        delay_retry(&ports, &delivery(body.clone(), MAX_RECEIVE_COUNT), &outcome).await;
        assert_eq!(ports.delays.lock().unwrap().pop().map(|(_, delay)| delay), Some(Duration::ZERO), "{body}");
    }
    let missing_task = job_body("vocal").replace(TASK, "unknown-task");
    let outcome = process_message(&ports, &SETTINGS, &delivery(missing_task, 1)).await;
    assert!(matches!(outcome, Outcome::Dropped(DownloadError::Dropped(_))), "{outcome:?}");
    let outcome = process_message(&ports, &SETTINGS, &delivery(job_body("bass"), 1)).await;
    assert!(matches!(outcome, Outcome::Dropped(DownloadError::Dropped(_))), "{outcome:?}");
    assert!(ports.opened().is_empty());
}

#[tokio::test]
async fn a_failed_manifest_leaves_the_task_open_and_a_redelivery_settles_it() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"v");
    *ports.manifest_failures.lock().unwrap() = 1;

    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Storage(_))), "{outcome:?}");
    let r = ports.record(TASK);
    assert_eq!(r.files["vocal"].status, FileStatus::Stored);
    assert_eq!((r.vault, r.manifest_key.as_deref(), r.version), (VaultState::Pending, None, 3), "nothing to undo");

    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    let r = ports.record(TASK);
    assert_eq!(r.vault, VaultState::Complete);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
    assert_eq!(ports.opened().len(), 1, "not downloaded again");
}

/// The worker that settles a task stalls in its manifest PutObject; meanwhile ingest adds a
/// file (a new generation), which is stored and settles the task with the newer manifest.
/// Then the stalled write lands: it must not replace the newer manifest, and its settle
/// write is refused (the generation moved on).
#[tokio::test]
async fn a_slow_older_manifest_write_never_replaces_a_newer_one() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "drums", b"drums bytes");
    let key = format!("tasks/{TASK}/manifest.json");
    let (at_gate, release) = hold_next_manifest(&ports);

    let slow = run_body(&ports, job_body("vocal"), 1);
    let overtaking = async {
        reached(at_gate).await;
        add_file(&ports, "drums");
        let (outcome, checked) = run_body(&ports, job_body("drums"), 1).await;
        assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
        assert_eq!(checked, Some(Ok(Settling::Settled)));
        release.send(()).unwrap();
    };
    let ((slow, checked), ()) = tokio::join!(slow, overtaking);
    assert!(matches!(slow, Outcome::Stored(_)), "{slow:?}");
    // It finds the newer manifest, so it publishes nothing and reads again: settled.
    assert_eq!(checked, Some(Ok(Settling::AlreadySettled)));
    let ids: Vec<String> = ports.events.ids().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, [format!("{TASK}.vaulted.3.first")], "no older Task Vaulted after the newer one");

    let written = ports.manifests.lock().unwrap().clone();
    assert_eq!(written.len(), 1, "the stalled write did not land");
    let under_key: Manifest = serde_json::from_slice(&ports.store.object(&key).unwrap()).unwrap();
    assert_eq!(under_key.files.len(), 2, "the newer manifest stays");
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Complete, Some(key.as_str())));
    let generation = &ports.store.stored(&key).unwrap().metadata[GENERATION_METADATA];
    assert_eq!(generation, &r.generation.to_string(), "the newer generation's");
    let settled = settles_counted(&ports);
    assert_eq!(settled, 1);
}

/// A writer that only starts after a newer manifest is written writes nothing; one of the
/// same generation and stage is left as it is; a newer generation, or a later stage of the
/// same generation, replaces an older manifest.
#[tokio::test]
async fn manifests_are_written_only_over_older_generations_and_stages() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let key = format!("tasks/{TASK}/manifest.json");
    let plan = |generation: u64, stage: Stage| {
        let mut r = ports.record(TASK);
        (r.generation, r.stage) = (generation, stage);
        let SettlePlan::Settle(plan) = settle_plan(&r, &task, ports.now()) else { panic!("expected a settle") };
        plan
    };
    let written = || ports.manifests.lock().unwrap().len();
    let under_key = |name: &str| ports.store.stored(&key).unwrap().metadata[name].clone();
    let fenced = async |generation, stage| put_fenced(&ports, &plan(generation, stage)).await.unwrap();
    assert_eq!(fenced(7, Stage::First).await, Fenced::Current);
    assert_eq!(fenced(5, Stage::Complete).await, Fenced::Superseded);
    assert_eq!(fenced(7, Stage::Text).await, Fenced::Superseded);
    assert_eq!(fenced(7, Stage::First).await, Fenced::Current, "another worker's of the same plan");
    assert_eq!(written(), 1, "an older generation, an earlier stage or the same one is not written");
    assert_eq!(fenced(7, Stage::Complete).await, Fenced::Current);
    assert_eq!((written(), under_key(STAGE_METADATA)), (2, "complete".to_owned()), "a later stage is");
    assert_eq!(fenced(9, Stage::Complete).await, Fenced::Current);
    assert_eq!(written(), 3);
    assert_eq!((under_key(GENERATION_METADATA), under_key(STAGE_METADATA)), ("9".to_owned(), "complete".to_owned()));
}

/// A manifest under the key that HEAD does not show (S3's 403 to a role denied the read reads
/// as none) fails the check as the bucket's fault, not as contention, when a write as new is
/// refused so at every attempt (once is another settle's write landing between the two).
#[tokio::test]
async fn a_manifest_head_cannot_see_is_a_bucket_failure() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let SettlePlan::Settle(plan) = settle_plan(&ports.record(TASK), &task, ports.now()) else { panic!("a settle") };
    assert_eq!(put_fenced(&ports, &plan).await.unwrap(), Fenced::Current);
    // Once: the object shows at the next HEAD (another settle's, written between), and is ours.
    *ports.heads_hidden.lock().unwrap() = 1;
    assert_eq!(put_fenced(&ports, &plan).await.unwrap(), Fenced::Current);
    ports.heads.lock().unwrap().clear();
    *ports.heads_hidden.lock().unwrap() = u32::MAX;
    let err = put_fenced(&ports, &plan).await.unwrap_err();
    assert_eq!(err.settle_failure_reason(), "bucket", "{err}");
    assert_eq!(ports.heads.lock().unwrap().len(), MANIFEST_ATTEMPTS as usize, "{err}");
    // Shown, but changed at every attempt: contention, not the bucket.
    *ports.heads_hidden.lock().unwrap() = 0;
    *ports.manifest_conflicts.lock().unwrap() = u32::MAX;
    let newer = ManifestPlan { generation: plan.generation + 1, ..(*plan).clone() };
    let err = put_fenced(&ports, &newer).await.unwrap_err();
    assert_eq!(err.settle_failure_reason(), "contention", "{err}");
    // Hidden at the first attempt, shown and changed at the others: still contention.
    *ports.heads_hidden.lock().unwrap() = 1;
    let err = put_fenced(&ports, &newer).await.unwrap_err();
    assert_eq!(err.settle_failure_reason(), "contention", "{err}");
    assert_eq!(*ports.heads_hidden.lock().unwrap(), 0, "the first attempt's HEAD saw nothing");
}

/// Of one generation and stage, a manifest read from a later version of the task item is the
/// newer: a plan of an older read finds it (ReadSince), one of a later read replaces it. A
/// check that finds it at every read (the table behind S3: the item restored from a backup)
/// reads again, then on its last check settles the item as read, publishing nothing (that
/// later read's settle published); had the item moved on, its write would be refused.
#[tokio::test]
async fn manifests_of_one_generation_and_stage_are_ordered_by_the_version_read() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let key = format!("tasks/{TASK}/manifest.json");
    let read = ports.record(TASK).version;
    let plan = |version: u64| {
        let r = TaskRecord { version, ..ports.record(TASK) };
        let SettlePlan::Settle(plan) = settle_plan(&r, &task, ports.now()) else { panic!("expected a settle") };
        plan
    };
    let written = || ports.manifests.lock().unwrap().len();
    let version_under_key = || ports.store.stored(&key).unwrap().metadata[VERSION_METADATA].clone();
    assert_eq!(put_fenced(&ports, &plan(read + 1)).await.unwrap(), Fenced::Current);
    assert_eq!(put_fenced(&ports, &plan(read)).await.unwrap(), Fenced::ReadSince);
    assert_eq!(put_fenced(&ports, &plan(read + 1)).await.unwrap(), Fenced::Current, "the same read's");
    assert_eq!((written(), version_under_key()), (1, (read + 1).to_string()));
    assert_eq!(put_fenced(&ports, &plan(read + 2)).await.unwrap(), Fenced::Current);
    assert_eq!((written(), version_under_key()), (2, (read + 2).to_string()), "a later read's replaces it");

    ports.take_table_calls();
    assert_eq!(check_settled(&ports, &task, None).await.unwrap(), Settling::Settled);
    assert!(ports.events.published().is_empty(), "nothing of an older read published");
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    let reads = ports.take_table_calls().into_iter().filter(|c| *c == "load_task").count();
    assert_eq!(reads, SETTLE_CHECKS as usize, "settled on the last check");
}

/// How many settles `SecondsToSettled` counted.
fn settles_counted(ports: &MemoryPorts) -> usize {
    ports.measures.lock().unwrap().iter().filter(|m| matches!(m, Measure::Settled { .. })).count()
}

/// A task whose files are all stored, under a manifest of a later generation than its item.
async fn behind_a_newer_manifest() -> (MemoryPorts, TaskId) {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let mut later = ports.record(TASK);
    later.generation = 5;
    let SettlePlan::Settle(newer) = settle_plan(&later, &task, ports.now()) else { panic!("expected a settle") };
    assert_eq!(put_fenced(&ports, &newer).await.unwrap(), Fenced::Current);
    (ports, task)
}

/// The table behind S3 (a task item restored from a backup; its manifest of a later
/// generation still in the bucket): the newer manifest is found on every check, but the task
/// item still says the plan's generation and stage, so the last check settles it all the same.
#[tokio::test]
async fn a_task_item_behind_its_manifest_still_settles_on_the_last_check() {
    let (ports, task) = behind_a_newer_manifest().await;

    assert_eq!(check_settled(&ports, &task, None).await.unwrap(), Settling::Settled);
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.generation), (VaultState::Complete, 2));
    assert_eq!(ports.events.published().len(), 1, "one Task Vaulted, from the last check");
    let reads = ports.take_table_calls().into_iter().filter(|c| *c == "load_task").count();
    assert_eq!(reads, SETTLE_CHECKS as usize);
}

/// The table behind S3, and the publish after the settle write failing: no redelivery would
/// publish it (the task reads settled), so it is tried again at once, and after the last
/// try it is given up (the settle stands).
#[tokio::test]
async fn a_publish_after_the_settle_write_is_tried_again_then_given_up() {
    let (ports, task) = behind_a_newer_manifest().await;
    ports.events.fail_next(2);
    assert_eq!(check_settled(&ports, &task, None).await.unwrap(), Settling::Settled);
    assert_eq!(ports.events.published().len(), 1, "published on the third try");
    let settles = settles_counted(&ports);
    assert_eq!(settles, 1, "counted once published");

    let (ports, task) = behind_a_newer_manifest().await;
    ports.events.fail_next(settle::PUBLISH_AFTER_SETTLING_TRIES);
    assert_eq!(check_settled(&ports, &task, None).await.unwrap(), Settling::Settled);
    assert!(ports.events.published().is_empty());
    assert_eq!(ports.record(TASK).vault, VaultState::Complete, "the settle stands");
    let settles = settles_counted(&ports);
    assert_eq!(settles, 0, "no event went out: none counted");
}

/// Not the table behind S3 but a later stage recorded, and its manifest written, between the
/// last check's read and its settle write: the older stage's Task Vaulted is not published
/// after the newer one's (the write is refused, so nothing is), and the check defers.
#[tokio::test]
async fn a_manifest_newer_than_the_last_read_publishes_nothing_when_the_item_moved_on() {
    let (ports, task) = behind_a_newer_manifest().await;
    *ports.written_over_before_settle.lock().unwrap() = 1;

    assert_eq!(check_settled(&ports, &task, None).await.unwrap(), Settling::Deferred);
    assert!(ports.events.published().is_empty(), "no older Task Vaulted after the newer one's");
    assert_eq!(ports.record(TASK).vault, VaultState::Pending);
}

#[tokio::test]
async fn a_settled_record_whose_vault_is_still_pending_is_settled_by_a_redelivery() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]));
    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
}

/// The worker that settles a task writes the manifest and then cannot write the settle
/// (the table timed out; or it stopped there): its message goes back to the queue, and the
/// redelivery, finding the file settled, settles the task without writing the manifest
/// again (one of this generation is there).
#[tokio::test]
async fn a_stop_between_the_manifest_and_the_settle_write_is_healed_by_the_redelivery() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Queued)]));
    serve(&ports, "drums", b"drums");
    *ports.settle_failures.lock().unwrap() = 1;
    let key = format!("tasks/{TASK}/manifest.json");

    let outcome = run(&ports, "drums", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Store(_))), "{outcome:?}");
    assert_eq!(ports.delays.lock().unwrap().len(), 1, "retried like any failure");
    let r = ports.record(TASK);
    assert_eq!(
        (r.files["drums"].status, r.vault, r.manifest_key.as_deref()),
        (FileStatus::Stored, VaultState::Pending, None)
    );
    assert_eq!(ports.manifests.lock().unwrap().len(), 1, "the manifest is written");

    let later = Timestamp::from_unix_ms(1_800_000_030_000);
    *ports.now.lock().unwrap() = Some(later);
    let (outcome, checked) = run_body(&ports, job_body("drums"), 2).await;
    assert_eq!((outcome, checked), (Outcome::AlreadySettled, Some(Ok(Settling::Settled))));
    let r = ports.record(TASK);
    assert_eq!(
        (r.vault, r.manifest_key.as_deref(), r.open, r.version),
        (VaultState::Complete, Some(key.as_str()), None, 4)
    );
    assert_eq!(ports.manifests.lock().unwrap().len(), 1, "not written again");
    assert_eq!(ports.opened().len(), 1, "nothing downloaded again");
    let settled: Vec<_> =
        ports.measures.lock().unwrap().iter().filter(|m| matches!(m, Measure::Settled { .. })).cloned().collect();
    assert_eq!(settled, [Measure::Settled { seconds: 4_554_030.0 }], "by the write that found the vault pending");

    // Further redeliveries find it recorded: one Query, no write.
    ports.take_table_calls();
    let (outcome, checked) = run_body(&ports, job_body("vocal"), 3).await;
    assert_eq!((outcome, checked), (Outcome::AlreadySettled, Some(Ok(Settling::AlreadySettled))));
    assert_eq!(ports.take_table_calls(), ["claim_file", "load_task"]);
}

/// A vault settled without its manifest key (as a task without files is, by ingest, or as a
/// record of an older version may be left): the check writes the manifest and records it,
/// but does not report the vault settled (it was already).
#[tokio::test]
async fn a_settled_vault_without_its_manifest_key_gets_its_manifest_recorded() {
    let mut r = record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]);
    r.vault = VaultState::Partial;
    r.open = None;
    let ports = MemoryPorts::with_record(r.clone());
    let (outcome, checked) = run_body(&ports, job_body("drums"), 2).await;
    assert_eq!((outcome, checked), (Outcome::AlreadySettled, Some(Ok(Settling::Recorded))));
    let key = format!("tasks/{TASK}/manifest.json");
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests, vec![(key.clone(), Manifest::of(&r, VaultState::Partial, ports.now()))]);
    let stored = ports.record(TASK);
    assert_eq!(
        (stored.vault, stored.manifest_key.as_deref(), stored.version),
        (VaultState::Partial, Some(key.as_str()), 4)
    );
    assert!(ports.measures.lock().unwrap().is_empty(), "not settled here");
}

/// The sweeper finds an open task whose files are all settled (its settler stopped before
/// the settle write, and its messages are gone) and sends a manifest job: the job settles it.
#[tokio::test]
async fn a_manifest_job_settles_a_task_whose_files_are_all_settled() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]));
    let job = FileJob {
        task_id: TASK.into(),
        name: MANIFEST_JOB_NAME.into(),
        url: String::new(),
        key: format!("tasks/{TASK}/manifest.json"),
    };
    let (outcome, checked) = run_body(&ports, serde_json::to_string(&job).unwrap(), 1).await;
    assert_eq!((outcome, checked), (Outcome::ManifestChecked, Some(Ok(Settling::Settled))));
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    assert_eq!(ports.take_table_calls(), ["load_task", "settle_task"], "no claim for a manifest job");
}

#[tokio::test]
async fn oversize_and_refused_sources_fail_for_good() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", &deterministic_bytes(2000, 3));
    ports.source(
        &url("drums"),
        Script::Fail(FetchError::Refused(crate::source_policy::Refusal::Refused("host x is private".into()))),
    );
    let small = Settings { max_file_bytes: 1000, ..SETTINGS };
    let d = delivery(job_body("vocal"), 1);
    let outcome = process_message(&ports, &small, &d).await;
    assert!(matches!(&outcome, Outcome::FailedForGood(why) if why.contains("larger than")), "{outcome:?}");
    let outcome = run(&ports, "drums", 1).await;
    assert!(matches!(&outcome, Outcome::FailedForGood(why) if why.contains("refused")), "{outcome:?}");
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    assert!(ports.store.object(&format!("tasks/{TASK}/vocal.mp3")).is_none());
}

#[tokio::test]
async fn an_s3_refusal_no_retry_fixes_fails_the_file_for_good_and_a_transient_one_is_retried() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let refused = StorageError {
        operation: "PutObject",
        message: "400 KeyTooLongError: Your key is too long".into(),
        permanent: true,
    };
    let mut ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    ports.store.refuse = Some(refused);
    serve(&ports, "vocal", b"vocal bytes");
    // Without a declared length, longer than a part: a multipart upload's first request.
    let drums =
        Script::Body { data: deterministic_bytes(SETTINGS.part_size + 1, 4), declared: false, content_type: None };
    ports.source(&url("drums"), drums);

    for name in ["vocal", "drums"] {
        let outcome = run(&ports, name, 1).await;
        let reason = "S3 PutObject refused the file: 400 KeyTooLongError: Your key is too long";
        assert_eq!(outcome, Outcome::FailedForGood(reason.into()), "{name}");
        let f = &ports.record(TASK).files[name];
        assert_eq!((f.status, f.error.as_deref()), (FileStatus::Failed, Some(reason)), "{name}");
    }
    assert!(ports.delays.lock().unwrap().is_empty(), "not retried");
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    let failed = Measure::Failed { reason: "s3_rejected" };
    assert_eq!(ports.measures.lock().unwrap()[..2], [failed.clone(), failed]);
    // An error naming the bucket as what to fix, with the code to search the logs by.
    let logs = captured.text();
    let refused = captured.lines_with("the vault bucket refused it");
    assert!(refused.len() == 2 && refused.iter().all(|l| l.is(Level::ERROR, &[r#""code":"s3_rejected""#])), "{logs}");

    // A failure that a retry may get past goes back on the queue.
    let mut ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.store.refuse = Some(StorageError::transient("PutObject", "dispatch failure: connection reset"));
    serve(&ports, "vocal", b"vocal bytes");
    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Copy(CopyError::Storage(_)))), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued);
}

/// The upload succeeded, recording it failed (the table timed out): the claim is given back
/// (the redelivery need not wait for its lease), and by the time the message comes back the
/// URL has expired. The redelivery finds the complete copy under the key and records it, for
/// a single streamed PutObject (its SHA-256 is its full-object checksum) and for a multipart
/// upload (read back and hashed).
#[tokio::test]
async fn a_file_stored_but_not_recorded_is_recorded_on_redelivery_without_copying_it_again() {
    for len in [100_000, SETTINGS.part_size + 5] {
        let (ports, data) = copied_but_not_recorded(len, 5).await;
        let f = ports.file_item(TASK, "vocal");
        assert_eq!((f.status, f.claim), (FileStatus::Pending, None), "the claim given back");

        ports.source(&url("vocal"), Script::http_error(403, "Forbidden"));
        let outcome = run(&ports, "vocal", 2).await;
        let Outcome::Stored(stored) = outcome else { panic!("{len} bytes: {outcome:?}") };
        let sha256 = hex::encode(Sha256::digest(&data));
        assert_eq!((stored.bytes, stored.sha256_hex.as_str()), (len as u64, sha256.as_str()));

        let r = ports.record(TASK);
        let f = &r.files["vocal"];
        assert_eq!(
            (f.status, f.bytes, f.sha256.as_deref()),
            (FileStatus::Stored, Some(len as u64), Some(sha256.as_str()))
        );
        assert_eq!((f.content_type.as_deref(), f.attempts, f.error.as_deref()), (Some("audio/mpeg"), 2, None));
        assert_eq!(r.vault, VaultState::Complete);
        assert_eq!(ports.opened().len(), 1, "{len} bytes: not fetched again");
        assert_eq!(ports.store.object(&format!("tasks/{TASK}/vocal.mp3")).unwrap(), data);
        let measures = ports.measures.lock().unwrap().clone();
        assert_eq!(measures[0], Measure::Stored { bytes: len as u64, copy_seconds: None }, "counted once, no copy");
    }
}

/// A claim applied whose every answer was lost (the SDK's attempts all timed out) is given
/// back: the redelivery copies the file at once, rather than finding it held by a worker that
/// is gone until that invocation's lease ends.
#[tokio::test]
async fn a_claim_applied_with_its_answers_lost_is_given_back() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal");
    *ports.unanswered_claims.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Store(_))), "{outcome:?}");
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.claim, f.attempts), (FileStatus::Pending, None, 1));
    assert!(ports.opened().is_empty(), "nothing fetched without the claim's answer");

    let outcome = run(&ports, "vocal", 2).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Stored);
}

/// A claim that failed without being applied, while another delivery holds the file: the
/// release that follows is refused (it is conditional on our claim), so the other keeps it.
#[tokio::test]
async fn a_failed_claim_gives_back_no_other_worker_s_claim() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.edit_file_item(TASK, "vocal", |f| {
        (f.status, f.claim, f.lease_until) =
            (FileStatus::Downloading, Some("another-worker".into()), Some(LeaseEnd::from_unix_seconds(1_900_000_000)));
    });
    *ports.claim_failures.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Store(_))), "{outcome:?}");
    assert!(ports.take_table_calls().contains(&"release_file"), "a release was tried");
    let f = ports.file_item(TASK, "vocal");
    assert_eq!(
        (f.status, f.claim.as_deref(), f.lease_until),
        (FileStatus::Downloading, Some("another-worker"), Some(LeaseEnd::from_unix_seconds(1_900_000_000)))
    );
}

/// A `stored` or `failed` write applied whose every answer was lost: the release that follows
/// is refused (the file is no longer held), so the file stays settled, and the redelivery
/// finds it so.
#[tokio::test]
async fn a_finishing_write_applied_with_its_answers_lost_stays() {
    for (script, settled) in [
        (Script::Body { data: b"vocal".to_vec(), declared: true, content_type: None }, FileStatus::Stored),
        (Script::http_error(404, "Not Found"), FileStatus::Failed),
    ] {
        let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
        ports.source(&url("vocal"), script);
        *ports.unanswered_writes.lock().unwrap() = 1;
        let outcome = run(&ports, "vocal", CONFIRMED).await;
        assert!(matches!(outcome, Outcome::Retry(DownloadError::Store(_))), "{settled:?}: {outcome:?}");
        assert_eq!(ports.file_item(TASK, "vocal").status, settled);
        assert!(ports.take_table_calls().contains(&"release_file"), "{settled:?}: a release was tried");

        let outcome = run(&ports, "vocal", 2).await;
        assert!(matches!(outcome, Outcome::AlreadySettled), "{settled:?}: {outcome:?}");
    }
}

/// As above, but S3 fails the look for the earlier copy on the redelivery, and the source has
/// expired: the copy may be there, so the file is retried, not failed for good; the next
/// receive finds and records it.
#[tokio::test]
async fn an_expired_source_fails_nothing_while_an_earlier_copy_cannot_be_looked_for() {
    let (ports, _) = copied_but_not_recorded(100_000, 6).await;

    ports.source(&url("vocal"), Script::http_error(410, "Gone"));
    let lease_over = delivery(String::new(), 1).lease_until.plus(Duration::from_secs(1)).timestamp();
    *ports.now.lock().unwrap() = Some(lease_over);
    *ports.head_failures.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", 2).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Copy(CopyError::Storage(_)))), "{outcome:?}");
    assert_ne!(ports.record(TASK).files["vocal"].status, FileStatus::Failed);

    let outcome = run(&ports, "vocal", 3).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Stored);
}

/// As above, on the message's last receive: dead-lettered, and the reason still says the URL
/// expired, so the task is watched for a fresh one.
#[tokio::test]
async fn an_expired_source_whose_earlier_copy_cannot_be_looked_for_on_the_last_receive_stays_expired() {
    let mut r = record(&[("vocal", FileStatus::Queued)]);
    r.files.get_mut("vocal").unwrap().attempts = 1;
    let ports = MemoryPorts::with_record(r);
    ports.source(&url("vocal"), Script::http_error(410, "Gone"));
    *ports.head_failures.lock().unwrap() = 1;
    last_receive_leaves_it_expired(&ports).await;
    let reason = ports.record(TASK).files["vocal"].error.clone().unwrap_or_default();
    assert!(reason.starts_with("dead_lettered: source answered 410"), "{reason}");
    assert!(reason.contains("an earlier copy could not be looked for"), "{reason}");
}

/// A copy under the key made from another URL (the record's URL changed since) is not this
/// file: it is copied over.
#[tokio::test]
async fn a_copy_of_another_url_under_the_key_is_copied_over() {
    let mut r = record(&[("vocal", FileStatus::Queued)]);
    r.files.get_mut("vocal").unwrap().attempts = 1;
    let ports = MemoryPorts::with_record(r);
    let key = format!("tasks/{TASK}/vocal.mp3");
    let older = crate::upload::ObjectInfo {
        content_type: None,
        source_sha256: &stemvault_vault::shown::url_sha256("https://cdn1.suno.ai/old.mp3"),
    };
    ports
        .store
        .put_object(&key, bytes::Bytes::from_static(b"old"), older, Sha256::digest(b"old").into())
        .await
        .unwrap();
    serve(&ports, "vocal", b"new bytes");
    assert!(matches!(run(&ports, "vocal", 2).await, Outcome::Stored(_)));
    assert_eq!(ports.opened().len(), 1);
    assert_eq!(ports.store.object(&key).unwrap(), b"new bytes");
}

/// A task without files is settled by ingest, which sends a manifest job: the job writes
/// the manifest once, and its duplicates find it written.
#[tokio::test]
async fn a_task_without_files_gets_its_manifest_from_its_manifest_job() {
    let lyrics = TaskRecord::new(TASK, Family::Lyrics, Stage::Complete, 200, "ok", Timestamp::from_unix_ms(1));
    let ports = MemoryPorts::with_record(lyrics.clone());
    let job = stemvault_vault::download::manifest_job(&lyrics).expect("a manifest job");
    let body = serde_json::to_string(&job).unwrap();
    for (count, settling) in [(1, Settling::Recorded), (2, Settling::AlreadySettled)] {
        let (outcome, checked) = run_body(&ports, body.clone(), count).await;
        assert_eq!((outcome, checked), (Outcome::ManifestChecked, Some(Ok(settling))), "delivery {count}");
    }
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    let (key, manifest) = &manifests[0];
    assert_eq!(key, &format!("tasks/{TASK}/manifest.json"));
    assert_eq!((manifest.family, manifest.vault, manifest.files.len()), (Family::Lyrics, VaultState::Complete, 0));
    let r = ports.record(TASK);
    assert_eq!((r.manifest_key.as_deref(), r.vault, r.version), (Some(key.as_str()), VaultState::Complete, 2));
    assert!(ports.opened().is_empty());
    assert!(ports.measures.lock().unwrap().is_empty(), "settled by ingest, not here");
}

#[tokio::test]
async fn no_time_left_means_try_later_without_claiming() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    let mut d = delivery(job_body("vocal"), 1);
    d.stop_at = Instant::now();
    assert_eq!(process_message(&ports, &SETTINGS, &d).await, Outcome::Retry(DownloadError::NoTimeLeft));
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued);
}

#[tokio::test]
async fn a_panicked_attempt_gives_its_claim_back() {
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let d = delivery(job_body("vocal"), 1);
    let f = r.files.get_mut("vocal").unwrap();
    f.claim = Some(d.worker.clone());
    f.lease_until = Some(d.lease_until);
    let ports = MemoryPorts::with_record(r);
    release_or_fail_claim(&ports, &d, crate::app::PANICKED_REASON).await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Queued, None));
    assert_eq!(f.error.as_deref(), Some(crate::app::PANICKED_REASON));

    // Someone else's claim is left alone.
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    r.files.get_mut("vocal").unwrap().claim = Some("other".into());
    let ports = MemoryPorts::with_record(r);
    release_or_fail_claim(&ports, &d, "boom").await;
    assert_eq!(ports.record(TASK).files["vocal"].claim.as_deref(), Some("other"));
}

/// The record with its vocal being downloaded under `d`'s claim.
fn vocal_held_by(d: &Delivery) -> TaskRecord {
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    (f.claim, f.lease_until) = (Some(d.worker.clone()), Some(d.lease_until));
    r
}

/// On the message's last receive, a panic (or the deadline) leaves the file failed as
/// `dead_lettered`, counted so, rather than pending for the sweeper once the queue's
/// retention is over (4 days, its URL aging): the task settles, and the reconciler may reopen
/// it. Another's claim is still left alone.
#[tokio::test]
async fn a_panic_on_the_last_receive_fails_the_file_as_dead_lettered() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let last = delivery(job_body("vocal"), MAX_RECEIVE_COUNT);
    let ports = MemoryPorts::with_record(vocal_held_by(&last));
    release_or_fail_claim(&ports, &last, crate::app::PANICKED_REASON).await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Failed, None));
    let error = f.error.as_deref().unwrap_or_default();
    let expected = format!("dead_lettered: {} (receive {MAX_RECEIVE_COUNT}, the last)", crate::app::PANICKED_REASON);
    assert_eq!(error, expected);
    assert!(stemvault_vault::reconcile::awaits_retry(f), "a poll may reopen it");
    assert_eq!(*ports.measures.lock().unwrap(), [Measure::Failed { reason: DEAD_LETTERED }]);

    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    r.files.get_mut("vocal").unwrap().claim = Some("other".into());
    let ports = MemoryPorts::with_record(r);
    release_or_fail_claim(&ports, &last, "boom").await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Downloading, Some("other")));
    assert!(ports.measures.lock().unwrap().is_empty());
    // Said once, as a warning: its holder settles it.
    let logs = captured.text();
    let not_ours = captured.lines_with("not recorded failed on its last receive");
    assert!(not_ours.len() == 1 && not_ours[0].is(Level::WARN, &[]), "{logs}");

    // A newer URL waiting: released as the file's URL, as the copy path leaves one it had no
    // time to copy (not failed at a URL never tried, nor left held until its lease).
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    (f.claim, f.lease_until) = (Some(last.worker.clone()), Some(last.lease_until));
    (f.next_url, f.next_key) = (Some("https://cdn.example/newer.mp3".into()), Some("tasks/t/vocal-newer.mp3".into()));
    let ports = MemoryPorts::with_record(r);
    release_or_fail_claim(&ports, &last, "boom").await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref(), f.next_url.as_deref()), (FileStatus::Queued, None, None));
    assert_eq!((f.url.as_str(), f.key.as_str()), ("https://cdn.example/newer.mp3", "tasks/t/vocal-newer.mp3"));

    // An edited item without `next_key`: released as it is, its claim given back.
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    (f.claim, f.lease_until) = (Some(last.worker.clone()), Some(last.lease_until));
    f.next_url = Some("https://cdn.example/newer.mp3".into());
    let url = f.url.clone();
    let ports = MemoryPorts::with_record(r);
    release_or_fail_claim(&ports, &last, "boom").await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Queued, None), "{f:?}");
    assert_eq!((f.url.as_str(), f.next_url.as_deref()), (url.as_str(), Some("https://cdn.example/newer.mp3")));
}

/// On the last receive, a failed write that answers an error (the table down, or every answer
/// lost) is not counted and leaves the file to its lease: the item may say failed (here the
/// write was applied) or still downloading, and nothing is reported as settled.
#[tokio::test]
async fn a_failed_write_that_answers_an_error_on_the_last_receive_is_not_counted() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let last = delivery(job_body("vocal"), MAX_RECEIVE_COUNT);
    let ports = MemoryPorts::with_record(vocal_held_by(&last));
    *ports.unanswered_writes.lock().unwrap() = 1;
    release_or_fail_claim(&ports, &last, crate::app::PANICKED_REASON).await;
    assert!(ports.measures.lock().unwrap().is_empty(), "not counted");
    let logs = captured.text();
    let said = captured.lines_with("recording the file failed gave no answer");
    assert!(said.len() == 1 && said[0].is(Level::ERROR, &["dead-letter queue"]), "{logs}");
}

/// Per file, DynamoDB sees two writes and no read: the claim (which returns the item), then
/// the outcome; per task, one Query for the settle check and one write when it settles.
#[tokio::test]
async fn no_read_comes_before_a_claim() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    ports.source(&url("drums"), Script::http_error(404, ""));

    assert!(matches!(process_message(&ports, &SETTINGS, &delivery(job_body("vocal"), 1)).await, Outcome::Stored(_)));
    assert_eq!(ports.take_table_calls(), ["claim_file", "record_stored"]);
    let d = delivery(job_body("drums"), CONFIRMED);
    assert!(matches!(process_message(&ports, &SETTINGS, &d).await, Outcome::FailedForGood(_)));
    assert_eq!(ports.take_table_calls(), ["claim_file", "record_failed"]);
    let drums = &ports.record(TASK).files["drums"];
    assert_eq!(
        (drums.error.as_deref(), drums.error_code),
        (Some("source answered 404"), Some(FailureCode::SourceExpired))
    );
    assert_eq!(check_settled(&ports, &TaskId::parse(TASK).unwrap(), None).await, Ok(Settling::Settled));
    assert_eq!(ports.take_table_calls(), ["load_task", "settle_task"]);

    // A redelivery: the refused claim returns the item, which says the file is settled.
    assert_eq!(process_message(&ports, &SETTINGS, &delivery(job_body("vocal"), 2)).await, Outcome::AlreadySettled);
    assert_eq!(ports.take_table_calls(), ["claim_file"]);
    // A retryable failure: the claim, then its release.
    let ports = vocal_answering(503, "");
    assert!(process_message(&ports, &SETTINGS, &delivery(job_body("vocal"), 1)).await.is_failure());
    assert_eq!(ports.take_table_calls(), ["claim_file", "release_file"]);
}

/// A refused claim answers from the item DynamoDB returns: no such file, settled, or
/// claimed by another worker until when.
#[tokio::test]
async fn a_refused_claim_says_why_from_the_item_it_returns() {
    let mut r = record(&[("vocal", FileStatus::Downloading), ("drums", FileStatus::Failed)]);
    let f = r.files.get_mut("vocal").unwrap();
    (f.claim, f.lease_until) = (Some("other".into()), Some(LeaseEnd::from_unix_seconds(1_800_000_000)));
    let ports = MemoryPorts::with_record(r);
    let ports = &ports;
    let answer = |name: &str| {
        let d = delivery(job_body(name), 1);
        async move { process_message(ports, &SETTINGS, &d).await }
    };
    assert_eq!(
        answer("vocal").await,
        Outcome::Retry(DownloadError::Busy { lease_until: LeaseEnd::from_unix_seconds(1_800_000_000) }),
        "a lease holds to its last second"
    );
    assert_eq!(answer("drums").await, Outcome::AlreadySettled);
    assert_eq!(
        answer("bass").await,
        Outcome::Dropped(DownloadError::Dropped(stemvault_vault::download::DropReason::FileMissing))
    );
    assert!(ports.opened().is_empty());
    assert_eq!(ports.take_table_calls(), ["claim_file"; 3]);
}

/// Two workers finish a task's last two files at the same moment, and both settle checks
/// read the task after both files are recorded: one settles it, the other's write (of the
/// same values) is refused as the item moved on, and its read after finds it settled.
#[tokio::test]
async fn two_workers_finishing_the_last_two_files_at_once_both_succeed_and_one_settles() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "drums", &deterministic_bytes(SETTINGS.part_size + 1, 6));
    *ports.load_barrier.lock().unwrap() = Some(std::sync::Arc::new(tokio::sync::Barrier::new(2)));

    let ((vocal, a), (drums, b)) =
        tokio::join!(run_body(&ports, job_body("vocal"), 1), run_body(&ports, job_body("drums"), 1));
    assert!(matches!((&vocal, &drums), (Outcome::Stored(_), Outcome::Stored(_))), "{vocal:?} / {drums:?}");
    let mut checks = [a.unwrap().unwrap(), b.unwrap().unwrap()];
    checks.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(checks, [Settling::AlreadySettled, Settling::Settled], "one settled");

    let r = ports.record(TASK);
    assert_eq!((r.vault, r.open, r.version), (VaultState::Complete, None, 4), "one settle write");
    assert!(ports.delays.lock().unwrap().is_empty(), "neither message is retried");
    let settled = settles_counted(&ports);
    assert_eq!(settled, 1, "SecondsToSettled once");
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1, "the second writer found this generation's manifest written");
    assert_eq!(manifests[0].1.files.len(), 2);
}

/// Two requests adding files at one generation (the second took the first's fence over)
/// commit it twice: a settle that read the task between the two, without the second's
/// reopened file, must not apply once the second commits, though the generation, the stage
/// and the fence are all as it read them (its version is not). It reads again and finds the
/// file open, so the task is settled by that file's copy, not left saying it failed for good.
#[tokio::test]
async fn a_settle_read_before_a_second_commit_at_its_generation_does_not_apply() {
    let mut read = record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Failed)]);
    read.files.get_mut("drums").unwrap().error = Some("source answered 404 Not Found".into());
    let ports = MemoryPorts::with_record(read);
    serve(&ports, "vocal", b"vocal bytes");
    let (at_gate, release) = hold_next_manifest(&ports);

    let settling = run_body(&ports, job_body("vocal"), 1);
    let second_commit = async {
        reached(at_gate).await;
        // The second request's items and task item: drums reopened by a new URL, stamped with
        // the generation the task item already has.
        let mut committed = ports.record(TASK);
        let drums = committed.files.get_mut("drums").unwrap();
        (drums.status, drums.error, drums.generation) = (FileStatus::Queued, None, Some(committed.generation));
        committed.version += 1;
        ports.put_record(committed);
        release.send(()).unwrap();
    };
    let ((outcome, checked), ()) = tokio::join!(settling, second_commit);
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Open)), "read again: drums is open");
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Pending, None), "not settled");
    assert!(r.open.is_some(), "still in the sweeper's index");

    // Drums copied: the task settles at that generation, and its manifest, read after the
    // second commit, replaces the one the refused settle wrote (the same generation and
    // stage, an older version read).
    serve(&ports, "drums", b"drum bytes");
    let (outcome, checked) = run_body(&ports, job_body("drums"), 1).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Settled)));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    let key = format!("tasks/{TASK}/manifest.json");
    let under_key: Manifest = serde_json::from_slice(&ports.store.object(&key).unwrap()).unwrap();
    let statuses: Vec<_> = under_key.files.iter().map(|f| (f.name.as_str(), f.status)).collect();
    assert_eq!(statuses, [("drums", PublicFileStatus::Stored), ("vocal", PublicFileStatus::Stored)]);
}

/// A task item written over before each settle write (a flood of one task's duplicate
/// deliveries, each counted on it) is settled later: after the last refused check, a message
/// comes back, and its check settles the task.
#[tokio::test]
async fn a_task_item_written_over_before_every_settle_write_is_checked_again_later() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    *ports.written_over_before_settle.lock().unwrap() = SETTLE_CHECKS;
    let (outcome, checked) = run_body(&ports, job_body("vocal"), 1).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Deferred)));
    assert_eq!(ports.record(TASK).vault, VaultState::Pending);
    assert_eq!(ports.events.published().len(), 1, "its Task Vaulted once, not once a check");
    // The message that comes back checks again.
    assert_eq!(check_settled(&ports, &TaskId::parse(TASK).unwrap(), None).await, Ok(Settling::Settled));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
}

/// What ingest does when a callback brings a new stage and no new file: the stage, whose
/// manifest is due; the vault and the generation as they were.
fn advance_stage(ports: &MemoryPorts, stage: Stage) {
    let mut next = ports.record(TASK);
    next.stage = stage;
    next.manifest_key = None;
    next.version += 1;
    ports.put_record(next);
}

/// Ingest records a new stage without a new file between the settle check's read and its
/// settle write (conditional on the stage read): no download is left to settle the new
/// stage, so the check reads again and settles it, with its manifest and `Task Vaulted` (the
/// earlier stage's went out before the refused write: true of its file set, and superseded).
#[tokio::test]
async fn a_settle_refused_because_of_a_new_stage_is_made_again_for_it() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    let key = format!("tasks/{TASK}/manifest.json");
    let (at_gate, release) = hold_next_manifest(&ports);

    let settling = run_body(&ports, job_body("vocal"), 1);
    let completing = async {
        reached(at_gate).await;
        advance_stage(&ports, Stage::Complete);
        release.send(()).unwrap();
    };
    let ((outcome, checked), ()) = tokio::join!(settling, completing);
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Settled)));
    let r = ports.record(TASK);
    assert_eq!((r.stage, r.generation), (Stage::Complete, 2));
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Complete, Some(key.as_str())));
    let manifest: Manifest = serde_json::from_slice(&ports.store.object(&key).unwrap()).unwrap();
    assert_eq!(manifest.stage, Stage::Complete, "the new stage's manifest");
    assert_eq!(ports.store.stored(&key).unwrap().metadata[STAGE_METADATA], "complete");
    let vaulted: Vec<(String, Stage, u64)> = ports
        .events
        .published()
        .iter()
        .map(|e| (e.detail.event_id.clone(), e.detail.stage, e.detail.generation))
        .collect();
    assert_eq!(
        vaulted,
        [
            (format!("{TASK}.vaulted.2.first"), Stage::First, 2),
            (format!("{TASK}.vaulted.2.complete"), Stage::Complete, 2)
        ],
        "the last Task Vaulted names the new stage"
    );
}

/// Ingest adds a file between the settle check's read and its settle write: the manifest
/// of the older generation is written, the settle write is refused (read again, the new file
/// is open), and the task stays open until the new file settles it, with a newer manifest
/// over the older one.
#[tokio::test]
async fn a_settle_refused_because_ingest_reopened_the_task_leaves_it_open() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "bass", b"bass bytes");
    let key = format!("tasks/{TASK}/manifest.json");
    let (at_gate, release) = hold_next_manifest(&ports);

    let settling = run_body(&ports, job_body("vocal"), 1);
    let reopening = async {
        reached(at_gate).await;
        add_file(&ports, "bass");
        release.send(()).unwrap();
    };
    let ((outcome, checked), ()) = tokio::join!(settling, reopening);
    assert!(matches!(outcome, Outcome::Stored(_)), "not retried: {outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Open)));
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.manifest_key.as_deref(), r.version), (VaultState::Pending, None, 4), "not settled");
    assert!(ports.measures.lock().unwrap().iter().all(|m| !matches!(m, Measure::Settled { .. })));
    assert_eq!(ports.store.stored(&key).unwrap().metadata[GENERATION_METADATA], "2");

    let (outcome, checked) = run_body(&ports, job_body("bass"), 1).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(checked, Some(Ok(Settling::Settled)));
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Complete, Some(key.as_str())));
    let latest: Manifest = serde_json::from_slice(&ports.store.object(&key).unwrap()).unwrap();
    assert_eq!(latest.files.len(), 2, "the newer manifest replaced the older one");
    assert_eq!(ports.store.stored(&key).unwrap().metadata[GENERATION_METADATA], "3");
}

/// Another worker settles the task between this check's read and its settle write, and a
/// callback reopening it marks it open (before its file items): the settle write, which would
/// take `open` away, is refused, and the mark stays for the reopening's files.
#[tokio::test]
async fn a_settle_refused_because_a_reopening_marked_the_task_keeps_the_mark() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let (at_gate, release) = hold_next_manifest(&ports);

    let checking = check_settled(&ports, &task, None);
    let marking = async {
        reached(at_gate).await;
        let mut settled = ports.record(TASK);
        (settled.vault, settled.version) = (VaultState::Complete, settled.version + 1);
        settled.manifest_key = Some(format!("tasks/{TASK}/manifest.json"));
        // A MarkOpen: `open` set, the version left as it is.
        settled.open = Some(stemvault_vault::OPEN_MARKER.into());
        ports.put_record(settled);
        release.send(()).unwrap();
    };
    let (checked, ()) = tokio::join!(checking, marking);
    assert_eq!(checked, Ok(Settling::AlreadySettled));
    let r = ports.record(TASK);
    assert_eq!(
        (r.vault, r.open.as_deref(), r.version),
        (VaultState::Complete, Some(stemvault_vault::OPEN_MARKER), 4),
        "kept"
    );
}

/// The file `vocal` queued, its source answering HTTP `status` with `reason`.
fn vocal_answering(status: u16, reason: &str) -> MemoryPorts {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.source(&url("vocal"), Script::http_error(status, reason));
    ports
}

/// The file `vocal`'s last receive dead-letters it as expired: the reconciler watches its task
/// for a URL.
async fn last_receive_leaves_it_expired(ports: &MemoryPorts) {
    let outcome = run(ports, "vocal", MAX_RECEIVE_COUNT).await;
    assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}");
    let file = &ports.record(TASK).files["vocal"];
    assert!(stemvault_vault::reconcile::failed_by_expiry(file), "{:?}", file.error);
    // A later poll reopens it (`awaits_retry` reads the reason written here).
    assert!(stemvault_vault::reconcile::awaits_retry(file), "{:?}", file.error);
}

/// Expired URLs copied from fresh links.
mod fresh_links;

/// Newer URLs that come while a file is copied (`next_url`).
mod newer_urls;

/// A receive past the last (the redrive policy's count lowered while the message was out)
/// is the last too: the file is failed, not left queued behind a message in the DLQ.
#[tokio::test]
async fn a_receive_past_the_last_is_the_last() {
    let ports = vocal_answering(503, "Service Unavailable");
    let outcome = run(&ports, "vocal", MAX_RECEIVE_COUNT + 1).await;
    assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Failed);
}

#[tokio::test]
async fn a_retryable_failure_on_the_last_receive_fails_the_file_dead_lettered_and_the_task_settles_partial() {
    // At its last stage: watched only for the file.
    let mut r = record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]);
    r.stage = Stage::Final;
    let ports = MemoryPorts::with_record(r);
    serve(&ports, "drums", b"drums");
    assert!(matches!(run(&ports, "drums", 1).await, Outcome::Stored(_)));
    ports.source(&url("vocal"), Script::http_error(503, "Service Unavailable"));
    for count in 1..MAX_RECEIVE_COUNT {
        let outcome = run(&ports, "vocal", count).await;
        assert!(matches!(outcome, Outcome::Retry(_)), "{count}: {outcome:?}");
    }
    assert_eq!(ports.record(TASK).vault, VaultState::Pending);

    let last = run(&ports, "vocal", MAX_RECEIVE_COUNT).await;
    let reason =
        format!("dead_lettered: source answered 503 Service Unavailable (receive {MAX_RECEIVE_COUNT}, the last)");
    assert_eq!(last, Outcome::DeadLettered(reason.clone()));
    assert!(last.is_failure(), "the message goes on to the dead-letter queue");
    let delays = ports.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), MAX_RECEIVE_COUNT as usize, "every failed receive sets a delay");
    assert!(delays[..delays.len() - 1].iter().all(|(_, d)| !d.is_zero()), "{delays:?}");
    assert_eq!(
        delays.last(),
        Some(&(format!("receipt-{MAX_RECEIVE_COUNT}"), Duration::ZERO)),
        "after the last receive, none: it goes to the dead-letter queue at once"
    );
    let r = ports.record(TASK);
    assert_eq!(
        (r.files["vocal"].status, r.files["vocal"].error.as_deref()),
        (FileStatus::Failed, Some(reason.as_str()))
    );
    assert_eq!(r.vault, VaultState::Partial, "the task settles without it");
    assert!(ports.measures.lock().unwrap().contains(&Measure::Failed { reason: DEAD_LETTERED }));
    // The reconciler watches the task, and a later poll reopens the file at its URL.
    assert!(stemvault_vault::reconcile::awaits_retry(&r.files["vocal"]), "{:?}", r.files["vocal"].error);
    assert!(r.reconcile.is_some(), "watched");

    // Redriven from the dead-letter queue, the message finds its file settled.
    assert_eq!(run(&ports, "vocal", 1).await, Outcome::AlreadySettled);
}

#[tokio::test]
async fn a_permanent_failure_on_the_last_receive_is_an_ordinary_failure() {
    let ports = vocal_answering(404, "Not Found");
    let outcome = run(&ports, "vocal", MAX_RECEIVE_COUNT).await;
    assert_eq!(outcome, Outcome::FailedForGood("source answered 404 Not Found".into()));
    assert!(!outcome.is_failure());
}

/// Two workers that finish a task's last files at once both find every file settled; only
/// the one holding the file settled last writes the manifest, the event and the settle. The
/// other's check is deferred, and its redelivery finds the task settled.
#[tokio::test]
async fn only_the_worker_holding_the_last_settled_file_settles_at_once() {
    let mut r = record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]);
    r.files.get_mut("vocal").unwrap().stored_at = Some(Timestamp::from_unix_ms(1_800_000_002_000));
    r.files.get_mut("drums").unwrap().failed_at = Some(Timestamp::from_unix_ms(1_800_000_001_000));
    let ports = MemoryPorts::with_record(r);
    let task = TaskId::parse(TASK).unwrap();
    ports.take_table_calls();

    let drums = ["drums".to_owned()];
    assert_eq!(check_settled(&ports, &task, Some(&drums)).await, Ok(Settling::Deferred));
    assert_eq!(ports.take_table_calls(), ["load_task"], "nothing written by the deferred check");
    assert!(ports.manifests.lock().unwrap().is_empty());

    let vocal = ["vocal".to_owned()];
    assert_eq!(check_settled(&ports, &task, Some(&vocal)).await, Ok(Settling::Settled));
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);

    // The deferred message's redelivery: nothing left to do.
    assert_eq!(check_settled(&ports, &task, None).await, Ok(Settling::AlreadySettled));
}

/// Should the worker holding the last file not have seen the other settled (its read came
/// first), the deferred check's redelivery settles the task: a redelivery never defers.
#[tokio::test]
async fn a_deferred_check_settles_on_its_redelivery() {
    let mut r = record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Stored)]);
    r.files.get_mut("vocal").unwrap().stored_at = Some(Timestamp::from_unix_ms(1_800_000_002_000));
    r.files.get_mut("drums").unwrap().stored_at = Some(Timestamp::from_unix_ms(1_800_000_001_000));
    let ports = MemoryPorts::with_record(r);
    let task = TaskId::parse(TASK).unwrap();
    assert_eq!(check_settled(&ports, &task, Some(&["drums".to_owned()])).await, Ok(Settling::Deferred));
    assert_eq!(ports.record(TASK).vault, VaultState::Pending);
    // It comes back soon: here it is the only settle, and Task Vaulted waits for it.
    let deferred = Outcome::Retry(DownloadError::SettleDeferred);
    delay_retry(&ports, &delivery(job_body("drums"), 1), &deferred).await;
    assert_eq!(ports.delays.lock().unwrap().pop().map(|(_, delay)| delay), Some(SETTLE_DEFERRED_CHECK));
    assert!(SETTLE_DEFERRED_CHECK < stemvault_vault::download::FIRST_RETRY_DELAY);
    assert_eq!(check_settled(&ports, &task, None).await, Ok(Settling::Settled));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
}

/// A registration gives the task its family between the settle's read and its write (while
/// its manifest is being written): the settle, decided without the family (no watch for the
/// expired file), is refused, and decided again from a new read of the next generation, which
/// watches the task for a fresh URL, writes its manifest over the one without the family and
/// publishes its Task Vaulted under another id: one event id, one content.
#[tokio::test]
async fn a_family_given_during_the_settle_is_not_overwritten_by_a_decision_made_without_it() {
    let mut unknown = record(&[("vocal", FileStatus::Queued)]);
    // Its result in (at `first` it would be watched whatever its family).
    (unknown.family, unknown.stage) = (Family::Unknown, Stage::Complete);
    let generation = unknown.generation;
    let ports = MemoryPorts::with_record(unknown);
    ports.source(&url("vocal"), Script::http_error(404, "Not Found"));
    let (at_gate, release) = hold_next_manifest(&ports);
    let register = async {
        reached(at_gate).await;
        let mut r = ports.record(TASK);
        let registration = Registration { family: Family::VocalSeparation, client_ref: Some("order-17".into()) };
        let completion = registration.completion(&r, ports.now()).expect("the family and client_ref to add");
        completion.apply(&mut r);
        ports.put_record(r);
        release.send(()).unwrap();
    };
    let (outcome, ()) = tokio::join!(run(&ports, "vocal", CONFIRMED), register);
    assert!(matches!(outcome, Outcome::FailedForGood(_)), "{outcome:?}");
    let r = ports.record(TASK);
    assert_eq!((r.family, r.vault, r.generation), (Family::VocalSeparation, VaultState::Partial, generation + 1));
    assert_eq!(r.reconcile.as_deref(), Some("due"), "watched for a fresh URL");
    let manifests = ports.manifests.lock().unwrap().clone();
    let families: Vec<Family> = manifests.iter().map(|(_, m)| m.family).collect();
    assert_eq!(families, [Family::Unknown, Family::VocalSeparation], "the manifest written again");
    let published = ports.events.published();
    let ids: Vec<&str> = published.iter().map(|e| e.detail.event_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1], "two contents, two ids");
    let last = &published[1].detail;
    assert_eq!((last.family, last.client_ref.as_deref()), (Family::VocalSeparation, Some("order-17")));
}

/// SQS not answering a retry's delay leaves the message to the visibility timeout instead of
/// holding the invocation until its timeout (which would answer nothing for the batch).
#[tokio::test(start_paused = true)]
async fn a_delay_that_hangs_is_given_up() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.delays_hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let d = delivery(job_body("vocal"), 1);
    let outcome = Outcome::Retry(DownloadError::NoTimeLeft);
    tokio::time::timeout(Duration::from_secs(30), delay_retry(&ports, &d, &outcome)).await.expect("given up");
    assert_eq!(ports.delays.lock().unwrap().len(), 1, "asked");
}

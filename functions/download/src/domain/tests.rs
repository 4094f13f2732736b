use sha2::{Digest, Sha256};
use stemvault_vault::{FileStatus, PublicFileStatus, TaskRecord, Timestamp};
use suno_callbacks::{Family, Stage};

use super::*;
use crate::error::FetchError;
use stemvault_vault::download::MANIFEST_LEASE;
use tokio::sync::oneshot;

use crate::test_support::{
    ManifestGate, MemoryPorts, SETTINGS, Script, TASK, deterministic_bytes, job_body, record, serve, url,
};

fn delivery(body: String, receive_count: u32) -> Delivery {
    Delivery {
        body,
        receipt_handle: Some(format!("receipt-{receive_count}")),
        receive_count,
        worker: format!("worker-{}", uuid::Uuid::new_v4()),
        stop_at: Instant::now() + Duration::from_secs(60),
        lease_until: 1_800_000_900,
    }
}

async fn run(ports: &MemoryPorts, name: &str, receive_count: u32) -> Outcome {
    let d = delivery(job_body(name), receive_count);
    let outcome = process_message(ports, &SETTINGS, &d).await;
    if outcome.is_failure() {
        delay_retry(ports, &d, &outcome).await;
    }
    outcome
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
    assert_eq!(r.version, 5, "claim + stored");
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
    ports.source(
        &url("drums"),
        Script::Fail(FetchError::Status { status: 410, reason: "Gone".into(), retry_after: None }),
    );

    assert!(matches!(run(&ports, "vocal", 1).await, Outcome::Stored(_)));
    let outcome = run(&ports, "drums", 1).await;
    assert_eq!(outcome, Outcome::FailedForGood("source answered 410 Gone".into()));
    assert!(!outcome.is_failure(), "a permanent failure is not retried");

    let r = ports.record(TASK);
    assert_eq!(r.vault, VaultState::Partial);
    assert_eq!(r.manifest_key.as_deref(), Some(format!("tasks/{TASK}/manifest.json").as_str()));
    assert_eq!(r.manifest_lease_until, None, "the lease ends with the manifest recorded");
    assert_eq!(r.files["drums"].error.as_deref(), Some("source answered 410 Gone"));
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    let (key, manifest) = &manifests[0];
    assert_eq!(key, &format!("tasks/{TASK}/manifest.json"));
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

#[tokio::test]
async fn retryable_failures_release_the_file_and_back_off() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.source(
        &url("vocal"),
        Script::Fail(FetchError::Status { status: 503, reason: "Service Unavailable".into(), retry_after: None }),
    );

    for count in 1..=3 {
        let outcome = run(&ports, "vocal", count).await;
        assert!(outcome.is_failure(), "{outcome:?}");
    }
    let r = ports.record(TASK);
    let f = &r.files["vocal"];
    assert_eq!(f.status, FileStatus::Queued);
    assert_eq!(f.claim, None);
    assert_eq!(f.attempts, 3);
    assert_eq!(f.error.as_deref(), Some("source answered 503 Service Unavailable"));
    let delays: Vec<u64> = ports.delays.lock().unwrap().iter().map(|(_, d)| d.as_secs()).collect();
    assert_eq!(delays, vec![30, 60, 120]);
    assert_eq!(ports.delays.lock().unwrap()[2].0, "receipt-3");

    // Then the source recovers.
    serve(&ports, "vocal", b"finally");
    assert!(matches!(run(&ports, "vocal", 4).await, Outcome::Stored(_)));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    assert_eq!(ports.record(TASK).open, None, "settling removes the open-tasks marker");
}

/// A source that says when to come back (`Retry-After`) is left alone that long, within the
/// queue's limits, instead of the 30 s first delay; never less than the backoff.
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
    assert_eq!(delays, vec![600, 60, 11 * 3600 + 45 * 60]);
}

#[tokio::test]
async fn an_unexpired_claim_of_another_worker_is_left_alone_and_an_expired_one_taken_over() {
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    let f = r.files.get_mut("vocal").unwrap();
    f.claim = Some("someone-else".into());
    f.lease_until = Some(Timestamp::from_unix_ms(1_800_000_000_000).unix_seconds() + 10);
    let ports = MemoryPorts::with_record(r);
    serve(&ports, "vocal", b"x");

    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Busy { .. })), "{outcome:?}");
    assert!(ports.opened().is_empty());

    *ports.now.lock().unwrap() = Some(Timestamp::from_unix_ms(1_800_000_011_000));
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

#[tokio::test]
async fn messages_that_name_nothing_usable_are_dropped() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    let bodies = [
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"task_id":"../x","name":"vocal","url":"https://a/b","key":"k"}"#.to_owned(),
        r#"{"task_id":"abc","name":"","url":"https://a/b","key":"k"}"#.to_owned(),
    ];
    for body in bodies {
        let outcome = process_message(&ports, &SETTINGS, &delivery(body.clone(), 1)).await;
        assert!(matches!(outcome, Outcome::Dropped(DownloadError::Malformed(_))), "{body}: {outcome:?}");
    }
    let missing_task = job_body("vocal").replace(TASK, "unknown-task");
    let outcome = process_message(&ports, &SETTINGS, &delivery(missing_task, 1)).await;
    assert!(matches!(outcome, Outcome::Dropped(DownloadError::Dropped(_))), "{outcome:?}");
    let outcome = process_message(&ports, &SETTINGS, &delivery(job_body("bass"), 1)).await;
    assert!(matches!(outcome, Outcome::Dropped(DownloadError::Dropped(_))), "{outcome:?}");
    assert!(ports.opened().is_empty());
}

#[tokio::test]
async fn a_failed_manifest_reopens_the_task_and_a_redelivery_heals_it() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"v");
    *ports.manifest_failures.lock().unwrap() = 1;

    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Storage(_))), "{outcome:?}");
    let r = ports.record(TASK);
    assert_eq!(r.files["vocal"].status, FileStatus::Stored);
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Pending, None));

    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    let r = ports.record(TASK);
    assert_eq!(r.vault, VaultState::Complete);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
    assert_eq!(ports.opened().len(), 1, "not downloaded again");
}

/// The worker that settled the vault stalls in its manifest PutObject past its lease; the
/// redelivered message takes the lease over and writes the manifest; then the stalled write
/// lands. It must not replace the newer manifest.
#[tokio::test]
async fn a_slow_older_manifest_write_never_replaces_a_newer_one() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    let key = format!("tasks/{TASK}/manifest.json");
    let (reached, at_gate) = oneshot::channel();
    let (release, released) = oneshot::channel();
    *ports.manifest_gate.lock().unwrap() = Some(ManifestGate { reached, release: released });

    let slow = run(&ports, "vocal", 1);
    let overtaking = async {
        at_gate.await.unwrap();
        let later = ports.now().plus(MANIFEST_LEASE + Duration::from_secs(1));
        *ports.now.lock().unwrap() = Some(later);
        assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
        assert_eq!(ports.record(TASK).manifest_key.as_deref(), Some(key.as_str()), "the newer one is recorded");
        release.send(()).unwrap();
        later
    };
    let (slow, later) = tokio::join!(slow, overtaking);
    assert!(matches!(slow, Outcome::Stored(_)), "{slow:?}");

    let written = ports.manifests.lock().unwrap().clone();
    assert_eq!(written.len(), 1, "the stalled write did not land");
    let under_key: Manifest = serde_json::from_slice(&ports.store.object(&key).unwrap()).unwrap();
    assert_eq!(under_key.generated_at, later, "the newer manifest stays");
    let r = ports.record(TASK);
    assert_eq!((r.manifest_key.as_deref(), r.manifest_lease_until), (Some(key.as_str()), None));
    let generation = &ports.store.stored(&key).unwrap().metadata[GENERATION_METADATA];
    assert_eq!(generation, &(r.version - 1).to_string(), "the takeover's generation");
}

/// A writer that only starts after a newer manifest is written (it read the record before
/// the takeover) writes nothing; a newer generation replaces an older manifest.
#[tokio::test]
async fn manifests_are_written_only_over_older_generations() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored)]));
    let task = TaskId::parse(TASK).unwrap();
    let key = format!("tasks/{TASK}/manifest.json");
    let plan = |expected_version: u64| {
        let mut r = ports.record(TASK);
        r.version = expected_version;
        let SettlePlan::Settle(plan) = settle_plan(&r, &task, ports.now()) else { panic!("expected a settle") };
        plan
    };
    put_fenced(&ports, &plan(7)).await.unwrap();
    put_fenced(&ports, &plan(5)).await.unwrap();
    put_fenced(&ports, &plan(7)).await.unwrap();
    assert_eq!(ports.manifests.lock().unwrap().len(), 1, "an older or the same generation is not written");
    put_fenced(&ports, &plan(9)).await.unwrap();
    assert_eq!(ports.manifests.lock().unwrap().len(), 2);
    assert_eq!(ports.store.stored(&key).unwrap().metadata[GENERATION_METADATA], "10");
}

#[tokio::test]
async fn a_settled_record_whose_vault_is_still_pending_is_settled_by_a_redelivery() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]));
    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_redelivery_writes_the_manifest_of_a_worker_that_stopped_after_settling() {
    // The worker flipped the vault under a lease and stopped before writing the manifest.
    let mut crashed = record(&[("vocal", FileStatus::Stored), ("drums", FileStatus::Failed)]);
    crashed.vault = VaultState::Partial;
    crashed.manifest_lease_until = Some(1_800_000_010);
    let ports = MemoryPorts::with_record(crashed.clone());
    let key = format!("tasks/{TASK}/manifest.json");

    // While the lease holds, the writer may still be at it: leave it alone.
    *ports.now.lock().unwrap() = Some(Timestamp::from_unix_ms(1_800_000_010_999));
    assert_eq!(run(&ports, "drums", 2).await, Outcome::AlreadySettled);
    assert!(ports.manifests.lock().unwrap().is_empty());
    assert_eq!(ports.record(TASK), crashed);

    // Once it is over, the redelivery writes the manifest and records it.
    let later = Timestamp::from_unix_ms(1_800_000_011_000);
    *ports.now.lock().unwrap() = Some(later);
    assert_eq!(run(&ports, "vocal", 2).await, Outcome::AlreadySettled);
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests, vec![(key.clone(), Manifest::of(&crashed, VaultState::Partial, later))]);
    let r = ports.record(TASK);
    assert_eq!(
        (r.vault, r.manifest_key.as_deref(), r.manifest_lease_until, r.version),
        (VaultState::Partial, Some(key.as_str()), None, crashed.version + 2)
    );
    assert!(ports.opened().is_empty(), "nothing downloaded again");

    // Further redeliveries find it recorded.
    assert_eq!(run(&ports, "drums", 3).await, Outcome::AlreadySettled);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1);
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
    let refused = StorageError {
        operation: "PutObject",
        message: "400 KeyTooLongError: Your key is too long".into(),
        permanent: true,
    };
    let mut ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    ports.store.refuse = Some(refused);
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "drums", &deterministic_bytes(SETTINGS.part_size + 1, 4));

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

    // A failure that a retry may get past goes back on the queue.
    let mut ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.store.refuse = Some(StorageError::transient("PutObject", "dispatch failure: connection reset"));
    serve(&ports, "vocal", b"vocal bytes");
    let outcome = run(&ports, "vocal", 1).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::Copy(CopyError::Storage(_)))), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued);
}

/// The upload succeeded, recording it failed (the table timed out): the claim stays until its
/// lease ends, and by the time the message comes back the URL has expired. The redelivery
/// finds the complete copy under the key and records it, for a single PutObject (SHA-256 in
/// its metadata) and for a multipart upload (read back and hashed).
#[tokio::test]
async fn a_file_stored_but_not_recorded_is_recorded_on_redelivery_without_copying_it_again() {
    for len in [100_000, SETTINGS.part_size + 5] {
        let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
        let data = deterministic_bytes(len, 5);
        serve(&ports, "vocal", &data);
        *ports.stored_failures.lock().unwrap() = 1;
        let outcome = run(&ports, "vocal", 1).await;
        assert!(matches!(outcome, Outcome::Retry(DownloadError::Table(_))), "{outcome:?}");
        assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Downloading, "claimed until its lease ends");

        ports.source(
            &url("vocal"),
            Script::Fail(FetchError::Status { status: 403, reason: "Forbidden".into(), retry_after: None }),
        );
        let lease_over = Timestamp::from_unix_ms((delivery(String::new(), 1).lease_until + 1) * 1000);
        *ports.now.lock().unwrap() = Some(lease_over);
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
        source_sha256: &crate::existing::source_sha256("https://cdn1.suno.ai/old.mp3"),
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
    for count in 1..=2 {
        let outcome = process_message(&ports, &SETTINGS, &delivery(body.clone(), count)).await;
        assert_eq!(outcome, Outcome::ManifestChecked, "delivery {count}");
    }
    let manifests = ports.manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    let (key, manifest) = &manifests[0];
    assert_eq!(key, &format!("tasks/{TASK}/manifest.json"));
    assert_eq!((manifest.family, manifest.vault, manifest.files.len()), (Family::Lyrics, VaultState::Complete, 0));
    let r = ports.record(TASK);
    assert_eq!((r.manifest_key.as_deref(), r.vault, r.version), (Some(key.as_str()), VaultState::Complete, 3));
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
    release_after_panic(&ports, &d, "the handler panicked: boom").await;
    let f = &ports.record(TASK).files["vocal"];
    assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Queued, None));
    assert_eq!(f.error.as_deref(), Some("the handler panicked: boom"));

    // Someone else's claim is left alone.
    let mut r = record(&[("vocal", FileStatus::Downloading)]);
    r.files.get_mut("vocal").unwrap().claim = Some("other".into());
    let ports = MemoryPorts::with_record(r);
    release_after_panic(&ports, &d, "boom").await;
    assert_eq!(ports.record(TASK).files["vocal"].claim.as_deref(), Some("other"));
}

//! `Task Vaulted`: published by the settle check after the manifest and before the settle
//! write; a failed publish leaves the task unsettled and its message retried.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use stemvault_vault::events::EventType;
use stemvault_vault::{FileStatus, PublicFileStatus};
use tokio::sync::Barrier;

use super::*;
use crate::memory::{MemoryPorts, SETTINGS, TASK, VAULT_BUCKET, job_body, record, serve};

fn delivery(name: &str, receive_count: u32) -> Delivery {
    Delivery {
        body: job_body(name),
        receipt_handle: Some(format!("receipt-{name}-{receive_count}")),
        receive_count,
        worker: format!("worker-{}", uuid::Uuid::new_v4()),
        stop_at: Instant::now() + Duration::from_secs(60),
        lease_until: stemvault_vault::LeaseEnd::from_unix_seconds(1_800_000_900),
    }
}

/// One delivery as a batch of one (the message, then its task's settle check); a failed
/// check retries the message, as the app does.
async fn run(
    ports: &MemoryPorts,
    name: &str,
    receive_count: u32,
) -> (Outcome, Option<Result<Settling, DownloadError>>) {
    let d = delivery(name, receive_count);
    let mut outcome = process_message(ports, &SETTINGS, &d).await;
    let Some(task_id) = settle_check_for(&d, &outcome) else { return (outcome, None) };
    let checked = check_settled(ports, &task_id, None).await;
    if let Err(e) = &checked {
        outcome = Outcome::Retry(e.clone());
    }
    (outcome, Some(checked))
}

fn vaulted_id() -> String {
    // The record's generation is 2 and its stage first (memory::record).
    format!("{TASK}.vaulted.2.first")
}

#[tokio::test]
async fn the_settling_worker_publishes_one_task_vaulted_with_the_files() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "drums", b"drum bytes!!");

    assert_eq!(run(&ports, "vocal", 1).await.1, Some(Ok(Settling::Open)));
    assert!(ports.events.published().is_empty(), "nothing vaulted while a file is open");
    assert_eq!(run(&ports, "drums", 1).await.1, Some(Ok(Settling::Settled)));

    let published = ports.events.published();
    assert_eq!(ports.events.ids(), [(EventType::Vaulted, vaulted_id())]);
    let detail = &published[0].detail;
    assert_eq!((detail.task_id.as_str(), detail.vault), (TASK, VaultState::Complete));
    assert_eq!(detail.bucket, VAULT_BUCKET);
    assert_eq!(detail.manifest_key.as_deref(), Some(format!("tasks/{TASK}/manifest.json").as_str()));
    let files: Vec<(&str, &str, Option<u64>, PublicFileStatus)> =
        detail.files.iter().map(|f| (f.name.as_str(), f.key.as_str(), f.bytes, f.status)).collect();
    assert_eq!(
        files,
        [
            ("drums", format!("tasks/{TASK}/drums.mp3").as_str(), Some(12), PublicFileStatus::Stored),
            ("vocal", format!("tasks/{TASK}/vocal.mp3").as_str(), Some(11), PublicFileStatus::Stored),
        ]
    );
    assert_eq!(detail.files[1].sha256.as_deref(), Some(hex::encode(Sha256::digest(b"vocal bytes")).as_str()));

    // A redelivery of a settled task publishes nothing more.
    assert_eq!(run(&ports, "drums", 2).await.1, Some(Ok(Settling::AlreadySettled)));
    assert_eq!(ports.events.published().len(), 1);
}

#[tokio::test]
async fn a_failed_publish_leaves_the_task_unsettled_and_the_redelivery_publishes_the_same_id_and_settles() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    ports.events.fail_next(1);

    let (outcome, checked) = run(&ports, "vocal", 1).await;
    assert!(matches!(checked, Some(Err(DownloadError::Publish(_)))), "{checked:?}");
    assert!(outcome.is_failure(), "the message goes back to the queue: {outcome:?}");
    assert!(matches!(&outcome, Outcome::Retry(e) if e.is_retryable()));
    let r = ports.record(TASK);
    assert_eq!((r.vault, r.manifest_key.as_deref()), (VaultState::Pending, None), "no settle write");
    assert!(!ports.take_table_calls().contains(&"settle_task"));
    assert_eq!(ports.manifests.lock().unwrap().len(), 1, "the manifest is written first");

    // The redelivery finds the file settled, publishes the same event again and settles.
    let (outcome, checked) = run(&ports, "vocal", 2).await;
    assert_eq!((outcome, checked), (Outcome::AlreadySettled, Some(Ok(Settling::Settled))));
    assert_eq!(ports.events.ids(), [(EventType::Vaulted, vaulted_id())]);
    assert_eq!(ports.events.attempts(), 2);
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    assert_eq!(ports.manifests.lock().unwrap().len(), 1, "this generation's manifest is not written again");
}

#[tokio::test]
async fn a_partial_vault_names_the_failed_file_and_its_reason() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    ports.source(&crate::memory::url("vocal"), crate::memory::Script::http_error(404, "Not Found"));
    let (_, checked) = run(&ports, "vocal", crate::domain::EXPIRY_CONFIRMED_ON_RECEIVE).await;
    assert_eq!(checked, Some(Ok(Settling::Settled)));
    let detail = &ports.events.published()[0].detail;
    assert_eq!(detail.vault, VaultState::Partial);
    assert_eq!(detail.files[0].status, PublicFileStatus::Failed);
    assert!(detail.files[0].error.as_deref().is_some_and(|e| e.contains("404")), "{:?}", detail.files[0].error);
}

#[tokio::test]
async fn two_workers_settling_at_once_publish_the_same_id() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    serve(&ports, "vocal", b"vocal bytes");
    serve(&ports, "drums", b"drum bytes");
    *ports.load_barrier.lock().unwrap() = Some(Arc::new(Barrier::new(2)));

    let ((_, a), (_, b)) = tokio::join!(run(&ports, "vocal", 1), run(&ports, "drums", 1));
    let mut checks = [a.unwrap().unwrap(), b.unwrap().unwrap()];
    checks.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(checks, [Settling::AlreadySettled, Settling::Settled]);
    assert_eq!(ports.events.ids(), [(EventType::Vaulted, vaulted_id()), (EventType::Vaulted, vaulted_id())]);
    let [first, second] = <[_; 2]>::try_from(ports.events.published()).unwrap();
    assert_eq!(first.detail, second.detail, "the same event: consumers drop the duplicate by its id");
}

/// A file reopened (by a poll repeating its URL) that fails again as it failed before settles
/// the task again, at a new generation, without a second `Task Vaulted` saying the same; one
/// that is stored then says something new, and is published.
#[tokio::test]
async fn a_settle_saying_what_the_last_task_vaulted_said_publishes_nothing() {
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    let not_found = FetchError::Status { status: 404, reason: "Not Found".into(), retry_after: None };
    ports.source(&crate::memory::url("vocal"), crate::memory::Script::Fail(not_found.clone()));
    let confirmed = crate::domain::EXPIRY_CONFIRMED_ON_RECEIVE;
    assert_eq!(run(&ports, "vocal", confirmed).await.1, Some(Ok(Settling::Settled)));
    let settled = ports.record(TASK);
    assert_eq!((settled.vault, ports.events.published().len()), (VaultState::Partial, 1));
    assert!(settled.announced.is_some(), "the settle keeps what its event said");

    let reopen = |settled: &TaskRecord| {
        let mut reopened = settled.clone();
        (reopened.vault, reopened.manifest_key, reopened.open) =
            (VaultState::Pending, None, Some(stemvault_vault::OPEN_MARKER.into()));
        reopened.generation += 1;
        let vocal = reopened.files.get_mut("vocal").unwrap();
        (vocal.status, vocal.error, vocal.failed_at, vocal.relinks) =
            (FileStatus::Queued, None, None, vocal.relinks + 1);
        ports.put_record(reopened);
    };
    reopen(&settled);
    assert_eq!(run(&ports, "vocal", confirmed).await.1, Some(Ok(Settling::Settled)));
    let again = ports.record(TASK);
    assert_eq!((again.vault, again.generation, again.manifest_key.is_some()), (VaultState::Partial, 3, true));
    assert_eq!(ports.events.published().len(), 1, "the same files, the same failure: nothing new to say");
    assert_eq!(again.announced, settled.announced);
    let settles = || ports.measures.lock().unwrap().iter().filter(|m| matches!(m, Measure::Settled { .. })).count();
    assert_eq!(settles(), 1, "SecondsToSettled counts the settles that publish");

    reopen(&again);
    serve(&ports, "vocal", b"vocal bytes");
    assert_eq!(run(&ports, "vocal", 1).await.1, Some(Ok(Settling::Settled)));
    let ids = ports.events.ids();
    assert_eq!(ids.last(), Some(&(EventType::Vaulted, format!("{TASK}.vaulted.4.first"))), "{ids:?}");
    assert_eq!(ports.events.published()[1].detail.vault, VaultState::Complete);
    assert_ne!(ports.record(TASK).announced, settled.announced);
    assert_eq!(settles(), 2);
}

//! The Lambda side: one SQS batch in, a partial batch response out.
//!
//! Messages of a batch run concurrently (at most [`MAX_CONCURRENT_MESSAGES`] at once), each
//! as its own tokio task in its own span (`message_id`, then `task_id` and `file`). A panic
//! fails only its own message. Only messages that should be tried again are reported as
//! batch item failures; every other message of the batch is deleted by Lambda.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use lambda_runtime::LambdaEvent;
use stemvault_aws::TaskTable;
use stemvault_vault::{DEADLINE_MARGIN, Timestamp};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::aws::AwsPorts;
use crate::config::Config;
use crate::domain::{Delivery, Outcome, Ports, Settings, delay_retry, process_message, release_after_panic};
use crate::error::DownloadError;
use crate::source::HttpSource;
use crate::upload::part_size_for;

/// Files copied at once by one invocation: each holds up to two 8 MiB parts in memory.
pub const MAX_CONCURRENT_MESSAGES: usize = 4;

/// The download function with its clients, built once per Lambda instance. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    ports: AwsPorts,
    settings: Settings,
}

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        // Fails only if the TLS backend cannot start, which no input can cause.
        let source = HttpSource::new(config.allowed_sources).expect("the HTTP client's TLS backend starts");
        let ports = AwsPorts {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name),
            s3: stemvault_aws::s3_client(sdk),
            bucket: config.bucket_name,
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: config.queue_url,
            source,
        };
        let settings =
            Settings { max_file_bytes: config.max_file_bytes, part_size: part_size_for(config.max_file_bytes) };
        App { inner: Arc::new(Inner { ports, settings }) }
    }

    /// Handle one invocation: its batch, until the deadline Lambda gives.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
        let deadline = deadline_instant(event.context.deadline, Timestamp::now(), Instant::now());
        self.handle_batch(event.payload, deadline).await
    }

    /// Handle one batch; `deadline` is when the invocation must be done.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let app = self.clone();
        run_batch(event.records, MAX_CONCURRENT_MESSAGES, move |message| {
            let app = app.clone();
            async move { handle_message(&app.inner.ports, &app.inner.settings, message, deadline).await }
        })
        .await
    }
}

/// Handle one message (in the caller's span); a retryable outcome delays its next delivery.
async fn handle_message<P: Ports>(ports: &P, settings: &Settings, message: SqsMessage, deadline: Instant) -> Outcome {
    let delivery = delivery(&message, deadline, ports.now());
    let processing = process_message(ports, settings, &delivery);
    let outcome = AssertUnwindSafe(processing)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Outcome::Retry(DownloadError::Panicked(panic_text(panic.as_ref()))));
    log_outcome(&outcome);
    if let Outcome::Retry(e @ DownloadError::Panicked(_)) = &outcome {
        release_after_panic(ports, &delivery, &e.to_string()).await;
    }
    if outcome.is_failure() {
        delay_retry(ports, &delivery, &outcome).await;
    }
    outcome
}

/// Run `handle` on every message, at most `limit` at once, each in its own task and span,
/// and report the messages whose outcome is a failure (or whose task panicked).
async fn run_batch<F, Fut>(messages: Vec<SqsMessage>, limit: usize, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let handle = Arc::new(handle);
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut running = Vec::with_capacity(messages.len());
    for message in messages {
        let id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "message",
            message_id = %id,
            task_id = tracing::field::Empty,
            file = tracing::field::Empty
        );
        let (handle, permits) = (handle.clone(), permits.clone());
        let work = async move {
            // The semaphore is never closed, so this always yields a permit.
            let _permit = permits.acquire_owned().await;
            handle(message).await
        };
        running.push((id, span.clone(), tokio::spawn(work.instrument(span))));
    }
    let mut response = SqsBatchResponse::default();
    for (id, span, task) in running {
        let failed = match task.await {
            Ok(outcome) => outcome.is_failure(),
            Err(e) => {
                span.in_scope(|| tracing::error!(error = %e, "the message's handler panicked"));
                true
            }
        };
        if !failed {
            continue;
        }
        if id.is_empty() {
            // An empty identifier would make Lambda fail the whole batch.
            span.in_scope(|| tracing::error!("a failed message has no message id and cannot be reported"));
            continue;
        }
        response.add_failure(id);
    }
    response
}

/// The domain's view of one message.
fn delivery(message: &SqsMessage, deadline: Instant, now: Timestamp) -> Delivery {
    let started = Instant::now();
    let remaining = deadline.saturating_duration_since(started);
    Delivery {
        body: message.body.clone().unwrap_or_default(),
        receipt_handle: message.receipt_handle.clone().filter(|h| !h.is_empty()),
        receive_count: receive_count(message),
        worker: uuid::Uuid::new_v4().to_string(),
        stop_at: deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(started),
        // Rounded up: the lease must not end before the invocation does.
        lease_until: now.plus(remaining).unix_seconds() + 1,
    }
}

/// `ApproximateReceiveCount`, 1 when absent or unreadable.
fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|c| c.trim().parse().ok()).unwrap_or(1).max(1)
}

/// The deadline Lambda gives (milliseconds since the epoch) as an [`Instant`], given the
/// time now on both clocks.
fn deadline_instant(deadline_epoch_ms: u64, now: Timestamp, now_instant: Instant) -> Instant {
    let now_ms = u64::try_from(now.unix_ms).unwrap_or(0);
    now_instant + Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Stored(_) | Outcome::FailedForGood(_) => {}
        Outcome::AlreadySettled => tracing::info!("done: the file was already settled"),
        Outcome::ManifestChecked => tracing::info!("done: the task's manifest is written"),
        Outcome::Dropped(e @ DownloadError::Malformed(_)) => tracing::error!(error = %e, "dropping the message"),
        Outcome::Dropped(e) => tracing::warn!(error = %e, "dropping the message"),
        Outcome::Retry(e) => tracing::warn!(error = %e, "will retry"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use stemvault_vault::{FileStatus, VaultState};

    use super::*;
    use crate::test_support::{MemoryPorts, SETTINGS, TASK, job_body, record, serve};
    use crate::upload::StoredObject;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body.to_owned());
        m
    }

    fn stored() -> Outcome {
        Outcome::Stored(StoredObject { bytes: 1, sha256_hex: String::new(), content_type: None, parts: 1 })
    }

    async fn outcome_for(m: SqsMessage) -> Outcome {
        match m.body.as_deref() {
            Some("panic") => panic!("poisoned message"),
            Some("retry") => Outcome::Retry(DownloadError::LostClaim),
            Some("drop") => Outcome::Dropped(DownloadError::Malformed("x".into())),
            _ => stored(),
        }
    }

    #[tokio::test]
    async fn only_failed_and_panicked_messages_are_reported() {
        let messages = vec![
            message("m1", "ok"),
            message("m2", "panic"),
            message("m3", "retry"),
            message("m4", "drop"),
            message("m5", "ok"),
        ];
        let response = run_batch(messages, 2, outcome_for).await;
        let ids: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(ids, vec!["m2", "m3"]);
    }

    #[tokio::test]
    async fn failures_without_a_message_id_are_never_reported_as_empty_ids() {
        let mut anonymous = message("", "retry");
        anonymous.message_id = None;
        let response = run_batch(vec![anonymous, message("", "panic"), message("m3", "retry")], 4, outcome_for).await;
        let ids: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(ids, vec!["m3"]);
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let messages = (0..10).map(|i| message(&format!("m{i}"), "ok")).collect();
        let response = run_batch(messages, 3, move |_| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                p.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                stored()
            }
        })
        .await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_poisoned_message_fails_only_itself() {
        let ports = Arc::new(MemoryPorts::with_record(record(&[("c", FileStatus::Queued)])));
        serve(&ports, "c", b"c bytes");
        let (handling, deadline) = (ports.clone(), Instant::now() + Duration::from_secs(120));
        let messages = vec![message("m1", "panic"), message("m2", &job_body("c"))];
        let response = run_batch(messages, 4, move |message| {
            let ports = handling.clone();
            async move {
                if message.body.as_deref() == Some("panic") {
                    panic!("poisoned message");
                }
                handle_message(&*ports, &SETTINGS, message, deadline).await
            }
        })
        .await;
        let ids: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(ids, vec!["m1"]);
        let stored = ports.record(TASK);
        assert_eq!((stored.files["c"].status, stored.vault), (FileStatus::Stored, VaultState::Complete));
    }

    #[test]
    fn receive_count_defaults_to_one() {
        let mut m = message("m", "");
        assert_eq!(receive_count(&m), 1);
        m.attributes = HashMap::from([("ApproximateReceiveCount".to_owned(), "4".to_owned())]);
        assert_eq!(receive_count(&m), 4);
        m.attributes.insert("ApproximateReceiveCount".to_owned(), "zero".to_owned());
        assert_eq!(receive_count(&m), 1);
        m.attributes.insert("ApproximateReceiveCount".to_owned(), "0".to_owned());
        assert_eq!(receive_count(&m), 1);
    }

    #[test]
    fn the_lambda_deadline_becomes_an_instant_and_a_lease() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let at = Instant::now();
        assert_eq!(deadline_instant(1_800_000_060_000, now, at), at + Duration::from_secs(60));
        assert_eq!(deadline_instant(1_799_999_000_000, now, at), at, "a past deadline is now");

        let deadline = Instant::now() + Duration::from_secs(60);
        let mut m = message("m", "{}");
        m.receipt_handle = Some("r".into());
        let d = delivery(&m, deadline, now);
        assert_eq!(d.stop_at, deadline - DEADLINE_MARGIN);
        assert!((1_800_000_060..=1_800_000_061).contains(&d.lease_until), "{}", d.lease_until);
        assert_eq!(d.receipt_handle.as_deref(), Some("r"));
        assert_ne!(delivery(&m, deadline, now).worker, d.worker, "one worker id per attempt");
    }
}

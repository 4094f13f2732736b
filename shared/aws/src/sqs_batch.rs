//! The plumbing of a function fed SQS batches (download, notify): every message handled in
//! its own tokio task and span, a bounded number at once, so that a panic fails only its own
//! message; the partial batch response (`batchItemFailures`) naming the messages to try
//! again; and the delay of a retried message's next delivery (ChangeMessageVisibility). The
//! invocation's deadline is [`crate::deadline`]'s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::sdk_error::sdk_error_text;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use stemvault_vault::QueueError;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// One invocation of a function fed SQS batches: when it must be done, and Lambda's id of it
/// (None for a batch handed over without one: the tests'), which its messages' spans carry: a platform line naming
/// only the invocation (`Task timed out`, `REPORT`) then finds the lines of its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub deadline: std::time::Instant,
    pub lambda_request_id: Option<String>,
}

impl Invocation {
    pub fn of(context: &lambda_http::lambda_runtime::Context) -> Invocation {
        let deadline = crate::deadline::as_instant(context.deadline);
        Invocation { deadline, lambda_request_id: Some(context.request_id.clone()) }
    }
}

impl From<std::time::Instant> for Invocation {
    fn from(deadline: std::time::Instant) -> Invocation {
        Invocation { deadline, lambda_request_id: None }
    }
}

/// One message of a batch after [`run_messages`]: its id (empty when SQS gave none), its
/// span, and what its handler returned (None: the handler's task panicked).
#[derive(Debug)]
pub struct Ran<H> {
    pub id: String,
    pub span: tracing::Span,
    pub handled: Option<H>,
}

/// Run `handle` on every message, at most `limit` at once, each in its own tokio task, in the
/// span `span_of` makes for its message id. The answers keep the batch's order.
pub async fn run_messages<H, S, F, Fut>(messages: Vec<SqsMessage>, limit: usize, span_of: S, handle: F) -> Vec<Ran<H>>
where
    H: Send + 'static,
    S: Fn(&str) -> tracing::Span,
    F: Fn(SqsMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = H> + Send + 'static,
{
    run_numbered(messages, limit, span_of, move |_, message| handle(message)).await
}

/// As [`run_messages`], `handle` given each message's place in the batch too (the index of
/// its answer).
pub async fn run_numbered<H, S, F, Fut>(messages: Vec<SqsMessage>, limit: usize, span_of: S, handle: F) -> Vec<Ran<H>>
where
    H: Send + 'static,
    S: Fn(&str) -> tracing::Span,
    F: Fn(usize, SqsMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = H> + Send + 'static,
{
    let handle = Arc::new(handle);
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut running = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let id = message.message_id.clone().unwrap_or_default();
        let span = span_of(&id);
        let (handle, permits) = (handle.clone(), permits.clone());
        let work = async move {
            // The semaphore is never closed, so this always yields a permit.
            let _permit = permits.acquire_owned().await;
            handle(i, message).await
        };
        running.push((id, span.clone(), tokio::spawn(work.instrument(span))));
    }
    let mut ran = Vec::with_capacity(running.len());
    for (id, span, task) in running {
        let handled = match task.await {
            Ok(handled) => Some(handled),
            // Not the JoinError's words: a panic's are the panic hook's line, links hidden.
            Err(e) if e.is_panic() => {
                span.in_scope(|| tracing::error!("the message's handler panicked (the panic's own line says where)"));
                None
            }
            Err(_) => {
                span.in_scope(|| tracing::error!("the message's handler was cancelled"));
                None
            }
        };
        ran.push(Ran { id, span, handled });
    }
    ran
}

/// The partial batch response: the messages whose handler panicked or whose answer `failed`
/// says is to be tried again. Lambda deletes every other message of the batch.
pub fn respond<H>(ran: &[Ran<H>], failed: impl Fn(&H) -> bool) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in ran {
        if !message.handled.as_ref().is_none_or(&failed) {
            continue;
        }
        if message.id.is_empty() {
            // An empty identifier would make Lambda fail the whole batch.
            message.span.in_scope(|| tracing::error!("a failed message has no message id and cannot be reported"));
            continue;
        }
        response.add_failure(message.id.clone());
    }
    response
}

/// `ApproximateReceiveCount`, 1 when absent or unreadable.
pub fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|c| c.trim().parse().ok()).unwrap_or(1).max(1)
}

/// When the message was first sent to the queue (`SentTimestamp`, Unix milliseconds); None
/// when absent or unreadable.
pub fn sent_at(message: &SqsMessage) -> Option<stemvault_vault::Timestamp> {
    let ms = message.attributes.get("SentTimestamp")?.trim().parse().ok()?;
    Some(stemvault_vault::Timestamp::from_unix_ms(ms))
}

/// Keep a received message of `queue_url` invisible for `delay` from now
/// (ChangeMessageVisibility): its next delivery waits that long.
pub async fn delay_message(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    receipt_handle: &str,
    delay: Duration,
) -> Result<(), QueueError> {
    // Best-effort attempts: given up, the message would stay invisible for the rest of the
    // queue's visibility timeout, not the delay.
    sqs.change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
        .customize()
        .config_override(crate::best_effort_sqs())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| QueueError::transient("ChangeMessageVisibility", sdk_error_text(&e)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// What a test's handler made of a message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Answer {
        Done,
        Retry,
    }

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body.to_owned());
        m
    }

    fn span_of(id: &str) -> tracing::Span {
        tracing::error_span!("message", message_id = %id)
    }

    async fn answer(m: SqsMessage) -> Answer {
        match m.body.as_deref() {
            Some("panic") => panic!("poisoned message"),
            Some("retry") => Answer::Retry,
            _ => Answer::Done,
        }
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    fn to_retry(answer: &Answer) -> bool {
        *answer == Answer::Retry
    }

    #[tokio::test]
    async fn only_failed_and_panicked_messages_are_reported() {
        let messages = vec![
            message("m1", "ok"),
            message("m2", "panic"),
            message("m3", "retry"),
            message("m4", "ok"),
            message("m5", "retry"),
        ];
        let ran = run_messages(messages, 2, span_of, answer).await;
        let ids: Vec<&str> = ran.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2", "m3", "m4", "m5"], "the batch's order");
        assert_eq!(ran[1].handled, None);
        assert_eq!(failed_ids(&respond(&ran, to_retry)), vec!["m2", "m3", "m5"]);
    }

    #[tokio::test]
    async fn failures_without_a_message_id_are_never_reported_as_empty_ids() {
        let mut anonymous = message("", "retry");
        anonymous.message_id = None;
        let messages = vec![anonymous, message("", "panic"), message("m3", "retry")];
        let response = respond(&run_messages(messages, 4, span_of, answer).await, to_retry);
        assert_eq!(failed_ids(&response), vec!["m3"]);
    }

    /// A visibility change whose first attempt stalls (a connection that never answers) is
    /// made again within the bound its callers give it, not given up with the SDK's 3 s
    /// attempt: the message would wait out the queue's visibility timeout instead of its delay.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_visibility_change_is_tried_again_within_its_bound() {
        let (sdk, calls) = crate::test_http::sdk_stalling_first(200, b"{}");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let delaying = delay_message(&sqs, "http://scripted.test/1/q", "receipt", Duration::from_secs(30));
        let delayed = tokio::time::timeout(stemvault_vault::BEST_EFFORT_CALL_TIMEOUT, delaying).await;
        assert_eq!((delayed, calls.load(Ordering::SeqCst)), (Ok(Ok(())), 2));
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let messages = (0..10).map(|i| message(&format!("m{i}"), "ok")).collect();
        let ran = run_messages(messages, 3, span_of, move |_| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // Hand the thread to the other tasks, so that all that may run do.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                r.fetch_sub(1, Ordering::SeqCst);
                Answer::Done
            }
        })
        .await;
        assert!(respond(&ran, to_retry).batch_item_failures.is_empty());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
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
    fn sent_at_reads_unix_milliseconds() {
        let mut m = message("m", "");
        assert_eq!(sent_at(&m), None);
        m.attributes = HashMap::from([("SentTimestamp".to_owned(), "1700000000123".to_owned())]);
        assert_eq!(sent_at(&m).map(|t| t.rfc3339()).as_deref(), Some("2023-11-14T22:13:20.123Z"));
        m.attributes.insert("SentTimestamp".to_owned(), "soon".to_owned());
        assert_eq!(sent_at(&m), None);
    }
}

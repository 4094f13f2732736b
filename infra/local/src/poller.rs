//! A queue's consumer: what Lambda's SQS event source mapping does with
//! `ReportBatchItemFailures`. Receive up to the source's batch size, hand the messages to its
//! function as one `SqsEvent` with the function's timeout, then delete every message the
//! function did not report as failed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};

use crate::shutdown::StopSignal;
use stemvault_aws::sdk_error::sdk_error_text;

/// Long-poll wait per receive: short enough to notice a stop quickly.
pub const WAIT_SECONDS: i32 = 2;
/// Messages per batch of the download queue: its SQS event source's `BatchSize` in
/// template.yaml.
pub const DOWNLOAD_BATCH_SIZE: i32 = stemvault_download::app::MAX_CONCURRENT_MESSAGES as i32;
/// The download function's Lambda timeout: each batch gets this long.
pub const DOWNLOAD_INVOCATION_BUDGET: Duration = stemvault_download::domain::FUNCTION_TIMEOUT;
/// Pause after a failed receive (emulator restarting, ...).
const RECEIVE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Something that handles SQS batches (the download and notify functions' `App::handle`).
pub trait BatchHandler: Send + Sync + 'static {
    fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> impl Future<Output = SqsBatchResponse> + Send;
}

/// What Lambda hands a function for one batch: the batch, with its deadline and a request
/// id of its own.
pub fn lambda_invocation<T>(payload: T, deadline: Instant) -> lambda_http::LambdaEvent<T> {
    let request_id = uuid::Uuid::new_v4().to_string();
    stemvault_tests::lambda_event(payload, &request_id, deadline.saturating_duration_since(Instant::now()))
}

/// The queue, what Lambda would put in each record about it, and how its event source
/// mapping takes batches.
#[derive(Debug, Clone)]
pub struct QueueSource {
    /// What the logs call it (`download`, `notify`, `events-log`).
    pub name: &'static str,
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
    /// Messages per batch (`BatchSize`).
    pub batch_size: i32,
    /// The function's timeout: each batch gets this long.
    pub invocation_budget: Duration,
}

/// The messages as the records of one Lambda SQS event.
pub fn to_sqs_event(messages: &[Message], source: &QueueSource) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id.clone();
            record.receipt_handle = message.receipt_handle.clone();
            record.body = message.body.clone();
            record.md5_of_body = message.md5_of_body.clone();
            record.attributes = message
                .attributes
                .iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect();
            record.event_source = Some("aws:sqs".to_owned());
            record.event_source_arn = Some(source.queue_arn.clone());
            record.aws_region = Some(source.region.clone());
            record
        })
        .collect();
    event
}

/// The messages to delete after a batch: all but the reported failures. As in Lambda, a
/// failure naming no message of the batch fails the whole batch, and so does a crash (None).
pub fn to_delete(messages: &[Message], response: Option<&SqsBatchResponse>) -> Vec<DeleteMessageBatchRequestEntry> {
    let Some(response) = response else { return Vec::new() };
    let ids: HashSet<&str> = messages.iter().filter_map(|m| m.message_id()).collect();
    let failed: HashSet<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    if failed.iter().any(|id| !ids.contains(id)) {
        tracing::warn!("the batch response names a message that is not in the batch; nothing is deleted");
        return Vec::new();
    }
    messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.message_id().is_some_and(|id| !failed.contains(id)))
        .filter_map(|(index, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .set_receipt_handle(m.receipt_handle.clone())
                .build()
                .ok()
        })
        .collect()
}

/// Poll until `stop`. A batch in progress finishes first.
pub async fn poll<H: BatchHandler>(
    client: aws_sdk_sqs::Client,
    source: QueueSource,
    handler: Arc<H>,
    mut stop: StopSignal,
) {
    while !stop.is_stopped() {
        let receive = client
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(source.batch_size)
            .wait_time_seconds(WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send();
        let received = tokio::select! {
            received = receive => received,
            _ = stop.stopped() => break,
        };
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = source.name, error = sdk_error_text(&e), "receiving from the queue failed");
                tokio::time::sleep(RECEIVE_RETRY_PAUSE).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        run_batch(&client, &source, &handler, &messages).await;
    }
}

async fn run_batch<H: BatchHandler>(
    client: &aws_sdk_sqs::Client,
    source: &QueueSource,
    handler: &Arc<H>,
    messages: &[Message],
) {
    let event = to_sqs_event(messages, source);
    let deadline = Instant::now() + source.invocation_budget;
    let response = invoke(handler.clone(), event, deadline, source.name).await;
    let entries = to_delete(messages, response.as_ref());
    tracing::debug!(queue = source.name, received = messages.len(), settled = entries.len(), "batch done");
    if entries.is_empty() {
        return;
    }
    match client.delete_message_batch().queue_url(&source.queue_url).set_entries(Some(entries)).send().await {
        Ok(out) if !out.failed.is_empty() => {
            tracing::warn!(
                queue = source.name,
                failed = out.failed.len(),
                "some settled messages could not be deleted; they will be redelivered"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            queue = source.name,
            error = sdk_error_text(&e),
            "deleting settled messages failed; they will be redelivered"
        ),
    }
}

/// One invocation: the handler's answer, or None when it crashed or ran past `deadline`
/// (Lambda ends an invocation at its timeout, and the whole batch comes back), both
/// logged. A separate task, so a panic fails this batch and not the poller.
async fn invoke<H: BatchHandler>(
    handler: Arc<H>,
    event: SqsEvent,
    deadline: Instant,
    queue: &str,
) -> Option<SqsBatchResponse> {
    let mut running = tokio::spawn(async move { handler.handle_batch(event, deadline).await });
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), &mut running).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(e)) => {
            tracing::error!(queue, error = %e, "the handler crashed; the batch will be retried");
            None
        }
        Err(_) => {
            // Stopped at its next await, as Lambda's timeout stops the invocation.
            running.abort();
            let _ = running.await;
            tracing::error!(
                queue,
                "the handler ran past its timeout, which ends a Lambda invocation; the batch will be retried"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::sqs::BatchItemFailure;

    fn message(id: &str) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("rh-{id}"))
            .body(format!(r#"{{"task_id":"t","name":"{id}"}}"#))
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .build()
    }

    fn source() -> QueueSource {
        QueueSource {
            name: "download",
            queue_url: "http://127.0.0.1:5000/123456789012/q".into(),
            queue_arn: "arn:aws:sqs:us-east-1:123456789012:q".into(),
            region: "us-east-1".into(),
            batch_size: DOWNLOAD_BATCH_SIZE,
            invocation_budget: DOWNLOAD_INVOCATION_BUDGET,
        }
    }

    fn failures(ids: &[&str]) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = ids
            .iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id.to_string();
                failure
            })
            .collect();
        response
    }

    #[test]
    fn records_carry_what_lambda_sends() {
        let event = to_sqs_event(&[message("m1"), message("m2")], &source());
        assert_eq!(event.records.len(), 2);
        let record = &event.records[1];
        assert_eq!(record.message_id.as_deref(), Some("m2"));
        assert_eq!(record.receipt_handle.as_deref(), Some("rh-m2"));
        assert_eq!(record.body.as_deref(), Some(r#"{"task_id":"t","name":"m2"}"#));
        assert_eq!(record.attributes.get("ApproximateReceiveCount").map(String::as_str), Some("3"));
        assert_eq!(record.attributes.get("SentTimestamp").map(String::as_str), Some("1700000000000"));
        assert_eq!(record.event_source_arn.as_deref(), Some("arn:aws:sqs:us-east-1:123456789012:q"));
        assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn deletes_all_but_the_reported_failures() {
        let messages = [message("m1"), message("m2"), message("m3")];
        let entries = to_delete(&messages, Some(&failures(&["m2"])));
        let handles: Vec<_> = entries.iter().map(|e| e.receipt_handle.as_str()).collect();
        assert_eq!(handles, ["rh-m1", "rh-m3"]);
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["0", "2"]);
        assert_eq!(to_delete(&messages, Some(&failures(&[]))).len(), 3);
    }

    /// Past its deadline the handler is stopped and answers nothing, as Lambda's timeout ends
    /// an invocation: its whole batch comes back; a crash answers nothing too.
    #[tokio::test(start_paused = true)]
    async fn a_handler_past_its_deadline_or_crashed_answers_nothing() {
        /// Sets its flag when dropped: the handling it is held by has ended.
        struct Ended(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        /// Runs past its deadline.
        struct Overruns(Arc<std::sync::atomic::AtomicBool>);
        impl BatchHandler for Overruns {
            async fn handle_batch(&self, _: SqsEvent, deadline: Instant) -> SqsBatchResponse {
                let _running = Ended(self.0.clone());
                tokio::time::sleep_until(tokio::time::Instant::from_std(deadline) + Duration::from_secs(60)).await;
                SqsBatchResponse::default()
            }
        }
        struct Panics;
        impl BatchHandler for Panics {
            async fn handle_batch(&self, _: SqsEvent, _: Instant) -> SqsBatchResponse {
                panic!("a bug")
            }
        }
        struct Answers;
        impl BatchHandler for Answers {
            async fn handle_batch(&self, _: SqsEvent, _: Instant) -> SqsBatchResponse {
                failures(&["a"])
            }
        }
        // On tokio's clock, which the stalled handler's wait moves on.
        let deadline = || tokio::time::Instant::now().into_std() + Duration::from_secs(900);
        let (ended, stop) = (Arc::default(), deadline());
        let overrun = invoke(Arc::new(Overruns(Arc::clone(&ended))), SqsEvent::default(), stop, "q").await;
        // Given up at its deadline and ended (stopped, neither left running nor waited for to
        // its end) by the time the poller goes on, as an invocation past its timeout is.
        assert!(overrun.is_none());
        assert!(ended.load(std::sync::atomic::Ordering::SeqCst), "ended before invoke returned");
        let returned = tokio::time::Instant::now().into_std();
        assert!(returned < stop + Duration::from_secs(60), "returned {:?} past the deadline", returned - stop);
        assert!(invoke(Arc::new(Panics), SqsEvent::default(), deadline(), "q").await.is_none());
        let answered = invoke(Arc::new(Answers), SqsEvent::default(), deadline(), "q").await;
        assert_eq!(answered.map(|r| r.batch_item_failures.len()), Some(1));
    }

    #[test]
    fn unknown_failure_or_crash_keeps_the_whole_batch() {
        let messages = [message("m1"), message("m2")];
        assert!(to_delete(&messages, Some(&failures(&["other"]))).is_empty());
        assert!(to_delete(&messages, Some(&failures(&[""]))).is_empty());
        assert!(to_delete(&messages, None).is_empty());
    }
}

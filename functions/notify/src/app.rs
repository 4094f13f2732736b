//! The Lambda side: one SQS batch in, a partial batch response out.
//!
//! Messages of a batch are delivered concurrently (at most [`MAX_CONCURRENT_MESSAGES`] at
//! once), each in its own span (`message_id`, then `task_id` and `event_id`). A panic fails
//! only its own message. Only messages to try again are reported as batch item failures,
//! each kept away first for its retry delay; every other message of the batch is deleted by
//! Lambda.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{FutureExt, StreamExt};
use lambda_runtime::LambdaEvent;
use stemvault_aws::ConfigError;
use stemvault_aws::secrets::SecretReader;
use stemvault_vault::{DEADLINE_MARGIN, Timestamp};
use tracing::Instrument;

use crate::aws::{AwsPorts, HttpPoster};
use crate::config::Config;
use crate::domain::{Delivery, Outcome, Ports, delay_retry, process_message};
use crate::error::NotifyError;
use crate::secret::Signer;

/// Webhooks posted at once by one invocation.
pub const MAX_CONCURRENT_MESSAGES: usize = 10;

/// The notify function with its clients and signer, built once per instance. Cheap to clone.
#[derive(Clone)]
pub struct App<P = AwsPorts> {
    ports: Arc<P>,
    signer: Arc<Signer>,
}

impl App {
    /// Build the clients and read the signing secret: once per instance, at its cold start.
    /// Fails when the secret cannot be read or is no Standard Webhooks secret.
    pub async fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<App, ConfigError> {
        let secret = SecretReader::new(sdk, &config.notify_secret_arn)
            .read()
            .await
            .map_err(|e| ConfigError::Invalid { name: "NOTIFY_SECRET_ARN", reason: e.to_string() })?;
        let signer = Signer::parse(secret.expose())
            .map_err(|e| ConfigError::Invalid { name: "NOTIFY_SECRET_ARN", reason: e.to_string() })?;
        // Fails only if the TLS backend cannot start, which no input can cause.
        let poster = HttpPoster::new(config.notify_url).expect("the HTTP client's TLS backend starts");
        let ports = AwsPorts { poster, sqs: aws_sdk_sqs::Client::new(sdk), queue_url: config.queue_url };
        Ok(App::with_ports(ports, signer))
    }
}

impl<P: Ports + Send + 'static> App<P> {
    /// The app over other ports (the in-memory ones of the tests).
    pub fn with_ports(ports: P, signer: Signer) -> App<P> {
        App { ports: Arc::new(ports), signer: Arc::new(signer) }
    }

    /// Handle one invocation: its batch, until the deadline Lambda gives.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
        let now_ms = u64::try_from(Timestamp::now().unix_ms).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        self.handle_batch(event.payload, deadline).await
    }

    /// Handle one batch; `deadline` is when the invocation must be done.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let stop_at = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or_else(Instant::now);
        let handled: Vec<(String, tracing::Span, Outcome)> = futures::stream::iter(event.records)
            .map(|message| self.handle_message(message, stop_at))
            .buffer_unordered(MAX_CONCURRENT_MESSAGES)
            .collect()
            .await;
        respond(&handled)
    }

    async fn handle_message(&self, message: SqsMessage, stop_at: Instant) -> (String, tracing::Span, Outcome) {
        let id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "message",
            message_id = %id,
            task_id = tracing::field::Empty,
            event_id = tracing::field::Empty
        );
        let delivery = Delivery {
            body: message.body.clone().unwrap_or_default(),
            receipt_handle: message.receipt_handle.clone().filter(|h| !h.is_empty()),
            receive_count: receive_count(&message),
            stop_at,
        };
        let work = async {
            let outcome = AssertUnwindSafe(process_message(&*self.ports, &self.signer, &delivery))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Outcome::Retry(NotifyError::Panicked(panic_text(panic.as_ref()))));
            log_outcome(&outcome, delivery.receive_count);
            delay_retry(&*self.ports, &delivery, &outcome).await;
            outcome
        };
        let outcome = work.instrument(span.clone()).await;
        (id, span, outcome)
    }
}

/// The partial batch response: the messages to retry.
fn respond(handled: &[(String, tracing::Span, Outcome)]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (id, span, outcome) in handled {
        if !outcome.is_failure() {
            continue;
        }
        if id.is_empty() {
            // An empty identifier would make Lambda fail the whole batch.
            span.in_scope(|| tracing::error!("a failed message has no message id and cannot be reported"));
            continue;
        }
        response.add_failure(id.clone());
    }
    response
}

/// `ApproximateReceiveCount`, 1 when absent or unreadable.
fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|c| c.trim().parse().ok()).unwrap_or(1).max(1)
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn log_outcome(outcome: &Outcome, receive_count: u32) {
    match outcome {
        Outcome::Delivered { status } => tracing::info!(status, "webhook delivered"),
        Outcome::Rejected(e @ NotifyError::Malformed(_)) => tracing::error!(error = %e, "dropping the message"),
        Outcome::Rejected(e) => tracing::warn!(error = %e, "the webhook was refused; not retried"),
        Outcome::Retry(e) => tracing::warn!(error = %e, receive_count, "will retry"),
    }
}

#[cfg(test)]
mod tests;

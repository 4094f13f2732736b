//! The Lambda side: one SQS batch in, a partial batch response out.
//!
//! Messages of a batch are delivered concurrently (at most [`MAX_CONCURRENT_MESSAGES`] at
//! once), each as its own tokio task in its own span (`message_id`, then `task_id` and
//! `event_id`). A panic fails only its own message. Only messages to try again are reported as batch item failures,
//! each kept away first for its retry delay; every other message of the batch is deleted by
//! Lambda. Each message signs with the signer in force, read again first when it is five
//! minutes old ([`Signers`]).

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use stemvault_aws::ConfigError;
use stemvault_aws::secrets::{ReadSecret, SecretReader};
use stemvault_aws::sqs_batch::{Invocation, receive_count, respond, run_messages, sent_at};
use stemvault_vault::DEADLINE_MARGIN;
use stemvault_vault::panic::catch_panic;

use crate::aws::AwsPorts;
use crate::config::Config;
use crate::domain::{Delivery, Outcome, Ports, delay_retry, measure, process_message};
use crate::error::NotifyError;
use crate::poster::HttpPoster;
use crate::secret::{AgePolicy, Signers};

/// Webhooks posted at once by one invocation.
pub const MAX_CONCURRENT_MESSAGES: usize = 10;

/// The notify function with its clients, its secret's reader and signer, built once per
/// instance. Cheap to clone.
pub struct App<P = AwsPorts, R = SecretReader> {
    ports: Arc<P>,
    secret: Arc<R>,
    signers: Arc<Signers>,
    /// When the signer in force is too old to sign with.
    secret_policy: AgePolicy,
}

impl<P, R> Clone for App<P, R> {
    fn clone(&self) -> App<P, R> {
        let (ports, secret, signers) = (self.ports.clone(), self.secret.clone(), self.signers.clone());
        App { ports, secret, signers, secret_policy: self.secret_policy }
    }
}

impl App {
    /// Build the clients and read the signing secret: once per instance, at its cold start.
    /// A secret that cannot be read or used leaves the instance with no signer until a later
    /// read brings one ([`Signers::load`]). Fails only when the TLS backend cannot start.
    pub async fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<App, ConfigError> {
        let secret = SecretReader::new(sdk, &config.notify_secret_arn);
        let poster = HttpPoster::new(config.notify_url.clone())?;
        let ports = AwsPorts::new(config, sdk, poster);
        let signers = Signers::load(&secret, &ports).await;
        Ok(App::with_ports(ports, secret, signers))
    }
}

impl<P: Ports + Send + 'static, R: ReadSecret + Send + Sync + 'static> App<P, R> {
    /// The app over `ports` and `secret` (the AWS ones, or the tests' in-memory ones).
    pub(crate) fn with_ports(ports: P, secret: R, signers: Signers) -> App<P, R> {
        let signers = Arc::new(signers);
        App { ports: Arc::new(ports), secret: Arc::new(secret), signers, secret_policy: AgePolicy::default() }
    }

    /// Another age to read the secret again at (the tests' shorter one).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_secret_policy(mut self, policy: AgePolicy) -> App<P, R> {
        self.secret_policy = policy;
        self
    }

    /// Handle one invocation: its batch, until the deadline Lambda gives.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
        self.handle_invocation(event.payload, Invocation::of(&event.context)).await
    }

    /// Handle one batch; `deadline` is when the invocation must be done.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        self.handle_invocation(event, Invocation::from(deadline)).await
    }

    async fn handle_invocation(&self, event: SqsEvent, invocation: Invocation) -> SqsBatchResponse {
        let Invocation { deadline, lambda_request_id } = invocation;
        let stop_at = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or_else(Instant::now);
        let app = self.clone();
        let span_of = |id: &str| message_span(id, lambda_request_id.as_deref());
        let ran =
            run_messages(one_message_per_event(event.records), MAX_CONCURRENT_MESSAGES, span_of, move |message| {
                let app = app.clone();
                async move {
                    let signer = app.signers.fresh(&*app.secret, &*app.ports, app.secret_policy);
                    handle_message(&*app.ports, signer, message, stop_at).await
                }
            })
            .await;
        respond(&ran, Outcome::is_failure)
    }
}

/// The batch with one message per event: two of one event (two settlers published it, or a
/// publish that reported failure had landed), posted at once, would give a receiver the same
/// `webhook-id` twice together, defeating its check-then-insert dedupe. The one with the most
/// receives left is kept, as the event's delivery (retried or dead-lettered on its own);
/// Lambda deletes the others.
fn one_message_per_event(messages: Vec<SqsMessage>) -> Vec<SqsMessage> {
    let events: Vec<Option<String>> = messages
        .iter()
        .map(|m| m.body.as_deref().and_then(|body| crate::domain::parse_event(body).ok()).map(|e| e.event_id))
        .collect();
    // Per event, the message kept: one with an id (a failure without one cannot be reported,
    // and Lambda would delete it), then the fewest receives, then the first.
    let rank = |message: &SqsMessage| (message.message_id.as_deref().is_none_or(str::is_empty), receive_count(message));
    let mut best: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, event_id) in events.iter().enumerate() {
        let Some(event_id) = event_id else { continue };
        let kept = best.entry(event_id).or_insert(i);
        if rank(&messages[i]) < rank(&messages[*kept]) {
            *kept = i;
        }
    }
    messages
        .into_iter()
        .zip(&events)
        .enumerate()
        .filter_map(|(i, (message, event_id))| match event_id {
            Some(id) if best[id.as_str()] != i => {
                tracing::info!(
                    message_id = message.message_id.as_deref().unwrap_or_default(),
                    event_id = id.as_str(),
                    "another message of this batch carries the same event; it alone is posted"
                );
                None
            }
            _ => Some(message),
        })
        .collect()
}

/// A message's span: its id and Lambda's id of the invocation (None locally), the task and
/// event once read.
fn message_span(id: &str, lambda_request_id: Option<&str>) -> tracing::Span {
    tracing::error_span!(
        "message",
        message_id = %id,
        lambda_request_id,
        task_id = tracing::field::Empty,
        event_id = tracing::field::Empty
    )
}

/// Deliver one message (in the caller's span) with the signer `signer` brings (read under the
/// same panic guard as the delivery); a retry delays its next delivery.
async fn handle_message<P: Ports>(
    ports: &P,
    signer: impl Future<Output = Arc<Option<crate::secret::Signer>>>,
    message: SqsMessage,
    stop_at: Instant,
) -> Outcome {
    let delivery = Delivery {
        receive_count: receive_count(&message),
        sent_at: sent_at(&message),
        body: message.body.unwrap_or_default(),
        receipt_handle: message.receipt_handle.filter(|h| !h.is_empty()),
        stop_at,
    };
    let delivered = async {
        let signer = signer.await;
        process_message(ports, Option::as_ref(&signer), &delivery).await
    };
    let outcome = match catch_panic(delivered).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Counted here: the panic cut process_message short of counting it.
            let outcome = Outcome::Retry(NotifyError::Panicked);
            ports.emit_metrics(&measure(&outcome, &delivery, ports.now()));
            outcome
        }
    };
    log_outcome(&outcome, &delivery);
    delay_retry(ports, &delivery, &outcome).await;
    outcome
}

fn log_outcome(outcome: &Outcome, delivery: &Delivery) {
    let receive_count = delivery.receive_count;
    match outcome {
        Outcome::Delivered { status } => tracing::info!(status, "webhook delivered"),
        Outcome::DeadLettered(e @ NotifyError::Malformed(_)) => {
            tracing::error!(error = %e, "not a stemvault event this build reads; moved to the dead-letter queue")
        }
        // Both need an operator: a receiver to fix, then a redrive of the dead-letter queue.
        Outcome::DeadLettered(e) => {
            tracing::error!(error = %e, "the webhook was refused; moved to the dead-letter queue, not retried")
        }
        Outcome::Retry(e) if delivery.is_last_receive() => tracing::error!(
            error = %e,
            receive_count,
            "the webhook failed on its last receive; SQS moves it to the dead-letter queue: fix what the error \
             names (the receiver, NotifyUrl or the signing secret), then redrive it"
        ),
        Outcome::Retry(e) => tracing::warn!(error = %e, receive_count, "will retry"),
    }
}

#[cfg(test)]
mod tests;

//! The AWS side of the domain traits: [`AwsPorts`] (SQS, metrics, and the poster of
//! [`crate::poster`]), and [`AWS_ACTIONS`], the IAM actions of every AWS call it makes.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use stemvault_aws::metrics::{self, Metric};
use stemvault_vault::QueueError;

use crate::config::Config;
use crate::domain::{
    Answer, DEAD_LETTER_REASON_ATTRIBUTE, DeadLetterMessage, DelayMessage, EmitMetrics, Measure, PostWebhook, Webhook,
};
use crate::error::PostError;
use crate::poster::HttpPoster;
use stemvault_aws::sdk_error::sdk_error_text;

/// The IAM actions of every AWS call the function makes: SQS ChangeMessageVisibility on the
/// notify queue (the delay before a retry), SQS SendMessage on the notify dead-letter queue (a
/// message the receiver refused with 410 Gone) and Secrets Manager GetSecretValue (the signing
/// secret, at start-up and again once it is old, through `stemvault_aws::secrets::SecretReader`).
/// (The SQS event source
/// mapping, not the function, receives and deletes the messages.)
pub const AWS_ACTIONS: &[&str] = &["sqs:ChangeMessageVisibility", "sqs:SendMessage", "secretsmanager:GetSecretValue"];

/// Webhooks the receiver answered with a 2xx; dimension `Function`.
pub const WEBHOOKS_DELIVERED: &str = "WebhooksDelivered";
/// Webhooks given up on for good, moved to the dead-letter queue (410 Gone, or a message this
/// build cannot read as a stemvault event); dimensions `Function` and `Reason` (`status_410`,
/// `malformed`).
pub const WEBHOOKS_REJECTED: &str = "WebhooksRejected";
/// Deliveries that will be retried; dimensions `Function` and `Reason` (`status_503`,
/// `timeout`, `connect`, ...).
pub const WEBHOOK_RETRIES: &str = "WebhookRetries";
/// Failed deliveries of webhooks first queued 85 minutes ago or longer (their
/// [`crate::domain::LATE_AT_RECEIVE`]th receive or a later one, or
/// [`crate::domain::LATE_AFTER`] since queued), each beside its retry; dimensions `Function`
/// and `Reason`, as [`WEBHOOK_RETRIES`]. Each delivered webhook counts 0 of it under
/// `Function` alone: the `webhooks-late` alarm ignores periods without data (the retries of a
/// failing receiver are up to 4 hours apart, more than its query may look back), so it stays
/// in ALARM until a period brings deliveries and no late failure.
pub const WEBHOOKS_LATE: &str = "WebhooksLate";
/// Re-reads of the signing secret that brought nothing usable, the signer in force kept
/// ([`crate::secret::Signers`]); dimension `Function`.
pub const SECRET_REREADS_FAILED: &str = stemvault_aws::secrets::REREADS_FAILED;

/// The function's clients, built once per Lambda instance.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    poster: HttpPoster,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    /// The notify dead-letter queue, where refused messages are sent.
    dead_letter_queue_url: String,
}

impl AwsPorts {
    /// The clients `config` names, over `sdk`, posting with `poster`.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig, poster: HttpPoster) -> AwsPorts {
        AwsPorts {
            poster,
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: config.queue_url,
            dead_letter_queue_url: config.dead_letter_queue_url,
        }
    }
}

stemvault_aws::system_clock!(AwsPorts);

impl PostWebhook for AwsPorts {
    async fn post_webhook(&self, webhook: &Webhook) -> Result<Answer, PostError> {
        self.poster.post_webhook(webhook).await
    }
}

impl DeadLetterMessage for AwsPorts {
    async fn dead_letter_message(&self, body: &str, reason: &str) -> Result<(), QueueError> {
        let reason = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| QueueError { operation: "SendMessage", message: e.to_string(), sender_fault: true })?;
        // Its caller waits at most BEST_EFFORT_CALL_TIMEOUT.
        self.sqs
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(body)
            .message_attributes(DEAD_LETTER_REASON_ATTRIBUTE, reason)
            .customize()
            .config_override(stemvault_aws::best_effort_sqs())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| QueueError::transient("SendMessage", sdk_error_text(&e)))
    }
}

impl DelayMessage for AwsPorts {
    async fn delay_message(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        stemvault_aws::sqs_batch::delay_message(&self.sqs, &self.queue_url, receipt_handle, delay).await
    }
}

/// The metrics of one measure (namespace `stemvault`, dimension `Function` = `function`, the
/// deployed function's name): [`WEBHOOKS_DELIVERED`] (with 0 of [`WEBHOOKS_LATE`]) and
/// [`SECRET_REREADS_FAILED`]; [`WEBHOOKS_REJECTED`], [`WEBHOOK_RETRIES`] and [`WEBHOOKS_LATE`]
/// also by `Reason`.
pub fn metrics_of(function: &'static str, measure: &Measure) -> (Vec<(&'static str, &'static str)>, Vec<Metric>) {
    let function = (metrics::FUNCTION, function);
    match measure {
        Measure::Delivered => {
            (vec![function], vec![Metric::count(WEBHOOKS_DELIVERED), Metric::counted(WEBHOOKS_LATE, 0)])
        }
        Measure::Rejected { reason } => {
            (vec![function, (metrics::REASON, *reason)], vec![Metric::count(WEBHOOKS_REJECTED)])
        }
        Measure::Retried { reason, late } => {
            let mut counted = vec![Metric::count(WEBHOOK_RETRIES)];
            if *late {
                counted.push(Metric::count(WEBHOOKS_LATE));
            }
            (vec![function, (metrics::REASON, *reason)], counted)
        }
        Measure::SecretRereadFailed => (vec![function], vec![Metric::count(SECRET_REREADS_FAILED)]),
    }
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(crate::LOGICAL_NAME), measure);
        metrics::emit(&dimensions, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_function_and_the_reason() {
        let function = "stemvault-prod-NotifyFunction-AbC123";
        let (dims, metrics) = metrics_of(function, &Measure::Delivered);
        assert_eq!(dims, vec![("Function", function)]);
        assert_eq!(metrics[0].name, WEBHOOKS_DELIVERED);
        // What brings the webhooks-late alarm back to OK.
        assert_eq!((metrics[1].name, metrics[1].value), (WEBHOOKS_LATE, 0.0));
        let (dims, metrics) = metrics_of(function, &Measure::Rejected { reason: "status_410" });
        assert_eq!(dims, vec![("Function", function), ("Reason", "status_410")]);
        assert_eq!(metrics[0].name, WEBHOOKS_REJECTED);
        let retried = |late| metrics_of(function, &Measure::Retried { reason: "timeout", late });
        let names = |metrics: Vec<Metric>| metrics.iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(retried(false).1), [WEBHOOK_RETRIES]);
        let (dims, metrics) = retried(true);
        assert_eq!(names(metrics), [WEBHOOK_RETRIES, WEBHOOKS_LATE]);
        assert_eq!(dims, vec![("Function", function), ("Reason", "timeout")]);
        let (dims, metrics) = metrics_of(function, &Measure::SecretRereadFailed);
        assert_eq!(dims, vec![("Function", function)]);
        assert_eq!(metrics[0].name, "SecretRereadsFailed");
    }
}

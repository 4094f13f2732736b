//! Webhooks under `make run`: with `NOTIFY_URL` set, the notify function (the same
//! `stemvault_notify::App` as in Lambda) consumes a notify queue in the emulator and POSTs each
//! event to `NOTIFY_URL`, signed with `NOTIFY_SECRET` (a `whsec_` secret; one is generated and
//! printed when unset), which the runner puts in the emulator's Secrets Manager as
//! `<base>-notify` so the function reads it through `NOTIFY_SECRET_ARN` as in AWS.
//!
//! The queue is `<base>-notify` with its dead-letter queue, made and consumed as the template
//! makes and consumes them (visibility, retention, receives before the dead-letter queue,
//! batch size, the function's timeout); events reach it from the emulator's
//! event bus through a rule on source `stemvault` (the publishing side's, see
//! [`NotifyRunner::queue_arn`]), or from anything that sends an EventBridge-shaped message to
//! it. Retries are delayed by the function itself (20 s, doubling), so the first comes within
//! a minute locally too. An event the receiver refuses with 410 Gone is sent to the
//! dead-letter queue (`<base>-notify-dlq`, the function's `DEAD_LETTER_QUEUE_URL`) as in AWS.

use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use stemvault_aws::FromEnv;
use stemvault_aws::secrets::{SecretText, put_secret};

use crate::poller::{BatchHandler, QueueSource};
use crate::settings::non_empty;

/// The notify function's SQS event source `BatchSize` in template.yaml.
const BATCH_SIZE: i32 = stemvault_notify::app::MAX_CONCURRENT_MESSAGES as i32;
/// The notify function's Lambda timeout: each batch gets this long.
const INVOCATION_BUDGET: std::time::Duration = stemvault_notify::domain::FUNCTION_TIMEOUT;

impl BatchHandler for stemvault_notify::App {
    async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        stemvault_notify::App::handle(self, crate::poller::lambda_invocation(event, deadline)).await
    }
}

/// The notify function, ready to poll its queue.
pub struct NotifyRunner {
    pub app: stemvault_notify::App,
    pub source: QueueSource,
    pub notify_url: String,
    /// The signing secret the runner generated (None: the user's `NOTIFY_SECRET`), printed
    /// so a local receiver can verify.
    pub generated_secret: Option<String>,
}

impl NotifyRunner {
    /// The notify queue's ARN: the target of the local bus's rule.
    pub fn queue_arn(&self) -> &str {
        &self.source.queue_arn
    }
}

/// A random Standard Webhooks secret (32 random bytes).
pub fn generate_secret() -> String {
    let key: Vec<u8> = uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
    stemvault_notify::secret::format_secret(&key)
}

/// With `NOTIFY_URL` set: provision the notify queue and the secret, and build the function
/// (its configuration checked as in Lambda: https, or http to a loopback host). None without.
pub async fn start(
    sdk: &aws_config::SdkConfig,
    base: &str,
    region: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<NotifyRunner>, String> {
    let Some(notify_url) = non_empty(env, "NOTIFY_URL") else { return Ok(None) };
    let (secret, generated_secret) = match non_empty(env, "NOTIFY_SECRET") {
        Some(secret) => (secret, None),
        None => {
            let secret = generate_secret();
            (secret.clone(), Some(secret))
        }
    };
    // Refuse an unusable secret here, without showing it.
    stemvault_notify::secret::Signer::parse(&secret).map_err(|e| format!("NOTIFY_SECRET: {e}"))?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_url, queue_arn, dlq_url) = stemvault_aws::provision::create_queue_with_dlq(
        &sqs,
        &format!("{base}-notify"),
        &stemvault_tests::NOTIFY_QUEUE,
    )
    .await?;
    let secret_arn =
        put_secret(sdk, &format!("{base}-notify"), &SecretText::new(secret)).await.map_err(|e| e.to_string())?;
    let lookup = |name: &str| match name {
        "NOTIFY_URL" => Some(notify_url.clone()),
        "NOTIFY_SECRET_ARN" => Some(secret_arn.clone()),
        "QUEUE_URL" => Some(queue_url.clone()),
        "DEAD_LETTER_QUEUE_URL" => Some(dlq_url.clone()),
        _ => None,
    };
    let config = stemvault_notify::Config::from_lookup(lookup).map_err(|e| e.to_string())?;
    let app = stemvault_notify::App::new(config, sdk).await.map_err(|e| e.to_string())?;
    let source = QueueSource {
        name: stemvault_notify::LOGICAL_NAME,
        queue_url,
        queue_arn,
        region: region.to_owned(),
        batch_size: BATCH_SIZE,
        invocation_budget: INVOCATION_BUDGET,
    };
    Ok(Some(NotifyRunner { app, source, notify_url, generated_secret }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_random_standard_webhooks_secrets() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"), "{a}");
        assert!(stemvault_notify::secret::Signer::parse(&a).is_ok());
    }
}

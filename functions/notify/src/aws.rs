//! The AWS side of the domain traits: [`AwsPorts`] (the HTTP client that posts to
//! `NOTIFY_URL`, SQS, metrics), and [`AWS_ACTIONS`], the IAM actions of every AWS call it
//! makes.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use stemvault_aws::metrics::{self, Metric};
use stemvault_vault::QueueError;
use url::Url;

use crate::config::Config;
use crate::domain::{
    Answer, DEAD_LETTER_REASON_ATTRIBUTE, DeadLetterMessage, DelayMessage, EmitMetrics, Measure, PostWebhook,
    REQUEST_TIMEOUT, Webhook,
};
use crate::error::PostError;

/// The IAM actions of every AWS call the function makes: SQS ChangeMessageVisibility on the
/// notify queue (the delay before a retry), SQS SendMessage on the notify dead-letter queue (a
/// message the receiver refused with 410 Gone) and Secrets Manager GetSecretValue (the signing
/// secret, at start-up, through `stemvault_aws::secrets::SecretReader`). (The SQS event source
/// mapping, not the function, receives and deletes the messages.)
pub const AWS_ACTIONS: &[&str] = &["sqs:ChangeMessageVisibility", "sqs:SendMessage", "secretsmanager:GetSecretValue"];

/// The function's logical name: the `Function` dimension of its metrics outside Lambda
/// (in Lambda, its deployed name: [`metrics::function_name`]).
pub const LOGICAL_NAME: &str = "notify";
/// Webhooks the receiver answered with a 2xx; dimension `Function`.
pub const WEBHOOKS_DELIVERED: &str = "WebhooksDelivered";
/// Webhooks given up on for good, moved to the dead-letter queue (410 Gone, or a message this
/// build cannot read as a stemvault event); dimensions `Function` and `Reason` (`status_410`,
/// `malformed`).
pub const WEBHOOKS_REJECTED: &str = "WebhooksRejected";
/// Deliveries that will be retried; dimensions `Function` and `Reason` (`status_503`,
/// `timeout`, `connect`, ...).
pub const WEBHOOK_RETRIES: &str = "WebhookRetries";
/// Failed deliveries of webhooks first queued about an hour and a half ago or longer (their
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

/// Posts webhooks to `NOTIFY_URL`: no redirects followed, no proxy, connect and overall
/// timeouts.
#[derive(Debug, Clone)]
pub struct HttpPoster {
    client: reqwest::Client,
    url: Url,
}

impl HttpPoster {
    /// Fails only when the TLS backend cannot start.
    pub fn new(url: Url) -> Result<HttpPoster, reqwest::Error> {
        let client =
            stemvault_aws::http::client(concat!("stemvault-notify/", env!("CARGO_PKG_VERSION")), REQUEST_TIMEOUT)?;
        Ok(HttpPoster { client, url })
    }
}

impl PostWebhook for HttpPoster {
    async fn post_webhook(&self, webhook: &Webhook) -> Result<Answer, PostError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &webhook.id)
            .header("webhook-timestamp", webhook.timestamp.to_string())
            .header("webhook-signature", &webhook.signature)
            .body(webhook.body.clone())
            .send()
            .await
            .map_err(post_error)?;
        let answer =
            Answer { status: response.status().as_u16(), retry_after: stemvault_aws::http::asked_wait(&response) };
        if response.status().is_redirection() {
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let to = redirect_target(&self.url, location);
            tracing::warn!(
                status = answer.status,
                to,
                "NOTIFY_URL redirects, and redirects are not followed: set NotifyUrl to where it points"
            );
        }
        drain(response).await;
        Ok(answer)
    }
}

/// Where a redirect from `notify_url` points, as the logs may show it: whether it stays on the
/// receiver's origin (then only its path or query changed: neither is shown, either may carry
/// the receiver's token), or the other origin ([`stemvault_aws::shown::loggable`]).
fn redirect_target(notify_url: &Url, location: Option<&str>) -> String {
    let Some(target) = location.and_then(|l| notify_url.join(l).ok()) else {
        return "nowhere readable (no Location header, or not a URL)".to_owned();
    };
    if target.origin() == notify_url.origin() {
        "the same origin (another path or query)".to_owned()
    } else {
        stemvault_aws::shown::loggable(&target)
    }
}

/// The most of an answer's body read to keep its connection.
const DRAINED_BYTES: usize = 64 * 1024;
/// The longest an answer's body is read for.
const DRAIN_WITHIN: Duration = Duration::from_secs(1);

/// Read a short answer's body to its end, so its connection goes back to the pool for the next
/// webhook (one whose body has not all arrived with the status is closed when left unread: the
/// next webhook pays a new TLS handshake). A long or slow body is dropped: the answer is its
/// status, whatever the body does.
async fn drain(mut response: reqwest::Response) {
    let read = async {
        let mut left = DRAINED_BYTES;
        while let Ok(Some(chunk)) = response.chunk().await {
            let Some(rest) = left.checked_sub(chunk.len()) else { return };
            left = rest;
        }
    };
    let _ = tokio::time::timeout(DRAIN_WITHIN, read).await;
}

/// The error without the URL (its query may carry a token of the receiver's), with its causes.
fn post_error(e: reqwest::Error) -> PostError {
    use stemvault_aws::http::{Failure, describe, failure};
    match failure(&e) {
        Failure::Connect => PostError::Connect(describe(e)),
        Failure::Timeout => PostError::Timeout(describe(e)),
        Failure::Other => PostError::Request(describe(e)),
    }
}

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
        self.sqs
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(body)
            .message_attributes(DEAD_LETTER_REASON_ATTRIBUTE, reason)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| QueueError::transient("SendMessage", DisplayErrorContext(e).to_string()))
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
pub fn metrics_of(function: &str, measure: &Measure) -> (Vec<(&'static str, String)>, Vec<Metric>) {
    let function = (metrics::FUNCTION, function.to_owned());
    match measure {
        Measure::Delivered => {
            (vec![function], vec![Metric::count(WEBHOOKS_DELIVERED), Metric::counted(WEBHOOKS_LATE, 0)])
        }
        Measure::Rejected { reason } => {
            (vec![function, (metrics::REASON, reason.clone())], vec![Metric::count(WEBHOOKS_REJECTED)])
        }
        Measure::Retried { reason, late } => {
            let mut counted = vec![Metric::count(WEBHOOK_RETRIES)];
            if *late {
                counted.push(Metric::count(WEBHOOKS_LATE));
            }
            (vec![function, (metrics::REASON, reason.clone())], counted)
        }
        Measure::SecretRereadFailed => (vec![function], vec![Metric::count(SECRET_REREADS_FAILED)]),
    }
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(LOGICAL_NAME), measure);
        let dimensions: Vec<(&str, &str)> = dimensions.iter().map(|(n, v)| (*n, v.as_str())).collect();
        metrics::emit(&dimensions, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        Webhook { id: "t1.stage.final".into(), timestamp: 1, signature: "v1,x".into(), body: "{}".into() }
    }

    /// A 200 with `body`, declaring `declared` bytes.
    fn ok_with(body: &str, declared: usize) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n{body}").into_bytes()
    }

    /// Webhooks to a receiver that keeps connections and answers with a body (40 KB: more than
    /// arrives with the status line; a body left unread then closes the connection) go over
    /// one connection: each answer's body is read to its end.
    #[tokio::test]
    async fn answers_with_a_body_keep_their_connection() {
        let body = "x".repeat(40_000);
        let (origin, connections) = stemvault_aws::test_http::answer_every(ok_with(&body, body.len())).await;
        let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
        for _ in 0..3 {
            assert_eq!(poster.post_webhook(&webhook()).await.unwrap(), Answer { status: 200, retry_after: None });
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A body over DRAINED_BYTES, or one that stops coming, is left, its connection with it:
    /// the answer is its status, within about DRAIN_WITHIN, not the request's whole timeout.
    #[tokio::test]
    async fn a_long_or_stalled_body_is_left_with_its_connection() {
        // Far over (1 MiB): hyper may read a little past what the drain asks for, and keep that.
        let long = "x".repeat(1 << 20);
        for reply in [ok_with(&long, long.len()), ok_with("the start", 1000)] {
            let (origin, connections) = stemvault_aws::test_http::answer_every(reply).await;
            let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
            for _ in 0..2 {
                let answered = tokio::time::timeout(REQUEST_TIMEOUT / 2, poster.post_webhook(&webhook()))
                    .await
                    .expect("the answer does not wait on the body");
                assert_eq!(answered.unwrap(), Answer { status: 200, retry_after: None });
            }
            assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "not kept");
        }
    }

    /// A redirect is logged with where it points, never with a path or query.
    #[test]
    fn a_redirect_is_shown_by_origin_only() {
        let notify = Url::parse("https://hooks.example.com/in/tok3n").unwrap();
        let target = |l| redirect_target(&notify, l);
        assert_eq!(target(Some("/in/tok3n/")), "the same origin (another path or query)");
        let moved = target(Some("https://new.example.com/in/tok3n?x=1"));
        assert!(moved.starts_with("https://new.example.com/… (sha256 "), "{moved}");
        assert!(target(Some("http://hooks.example.com/in/tok3n")).starts_with("http://hooks.example.com/…"));
        assert!(!moved.contains("tok3n"));
        assert!(target(None).starts_with("nowhere"));
    }

    /// The poster against a receiver on loopback: a 429 or 503 says how long to wait, in
    /// seconds or as a date; no other status does, and neither does one without the header.
    #[tokio::test]
    async fn a_429_or_503_says_how_long_to_wait_and_nothing_else_does() {
        let reply = |status: &str, header: &str| {
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n{header}connection: close\r\n\r\n").into_bytes()
        };
        let (origin, served) = stemvault_aws::test_http::answer_in_turn(vec![
            reply("503 Service Unavailable", "retry-after: 120\r\n"),
            reply("429 Too Many Requests", "retry-after: Fri, 01 Jan 2100 00:00:00 GMT\r\n"),
            reply("500 Internal Server Error", "retry-after: 120\r\n"),
            reply("503 Service Unavailable", ""),
            reply("204 No Content", ""),
        ])
        .await;
        let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
        let webhook = webhook();
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(poster.post_webhook(&webhook).await.unwrap());
        }
        assert_eq!(answers[0], Answer { status: 503, retry_after: Some(Duration::from_secs(120)) });
        assert!(
            answers[1].retry_after.is_some_and(|wait| wait > Duration::from_secs(365 * 86_400)),
            "{:?}",
            answers[1]
        );
        assert_eq!(answers[2], Answer { status: 500, retry_after: None });
        assert_eq!(answers[3], Answer { status: 503, retry_after: None });
        assert_eq!(answers[4], Answer { status: 204, retry_after: None });
        let requests = served.await.unwrap();
        assert!(requests[0].starts_with("POST /hooks "), "{}", requests[0]);
        assert!(requests[0].contains("webhook-id: t1.stage.final"), "{}", requests[0]);
    }

    #[test]
    fn metrics_carry_the_function_and_the_reason() {
        let function = "stemvault-prod-NotifyFunction-AbC123";
        let (dims, metrics) = metrics_of(function, &Measure::Delivered);
        assert_eq!(dims, vec![("Function", function.to_owned())]);
        assert_eq!(metrics[0].name, WEBHOOKS_DELIVERED);
        // What brings the webhooks-late alarm back to OK.
        assert_eq!((metrics[1].name, metrics[1].value), (WEBHOOKS_LATE, 0.0));
        let (dims, metrics) = metrics_of(function, &Measure::Rejected { reason: "status_410".into() });
        assert_eq!(dims, vec![("Function", function.to_owned()), ("Reason", "status_410".to_owned())]);
        assert_eq!(metrics[0].name, WEBHOOKS_REJECTED);
        let retried = |late| metrics_of(function, &Measure::Retried { reason: "timeout".into(), late });
        let names = |metrics: Vec<Metric>| metrics.iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(retried(false).1), [WEBHOOK_RETRIES]);
        let (dims, metrics) = retried(true);
        assert_eq!(names(metrics), [WEBHOOK_RETRIES, WEBHOOKS_LATE]);
        assert_eq!(dims, vec![("Function", function.to_owned()), ("Reason", "timeout".to_owned())]);
        let (dims, metrics) = metrics_of(function, &Measure::SecretRereadFailed);
        assert_eq!(dims, vec![("Function", function.to_owned())]);
        assert_eq!(metrics[0].name, "SecretRereadsFailed");
    }
}

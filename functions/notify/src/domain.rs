//! One SQS message, start to end, over small traits (implemented in `aws.rs`, the webhook's
//! POST in `poster.rs`, and in memory for the unit tests), bundled as [`Ports`]; the clock is `stemvault_vault`'s.
//!
//! Per message ([`process_message`]):
//!
//! 1. read the EventBridge event the rule put on the queue ([`parse_event`]): source
//!    `stemvault`, a known `detail-type`, a `detail` that is a stemvault event detail with an
//!    `event_id`. Anything else goes to the dead-letter queue at once (a retry cannot mend it;
//!    a redrive to a function that reads it can);
//! 2. make the Standard Webhooks payload once ([`payload`]): `{"type": "task.vaulted" | …,
//!    "timestamp": <the event's time>, "data": <the detail>}`; the same message always makes
//!    the same bytes, so a retry sends the same body under the same `webhook-id`
//!    (`detail.event_id`);
//! 3. sign it ([`Signer`]) for `webhook-timestamp` = now, and POST it to `NOTIFY_URL`
//!    ([`PostWebhook`]); with no signer (the secret unusable since start-up) it is retried
//!    as a failed post is;
//! 4. the answer decides ([`crate::error::classify_status`]): a 2xx is delivered; a 410 Gone
//!    is refused for good: the message, as received, is moved to the notify dead-letter
//!    queue with the message attribute [`DEAD_LETTER_REASON_ATTRIBUTE`] (`reason` =
//!    `status_410`) ([`DeadLetterMessage`]; logged, counted), then deleted from the notify
//!    queue, so a 410 by mistake loses nothing: the dead-letter queue is redriven once the
//!    receiver is fixed. If that move fails, the message is retried as a failed post is.
//!    Anything else (every other 4xx, 5xx, a redirect, a timeout, no connection) is retried:
//!    the message goes back to the queue, kept away as [`NOTIFY_BACKOFF`] says (20 s, doubling, at
//!    most 4 hours, each [`spread`](stemvault_vault::delay::spread); or longer when a 429/503 said `Retry-After`).

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use stemvault_vault::delay::Backoff;
use stemvault_vault::events::{EVENT_SOURCE, EventType};
use stemvault_vault::{BEST_EFFORT_CALL_TIMEOUT, Clock, DEADLINE_MARGIN, QueueError, Timestamp, best_effort};

use crate::error::{NotifyError, PostError, classify_status};
use crate::secret::Signer;

/// The first retry's delay; each further retry doubles it.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(20);
/// The longest delay between retries without a `Retry-After`.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(4 * 3600);
/// The longest wait a receiver's `Retry-After` gets.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(4 * 3600);
/// Receives of a message before the notify queue moves it to its dead-letter queue
/// (template.yaml `NotifyQueue` `maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: u32 = 16;
/// From this receive on, a retryable failure counts as late (`WebhooksLate`, the
/// `webhooks-late` alarm): 85 minutes after the first ([`LATE_AFTER`]; up to about 102 with
/// the retries' spread), long before the dead-letter queue a day later.
pub const LATE_AT_RECEIVE: u32 = 9;
/// A retryable failure of a message first queued this long ago counts as late too, whatever
/// its receive: a receiver's `Retry-After` may have spaced the receives out by hours, and a
/// receive whose invocation died counts in `ApproximateReceiveCount` all the same. The
/// backoff's own time until [`LATE_AT_RECEIVE`] (85 minutes).
pub const LATE_AFTER: Duration = NOTIFY_BACKOFF.until(LATE_AT_RECEIVE);
/// How long the notify queue keeps a message (template.yaml `NotifyQueue`): 4 days.
pub const QUEUE_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
/// The function's Lambda timeout (kept equal to template.yaml).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The notify queue's visibility timeout: 6 x the function's timeout, as AWS recommends for
/// an SQS event source (kept equal to template.yaml).
pub const QUEUE_VISIBILITY_TIMEOUT_SECONDS: u32 = 6 * FUNCTION_TIMEOUT.as_secs() as u32;
/// The whole request's timeout, answer included: within the 15 to 30 s the Standard Webhooks
/// spec recommends, so a receiver that does its work before answering (or starts cold) is
/// not posted the same event again for being a little slow.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

// Every post of a batch starts at once and fits before the delivery's `stop_at`.
const _: () = assert!(REQUEST_TIMEOUT.as_secs() + DEADLINE_MARGIN.as_secs() < FUNCTION_TIMEOUT.as_secs());

// Even a receiver asking for the longest wait at every answer lets a message reach its last
// receive, and so the dead-letter queue (at once after it: [`delay_retry`]), before the
// queue's retention drops it.
const _: () = assert!(
    (MAX_RECEIVE_COUNT as u64 - 1) * MAX_RETRY_AFTER.as_secs() + RETENTION_TO_SPARE.as_secs()
        < QUEUE_RETENTION.as_secs()
);
/// Retention the longest schedule leaves unused: a day's wait before a first receive (the
/// event source mapping disabled, the function throttled) still reaches the dead-letter queue.
const RETENTION_TO_SPARE: Duration = Duration::from_secs(24 * 3600);

/// The message attribute (a `String`) that says why the function moved a message to the
/// notify dead-letter queue: the refusal's [`NotifyError::reason_code`] (`status_410`).
/// (A message the queue itself moved there after its last receive has none.)
pub const DEAD_LETTER_REASON_ATTRIBUTE: &str = "reason";

// A post ends by the delivery's `stop_at` (the deadline less DEADLINE_MARGIN); the move of a
// refused message to the dead-letter queue and, when that fails, the retry's delay each get
// BEST_EFFORT_CALL_TIMEOUT: both fit in the margin, so neither runs the invocation into its
// timeout (which answers nothing and sends the whole batch back).
const _: () = assert!(2 * BEST_EFFORT_CALL_TIMEOUT.as_secs() < DEADLINE_MARGIN.as_secs());

/// One signed webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `webhook-id`: the event's stable id.
    pub id: String,
    /// `webhook-timestamp`: unix seconds when it was signed.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>`.
    pub signature: String,
    /// The JSON body, exactly as signed.
    pub body: String,
}

/// What the receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The wait the `Retry-After` of a 429 or 503 asks for.
    pub retry_after: Option<Duration>,
}

pub trait PostWebhook {
    /// POST `webhook` to `NOTIFY_URL` (no redirects followed; connect and overall timeouts).
    fn post_webhook(&self, webhook: &Webhook) -> impl Future<Output = Result<Answer, PostError>> + Send;
}

pub trait DeadLetterMessage {
    /// Send `body` (a notify queue message, as received) to the notify dead-letter queue with
    /// the message attribute [`DEAD_LETTER_REASON_ATTRIBUTE`] = `reason`.
    fn dead_letter_message(&self, body: &str, reason: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Delay a retried message's next delivery (the trait every SQS-triggered function shares).
pub use stemvault_vault::delay::DelayMessage;
use stemvault_vault::delay::delay_next_delivery;

/// What the function measures, one event at a time (CloudWatch metrics in [`crate::aws`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on for good and moved to the dead-letter queue: refused with 410 Gone, or not
    /// a stemvault event this build reads.
    Rejected { reason: &'static str },
    /// Will be retried ([`NotifyError::reason_code`]); `late`: on its [`LATE_AT_RECEIVE`]th
    /// receive or later, or [`LATE_AFTER`] or more after the message was queued.
    Retried { reason: &'static str, late: bool },
    /// A re-read of the signing secret brought nothing usable: the signer in force stays
    /// ([`crate::secret::Signers`]). Once per read, not per message.
    SecretRereadFailed,
}

/// What the function counts ([`Measure`]s: its metrics).
pub use stemvault_vault::EmitMetrics;

/// Everything one message needs.
pub trait Ports: Clock + PostWebhook + DeadLetterMessage + DelayMessage + EmitMetrics<Measure> + Sync {}

impl<T> Ports for T where T: Clock + PostWebhook + DeadLetterMessage + DelayMessage + EmitMetrics<Measure> + Sync {}

/// One delivery of one message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: String,
    pub receipt_handle: Option<String>,
    /// `ApproximateReceiveCount`, 1 on the first delivery.
    pub receive_count: u32,
    /// When the message was queued (`SentTimestamp`), if SQS said.
    pub sent_at: Option<Timestamp>,
    /// The request must be over by then (the invocation's deadline less a margin).
    pub stop_at: Instant,
}

impl Delivery {
    /// The queue's last receive of this message ([`MAX_RECEIVE_COUNT`]): failing now, SQS
    /// moves it to the dead-letter queue.
    pub fn is_last_receive(&self) -> bool {
        self.receive_count >= MAX_RECEIVE_COUNT
    }
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered this 2xx.
    Delivered { status: u16 },
    /// Refused for good ([`NotifyError::dead_letters`]: by the receiver, or unreadable here):
    /// the message was moved to the notify dead-letter queue with its reason, and is deleted
    /// from the notify queue.
    DeadLettered(NotifyError),
    /// Try again later: the message goes back to the queue.
    Retry(NotifyError),
}

impl Outcome {
    /// Whether the message is reported as a batch item failure (so it is not deleted).
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Retry(_))
    }
}

/// A stemvault event as EventBridge delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    /// The event's `time` (RFC 3339).
    pub time: String,
    /// The `detail`, as published.
    pub detail: Value,
    /// `detail.event_id`.
    pub event_id: String,
    /// `detail.task_id`.
    pub task_id: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    time: String,
    detail: Value,
}

/// What notify reads of a `detail`; the rest is forwarded as published, so an event from a
/// newer release (a stage or family this build does not know) is still delivered, not dropped.
#[derive(Deserialize)]
struct DetailIds {
    event_id: String,
    task_id: String,
}

/// Read a message body: an EventBridge event from stemvault.
pub fn parse_event(body: &str) -> Result<Event, NotifyError> {
    let malformed = |what: String| NotifyError::Malformed(what);
    let envelope: Envelope =
        serde_json::from_str(body).map_err(|e| malformed(format!("not an EventBridge event: {e}")))?;
    // A message sent by hand may hold anything there: its first characters say enough.
    let cut = |text: &str| stemvault_vault::text::first_chars(text, 64);
    if envelope.source != EVENT_SOURCE {
        return Err(malformed(format!("source {:?} is not {EVENT_SOURCE:?}", cut(&envelope.source))));
    }
    let kind = EventType::from_detail_type(&envelope.detail_type)
        .ok_or_else(|| malformed(format!("unknown detail-type {:?}", cut(&envelope.detail_type))))?;
    let detail = DetailIds::deserialize(&envelope.detail)
        .map_err(|e| malformed(format!("the detail is not a stemvault event detail: {e}")))?;
    let header_safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !header_safe(&detail.event_id) {
        return Err(malformed("the event_id is empty or not printable ASCII".into()));
    }
    if envelope.time.trim().is_empty() {
        return Err(malformed("the event has no time".into()));
    }
    Ok(Event { kind, time: envelope.time, detail: envelope.detail, event_id: detail.event_id, task_id: detail.task_id })
}

/// The Standard Webhooks payload of `event`: `{"data", "timestamp", "type"}`, serialized once.
pub fn payload(event: &Event) -> String {
    json!({ "type": event.kind.webhook_type(), "timestamp": event.time, "data": event.detail }).to_string()
}

/// `event` as a webhook signed by `signer` at `timestamp` (unix seconds).
pub fn sign(event: &Event, signer: &Signer, timestamp: i64) -> Webhook {
    let body = payload(event);
    let signature = signer.sign(&event.event_id, timestamp, &body);
    Webhook { id: event.event_id.clone(), timestamp, signature, body }
}

/// Handle one message: parse, sign, post, classify; count the outcome. (Its retry delay is the
/// caller's: [`delay_retry`].)
pub async fn process_message<P: Ports>(ports: &P, signer: Option<&Signer>, delivery: &Delivery) -> Outcome {
    let outcome = deliver(ports, signer, delivery).await;
    ports.emit_metrics(&measure(&outcome, delivery, ports.now()));
    outcome
}

/// How `outcome` of `delivery` is counted `now` (`WebhooksDelivered`, `WebhooksRejected`,
/// `WebhookRetries`, `WebhooksLate`).
pub fn measure(outcome: &Outcome, delivery: &Delivery, now: Timestamp) -> Measure {
    match outcome {
        Outcome::Delivered { .. } => Measure::Delivered,
        Outcome::DeadLettered(e) => Measure::Rejected { reason: e.reason_code() },
        Outcome::Retry(e) => Measure::Retried { reason: e.reason_code(), late: is_late(delivery, now) },
    }
}

/// Whether a failure of `delivery` `now` is late: its [`LATE_AT_RECEIVE`]th receive or a later
/// one, or [`LATE_AFTER`] since it was queued. Each late failure counts (the alarm stays in
/// ALARM until a delivery counts 0).
fn is_late(delivery: &Delivery, now: Timestamp) -> bool {
    delivery.receive_count >= LATE_AT_RECEIVE || delivery.sent_at.is_some_and(|sent| sent.plus(LATE_AFTER) <= now)
}

/// `signer` is `None` while the secret has not been read since start-up: the message waits.
async fn deliver<P: Ports>(ports: &P, signer: Option<&Signer>, delivery: &Delivery) -> Outcome {
    let event = match parse_event(&delivery.body) {
        Ok(event) => event,
        Err(e) => return dead_letter(ports, &delivery.body, e).await,
    };
    let span = tracing::Span::current();
    span.record("task_id", event.task_id.as_str());
    span.record("event_id", event.event_id.as_str());
    let Some(signer) = signer else {
        return Outcome::Retry(NotifyError::NoSigningSecret);
    };
    if delivery.stop_at.saturating_duration_since(Instant::now()) < REQUEST_TIMEOUT {
        return Outcome::Retry(NotifyError::NoTimeLeft);
    }
    let webhook = sign(&event, signer, ports.now().unix_seconds());
    match ports.post_webhook(&webhook).await {
        Ok(answer) => match classify_status(answer.status, answer.retry_after) {
            None => Outcome::Delivered { status: answer.status },
            Some(refusal) if refusal.dead_letters() => dead_letter(ports, &delivery.body, refusal).await,
            Some(e) => Outcome::Retry(e),
        },
        Err(e) => Outcome::Retry(e.into()),
    }
}

/// Move a message refused for good (by the receiver, or unreadable here) to the notify
/// dead-letter queue, its reason with it. When SQS refuses, or gives no answer within
/// [`BEST_EFFORT_CALL_TIMEOUT`](stemvault_vault::BEST_EFFORT_CALL_TIMEOUT), the message is kept
/// and retried ([`NotifyError::DeadLetter`]); one SQS took after all is then in the
/// dead-letter queue twice (redriven, both are sent: receivers drop the second by its
/// `webhook-id`, the event's id; a message unreadable here stays unreadable until redriven to a
/// build that reads it).
async fn dead_letter<P: DeadLetterMessage>(ports: &P, body: &str, refusal: NotifyError) -> Outcome {
    let error = match best_effort(ports.dead_letter_message(body, refusal.reason_code())).await {
        Some(Ok(())) => return Outcome::DeadLettered(refusal),
        Some(Err(e)) => e.to_string(),
        None => format!("no answer from SQS within {} s", BEST_EFFORT_CALL_TIMEOUT.as_secs()),
    };
    Outcome::Retry(NotifyError::DeadLetter { refusal: Box::new(refusal), error })
}

/// The notify queue's retry schedule: [`FIRST_RETRY_DELAY`] doubling per receive up to
/// [`MAX_RETRY_DELAY`]; a receiver's `Retry-After` gets as long as it asked, up to
/// [`MAX_RETRY_AFTER`], never less than that backoff.
pub const NOTIFY_BACKOFF: Backoff =
    Backoff { first: FIRST_RETRY_DELAY, max: MAX_RETRY_DELAY, max_retry_after: MAX_RETRY_AFTER };

/// After a retryable outcome: keep the message away as [`NOTIFY_BACKOFF`] says; after its last
/// receive ([`MAX_RECEIVE_COUNT`]), for no time at all: no delay buys another attempt (the
/// queue moves it to the dead-letter queue at its next receive), and the dead-letter alarm
/// should not wait another hour. Failing to do so only means a retry once the queue's
/// visibility timeout is over (so does SQS not answering
/// within [`BEST_EFFORT_CALL_TIMEOUT`]).
pub async fn delay_retry<P: DelayMessage>(ports: &P, delivery: &Delivery, outcome: &Outcome) {
    let Outcome::Retry(error) = outcome else { return };
    let Some(receipt_handle) = &delivery.receipt_handle else { return };
    let retry_after = match error {
        NotifyError::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    let delay = match delivery.is_last_receive() {
        true => Duration::ZERO,
        false => NOTIFY_BACKOFF.next_delay(delivery.receive_count, retry_after),
    };
    delay_next_delivery(ports, receipt_handle, delay).await;
}

#[cfg(test)]
mod tests;

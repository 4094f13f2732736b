//! In-memory ports for the unit tests: scripted answers, recorded requests, dead letters,
//! delays and metrics, a virtual clock (at [`NOW`] until advanced), and a secret to rotate.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use stemvault_aws::secrets::{ReadSecret, SecretError, SecretText};
use stemvault_vault::events::{EventDetail, EventType, TaskEvent};
use stemvault_vault::{Clock, Timestamp};

use crate::app::App;
use crate::domain::{Answer, DeadLetterMessage, DelayMessage, EmitMetrics, Measure, PostWebhook, Webhook};
use crate::error::PostError;
use crate::secret::{Signer, Signers};

/// The start time of [`MemoryPorts`].
pub const NOW: Timestamp = Timestamp { unix_ms: 1_795_446_000_000 };
/// A Standard Webhooks secret for the tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The secret rotated in after [`SECRET`].
pub const NEW_SECRET: &str = "whsec_c3RlbXZhdWx0LXJvdGF0ZWQtc2VjcmV0LTMyYnk=";

pub fn signer() -> Signer {
    Signer::parse(SECRET).unwrap()
}

/// The app over `ports`, signing with [`SECRET`] read at [`NOW`], its secret reading [`SECRET`].
pub fn app(ports: MemoryPorts) -> App<MemoryPorts, MemorySecret> {
    App::with_ports(ports, MemorySecret::holding(SECRET), Signers::new(signer(), NOW))
}

/// The signing secret in memory: its text (or a failure), and the reads it answered.
pub struct MemorySecret {
    text: Mutex<Result<String, SecretError>>,
    reads: AtomicUsize,
    panics: AtomicBool,
}

impl MemorySecret {
    pub fn holding(text: &str) -> MemorySecret {
        MemorySecret {
            text: Mutex::new(Ok(text.to_owned())),
            reads: AtomicUsize::new(0),
            panics: AtomicBool::new(false),
        }
    }

    /// Rotate the secret to `text`.
    pub fn set(&self, text: &str) {
        *self.text.lock().unwrap() = Ok(text.to_owned());
    }

    /// Make every read fail.
    pub fn fail(&self) {
        *self.text.lock().unwrap() = Err(SecretError::Unavailable("throttled".into()));
    }

    /// Make every read panic.
    pub fn panic(&self) {
        self.panics.store(true, Ordering::SeqCst);
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl ReadSecret for MemorySecret {
    async fn read_secret(&self) -> Result<SecretText, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // Let every other message of the batch run up to the read before it answers.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!self.panics.load(Ordering::SeqCst), "poisoned secret");
        self.text.lock().unwrap().clone().map(SecretText::new)
    }
}

/// A `Task Vaulted` detail of task `t1`.
pub fn detail() -> EventDetail {
    serde_json::from_value(serde_json::json!({
        "event_id": "t1.vaulted.3.final",
        "task_id": "t1",
        "family": "vocal_separation",
        "stage": "final",
        "vault": "complete",
        "client_ref": "order-17",
        "code": 200,
        "message": "ok",
        "generation": 3,
        "bucket": "vault-bucket",
        "manifest_key": "tasks/t1/manifest.json",
        "files": [{"name": "vocal", "key": "tasks/t1/vocal.mp3", "bytes": 42, "sha256": "ab", "status": "stored",
                   "error": null}]
    }))
    .unwrap()
}

/// `event` as EventBridge delivers it to a rule's SQS target (`id` its EventBridge id, `time`
/// RFC 3339): what the notify queue's messages hold.
fn eventbridge_message(event: &TaskEvent, id: &str, time: &str) -> String {
    serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": event.kind.detail_type(),
        "source": stemvault_vault::events::EVENT_SOURCE,
        "account": "000000000000",
        "time": time,
        "region": "us-east-1",
        "resources": [],
        "detail": event.detail,
    })
    .to_string()
}

/// The message the rule puts on the queue for the `Task Vaulted` event of [`detail`].
pub fn vaulted_message() -> String {
    eventbridge_message(&TaskEvent { kind: EventType::Vaulted, detail: detail() }, "eb-1", "2026-11-23T15:00:00Z")
}

/// [`vaulted_message`] of the task's `n`th file set (its own event id), so a batch of them
/// holds as many events.
pub fn vaulted_message_of(n: usize) -> String {
    let detail = EventDetail { event_id: format!("t1.vaulted.{n}.final"), generation: n as u64, ..detail() };
    eventbridge_message(&TaskEvent { kind: EventType::Vaulted, detail }, "eb-1", "2026-11-23T15:00:00Z")
}

#[derive(Default)]
pub struct MemoryPorts {
    /// Answers, in order; once used up, 200.
    pub answers: Mutex<VecDeque<Result<Answer, PostError>>>,
    pub posted: Mutex<Vec<Webhook>>,
    pub delays: Mutex<Vec<(String, Duration)>>,
    /// Messages sent to the dead-letter queue: (body, reason).
    pub dead_letters: Mutex<Vec<(String, String)>>,
    pub metrics: Mutex<Vec<Measure>>,
    /// Panic on every post.
    pub panics: bool,
    /// Sending to the dead-letter queue fails (nothing is sent).
    pub dead_letters_fail: bool,
    /// Sending to the dead-letter queue never answers (nothing is sent).
    pub dead_letters_hang: bool,
    /// Delaying a message never answers.
    pub delays_hang: bool,
    /// How far the clock is past [`NOW`].
    pub advanced: Mutex<Duration>,
}

impl MemoryPorts {
    pub fn answering(answers: impl IntoIterator<Item = Result<Answer, PostError>>) -> MemoryPorts {
        MemoryPorts { answers: Mutex::new(answers.into_iter().collect()), ..MemoryPorts::default() }
    }

    pub fn posted(&self) -> Vec<Webhook> {
        self.posted.lock().unwrap().clone()
    }

    pub fn delays(&self) -> Vec<(String, Duration)> {
        self.delays.lock().unwrap().clone()
    }

    pub fn dead_letters(&self) -> Vec<(String, String)> {
        self.dead_letters.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Vec<Measure> {
        self.metrics.lock().unwrap().clone()
    }

    /// Move the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        *self.advanced.lock().unwrap() += by;
    }
}

/// An answer with `status` and no `Retry-After`.
pub fn status(status: u16) -> Result<Answer, PostError> {
    Ok(Answer { status, retry_after: None })
}

impl Clock for MemoryPorts {
    fn now(&self) -> Timestamp {
        NOW.plus(*self.advanced.lock().unwrap())
    }

    async fn sleep(&self, _duration: Duration) {}
}

impl PostWebhook for MemoryPorts {
    async fn post_webhook(&self, webhook: &Webhook) -> Result<Answer, PostError> {
        assert!(!self.panics, "poisoned receiver");
        self.posted.lock().unwrap().push(webhook.clone());
        self.answers.lock().unwrap().pop_front().unwrap_or(Ok(Answer { status: 200, retry_after: None }))
    }
}

impl DeadLetterMessage for MemoryPorts {
    async fn dead_letter_message(&self, body: &str, reason: &str) -> Result<(), stemvault_vault::QueueError> {
        if self.dead_letters_hang {
            std::future::pending::<()>().await;
        }
        if self.dead_letters_fail {
            return Err(stemvault_vault::QueueError::transient(
                "SendMessage",
                "AccessDenied: not authorized to perform sqs:SendMessage",
            ));
        }
        self.dead_letters.lock().unwrap().push((body.to_owned(), reason.to_owned()));
        Ok(())
    }
}

impl DelayMessage for MemoryPorts {
    async fn delay_message(&self, receipt_handle: &str, delay: Duration) -> Result<(), stemvault_vault::QueueError> {
        self.delays.lock().unwrap().push((receipt_handle.to_owned(), delay));
        if self.delays_hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl EmitMetrics<Measure> for MemoryPorts {
    fn emit_metrics(&self, measure: &Measure) {
        self.metrics.lock().unwrap().push(measure.clone());
    }
}

/// Asserts that `delays` is one delay of the message `receipt_handle`: `secs` seconds of
/// backoff, spread ([`stemvault_vault::delay::spread`]).
#[track_caller]
pub fn assert_one_spread_delay(delays: &[(String, Duration)], receipt_handle: &str, secs: u64) {
    let backoff = Duration::from_secs(secs);
    assert!(
        matches!(delays, [(rh, delay)] if rh == receipt_handle && stemvault_vault::delay::is_spread(*delay, backoff)),
        "{secs} s spread, for {receipt_handle}: {delays:?}"
    );
}

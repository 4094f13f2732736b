//! What can go wrong with one message, and whether trying again later may help.
//!
//! Retryable: the message goes back to the queue with a growing delay, and after the queue's
//! last receive to the notify dead-letter queue (which alarms). Not retryable: a message this
//! build cannot read as a stemvault event, and a receiver that answered 410 Gone (it wants no
//! more webhooks at this URL): the function moves the message to the notify dead-letter queue at
//! once ([`NotifyError::dead_letters`]), to redrive once the receiver is fixed, and it is then
//! deleted; when that move fails, the message is retried ([`NotifyError::DeadLetter`]).

use std::time::Duration;

/// Posting one webhook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("could not connect to NOTIFY_URL: {0}")]
    Connect(String),
    #[error("NOTIFY_URL did not answer in time: {0}")]
    Timeout(String),
    #[error("the request to NOTIFY_URL failed: {0}")]
    Request(String),
}

/// Handling one message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Not an EventBridge event from stemvault with a readable detail.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The receiver answered 410 Gone: it wants no more webhooks at this URL.
    #[error("NOTIFY_URL answered 410 Gone: it takes no more webhooks")]
    Gone,
    /// Any other answer but a 2xx: every other 4xx (a receiver being deployed answers 404, one
    /// whose signing secret is being rotated 401: nothing is dropped for them; a 4xx that
    /// stands ends in the dead-letter queue, to redrive once the receiver is fixed), 5xx, and
    /// also 1xx and 3xx (redirects are not followed; the message ends in the dead-letter queue
    /// unless NOTIFY_URL is corrected). `retry_after`: what a 429 or 503 asked for.
    #[error("NOTIFY_URL answered {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    #[error(transparent)]
    Post(#[from] PostError),
    #[error("the invocation's deadline is too close to post")]
    NoTimeLeft,
    /// The signing secret has not been usable since the instance started: nothing to sign with.
    #[error("no signing secret: the notify secret has not been usable since start-up")]
    NoSigningSecret,
    #[error("the handler panicked (the panic's own line says where)")]
    Panicked,
    /// The receiver refused the webhook for good (`refusal`, which [`NotifyError::dead_letters`])
    /// but the message could not be sent to the notify dead-letter queue: it stays on the notify
    /// queue and is retried, as a failed post is.
    #[error("{refusal}; the message could not be moved to the dead-letter queue: {error}")]
    DeadLetter { refusal: Box<NotifyError>, error: String },
}

/// The statuses a metric names one by one, with their reason codes: what receivers, proxies
/// and gateways commonly answer, and the redirects (a receiver moved: redirects are not
/// followed).
pub const NAMED_STATUSES: [(u16, &str); 21] = [
    (301, "status_301"),
    (302, "status_302"),
    (303, "status_303"),
    (307, "status_307"),
    (308, "status_308"),
    (400, "status_400"),
    (401, "status_401"),
    (403, "status_403"),
    (404, "status_404"),
    (405, "status_405"),
    (408, "status_408"),
    (409, "status_409"),
    (410, "status_410"),
    (413, "status_413"),
    (422, "status_422"),
    (429, "status_429"),
    (500, "status_500"),
    (501, "status_501"),
    (502, "status_502"),
    (503, "status_503"),
    (504, "status_504"),
];

/// The reason code of an answer with `status` ([`NotifyError::reason_code`]).
fn status_code(status: u16) -> &'static str {
    if let Some((_, code)) = NAMED_STATUSES.iter().find(|(named, _)| *named == status) {
        return code;
    }
    match status / 100 {
        1 => "status_1xx",
        2 => "status_2xx",
        3 => "status_3xx",
        4 => "status_4xx",
        5 => "status_5xx",
        _ => "status_other",
    }
}

impl NotifyError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, NotifyError::Malformed(_) | NotifyError::Gone)
    }

    /// Whether a message refused with this error goes to the notify dead-letter queue at once
    /// (with [`reason_code`](NotifyError::reason_code) as its `reason`): 410 Gone, which a
    /// receiver mid-deploy or a CDN may answer by mistake, and a message this build cannot
    /// read (an event type a newer release publishes, reaching a notify function not yet
    /// updated, or redriven to an older one after a rollback): a redrive delivers either once
    /// the receiver or the function is fixed. Nothing is deleted unmoved: every refusal that
    /// is not retried is one of these.
    pub fn dead_letters(&self) -> bool {
        !self.is_retryable()
    }

    /// A stable snake_case code (the `Reason` of the metrics): `status_<code>` for an
    /// answer with a common status ([`NAMED_STATUSES`]), `status_<n>xx` for any other from
    /// 100 to 599 and `status_other` above (each
    /// value is a metric of its own, billed: a receiver's odd statuses must not each make
    /// one), else `connect`, `timeout`, `request`, `malformed`, `no_time_left`, `no_signing_secret`, `panicked`,
    /// `dead_letter`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            NotifyError::Gone => "status_410",
            NotifyError::Status { status, .. } => status_code(*status),
            NotifyError::Post(PostError::Connect(_)) => "connect",
            NotifyError::Post(PostError::Timeout(_)) => "timeout",
            NotifyError::Post(PostError::Request(_)) => "request",
            NotifyError::Malformed(_) => "malformed",
            NotifyError::NoTimeLeft => "no_time_left",
            NotifyError::NoSigningSecret => "no_signing_secret",
            NotifyError::Panicked => stemvault_vault::panic::PANICKED,
            NotifyError::DeadLetter { .. } => "dead_letter",
        }
    }
}

/// What an answer's status means: `None` for a 2xx (delivered), else the error.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Option<NotifyError> {
    match status {
        200..=299 => None,
        410 => Some(NotifyError::Gone),
        _ => Some(NotifyError::Status { status, retry_after }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hundreds_deliver_410_refuses_the_rest_retries() {
        for ok in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(ok, None), None, "{ok}");
        }
        let e = classify_status(410, None).unwrap();
        assert!(!e.is_retryable());
        assert!(e.dead_letters(), "a 410 goes to the dead-letter queue");
        assert_eq!(e, NotifyError::Gone);
        let client_errors = [400, 401, 403, 404, 405, 409, 413, 422, 425, 451, 499];
        for retried in client_errors.into_iter().chain([408, 429, 500, 502, 503, 504, 599, 301, 302, 307, 308, 100]) {
            assert!(classify_status(retried, None).unwrap().is_retryable(), "{retried}");
        }
        let s = Duration::from_secs(7);
        assert_eq!(classify_status(429, Some(s)), Some(NotifyError::Status { status: 429, retry_after: Some(s) }));
    }

    #[test]
    fn reason_codes_are_stable() {
        assert_eq!(NotifyError::Gone.reason_code(), "status_410");
        assert_eq!(NotifyError::Status { status: 503, retry_after: None }.reason_code(), "status_503");
        let grouped = |status| NotifyError::Status { status, retry_after: None }.reason_code();
        assert_eq!(
            [grouped(418), grouped(599), grouped(304), grouped(103)],
            ["status_4xx", "status_5xx", "status_3xx", "status_1xx"]
        );
        assert_eq!((grouped(600), grouped(999)), ("status_other", "status_other"));
        // Each named status by its own code, and only those.
        for status in 100..=599 {
            let own = format!("status_{status}");
            assert_eq!(grouped(status) == own, NAMED_STATUSES.iter().any(|(named, _)| *named == status), "{status}");
        }
        let reasons: std::collections::HashSet<&str> = (100..=999).map(grouped).collect();
        assert!(reasons.len() <= NAMED_STATUSES.len() + 6, "{} metric values", reasons.len());
        assert_eq!(NotifyError::Post(PostError::Timeout("x".into())).reason_code(), "timeout");
        assert_eq!(NotifyError::Post(PostError::Connect("x".into())).reason_code(), "connect");
        assert_eq!(NotifyError::Malformed("x".into()).reason_code(), "malformed");
        assert!(!NotifyError::Malformed("x".into()).is_retryable());
        assert!(NotifyError::Malformed("x".into()).dead_letters(), "kept for a redrive by a build that reads it");
        let unmoved = NotifyError::DeadLetter { refusal: Box::new(NotifyError::Gone), error: "throttled".into() };
        assert!(unmoved.is_retryable() && !unmoved.dead_letters());
        assert_eq!(unmoved.reason_code(), "dead_letter");
        assert!(NotifyError::Post(PostError::Request("x".into())).is_retryable());
        assert!(NotifyError::Panicked.is_retryable());
        assert!(NotifyError::NoTimeLeft.is_retryable());
        assert!(NotifyError::NoSigningSecret.is_retryable());
        assert_eq!(NotifyError::NoSigningSecret.reason_code(), "no_signing_secret");
    }
}

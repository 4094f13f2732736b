//! What can go wrong with one message, and whether trying again later may help.
//!
//! Retryable: the message goes back to the queue with a growing delay. Permanent: the file is
//! marked `failed` with the error's text as the reason (or, for a message that names nothing
//! usable, the message is dropped) and the message is deleted. Error texts never contain a
//! URL's query string (signed URLs carry their signature there).

use std::time::Duration;

use stemvault_vault::download::DropReason;
use stemvault_vault::events::PublishError;
use stemvault_vault::reason::{COPY_TOO_SLOW, FailureCode, SOURCE_ANSWERED};
use stemvault_vault::{LeaseEnd, StoreError};

use crate::source_policy::Refusal;

/// Fetching the source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("redirect ({status}) without a usable Location header")]
    BadRedirect { status: u16 },
    /// `retry_after`: what the source's `Retry-After` asked for, on a 429 or 503.
    #[error("{SOURCE_ANSWERED}{status}{}", reason_suffix(.reason))]
    Status { status: u16, reason: String, retry_after: Option<Duration> },
    #[error("could not connect to the source: {0}")]
    Connect(String),
    #[error("the source timed out: {0}")]
    Timeout(String),
    #[error("reading the source failed: {0}")]
    Body(String),
    /// A success with no bytes: no audio, image, video or MIDI file is empty, so this is a
    /// source not ready (or failing) rather than the file.
    #[error("the source answered with an empty body")]
    Empty,
    /// A 200 that says it is a page or an error document, not the file ([`crate::media`]): a
    /// host answering a missing or unready file with a success. The file may come later.
    #[error("the source answered 200 with Content-Type {content_type}, not the file")]
    NotTheFile { content_type: String },
    /// A 200 whose first bytes are a page or an error document ([`crate::media::page_by_its_bytes`]),
    /// whatever its Content-Type said (none, or `application/octet-stream`). Retried too.
    #[error("the source answered 200 with a body that starts as {kind}, not the file")]
    NotTheFileByItsBytes { kind: &'static str },
    /// An HTTP/1 answer with neither a declared length nor chunked framing: its end is only
    /// the connection's close, so a body cut short could not be told from a whole one. Not
    /// read, but retried: another attempt (another edge, a proxy) may frame it.
    #[error("the answer declares neither its length nor chunked framing, so a body cut short could not be told apart")]
    Unframed,
    /// A 200 whose content coding is a compression (`identity` was asked for): its bytes are
    /// the file compressed, not the file. Not read, but retried: another answer may be the
    /// file's own.
    #[error("the source answered Content-Encoding {coding}, not the file's own bytes (asked for identity)")]
    Encoded { coding: String },
    #[error("the source sent {got} bytes but its Content-Length said {expected}")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("the file is larger than the {limit}-byte limit (MAX_FILE_BYTES){}", declared_suffix(*.declared))]
    TooLarge { limit: u64, declared: Option<u64> },
    /// The source answered `status` (expired) and the provider could not give a fresh link
    /// this time, for a reason that may pass (`why`): asked again on the next attempt.
    #[error("{SOURCE_ANSWERED}{status}{}; no fresh link yet: {why}", reason_suffix(.reason))]
    /// `retry_after`: what a fresh link that answered 429 or 503 asked for.
    NoFreshLinkYet { status: u16, reason: String, why: String, retry_after: Option<Duration> },
}

/// ` <reason>`, or nothing; a reason that is only a note (`; ...`: a status without a reason
/// phrase, as 441 is, failed with what its fresh link came to) follows the status directly.
fn reason_suffix(reason: &str) -> String {
    match reason {
        "" => String::new(),
        note if note.starts_with("; ") => note.to_owned(),
        phrase => format!(" {phrase}"),
    }
}

fn declared_suffix(declared: Option<u64>) -> String {
    declared.map(|d| format!("; Content-Length is {d}")).unwrap_or_default()
}

impl FetchError {
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => status_is_retryable(*status),
            FetchError::Connect(_)
            | FetchError::Timeout(_)
            | FetchError::Body(_)
            | FetchError::Empty
            | FetchError::NotTheFile { .. }
            | FetchError::NotTheFileByItsBytes { .. }
            | FetchError::Unframed
            | FetchError::Encoded { .. }
            | FetchError::LengthMismatch { .. }
            | FetchError::NoFreshLinkYet { .. } => true,
            FetchError::Refused(_)
            | FetchError::TooManyRedirects(_)
            | FetchError::BadRedirect { .. }
            | FetchError::TooLarge { .. } => false,
        }
    }
}

/// 408, 421, 425, 429 and 5xx may succeed later, and so may a success other than 200 (202 "being
/// prepared", 204, 206); any other error status will not (an expired URL may answer 403, 404,
/// 410 or a non-standard code such as 441).
pub fn status_is_retryable(status: u16) -> bool {
    passing_on_the_way(status) || status == 429 || (201..=299).contains(&status) || (500..=599).contains(&status)
}

/// A request that timed out or came too early on its way (408, 425), or that a shared HTTP/2
/// connection took to a server not serving its host (421): a gateway's or a CDN's answer,
/// which the same request may pass later, on a new connection. The source's and the fresh
/// link's alike.
pub fn passing_on_the_way(status: u16) -> bool {
    matches!(status, 408 | 421 | 425)
}

pub use stemvault_vault::StorageError;

/// Copying one file failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{COPY_TOO_SLOW}")]
    OutOfTime,
}

/// What an expired URL answers ([`stemvault_vault::reconcile::EXPIRED_STATUSES`]): such a file
/// fails as expired (`source_expired`), is first asked a fresh link for
/// ([`crate::fresh_link`]), and has its task watched for a new URL
/// (`stemvault_vault::reconcile::failed_by_expiry` reads the same statuses from its reason).
pub fn reads_as_expired(status: u16) -> bool {
    stemvault_vault::reconcile::EXPIRED_STATUSES.contains(&status)
}

impl CopyError {
    /// Why the file failed, when it fails for this ([`FailureCode`]: the record's
    /// `error_code`, the `Reason` of the `FilesFailed` metric): `source_expired` (403, 404,
    /// 410 or 441: what an expired URL answers), `source_status` (any other final status),
    /// `source_refused` (not an allowed source, or a non-public address), `source_redirect`
    /// (too many redirects, or one without a usable Location), `too_large` (over
    /// `MAX_FILE_BYTES`), `s3_rejected` (the bucket refused it for good); what is retried
    /// fails only when the message's receives run out, `dead_lettered`.
    pub fn failure_code(&self) -> FailureCode {
        match self {
            CopyError::Fetch(FetchError::Status { status, .. }) if reads_as_expired(*status) => {
                FailureCode::SourceExpired
            }
            CopyError::Fetch(FetchError::Status { status, .. }) if !status_is_retryable(*status) => {
                FailureCode::SourceStatus
            }
            CopyError::Fetch(FetchError::Refused(_)) => FailureCode::SourceRefused,
            CopyError::Fetch(FetchError::TooManyRedirects(_) | FetchError::BadRedirect { .. }) => {
                FailureCode::SourceRedirect
            }
            CopyError::Fetch(FetchError::TooLarge { .. }) => FailureCode::TooLarge,
            CopyError::Storage(e) if !e.is_retryable() => FailureCode::S3Rejected,
            _ => FailureCode::DeadLettered,
        }
    }

    /// The source answered as an expired URL does ([`reads_as_expired`]), whatever a fresh
    /// link came to.
    pub fn is_expiry(&self) -> bool {
        matches!(self, CopyError::Fetch(FetchError::Status { status, .. }) if reads_as_expired(*status))
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            CopyError::Fetch(e) => e.is_retryable(),
            CopyError::Storage(e) => e.is_retryable(),
            CopyError::OutOfTime => true,
        }
    }
}

/// Handling one message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{}", .0.as_str())]
    Dropped(DropReason),
    #[error(
        "another worker is copying the file (its claim runs until {})",
        lease_until.timestamp()
    )]
    Busy { lease_until: LeaseEnd },
    #[error("the file's claim was taken over or its item changed while copying")]
    LostClaim,
    /// The manifest under its key kept changing between read and write (or a refused claim
    /// returned an item that looked claimable): try again later.
    #[error("the task's manifest or file item kept changing; gave up for now")]
    Contention,
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// `Task Vaulted` was not published: the task is left unsettled for the retry.
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the invocation's deadline is too close to start")]
    NoTimeLeft,
    /// The settle check, or a message's handling (a table or S3 call that did not answer),
    /// was still running when the invocation had to answer.
    #[error("ran out of the invocation's time")]
    OutOfTime,
    /// Every file of the task is settled, but another worker settled its last file and
    /// settles it: this check is deferred to the message's redelivery, in case that worker
    /// did not see this one's file settled.
    #[error("the worker that settled the task's last file settles it; checking again later")]
    SettleDeferred,
    #[error("the handler panicked (the panic's own line says where)")]
    Panicked,
}

impl DownloadError {
    /// What part of a settle check failed, the `Reason` of `SettleChecksFailed`: the task
    /// table (`table`), the bucket (`bucket`: the manifest), the event bus (`publish`), a
    /// manifest that kept changing (`contention`), the invocation's time (`out_of_time`), or a
    /// bug (`panicked`).
    pub fn settle_failure_reason(&self) -> &'static str {
        match self {
            DownloadError::Store(_) => "table",
            DownloadError::Storage(_) => "bucket",
            DownloadError::Publish(_) => "publish",
            DownloadError::Contention => "contention",
            DownloadError::OutOfTime => "out_of_time",
            DownloadError::Panicked => stemvault_vault::panic::PANICKED,
            // None of these comes from a settle check.
            DownloadError::Malformed(_)
            | DownloadError::Dropped(_)
            | DownloadError::Busy { .. }
            | DownloadError::LostClaim
            | DownloadError::Copy(_)
            | DownloadError::NoTimeLeft
            | DownloadError::SettleDeferred => "other",
        }
    }

    /// Whether the message goes back to the queue. Every task-table or bucket failure past the
    /// copy does (the manifest's, a settle's), even one that a retry cannot mend (a record that
    /// no longer decodes, a manifest S3 refuses): its message ends in the dead-letter queue,
    /// where people see it, instead of being dropped. (A copy S3 refuses fails the file.)
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::Malformed(_) | DownloadError::Dropped(_) => false,
            DownloadError::Copy(e) => e.is_retryable(),
            DownloadError::Publish(e) => e.is_retryable(),
            DownloadError::Busy { .. }
            | DownloadError::LostClaim
            | DownloadError::Contention
            | DownloadError::Store(_)
            | DownloadError::Storage(_)
            | DownloadError::NoTimeLeft
            | DownloadError::OutOfTime
            | DownloadError::SettleDeferred
            | DownloadError::Panicked => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> FetchError {
        FetchError::Status { status: code, reason: String::new(), retry_after: None }
    }

    #[test]
    fn statuses_are_classified() {
        for code in [408, 421, 425, 429, 500, 502, 503, 504, 599, 202, 204, 206] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 441, 451, 300, 304] {
            assert!(!status(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn network_trouble_is_retryable_and_policy_is_not() {
        assert!(FetchError::Connect("refused".into()).is_retryable());
        assert!(FetchError::Timeout("idle".into()).is_retryable());
        assert!(FetchError::Body("reset".into()).is_retryable());
        assert!(FetchError::LengthMismatch { expected: 10, got: 9 }.is_retryable());
        assert!(!FetchError::Refused(Refusal::Refused("x".into())).is_retryable());
        assert!(!FetchError::Refused(Refusal::BadUrl("x".into())).is_retryable());
        assert!(!FetchError::TooManyRedirects(5).is_retryable());
        assert!(!FetchError::TooLarge { limit: 1, declared: None }.is_retryable());
        assert!(CopyError::OutOfTime.is_retryable());
        assert!(CopyError::Storage(StorageError::transient("PutObject", "x")).is_retryable());
        let refused = StorageError { operation: "PutObject", message: "400 KeyTooLongError".into(), permanent: true };
        assert!(!CopyError::Storage(refused).is_retryable());
        assert!(!DownloadError::Copy(CopyError::Fetch(status(404))).is_retryable());
        assert!(DownloadError::Copy(CopyError::Fetch(status(503))).is_retryable());
        assert!(!DownloadError::Malformed("x".into()).is_retryable());
        assert!(!DownloadError::Dropped(DropReason::TaskMissing).is_retryable());
        assert!(DownloadError::Busy { lease_until: LeaseEnd::from_unix_seconds(1) }.is_retryable());
        let busy = DownloadError::Busy { lease_until: LeaseEnd::from_unix_seconds(1_800_000_000) }.to_string();
        assert!(busy.ends_with("(its claim runs until 2027-01-15T08:00:00.000Z)"), "{busy}");
        assert!(DownloadError::Store(StoreError::Unavailable("x".into())).is_retryable());
        assert!(DownloadError::Store(StoreError::Malformed("x".into())).is_retryable());
    }

    #[test]
    fn every_permanent_failure_has_its_own_reason_code() {
        let code = |e: FetchError| CopyError::Fetch(e).failure_code().as_str();
        for status in [403, 404, 410, 441] {
            assert_eq!(code(self::status(status)), "source_expired", "{status}");
        }
        for status in [400, 401, 451, 304] {
            assert_eq!(code(self::status(status)), "source_status", "{status}");
        }
        assert_eq!(code(FetchError::Refused(Refusal::Refused("private".into()))), "source_refused");
        assert_eq!(code(FetchError::Refused(Refusal::BadUrl("x".into()))), "source_refused");
        assert_eq!(code(FetchError::TooManyRedirects(5)), "source_redirect");
        assert_eq!(code(FetchError::BadRedirect { status: 302 }), "source_redirect");
        assert_eq!(code(FetchError::TooLarge { limit: 1, declared: None }), "too_large");
        let refused = StorageError { operation: "PutObject", message: "400".into(), permanent: true };
        assert_eq!(CopyError::Storage(refused).failure_code(), FailureCode::S3Rejected);
        for transient in
            [CopyError::OutOfTime, CopyError::Fetch(status(503)), CopyError::Storage(StorageError::transient("x", "y"))]
        {
            assert!(transient.is_retryable());
            assert_eq!(transient.failure_code(), FailureCode::DeadLettered, "fails only when its receives run out");
        }
        // Every code a file failed for good at once can have is its own.
        for permanent in [
            status(403),
            status(400),
            FetchError::TooManyRedirects(1),
            FetchError::TooLarge { limit: 1, declared: None },
        ] {
            assert!(!permanent.is_retryable());
            assert_ne!(code(permanent), "dead_lettered");
        }
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            FetchError::Status { status: 403, reason: "Forbidden".into(), retry_after: None }.to_string(),
            "source answered 403 Forbidden"
        );
        assert_eq!(status(441).to_string(), "source answered 441");
        assert_eq!(
            FetchError::TooLarge { limit: 10, declared: Some(11) }.to_string(),
            "the file is larger than the 10-byte limit (MAX_FILE_BYTES); Content-Length is 11"
        );
        let refused = StorageError {
            operation: "PutObject",
            message: "400 KeyTooLongError: Your key is too long".into(),
            permanent: true,
        };
        assert_eq!(refused.to_string(), "S3 PutObject refused the file: 400 KeyTooLongError: Your key is too long");
        assert_eq!(StorageError::transient("UploadPart", "timeout").to_string(), "S3 UploadPart failed: timeout");
    }
}

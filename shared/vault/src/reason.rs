//! The words of a file's failure reason that the downloader writes and the reconciler reads
//! back: whether the URL expired ([`crate::reconcile::failed_by_expiry`]) and whether a fresh
//! link was refused for a reason the user may fix ([`crate::reconcile::awaits_retry`]). One
//! place for both sides, so a change of wording cannot part them.
//!
//! A reason reads `[dead_lettered: ]source answered <status>[ <phrase>][; <note>]...`, or
//! another error's text (`dead_lettered: ` reasons end in ` (receive <n>, the last)`), where a
//! note may be `no fresh link: the provider answered <code> ...`.

/// Why a file failed for good, as a program matches it (its `error` says more, in words; the
/// words may change, the codes do not): the `Reason` of the download's `FilesFailed` metric
/// too, and `error_code` in the file item, the events, the manifest and `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The source answered as an expired URL does (403, 404, 410, 441), and no fresh link
    /// copied it.
    SourceExpired,
    /// The source answered another status no retry changes (400, 405, ...).
    SourceStatus,
    /// `ALLOWED_SOURCE_HOSTS` does not allow the URL (or a redirect on its way).
    SourceRefused,
    /// Too many redirects, or one without a usable `Location`.
    SourceRedirect,
    /// Over `MAX_FILE_BYTES`.
    TooLarge,
    /// S3 refused the copy in a way no retry mends (an invalid argument, say).
    S3Rejected,
    /// What failed on every receive failed retryably (a source or S3 outage, a copy slower
    /// than an invocation, no fresh link in time): the message's receives ran out.
    DeadLettered,
    /// A code of a newer build, read by this one.
    #[serde(other)]
    Other,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::SourceExpired => "source_expired",
            FailureCode::SourceStatus => "source_status",
            FailureCode::SourceRefused => "source_refused",
            FailureCode::SourceRedirect => "source_redirect",
            FailureCode::TooLarge => "too_large",
            FailureCode::S3Rejected => "s3_rejected",
            FailureCode::DeadLettered => DEAD_LETTERED,
            FailureCode::Other => "other",
        }
    }
}

/// The start of the reason of a file failed on its message's last receive (followed by
/// `: ` and the last error: [`dead_lettered`]), and the `Reason` of its `FilesFailed` metric.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// What comes between a reason and a note on it ([`noted`]).
const NOTE: &str = "; ";

/// What a failure by the source's HTTP status starts with, its status next.
pub const SOURCE_ANSWERED: &str = "source answered ";

/// The note (after `; `) that follows an expired source's status and phrase when the provider
/// gave no fresh link, the refresh's error next. (Not `no fresh link yet: `: that one may come.)
pub const NO_FRESH_LINK: &str = "no fresh link: ";

/// What a refresh the provider refused starts with, its code next.
pub const PROVIDER_ANSWERED: &str = "the provider answered ";

/// The error of a copy slower than an invocation: tried again, it would take the same again.
pub const COPY_TOO_SLOW: &str = "the copy did not finish before the invocation's deadline";

/// What the reason of a file whose URL (or a redirect on its way) `ALLOWED_SOURCE_HOSTS` does
/// not allow starts with, why next: a host or origin not listed, or a host at a non-public
/// address whose exact origin is not listed.
pub const REFUSED_SOURCE: &str = "refused source: ";

/// Whether the file failed, at once, because `ALLOWED_SOURCE_HOSTS` does not allow its URL:
/// the operator may list it ([`crate::reconcile::awaits_retry`]).
pub fn refused_source(reason: &str) -> bool {
    reason.starts_with(REFUSED_SOURCE)
}

/// The reason of a file failed on its message's last receive, `last_error` what failed then.
pub fn dead_lettered(last_error: &str) -> String {
    format!("{DEAD_LETTERED}: {last_error}")
}

/// `reason` with `note` on it (what a fresh link came to, say).
pub fn noted(reason: &str, note: &str) -> String {
    format!("{reason}{NOTE}{note}")
}

/// What failed on the last receive, for a [`dead_lettered`] reason.
fn after_dead_lettered(reason: &str) -> Option<&str> {
    reason.strip_prefix(DEAD_LETTERED)?.strip_prefix(": ")
}

/// The reason without its [`DEAD_LETTERED`] start.
fn last_error(reason: &str) -> &str {
    after_dead_lettered(reason).unwrap_or(reason)
}

/// Whether the reason was recorded on a message's last receive.
pub fn is_dead_lettered(reason: &str) -> bool {
    after_dead_lettered(reason).is_some()
}

/// The source's HTTP status the file failed by, on the last receive or at once.
pub fn source_status(reason: &str) -> Option<u16> {
    let rest = last_error(reason).strip_prefix(SOURCE_ANSWERED)?;
    rest.get(..3)?.parse().ok()
}

/// The code the provider refused a fresh link with, when the file failed at once for that
/// (not on its last receive: a refusal then is not what it failed by).
pub fn fresh_link_refused(reason: &str) -> Option<i64> {
    if is_dead_lettered(reason) {
        return None;
    }
    // The note's, not words of the same in a source's reason phrase before it.
    let (at, _) = reason.match_indices(NO_FRESH_LINK).find(|(at, _)| reason[..*at].ends_with(NOTE))?;
    let code = reason[at + NO_FRESH_LINK.len()..].strip_prefix(PROVIDER_ANSWERED)?;
    let digits = code.find(|c: char| !c.is_ascii_digit()).unwrap_or(code.len());
    code[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    /// Its stored and shown name is `as_str`'s (the metric's `Reason`); one this build does
    /// not know reads as `Other`, not as a record it cannot read.
    #[test]
    fn a_failure_code_is_stored_by_its_name_and_an_unknown_one_reads_as_other() {
        use super::FailureCode::{self, *};
        for code in [SourceExpired, SourceStatus, SourceRefused, SourceRedirect, TooLarge, S3Rejected, DeadLettered] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str(), "{code:?}");
            assert_eq!(serde_json::from_value::<FailureCode>(code.as_str().into()).unwrap(), code);
        }
        assert_eq!(serde_json::from_value::<FailureCode>("a_new_code".into()).unwrap(), Other);
    }

    use super::*;

    #[test]
    fn reads_the_source_status_with_or_without_the_dead_letter_start() {
        assert_eq!(source_status("source answered 410 Gone"), Some(410));
        assert_eq!(source_status("source answered 441; no fresh link: x"), Some(441));
        assert_eq!(source_status("dead_lettered: source answered 503 Service Unavailable (receive 8)"), Some(503));
        assert_eq!(source_status("could not connect to the source: refused"), None);
        assert_eq!(source_status("source answered 4"), None);
        assert_eq!(source_status("dead_lettered source answered 403"), None, "the start is `dead_lettered: `");
    }

    #[test]
    fn reads_the_refusal_of_a_fresh_link() {
        let refused = "source answered 403 Forbidden; no fresh link: the provider answered 402 (insufficient credits)";
        assert_eq!(fresh_link_refused(refused), Some(402));
        assert_eq!(fresh_link_refused("source answered 441; no fresh link: the provider answered 401"), Some(401));
        // A source's phrase holding the words is no note.
        let phrase =
            "source answered 403 no fresh link: the provider answered 401; no fresh link: the provider answered 422";
        assert_eq!(fresh_link_refused(phrase), Some(422));
        assert_eq!(noted("source answered 410 Gone", "no fresh link: x"), "source answered 410 Gone; no fresh link: x");
        assert_eq!(dead_lettered("source answered 503"), "dead_lettered: source answered 503");
        assert_eq!(fresh_link_refused(&format!("{DEAD_LETTERED}: {refused}")), None);
        assert_eq!(
            fresh_link_refused("source answered 403 Forbidden; no fresh link yet: the provider answered 503"),
            None
        );
        assert_eq!(fresh_link_refused("source answered 403 Forbidden; no fresh link: the fresh link: refused"), None);
        assert!(is_dead_lettered("dead_lettered: source answered 503"));
        assert!(!is_dead_lettered("source answered 503"));
    }
}

//! S3's failures as [`StorageError`]: permanent when no retry changes the answer, for every
//! function's S3 ports (the download's copies and manifests, the callback archive, the
//! parked callbacks).

use crate::sdk_error::sdk_error_text;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use stemvault_vault::StorageError;

/// An S3 failure, permanent when S3 refused the request in a way no retry changes
/// ([`s3_refusal_is_permanent`]): then the message is S3's own (`400 KeyTooLongError: Your
/// key is too long`), as it is recorded as the file's reason.
pub fn storage_error<E>(operation: &'static str, e: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if s3_refusal_is_permanent(status, e.code()) {
        let code = e.code().unwrap_or_default();
        let detail = e.message().map(|m| format!(": {m}")).unwrap_or_default();
        let message = format!("{} {code}{detail}", status.unwrap_or_default());
        return StorageError { operation, message, permanent: true };
    }
    StorageError::transient(operation, sdk_error_text(&e))
}

/// Error codes S3 may send with a 4xx that a later attempt can get past: throttling, timeouts,
/// expired or refreshed credentials, a body damaged or cut short on the way, clock skew, a
/// multipart upload's parts not as sent (a new upload sends them again), and
/// a setup an operator fixes (a request signed for another region, a bucket key in KMS
/// disabled or pending: every code `KMS.`-prefixed), whose files should wait in the queue
/// rather than fail for good.
const RETRYABLE_S3_CODES: &[&str] = &[
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestThrottled",
    "ExpiredToken",
    "TokenRefreshRequired",
    "RequestTimeTooSkewed",
    "BadDigest",
    "IncompleteBody",
    "XAmzContentSHA256Mismatch",
    "AuthorizationHeaderMalformed",
    "InvalidToken",
    "InvalidPart",
    "InvalidPartOrder",
];

/// Whether S3 refused a request for good, given the HTTP status of its answer (None: no
/// answer at all) and its error code: a 4xx that no retry can fix (`KeyTooLongError`,
/// `InvalidArgument`, `EntityTooLarge`, ...: the same request gets the same answer), unless
/// its code is one of throttling, timeout, credentials, a damaged body or a setup to fix. Kept retryable on
/// purpose: 401/403 (permissions, which an operator fixes), 404 (a missing bucket or a lost
/// multipart upload), 408, 409 (a conflicting operation in progress), 412 (a condition, the
/// caller's to handle) and 429; their messages end in the dead-letter queue, which alarms.
/// And an answer without a code: S3 names what it refuses for good, and one whose body could
/// not be read (a `400 RequestTimeout` whose connection S3 closed, say) may be anything.
pub fn s3_refusal_is_permanent(status: Option<u16>, code: Option<&str>) -> bool {
    let Some(status) = status else { return false };
    let Some(code) = code.filter(|code| !code.is_empty()) else { return false };
    if RETRYABLE_S3_CODES.contains(&code) || code.starts_with("KMS.") {
        return false;
    }
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 408 | 409 | 412 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_refusals_that_no_retry_fixes_are_permanent() {
        for (status, code) in [
            (400, "KeyTooLongError"),
            (400, "InvalidArgument"),
            (400, "EntityTooLarge"),
            (400, "InvalidRequest"),
            (400, "MalformedXML"),
            (411, "MissingContentLength"),
            (413, "RequestEntityTooLarge"),
            (414, "RequestURITooLong"),
        ] {
            assert!(s3_refusal_is_permanent(Some(status), Some(code)), "{status} {code}");
        }
        // No code read: perhaps a timeout whose answer was cut short.
        assert!(!s3_refusal_is_permanent(Some(400), None));
        assert!(!s3_refusal_is_permanent(Some(400), Some("")));
        for (status, code) in [
            (400, "RequestTimeout"),
            (400, "SlowDown"),
            (400, "Throttling"),
            (400, "ThrottlingException"),
            (400, "RequestLimitExceeded"),
            (400, "TooManyRequests"),
            (400, "RequestThrottled"),
            (400, "ExpiredToken"),
            (400, "TokenRefreshRequired"),
            (400, "RequestTimeTooSkewed"),
            (400, "BadDigest"),
            (400, "IncompleteBody"),
            (400, "XAmzContentSHA256Mismatch"),
            (400, "AuthorizationHeaderMalformed"),
            (400, "InvalidToken"),
            (400, "InvalidPart"),
            (400, "InvalidPartOrder"),
            (400, "KMS.DisabledException"),
            (400, "KMS.KMSInvalidStateException"),
            (401, "Unauthorized"),
            (403, "AccessDenied"),
            (403, "RequestTimeTooSkewed"),
            (404, "NoSuchBucket"),
            (404, "NoSuchUpload"),
            (408, "RequestTimeout"),
            (409, "OperationAborted"),
            (412, "PreconditionFailed"),
            (429, "TooManyRequests"),
            (500, "InternalError"),
            (503, "SlowDown"),
            (301, "PermanentRedirect"),
        ] {
            assert!(!s3_refusal_is_permanent(Some(status), Some(code)), "{status} {code}");
        }
        assert!(!s3_refusal_is_permanent(None, None), "no answer (a timeout, a dropped connection)");
    }
}

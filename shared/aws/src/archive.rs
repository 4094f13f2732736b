//! The callback bodies in the vault bucket: what ingest and the reconciler archive under
//! `tasks/<task_id>/callbacks/` (with results too large for the task item under
//! `tasks/<task_id>/details/`), and ingest parks under `parked/`, one conditional PutObject
//! each: every key names its body's SHA-256, so an object there is this body.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryPartition;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use stemvault_vault::StorageError;
use stemvault_vault::accept::ArchiveBody;

use crate::s3_error::storage_error;

/// The vault bucket, for callback bodies.
#[derive(Debug, Clone)]
pub struct BodyArchive {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl BodyArchive {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> BodyArchive {
        BodyArchive { s3, bucket: bucket.into() }
    }

    /// A PutObject of a JSON body under `key`, to send.
    fn put(&self, key: &str, body: &[u8]) -> PutObjectFluentBuilder {
        let body = ByteStream::from(body.to_vec());
        self.s3.put_object().bucket(&self.bucket).key(key).content_type("application/json").body(body)
    }

    /// Park a callback body under `key` unless it is parked already (the first park's
    /// LastModified dates the callback when replayed).
    pub async fn park(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.put_new(key, body, Some(park_config()), "PutObject (park)").await
    }

    /// Put `body` under `key` unless an object is there (`If-None-Match: *`): a 412 is that
    /// object, the same body (every key here names its body's SHA-256), so a duplicate
    /// delivery or a repeated poll leaves no noncurrent version in the versioned bucket. A 409
    /// (a concurrent put of the same key, which S3 asks to retry) is tried again after a pause.
    async fn put_new(
        &self,
        key: &str,
        body: &[u8],
        config: Option<aws_sdk_s3::config::Builder>,
        operation: &'static str,
    ) -> Result<(), StorageError> {
        let mut attempt = 1;
        loop {
            let put = self.put(key, body).if_none_match("*");
            let sent = match &config {
                Some(config) => put.customize().config_override(config.clone()).send().await,
                None => put.send().await,
            };
            let Err(e) = sent else { return Ok(()) };
            match refused_put(e.raw_response().map(|r| r.status().as_u16())) {
                RefusedPut::AlreadyThere => return Ok(()),
                RefusedPut::Concurrent if attempt < CONFLICT_ATTEMPTS => {
                    // The other write is still under way: give it a moment to end.
                    tokio::time::sleep(CONFLICT_PAUSE * attempt).await;
                    attempt += 1;
                }
                _ => return Err(storage_error(operation, e)),
            }
        }
    }
}

/// How long one attempt of a park may take (its connection too). Ingest parks within 2 s
/// (`stemvault_ingest::domain::PARK_TIMEOUT`): with the SDK's 3 s attempt timeout (and up to
/// 1 s before a retry) a stalled first attempt used all of it, and the callback was answered
/// 503 where a second attempt would have kept it. A body of at most 4 MiB takes milliseconds.
/// The archive's puts (within recording's own deadline) keep the SDK's.
pub const PARK_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(900);

/// The most a park waits before its first retry (the SDK's standard retries, jittered).
pub const PARK_FIRST_RETRY_WITHIN: Duration = crate::QUICK_FIRST_RETRY;

/// The retry partition parks retry in: their own token bucket. The SDK's retry quota is per
/// partition and process, and S3 calls that timed out (the archive's, when S3 is slow: what
/// makes ingest park) would otherwise use it up, leaving the park one attempt.
pub const PARK_RETRY_PARTITION: &str = "stemvault-park";

fn park_config() -> aws_sdk_s3::config::Builder {
    let (timeouts, retries) = crate::quick_attempts(PARK_ATTEMPT_TIMEOUT);
    aws_sdk_s3::config::Builder::default()
        .timeout_config(timeouts)
        .retry_config(retries)
        .retry_partition(RetryPartition::new(PARK_RETRY_PARTITION))
}

/// Conditional puts tried when S3 answers 409 (bounded: ingest's park and recording have
/// deadlines too).
const CONFLICT_ATTEMPTS: u32 = 3;

/// The pause before the next put after the n-th 409: n times this (50, then 100 ms).
const CONFLICT_PAUSE: Duration = Duration::from_millis(50);

/// Why S3 refused a conditional put, by its HTTP status (None: no answer).
#[derive(Debug, PartialEq, Eq)]
enum RefusedPut {
    /// 412: a copy is there.
    AlreadyThere,
    /// 409 ConditionalRequestConflict: another write of the key was under way; try again.
    Concurrent,
    Failed,
}

fn refused_put(status: Option<u16>) -> RefusedPut {
    match status {
        Some(412) => RefusedPut::AlreadyThere,
        Some(409) => RefusedPut::Concurrent,
        _ => RefusedPut::Failed,
    }
}

impl ArchiveBody for BodyArchive {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.put_new(key, body, None, "PutObject").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A park S3 answers 409 ConditionalRequestConflict (a concurrent conditional write of the
    /// same key; S3 says to retry) is tried again after a pause, a bounded number of times; a
    /// 412 is the copy already parked; a 400 naming a refusal is refused for good, one whose
    /// code cannot be read (a body cut short) is not; a first attempt that stalls is given up
    /// for a second within the park's attempt timeout. (moto never answers 409: scripted.)
    #[tokio::test(start_paused = true)]
    async fn a_park_refused_by_a_concurrent_write_is_tried_again_a_bounded_number_of_times() {
        use crate::test_http::{Scripted::*, sdk_answering};
        const REFUSED: &[u8] =
            b"<?xml version=\"1.0\"?><Error><Code>InvalidArgument</Code><Message>m</Message></Error>";
        let ok = Answer(200, b"");
        let cases = [
            ("once", vec![Answer(409, b""), ok], Ok(()), 2),
            ("twice", vec![Answer(409, b""), Answer(409, b""), ok], Ok(()), 3),
            // Err(whether a later park may succeed).
            ("always", vec![Answer(409, b"")], Err(true), 3),
            ("there", vec![Answer(412, b"")], Ok(()), 1),
            ("refused", vec![Answer(400, REFUSED)], Err(false), 1),
            ("unread", vec![Answer(400, b"")], Err(true), 1),
            ("stalled", vec![Stall, ok], Ok(()), 2),
        ];
        for (name, script, expected, requests) in cases {
            let (sdk, calls) = sdk_answering(script);
            let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build();
            let archive = BodyArchive::new(aws_sdk_s3::Client::from_conf(s3), "vault");
            let started = tokio::time::Instant::now();
            // Bounded, so a stall never given up fails (in virtual time, at once) rather than hangs.
            let key = format!("parked/{name}.json");
            let parking = archive.park(&key, b"{}");
            let parked = tokio::time::timeout(Duration::from_secs(60), parking).await.expect("given up in time");
            assert_eq!(parked.as_ref().map(|_| ()).map_err(|e| e.is_retryable()), expected, "{name}: {parked:?}");
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), requests, "{name}");
            // Within ingest's park bound, stall and pauses included (paused time: no race).
            assert!(started.elapsed() < Duration::from_secs(2), "{name}: {:?}", started.elapsed());
        }
    }

    /// Parks retry apart from every other S3 call of the process.
    #[test]
    fn parks_have_their_own_retry_quota() {
        let config = park_config().build();
        let partition = config.retry_partition().map(ToString::to_string);
        assert_eq!(partition.as_deref(), Some(PARK_RETRY_PARTITION));
    }

    #[test]
    fn a_refused_put_is_done_when_a_copy_is_there_and_tried_again_on_a_conflict() {
        assert_eq!(refused_put(Some(412)), RefusedPut::AlreadyThere);
        assert_eq!(refused_put(Some(409)), RefusedPut::Concurrent);
        assert_eq!(refused_put(Some(503)), RefusedPut::Failed);
        assert_eq!(refused_put(None), RefusedPut::Failed);
    }
}

//! The callback bodies in the vault bucket: what ingest and the reconciler archive under
//! `tasks/<task_id>/callbacks/` (and ingest parks under `parked/`), one PutObject each.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use stemvault_vault::accept::ArchiveBody;

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
}

impl BodyArchive {
    /// Park a callback body under `key` unless it is parked already (`If-None-Match: *`: the
    /// first park's LastModified dates the callback when replayed; a 412 is that copy).
    pub async fn park(&self, key: &str, body: &[u8]) -> Result<(), String> {
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(()),
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }
}

impl ArchiveBody for BodyArchive {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), String> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }
}

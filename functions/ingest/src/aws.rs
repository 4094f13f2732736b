//! The ports over AWS. The function calls exactly: DynamoDB GetItem, PutItem and UpdateItem,
//! S3 PutObject, SQS SendMessageBatch (its IAM policy allows no more). All but PutObject are
//! in [`claims`], which the sweeper shares.

pub mod claims;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use stemvault_vault::{FileJob, Now, TaskRecord};
use suno_callbacks::TaskId;

use crate::Config;
use crate::domain::{ArchiveBody, Clock, EnqueueFiles, LoadRecord, MarkQueued, ReleaseClaims, SaveRecord, SentJob};
use crate::error::StoreError;
use claims::ClaimPorts;

/// The task table, the vault bucket and the download queue.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    claims: ClaimPorts,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl AwsPorts {
    /// Build the clients once, at start-up.
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> AwsPorts {
        AwsPorts {
            claims: ClaimPorts::new(sdk, &config.table_name, &config.queue_url),
            s3: stemvault_aws::s3_client(sdk),
            bucket: config.bucket_name.clone(),
        }
    }
}

impl ArchiveBody for AwsPorts {
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

impl LoadRecord for AwsPorts {
    async fn load_record(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.claims.load_record(task_id).await
    }
}

impl SaveRecord for AwsPorts {
    async fn save_record(&self, record: &TaskRecord, expected_version: Option<u64>) -> Result<(), StoreError> {
        self.claims.save_record(record, expected_version).await
    }
}

impl EnqueueFiles for AwsPorts {
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, String>> {
        self.claims.enqueue_files(jobs).await
    }
}

impl MarkQueued for AwsPorts {
    async fn mark_queued(
        &self,
        task_id: &TaskId,
        claimant: &str,
        sent: &[SentJob],
        queued_at: Now,
    ) -> Result<(), StoreError> {
        self.claims.mark_queued(task_id, claimant, sent, queued_at).await
    }
}

impl ReleaseClaims for AwsPorts {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        self.claims.release_claims(task_id, claimant, names).await
    }
}

impl Clock for AwsPorts {
    fn now(&self) -> Now {
        self.claims.now()
    }

    async fn sleep(&self, duration: std::time::Duration) {
        self.claims.sleep(duration).await
    }
}

//! The AWS side of the domain traits: the task table and S3 presigning.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use stemvault_aws::TaskTable;
use stemvault_vault::StoreError;
use stemvault_vault::TaskRecord;
use suno_callbacks::TaskId;

use crate::domain::{LoadError, LoadTask, PresignDownload, PresignError};

impl LoadTask for TaskTable {
    async fn load(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, LoadError> {
        // Spelled out: the inherent read, not a trait method (tests/template_agrees.rs looks for it).
        TaskTable::get(self, task_id.as_str()).await.map_err(|e| match e {
            StoreError::Malformed(why) => LoadError::Malformed(why),
            other => LoadError::Unavailable(other.to_string()),
        })
    }
}

/// Presigns GetObject requests for objects of one bucket.
#[derive(Debug, Clone)]
pub struct BucketLinks {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl PresignDownload for BucketLinks {
    async fn presign(&self, key: &str, expires_in: Duration) -> Result<String, PresignError> {
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| PresignError(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| PresignError(DisplayErrorContext(e).to_string()))?;
        Ok(request.uri().to_owned())
    }
}

//! The ports over AWS: the task table (one strongly consistent Query of a task's item
//! collection, and a registration's conditional PutItem), S3 presigning, and the parked
//! callbacks of a task the table does not know (one ListObjectsV2).

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use stemvault_aws::table::{n, s};
use stemvault_aws::{TaskTable, Update};
use stemvault_vault::items::{self, ItemPut, PutCondition};
use stemvault_vault::register::Completion;
use stemvault_vault::{Conditional, LoadTask, RECONCILE_DUE, StoreError, TaskRecord};
use suno_callbacks::{TaskId, s3_key};

use crate::Config;
use crate::domain::{CompleteRegistration, FindParked, PresignDownload, PutNewTask};
use crate::error::PresignError;

/// The IAM actions of every AWS call the function makes (template.yaml grants exactly these):
/// the task's item collection (one Query), a registration's task item (PutItem, only if
/// absent; or UpdateItem of its client_ref and family over the version read), presigning, which signs a GetObject the caller later makes with the function's
/// credentials, and listing a task's parked callbacks (ListBucket, under `parked/` only).
pub const AWS_ACTIONS: &[&str] =
    &["dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "s3:GetObject", "s3:ListBucket"];

/// The task table and the vault bucket.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    table: TaskTable,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl AwsPorts {
    /// Build the clients once, at start-up.
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> AwsPorts {
        AwsPorts {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name),
            s3: stemvault_aws::s3_client(sdk),
            bucket: config.bucket_name.clone(),
        }
    }
}

impl LoadTask for AwsPorts {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.table.load(task_id.as_str()).await
    }
}

impl PutNewTask for AwsPorts {
    async fn put_new_task(&self, record: &TaskRecord) -> Result<Conditional, StoreError> {
        let put = ItemPut { item: items::task_item(record)?, condition: PutCondition::Absent };
        self.table.put("PutItem (registration)", put).await
    }
}

/// The update adding a registration's `completion` to a task item read at `version`: those
/// attributes and the version alone, so nothing else of the item (the `queued` set, the
/// reconciler's schedule) is written back as read.
pub fn completion_update(version: u64, completion: &Completion) -> Update {
    let mut sets = Vec::new();
    let mut u = Update::new("", "#version = :read");
    if let Some(client_ref) = &completion.client_ref {
        sets.push("#client_ref = :client_ref");
        u.name("#client_ref", "client_ref").value(":client_ref", s(client_ref));
    }
    if let Some(family) = completion.family {
        sets.push("#family = :family");
        u.name("#family", "family").value(":family", s(family.as_str()));
    }
    let mut removes = "";
    if let Some(from) = completion.watch_from {
        sets.push("#reconcile = :due, #reconcile_at = :watch_from");
        removes = " REMOVE #interval";
        u.name("#reconcile", "reconcile")
            .name("#reconcile_at", "reconcile_at")
            .name("#interval", "poll_interval_seconds");
        u.value(":due", s(RECONCILE_DUE)).value(":watch_from", s(&from.rfc3339()));
    }
    u.update = format!("SET {}{removes} ADD #version :one", sets.join(", "));
    u.name("#version", "version").value(":read", n(version)).value(":one", n(1));
    u
}

stemvault_aws::system_clock!(AwsPorts);

impl CompleteRegistration for AwsPorts {
    async fn complete_registration(
        &self,
        task_id: &TaskId,
        version: u64,
        completion: &Completion,
    ) -> Result<Conditional, StoreError> {
        let update = completion_update(version, completion);
        self.table.update("UpdateItem (registration's client_ref)", task_id.as_str(), items::TASK_SK, update).await
    }
}

impl FindParked for AwsPorts {
    async fn is_parked(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        stemvault_aws::parked::list(&self.s3, &self.bucket, &s3_key::parked_task_prefix(task_id), 1)
            .await
            .map(|parked| !parked.is_empty())
            .map_err(|e| StoreError::Unavailable(format!("ListObjectsV2 (parked): {e}")))
    }
}

impl PresignDownload for AwsPorts {
    async fn presign(&self, key: &str, expires_in: Duration) -> Result<String, PresignError> {
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| PresignError(e.to_string()))?;
        let request = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| PresignError(DisplayErrorContext(e).to_string()))?;
        Ok(request.uri().to_owned())
    }
}

#[cfg(test)]
mod completion_tests {
    use aws_sdk_dynamodb::types::AttributeValue;
    use suno_callbacks::Family;

    use super::*;

    #[test]
    fn a_completion_sets_only_what_it_adds_over_the_version_read() {
        let both = Completion { client_ref: Some("order-17".into()), family: Some(Family::Music), watch_from: None };
        let u = completion_update(7, &both);
        assert_eq!(u.update, "SET #client_ref = :client_ref, #family = :family ADD #version :one");
        assert_eq!(u.condition, "#version = :read");
        assert_eq!(u.values[":client_ref"], AttributeValue::S("order-17".into()));
        assert_eq!(u.values[":family"], AttributeValue::S("music".into()));
        assert_eq!((&u.values[":read"], &u.values[":one"]), (&n(7), &n(1)));
        assert!(u.unused_placeholders().is_empty());

        let family_only =
            completion_update(3, &Completion { client_ref: None, family: Some(Family::Wav), watch_from: None });
        assert_eq!(family_only.update, "SET #family = :family ADD #version :one");
        assert!(!family_only.names.contains_key("#client_ref"));
        assert!(family_only.unused_placeholders().is_empty());

        let from = stemvault_vault::Timestamp::from_unix_ms(1_800_000_000_000);
        let watched = Completion { client_ref: None, family: Some(Family::Music), watch_from: Some(from) };
        let u = completion_update(3, &watched);
        assert_eq!(
            u.update,
            "SET #family = :family, #reconcile = :due, #reconcile_at = :watch_from REMOVE #interval ADD #version :one"
        );
        assert_eq!(u.values[":watch_from"], AttributeValue::S(from.rfc3339()));
        assert_eq!(
            (&u.values[":due"], u.names["#interval"].as_str()),
            (&AttributeValue::S("due".into()), "poll_interval_seconds")
        );
        assert!(u.unused_placeholders().is_empty());
    }
}

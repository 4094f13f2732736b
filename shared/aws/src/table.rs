//! The task table: whole-record reads and version-conditional writes.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_vault::{StoreError, TaskRecord};

/// The DynamoDB table holding one [`TaskRecord`] per task.
#[derive(Debug, Clone)]
pub struct TaskTable {
    pub client: Client,
    pub table_name: String,
}

impl TaskTable {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        TaskTable { client, table_name: table_name.into() }
    }

    /// Strongly consistent read of one task.
    pub async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("task_id", AttributeValue::S(task_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(DisplayErrorContext(e).to_string()))?;
        match out.item {
            None => Ok(None),
            Some(item) => serde_dynamo::from_item(item).map(Some).map_err(|e| StoreError::Malformed(e.to_string())),
        }
    }

    /// Write the whole record if the stored one still has `expected_version` (None: only if
    /// no record exists yet). `record.version` must already be the new version.
    pub async fn put(&self, record: &TaskRecord, expected_version: Option<u64>) -> Result<(), StoreError> {
        let item = serde_dynamo::to_item(record).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let request = self.client.put_item().table_name(&self.table_name).set_item(Some(item));
        let request = match expected_version {
            None => request.condition_expression("attribute_not_exists(task_id)"),
            Some(v) => request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                Err(StoreError::Conflict)
            }
            // Item too large, or an attribute DynamoDB does not accept.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("ValidationException") => {
                Err(StoreError::Rejected(DisplayErrorContext(e.into_err()).to_string()))
            }
            Err(e) => Err(StoreError::Unavailable(DisplayErrorContext(e).to_string())),
        }
    }
}

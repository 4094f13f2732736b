//! The sweeper's ports over AWS: the shared [`ClaimPorts`] (GetItem, PutItem, UpdateItem,
//! SendMessageBatch) plus one DynamoDB Query on the `open-tasks` index. Its IAM policy
//! allows no more.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_vault::{OPEN_MARKER, OPEN_TASKS_INDEX};

use crate::aws::claims::ClaimPorts;
use crate::error::StoreError;
use crate::sweep::{ListOpenTasks, OpenTask, OpenTaskPage};

/// Index entries per Query page (keys only: a page stays small).
const PAGE_SIZE: i32 = 100;

impl ListOpenTasks for ClaimPorts {
    async fn open_tasks(&self, received_before: &str, after: Option<&OpenTask>) -> Result<OpenTaskPage, StoreError> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let start = after.map(|t| {
            HashMap::from([
                ("task_id".to_owned(), s(&t.task_id)),
                ("open".to_owned(), s(OPEN_MARKER)),
                ("last_received_at".to_owned(), s(&t.last_received_at)),
            ])
        });
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.table_name)
            .index_name(OPEN_TASKS_INDEX)
            .key_condition_expression("#open = :open AND #received < :before")
            .expression_attribute_names("#open", "open")
            .expression_attribute_names("#received", "last_received_at")
            .expression_attribute_values(":open", s(OPEN_MARKER))
            .expression_attribute_values(":before", s(received_before))
            .limit(PAGE_SIZE)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(DisplayErrorContext(e).to_string()))?;
        let entry = |item: &HashMap<String, AttributeValue>| -> Option<OpenTask> {
            Some(OpenTask {
                task_id: item.get("task_id")?.as_s().ok()?.clone(),
                last_received_at: item.get("last_received_at")?.as_s().ok()?.clone(),
            })
        };
        let tasks = out.items().iter().filter_map(entry).collect();
        let next = out.last_evaluated_key().and_then(entry);
        Ok(OpenTaskPage { tasks, next })
    }
}

//! The task table: whole-record reads, version-conditional puts, and conditional updates
//! whose expressions pure functions build as an [`Update`].

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_vault::{Conditional, StoreError, TaskRecord};

/// One conditional UpdateItem of a task's item: its expressions and their placeholders.
/// Built by small pure functions (each function's `aws` module), so tests see exactly what
/// DynamoDB gets; sent by [`TaskTable::update`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub update: String,
    pub condition: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Update {
    /// The expressions; placeholders are added with [`Update::name`] and [`Update::value`].
    pub fn new(update: impl Into<String>, condition: impl Into<String>) -> Update {
        Update { update: update.into(), condition: condition.into(), names: HashMap::new(), values: HashMap::new() }
    }

    /// `placeholder` (`#x`) stands for the attribute `attribute`.
    pub fn name(&mut self, placeholder: &str, attribute: &str) -> &mut Update {
        self.names.insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    /// `placeholder` (`:x`) stands for `value`.
    pub fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Update {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// Placeholders neither expression uses (DynamoDB refuses requests that send any).
    pub fn unused_placeholders(&self) -> Vec<&str> {
        let text = format!("{} {}", self.update, self.condition);
        let used = |p: &str| {
            text.match_indices(p)
                .any(|(at, _)| !text[at + p.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        };
        self.names.keys().chain(self.values.keys()).map(String::as_str).filter(|p| !used(p)).collect()
    }

    /// Drop the placeholders neither expression uses.
    pub fn without_unused_placeholders(mut self) -> Update {
        let unused: Vec<String> = self.unused_placeholders().into_iter().map(str::to_owned).collect();
        self.names.retain(|k, _| !unused.contains(k));
        self.values.retain(|k, _| !unused.contains(k));
        self
    }
}

/// A string attribute value.
pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The condition of a whole-record put: no record yet, or the stored one still at
/// `expected_version`.
fn put_condition(expected_version: Option<u64>) -> (&'static str, Option<(&'static str, AttributeValue)>) {
    match expected_version {
        None => ("attribute_not_exists(task_id)", None),
        Some(v) => ("version = :expected", Some((":expected", n(v)))),
    }
}

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
        let (condition, value) = put_condition(expected_version);
        let request = self.client.put_item().table_name(&self.table_name).set_item(Some(item));
        let request = match value {
            None => request.condition_expression(condition),
            Some((placeholder, value)) => {
                request.condition_expression(condition).expression_attribute_values(placeholder, value)
            }
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

    /// Apply `u` to the task's item if its condition holds; `operation` names it in errors.
    pub async fn update(&self, operation: &str, task_id: &str, u: Update) -> Result<Conditional, StoreError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("task_id", s(task_id))
            .update_expression(u.update)
            .condition_expression(u.condition)
            .set_expression_attribute_names(Some(u.names))
            .set_expression_attribute_values(Some(u.values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Conditional::Applied),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Conditional::Conflict)
            }
            // The item would grow past DynamoDB's limit, or an attribute is refused.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("ValidationException") => {
                Err(StoreError::Rejected(format!("UpdateItem ({operation}): {}", DisplayErrorContext(e.into_err()))))
            }
            Err(e) => Err(StoreError::Unavailable(format!("UpdateItem ({operation}): {}", DisplayErrorContext(e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_conditional_on_absence_or_the_version_read() {
        assert_eq!(put_condition(None), ("attribute_not_exists(task_id)", None));
        assert_eq!(put_condition(Some(7)), ("version = :expected", Some((":expected", n(7)))));
    }

    #[test]
    fn unused_placeholders_are_found_and_dropped() {
        let mut u = Update::new("SET #a = :one", "#a1 = :onex");
        u.name("#a", "a").name("#a1", "a1").name("#b", "b");
        u.value(":one", n(1)).value(":onex", n(2)).value(":two", n(2));
        let mut unused = u.unused_placeholders();
        unused.sort();
        assert_eq!(unused, ["#b", ":two"], "#a and :one count only where they are whole");
        let u = u.without_unused_placeholders();
        assert!(u.unused_placeholders().is_empty());
        assert_eq!(u.names.len(), 2);
        assert_eq!(u.values.len(), 2);
    }
}

//! The vocabulary every function's domain uses for the task table and time: one name per
//! operation, whatever function performs it. Each function's `domain.rs` adds its own ports
//! on top; its `aws.rs` implements them over the SDK, its tests in memory.

use std::future::Future;
use std::time::Duration;

use suno_callbacks::TaskId;

use crate::{TaskRecord, Timestamp};

/// A failure of the task table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The item changed since it was read (or exists when it should not): read again.
    #[error("the task record changed concurrently")]
    Conflict,
    /// The stored item cannot be decoded (edited by hand?); retrying will not help.
    #[error("the stored task record is malformed: {0}")]
    Malformed(String),
    /// DynamoDB, S3 (the parked callbacks' listing and bodies) or the network failed; trying
    /// again later may work.
    #[error("the task store is unavailable: {0}")]
    Unavailable(String),
    /// The table refused the item itself (over 400 KB, or another limit its data went past):
    /// the same write fails again.
    #[error("the task table refused the record: {0}")]
    Rejected(String),
    /// The table refused the request as invalid for another reason than the item's size (an
    /// expression or a value it does not accept: a fault of this build, or data it did not
    /// foresee): the same write fails again until a fix (or a rollback) is deployed.
    #[error("the task table refused the write as invalid: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the same operation can succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Malformed(_) | StoreError::Rejected(_) | StoreError::Invalid(_))
    }

    /// A write this build made wrong, which the table refused (`Invalid`): the same write fails
    /// again, but a deploy (or a rollback) mends the build, so a caller may ask again.
    pub fn is_build_fault(&self) -> bool {
        matches!(self, StoreError::Invalid(_))
    }

    /// Whether a caller refused for it may ask again: the operation can succeed later, or it
    /// is [this build's fault](Self::is_build_fault), which a deploy mends.
    pub fn caller_may_retry(&self) -> bool {
        self.is_retryable() || self.is_build_fault()
    }
}

/// A failure of the vault bucket (S3): the one type every function's S3 ports answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("S3 {operation} {}: {message}", if *.permanent { "refused the file" } else { "failed" })]
pub struct StorageError {
    pub operation: &'static str,
    pub message: String,
    /// S3 refused the request in a way no retry changes (`stemvault_aws::s3_error`).
    pub permanent: bool,
}

impl StorageError {
    /// A failure that a later attempt may not meet.
    pub fn transient(operation: &'static str, message: impl Into<String>) -> StorageError {
        StorageError { operation, message: message.into(), permanent: false }
    }

    /// Whether the same request can succeed later.
    pub fn is_retryable(&self) -> bool {
        !self.permanent
    }
}

/// A failure of a queue (SQS): the one type every function's SQS ports answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQS {operation} {}: {message}", if *.sender_fault { "refused the message" } else { "failed" })]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
    /// SQS (or the request's own building) found the message itself at fault (`SenderFault`:
    /// too large, a character SQS does not keep): the same message fails again.
    pub sender_fault: bool,
}

impl QueueError {
    /// A failure that a later attempt may not meet (the service, the network).
    pub fn transient(operation: &'static str, message: impl Into<String>) -> QueueError {
        QueueError { operation, message: message.into(), sender_fault: false }
    }

    /// Whether the same request can succeed later.
    pub fn is_retryable(&self) -> bool {
        !self.sender_fault
    }
}

/// Whether a conditional write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    Applied,
    /// The condition did not hold: someone else changed the item first.
    Conflict,
}

/// Strongly consistent read of a task's record (one Query of its item collection).
pub trait LoadTask {
    fn load_task(&self, task_id: &TaskId) -> impl Future<Output = Result<Option<TaskRecord>, StoreError>> + Send;
}

/// Save `after` over `before`, the record as read (None: no task item yet): the items that
/// changed, each conditional on what was read ([`crate::items::plan_save`]; a duplicate's
/// count of the task item only on what its merge relied on);
/// [`StoreError::Conflict`] when any changed since. `after.version` is already the new
/// version. Read again before saving again: the stored revisions moved on.
pub trait SaveTask {
    fn save_task(
        &self,
        before: Option<&TaskRecord>,
        after: &TaskRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The clock, and waiting (so tests run leases and backoffs in virtual time). Only adapters
/// read the system clock.
pub trait Clock {
    fn now(&self) -> Timestamp;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Count what a function measures, `M` its measures (CloudWatch metrics through the embedded
/// metric format, in each function's `aws.rs`). Never fails the caller.
pub trait EmitMetrics<M> {
    fn emit_metrics(&self, measure: &M);
}

//! What can go wrong after a callback was accepted as valid input, and whether the provider's
//! retry can fix it. Bad input never gets here: the handler answers it with a 4xx.

pub use stemvault_vault::StoreError;
pub use stemvault_vault::enqueue::EnqueueError;

/// Why a valid callback could not be fully processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the task record kept changing under {attempts} attempts to write it")]
    Contention { attempts: u32 },
    #[error("the callback body could not be archived: {0}")]
    Archive(String),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("{files} file(s) are still being queued by a concurrent delivery of this task")]
    StillEnqueuing { files: usize },
    /// The task's record with this callback would be too large for the table, even with
    /// messages and details bounded (hundreds of long URLs): nothing is written.
    #[error("the task record would take about {bytes} bytes")]
    TooLargeToRecord { bytes: usize },
    #[error("the callback was not fully processed within {after:?}")]
    Deadline { after: std::time::Duration },
}

impl IngestError {
    /// Whether the provider's retry of the same callback can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            IngestError::Store(StoreError::Malformed(_) | StoreError::Rejected(_))
                | IngestError::TooLargeToRecord { .. }
        )
    }

    /// A stable machine-readable name, for the response body and the logs.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Store(StoreError::Malformed(_)) => "task_record_malformed",
            IngestError::Store(StoreError::Rejected(_)) => "task_record_rejected",
            IngestError::TooLargeToRecord { .. } => "callback_too_large_to_record",
            IngestError::Store(_) | IngestError::Contention { .. } => "task_record_unavailable",
            IngestError::Archive(_) => "archive_failed",
            IngestError::Enqueue(_) => "enqueue_failed",
            IngestError::StillEnqueuing { .. } => "enqueue_in_progress",
            IngestError::Deadline { .. } => "timeout",
        }
    }

    /// What the response says: no AWS error text, no resource names.
    pub fn public_message(&self) -> &'static str {
        match self {
            IngestError::Store(StoreError::Malformed(_)) => {
                "the stored task record cannot be read; an operator must fix it"
            }
            IngestError::Store(StoreError::Rejected(_)) => {
                "the task table refused the task record; an operator must look"
            }
            IngestError::TooLargeToRecord { .. } => {
                "the task's record with this callback would exceed the table's item size; it was not recorded"
            }
            IngestError::Store(_) | IngestError::Contention { .. } => {
                "the task record could not be written; retry the delivery"
            }
            IngestError::Archive(_) => {
                "the callback is recorded but its body could not be archived; retry the delivery"
            }
            IngestError::Enqueue(_) => "the callback is recorded but its files could not be queued; retry the delivery",
            IngestError::StillEnqueuing { .. } => {
                "a concurrent delivery of this task is still queueing its files; retry the delivery"
            }
            IngestError::Deadline { .. } => "the callback could not be fully processed in time; retry the delivery",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_malformed_rejected_or_oversized_record_is_permanent() {
        assert!(!IngestError::Store(StoreError::Malformed("x".into())).is_retryable());
        assert!(!IngestError::Store(StoreError::Rejected("x".into())).is_retryable());
        assert!(!IngestError::TooLargeToRecord { bytes: 400_000 }.is_retryable());
        for retryable in [
            IngestError::Store(StoreError::Unavailable("x".into())),
            IngestError::Store(StoreError::Conflict),
            IngestError::Contention { attempts: 3 },
            IngestError::Archive("x".into()),
            IngestError::Enqueue(EnqueueError { failed: 1, total: 2, reason: "x".into() }),
            IngestError::StillEnqueuing { files: 1 },
            IngestError::Deadline { after: std::time::Duration::from_secs(8) },
        ] {
            assert!(retryable.is_retryable(), "{retryable}");
        }
    }
}

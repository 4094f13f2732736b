//! What can stop a reconciliation run, or the reconciliation of one task. Nothing is lost
//! either way: the task stays in the `reconcile-due` index and the next run tries again.

pub use stemvault_vault::StoreError;
pub use stemvault_vault::accept::AcceptError;
pub use stemvault_vault::events::PublishError;

/// Why a run, or one task of it, was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// Listing the due tasks, or reading or writing one task's record, failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A polled result could not be recorded, archived or queued.
    #[error("the polled result was not fully processed: {0}")]
    Accept(#[from] AcceptError),
    /// The Task Failed event of a task being given up could not be published: it is given up
    /// by the next run (same event id).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Concurrent writers kept changing the task's record; the next run takes it.
    #[error("the task record kept changing under {attempts} attempts to record a poll")]
    Contention { attempts: u32 },
    /// Handling the task took longer than a task may ([`crate::domain::TASK_BUDGET`]); the
    /// next run takes it.
    #[error("the task was not handled within {}s", .after.as_secs())]
    OutOfTime { after: std::time::Duration },
    /// Handling the task panicked (a bug its record or the provider's answer reaches): the
    /// run goes on with the others, and the task is put behind as one no retry mends.
    #[error("handling the task panicked (the panic's own line says where)")]
    Panicked,
}

impl ReconcileError {
    /// Whether the next run can succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Store(e) => e.is_retryable(),
            ReconcileError::Accept(e) => e.is_retryable(),
            ReconcileError::Publish(e) => e.is_retryable(),
            ReconcileError::Contention { .. } | ReconcileError::OutOfTime { .. } => true,
            ReconcileError::Panicked => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_can_fix_all_but_a_malformed_refused_invalid_or_oversized_record() {
        let cases = [
            (ReconcileError::Store(StoreError::Malformed("x".into())), false),
            (ReconcileError::Store(StoreError::Invalid("x".into())), false),
            (ReconcileError::Store(StoreError::Rejected("x".into())), false),
            (ReconcileError::Store(StoreError::Unavailable("x".into())), true),
            (ReconcileError::Accept(AcceptError::TooLargeToRecord { bytes: 500_000 }), false),
            (
                ReconcileError::Accept(AcceptError::Archive(stemvault_vault::StorageError::transient(
                    "PutObject",
                    "x",
                ))),
                true,
            ),
            (ReconcileError::Contention { attempts: 5 }, true),
            (ReconcileError::OutOfTime { after: std::time::Duration::from_secs(20) }, true),
            (ReconcileError::Publish(PublishError { failed: 1, total: 1, reason: "throttled".into() }), true),
            (ReconcileError::Panicked, false),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}

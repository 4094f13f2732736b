//! What can stop a sweep, or the sweep of one task. Nothing is lost either way: the files
//! stay claimable and the next scheduled run tries again.

pub use stemvault_vault::StoreError;
pub use stemvault_vault::enqueue::EnqueueError;

/// Why a sweep, or one task of it, was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    /// Listing the open tasks, or reading or writing one task's record, failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task's orphaned files were claimed but some could not be queued (they are
    /// `pending` again).
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// Concurrent writers kept changing the task's record; a later run takes it.
    #[error("the task record kept changing under {attempts} attempts to claim its files")]
    Contention { attempts: u32 },
    /// Sweeping the task took longer than a task may ([`crate::domain::TASK_BUDGET`]); what it
    /// claimed and did not send lapses with its lease, and a later run takes it.
    #[error("the task was not swept within {}s", .after.as_secs())]
    OutOfTime { after: std::time::Duration },
    /// Sweeping the task panicked (a bug its items reach): the run goes on with the others,
    /// and every run meets it again until the items or the build are fixed.
    #[error("sweeping the task panicked (the panic's own line says where)")]
    Panicked,
}

impl SweepError {
    /// Whether the next run can succeed where this one failed (a record malformed, refused or
    /// written invalid stays so until an operator fixes it: `StoreError::is_retryable`).
    pub fn is_retryable(&self) -> bool {
        match self {
            SweepError::Store(e) => e.is_retryable(),
            SweepError::Enqueue(e) => e.is_retryable(),
            SweepError::Contention { .. } | SweepError::OutOfTime { .. } => true,
            SweepError::Panicked => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_can_fix_all_but_a_malformed_or_refused_record() {
        let cases = [
            (SweepError::Store(StoreError::Malformed("x".into())), false),
            (SweepError::Store(StoreError::Rejected("x".into())), false),
            (SweepError::Store(StoreError::Unavailable("x".into())), true),
            (SweepError::Enqueue(EnqueueError { failed: 1, total: 1, reason: "x".into() }), true),
            (SweepError::Contention { attempts: 5 }, true),
            (SweepError::OutOfTime { after: std::time::Duration::from_secs(10) }, true),
            (SweepError::Panicked, false),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            // A scheduled run has no delivery to retry.
            assert!(!error.to_string().contains("delivery"), "{error}");
        }
    }
}

//! What can go wrong after a valid event (a callback, or a poll's result) was accepted as
//! input, and whether trying again can fix it. Bad input never gets here: ingest answers it
//! with a 4xx.

use crate::enqueue::EnqueueError;
use crate::events::PublishError;
use crate::{StorageError, StoreError};

/// Why a valid event could not be fully processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the task record kept changing under {attempts} attempts to write it")]
    Contention { attempts: u32 },
    /// Retryable whatever S3 said: the record is written, and a retry archives the same key
    /// (a refusal for good ends in a parked body, whose replay keeps trying).
    #[error("the callback body (or its results kept apart) could not be archived: {0}")]
    Archive(StorageError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// Recorded and its messages sent, but its events are not all published: the retry
    /// publishes them again, with the same ids.
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{files} file(s) are still being queued by a concurrent delivery of this task")]
    StillEnqueuing { files: usize },
    /// The task's record with this callback would be too large, even with messages and
    /// details bounded (hundreds of long URLs): an item for the table, or all of them for
    /// a reader's Query ([`crate::ingest::too_large_to_record`]). Nothing is written (but
    /// what an earlier attempt of the request wrote before a conflict, as a stopped attempt
    /// leaves it: the next writer of the task commits it).
    #[error("the task record would take about {bytes} bytes")]
    TooLargeToRecord { bytes: usize },
    #[error("the callback was not fully processed within {after:?}")]
    OutOfTime { after: std::time::Duration },
}

impl AcceptError {
    /// Whether delivering the same event again can succeed: the table failed it (so it may
    /// be unrecorded), or it is recorded but its body, its files' messages or its events
    /// were not all written, or a concurrent delivery still held its files. A later delivery
    /// is then a duplicate that completes what is missing (the same archive key, the claims
    /// taken over, the same event ids). What makes ingest park a callback (so that it no
    /// longer waits on the provider's few retries) and a replay of a parked one wait for the
    /// next run.
    pub fn is_retryable(&self) -> bool {
        match self {
            AcceptError::Store(e) => e.is_retryable(),
            AcceptError::TooLargeToRecord { .. } => false,
            AcceptError::Contention { .. }
            | AcceptError::Archive(_)
            | AcceptError::Enqueue(_)
            | AcceptError::Publish(_)
            | AcceptError::StillEnqueuing { .. }
            | AcceptError::OutOfTime { .. } => true,
        }
    }

    /// The task's stored record cannot be read, or the table refuses the writes as invalid
    /// (not for their size): no delivery records the callback until an operator fixes the
    /// record (or deploys a build that writes what the table takes), but one after the fix
    /// does. So the body is kept: ingest parks it, and a replay leaves it parked (not counted
    /// as an outage) until then.
    pub fn waits_for_the_record(&self) -> bool {
        matches!(self, AcceptError::Store(StoreError::Malformed(_) | StoreError::Invalid(_)))
    }

    /// Whether no delivery can ever record the event as it is (too large for the table, or a
    /// record it rejects): neither [retryable](Self::is_retryable) nor
    /// [waiting for the record](Self::waits_for_the_record).
    pub fn is_refused_for_good(&self) -> bool {
        !self.is_retryable() && !self.waits_for_the_record()
    }

    /// A stable machine-readable name, for the response body and the logs.
    pub fn reason_code(&self) -> &'static str {
        match self {
            AcceptError::Store(StoreError::Malformed(_)) => "task_record_malformed",
            AcceptError::Store(StoreError::Rejected(_)) => "task_record_rejected",
            AcceptError::Store(StoreError::Invalid(_)) => "task_write_invalid",
            AcceptError::TooLargeToRecord { .. } => "callback_too_large_to_record",
            AcceptError::Store(_) => "task_record_unavailable",
            // Not the table failing: one task's record kept changing (a flood of deliveries).
            AcceptError::Contention { .. } => "task_record_contended",
            AcceptError::Archive(_) => "archive_failed",
            AcceptError::Enqueue(_) => "enqueue_failed",
            AcceptError::Publish(_) => "publish_failed",
            AcceptError::StillEnqueuing { .. } => "enqueue_in_progress",
            AcceptError::OutOfTime { .. } => "timeout",
        }
    }

    /// What the response says: no AWS error text, no resource names.
    pub fn public_message(&self) -> &'static str {
        match self {
            AcceptError::Store(StoreError::Malformed(_)) => {
                "the stored task record cannot be read; an operator must fix it"
            }
            AcceptError::Store(StoreError::Rejected(_)) => {
                "the task table refused the task record; an operator must look"
            }
            AcceptError::Store(StoreError::Invalid(_)) => {
                "the task table refused the write as invalid; an operator must look"
            }
            AcceptError::TooLargeToRecord { .. } => {
                "the task's record with this callback would be too large (an item over the table's 400 KB, or all of them over 1 MB); it was not recorded"
            }
            AcceptError::Store(_) => "the task record could not be written; retry the delivery",
            AcceptError::Contention { .. } => {
                "the task record kept changing under concurrent deliveries; retry the delivery"
            }
            AcceptError::Archive(_) => {
                "the callback is recorded but its body (or its results kept apart) could not be archived; retry the delivery"
            }
            AcceptError::Enqueue(_) => "the callback is recorded but its files could not be queued; retry the delivery",
            AcceptError::Publish(_) => {
                "the callback is recorded but its events could not be published; retry the delivery"
            }
            AcceptError::StillEnqueuing { .. } => {
                "a concurrent delivery of this task is still queueing its files; retry the delivery"
            }
            AcceptError::OutOfTime { .. } => "the callback could not be fully processed in time; retry the delivery",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_malformed_rejected_invalid_or_oversized_record_is_permanent() {
        assert!(!AcceptError::Store(StoreError::Malformed("x".into())).is_retryable());
        assert!(!AcceptError::Store(StoreError::Rejected("x".into())).is_retryable());
        assert!(!AcceptError::Store(StoreError::Invalid("x".into())).is_retryable());
        assert!(!AcceptError::TooLargeToRecord { bytes: 400_000 }.is_retryable());
        for retryable in [
            AcceptError::Store(StoreError::Unavailable("x".into())),
            AcceptError::Store(StoreError::Conflict),
            AcceptError::Contention { attempts: 3 },
            AcceptError::Archive(StorageError::transient("PutObject", "x")),
            AcceptError::Enqueue(EnqueueError { failed: 1, total: 2, reason: "x".into() }),
            AcceptError::StillEnqueuing { files: 1 },
            AcceptError::Publish(PublishError { failed: 1, total: 2, reason: "ThrottlingException".into() }),
            AcceptError::OutOfTime { after: std::time::Duration::from_secs(8) },
        ] {
            assert!(retryable.is_retryable(), "{retryable}");
        }
    }

    /// A table that fails and one task's record that keeps changing have different fixes (the
    /// table's health; that task's deliveries): the dashboard's reasons tell them apart.
    #[test]
    fn contention_is_told_from_the_table_failing() {
        assert_eq!(AcceptError::Store(StoreError::Unavailable("x".into())).reason_code(), "task_record_unavailable");
        assert_eq!(AcceptError::Contention { attempts: 3 }.reason_code(), "task_record_contended");
    }

    /// Kept parked until a fix: a record that cannot be read, or writes the table refuses as
    /// invalid (a faulty build); archived unrecorded: only what no build could record.
    #[test]
    fn only_what_no_build_could_record_is_refused_for_good() {
        for waits in [StoreError::Malformed("x".into()), StoreError::Invalid("x".into())] {
            let e = AcceptError::Store(waits);
            assert!(e.waits_for_the_record() && !e.is_refused_for_good(), "{e}");
        }
        for refused in
            [AcceptError::Store(StoreError::Rejected("x".into())), AcceptError::TooLargeToRecord { bytes: 1 }]
        {
            assert!(refused.is_refused_for_good() && !refused.waits_for_the_record(), "{refused}");
        }
    }
}

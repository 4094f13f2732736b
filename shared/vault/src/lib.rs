//! stemvault's own data: the task record kept in DynamoDB (an item collection per task), the job sent
//! to SQS for each file, and the manifest written to S3 when a task's files are settled.
//!
//! Everything here is plain data and pure functions; time is passed in as a [`Timestamp`].

pub mod accept;
pub mod delay;
pub mod download;
pub mod enqueue;
pub mod events;
pub mod ingest;
pub mod items;
pub mod job;
pub mod manifest;
pub mod panic;
pub mod ports;
pub mod reason;
pub mod reconcile;
pub mod record;
pub mod register;
pub mod retry;
pub mod shown;
pub mod text;
pub mod time;

pub use job::FileJob;
pub use manifest::{Manifest, ManifestFile};
pub use ports::{Clock, Conditional, EmitMetrics, LoadTask, QueueError, SaveTask, StorageError, StoreError};
pub use record::{
    Abandoned, AddFence, CallbackEntry, FailureEntry, FileEntry, FileStatus, GiveUpReason, LastPoll, OPEN_MARKER,
    OPEN_TASKS_INDEX, PolledResult, PublicFileStatus, RECONCILE_DUE, RECONCILE_DUE_INDEX, TaskRecord, VaultState,
};
pub use retry::{Attempt, retry_on_conflict};
pub use time::{BEST_EFFORT_CALL_TIMEOUT, DEADLINE_MARGIN, LeaseEnd, Timestamp, answer_within, best_effort};

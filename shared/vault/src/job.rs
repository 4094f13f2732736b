//! The SQS message body: one file to copy.

use serde::{Deserialize, Serialize};

/// One file of one task, to be copied from `url` to `key` in the vault bucket.
///
/// Sent as the JSON body of one SQS message. `url` is the file's URL when the job was sent
/// (empty when with it the job would not fit a message); the downloader copies the record's
/// current URL, which a later callback may have replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileJob {
    pub task_id: String,
    pub name: String,
    pub url: String,
    pub key: String,
}

impl FileJob {
    /// Whether the record's `current` URL replaced the one this job was sent with (a job sent
    /// without one replaced none).
    pub fn url_replaced_by(&self, current: &str) -> bool {
        !self.url.is_empty() && self.url != current
    }
}

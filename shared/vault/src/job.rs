//! The SQS message body: one file to copy.

use serde::{Deserialize, Serialize};

/// One file of one task, to be copied from `url` to `key` in the vault bucket.
///
/// Sent as the JSON body of one SQS message. `attempt_url` lets the downloader tell a job for
/// a URL that has since been replaced from a current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileJob {
    pub task_id: String,
    pub name: String,
    pub url: String,
    pub key: String,
}

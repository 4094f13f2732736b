//! The SQS message body: one file to copy.

use serde::{Deserialize, Serialize};

/// One file of one task, to be copied from `url` to `key` in the vault bucket.
///
/// Sent as the JSON body of one SQS message. `url` is the file's URL when the job was sent;
/// the downloader copies the record's current URL instead when a later callback replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileJob {
    pub task_id: String,
    pub name: String,
    pub url: String,
    pub key: String,
}

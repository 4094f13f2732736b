//! The task record: one DynamoDB item per task, keyed by `task_id`.
//!
//! Field names are the attribute names people see in the AWS console and CLI. Every writer
//! increments `version`; whole-item writes are conditional on the version they read, so no
//! write is ever lost to a concurrent one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One task, as stored (see the README's "DynamoDB item" section for the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Partition key.
    pub task_id: String,
    /// `music`, `lyrics`, `cover_image`, `wav`, `vocal_separation`, `midi`, `music_video`,
    /// `voice` or `unknown`.
    pub family: String,
    /// `text`, `first`, `complete`, `error` or `final`; never moves backwards.
    pub stage: String,
    /// Envelope `code` of the callback that set `stage`.
    pub code: i64,
    /// Envelope `msg` of the callback that set `stage`.
    pub message: String,
    /// Whether the callback that set `stage` reported success.
    pub succeeded: bool,
    /// RFC 3339 (UTC) of the first and the latest accepted delivery.
    pub first_received_at: String,
    pub last_received_at: String,
    /// Every accepted delivery, duplicates included.
    pub deliveries: u64,
    /// Each distinct callback body, keyed `<stage>-<sha256 of body>`.
    #[serde(default)]
    pub callbacks: BTreeMap<String, CallbackEntry>,
    /// Each file of the task, keyed by its stable name.
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    /// Live stream URLs by name (data, not vaulted).
    #[serde(default)]
    pub streams: BTreeMap<String, String>,
    /// Non-file results of the latest callback that carried any (track metadata, lyrics,
    /// MIDI notes, voice ids), as the `suno_callbacks::Details` JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// `pending` until every file is stored or failed for good; then `complete` or `partial`.
    pub vault: VaultState,
    /// [`OPEN_MARKER`] exactly while `vault` is `pending`, absent otherwise: the partition key
    /// of the sparse `open-tasks` index, through which the sweeper finds unsettled tasks
    /// without scanning the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// A failure callback that arrived after the task had already succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureEntry>,
    /// Set when the manifest of the current file set has been written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Unix seconds: while `vault` is settled and `manifest_key` unset, the downloader that
    /// settled the vault is writing the manifest until then. After it, a redelivered message
    /// writes the manifest instead (the writer stopped in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_lease_until: Option<i64>,
    /// Optimistic-concurrency counter; every write increments it.
    pub version: u64,
}

/// The value of [`TaskRecord::open`] while the vault is pending (the index's one partition).
pub const OPEN_MARKER: &str = "open";

/// The sparse global secondary index over [`TaskRecord::open`] and `last_received_at`.
pub const OPEN_TASKS_INDEX: &str = "open-tasks";

/// One distinct callback body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackEntry {
    pub stage: String,
    pub code: i64,
    pub message: String,
    pub received_at: String,
    /// Where the verbatim body is kept in the bucket.
    pub body_key: String,
    pub bytes: u64,
    /// How many times this exact body was delivered.
    pub deliveries: u64,
}

/// A failure reported after success; the stored files are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEntry {
    pub stage: String,
    pub code: i64,
    pub message: String,
    pub received_at: String,
}

/// One file of the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The source URL (may be signed; never logged with its query).
    pub url: String,
    /// Target key in the vault bucket.
    pub key: String,
    pub status: FileStatus,
    /// The stage of the callback that first brought this file.
    pub stage: String,
    /// Who holds the current enqueue or download claim, and until when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<String>,
    /// Why the file failed for good (or the last retryable error while it is being retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileEntry {
    /// A file just recorded: no message sent, no claim, nothing downloaded.
    pub fn pending(url: &str, key: String, stage: &str) -> FileEntry {
        FileEntry {
            url: url.to_owned(),
            key,
            status: FileStatus::Pending,
            stage: stage.to_owned(),
            claim: None,
            lease_until: None,
            queued_at: None,
            message_id: None,
            attempts: 0,
            bytes: None,
            sha256: None,
            content_type: None,
            stored_at: None,
            error: None,
        }
    }
}

/// A file's life: `pending` → `enqueuing` → `queued` → `downloading` → `stored` | `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Recorded, no message sent yet.
    Pending,
    /// An ingest request holds the claim to send its message (`claim`, `lease_until`).
    Enqueuing,
    /// Its message is on the queue.
    Queued,
    /// A downloader holds the claim to copy it (`claim`, `lease_until`).
    Downloading,
    Stored,
    /// Failed for good (`error` says why).
    Failed,
}

/// What the results endpoint and the manifest show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicFileStatus {
    Pending,
    Stored,
    Failed,
}

impl FileStatus {
    pub fn public(self) -> PublicFileStatus {
        match self {
            FileStatus::Stored => PublicFileStatus::Stored,
            FileStatus::Failed => PublicFileStatus::Failed,
            _ => PublicFileStatus::Pending,
        }
    }

    /// Stored or failed for good.
    pub fn is_settled(self) -> bool {
        matches!(self, FileStatus::Stored | FileStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Enqueuing => "enqueuing",
            FileStatus::Queued => "queued",
            FileStatus::Downloading => "downloading",
            FileStatus::Stored => "stored",
            FileStatus::Failed => "failed",
        }
    }
}

/// The vault's state for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaultState {
    Pending,
    Complete,
    Partial,
}

impl VaultState {
    /// As stored and shown: `pending`, `complete`, `partial`.
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Pending => "pending",
            VaultState::Complete => "complete",
            VaultState::Partial => "partial",
        }
    }
}

impl PublicFileStatus {
    /// As shown: `pending`, `stored`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            PublicFileStatus::Pending => "pending",
            PublicFileStatus::Stored => "stored",
            PublicFileStatus::Failed => "failed",
        }
    }
}

/// Enums display as they are stored, so logs read `vault=pending`.
macro_rules! display_as_stored {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_stored!(FileStatus, PublicFileStatus, VaultState);

impl TaskRecord {
    /// The record of a task's first accepted callback, before its files and bodies are added:
    /// one delivery, version 1, no files (so its vault is settled and it is not open).
    pub fn new(task_id: &str, family: &str, stage: &str, code: i64, message: &str, received_at: &str) -> TaskRecord {
        TaskRecord {
            task_id: task_id.to_owned(),
            family: family.to_owned(),
            stage: stage.to_owned(),
            code,
            message: message.to_owned(),
            succeeded: code == 200 && stage != "error",
            first_received_at: received_at.to_owned(),
            last_received_at: received_at.to_owned(),
            deliveries: 1,
            callbacks: BTreeMap::new(),
            files: BTreeMap::new(),
            streams: BTreeMap::new(),
            details: None,
            vault: VaultState::Complete,
            open: None,
            failure: None,
            manifest_key: None,
            manifest_lease_until: None,
            version: 1,
        }
    }

    /// Set [`TaskRecord::open`] from `vault`: present while pending, absent once settled.
    pub fn sync_open_marker(&mut self) {
        self.open = (self.vault == VaultState::Pending).then(|| OPEN_MARKER.to_owned());
    }

    /// Every file is stored or failed for good (a task without files is settled too).
    pub fn files_settled(&self) -> bool {
        self.files.values().all(|f| f.status.is_settled())
    }

    /// `complete` when every file is stored, `partial` when some failed; None while any is open.
    pub fn settled_vault_state(&self) -> Option<VaultState> {
        if !self.files_settled() {
            return None;
        }
        if self.files.values().all(|f| f.status == FileStatus::Stored) {
            Some(VaultState::Complete)
        } else {
            Some(VaultState::Partial)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON string a value is stored as.
    fn stored(value: impl Serialize) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn enums_display_as_they_are_stored() {
        use FileStatus::*;
        for status in [Pending, Enqueuing, Queued, Downloading, Stored, Failed] {
            assert_eq!(stored(status), status.to_string());
            assert_eq!(stored(status.public()), status.public().to_string());
        }
        for vault in [VaultState::Pending, VaultState::Complete, VaultState::Partial] {
            assert_eq!(stored(vault), vault.to_string());
        }
    }
}

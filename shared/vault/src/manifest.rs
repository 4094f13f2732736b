//! `tasks/<task_id>/manifest.json`: what was vaulted, written once the files are settled.

use serde::{Deserialize, Serialize};

use crate::{FileStatus, PublicFileStatus, TaskRecord, VaultState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub task_id: String,
    pub family: String,
    pub stage: String,
    pub code: i64,
    pub message: String,
    pub vault: VaultState,
    pub generated_at: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub key: String,
    pub status: PublicFileStatus,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error: Option<String>,
}

impl Manifest {
    /// The manifest of a record whose files are all settled (stored or failed for good).
    pub fn of(record: &TaskRecord, vault: VaultState, generated_at: &str) -> Manifest {
        Manifest {
            task_id: record.task_id.clone(),
            family: record.family.clone(),
            stage: record.stage.clone(),
            code: record.code,
            message: record.message.clone(),
            vault,
            generated_at: generated_at.to_owned(),
            files: record
                .files
                .iter()
                .map(|(name, f)| ManifestFile {
                    name: name.clone(),
                    key: f.key.clone(),
                    status: f.status.public(),
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                    content_type: f.content_type.clone(),
                    error: match f.status {
                        FileStatus::Failed => f.error.clone(),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

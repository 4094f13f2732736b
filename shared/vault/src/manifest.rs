//! `tasks/<task_id>/manifest.json`: what was vaulted, written once the files are settled.

use serde::{Deserialize, Serialize};
use suno_callbacks::{Family, Stage};

use crate::reason::FailureCode;
use crate::{PublicFileStatus, TaskRecord, Timestamp, VaultState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub task_id: String,
    pub family: Family,
    /// The user's own id for the task, when it was registered with one (as in the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    pub stage: Stage,
    pub code: i64,
    pub message: String,
    pub vault: VaultState,
    /// The file set's generation the manifest is of (as in the events' `generation`: a late
    /// event's reader can tell whether the manifest under the key is still its file set's).
    /// Manifests written before it was there read 0.
    #[serde(default)]
    pub generation: u64,
    pub generated_at: Timestamp,
    /// When and why the reconciler gave the task up, for a task given up (as in the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<crate::Abandoned>,
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
    /// What kind of failure `error` says (None for a file failed before 2026-12-06).
    #[serde(default)]
    pub error_code: Option<FailureCode>,
}

impl Manifest {
    /// The manifest of a record whose files are all settled (stored or failed for good).
    pub fn of(record: &TaskRecord, vault: VaultState, generated_at: Timestamp) -> Manifest {
        Manifest {
            task_id: record.task_id.clone(),
            family: record.family,
            client_ref: record.client_ref.clone(),
            stage: record.stage,
            code: record.code,
            message: record.message.clone(),
            vault,
            generation: record.generation,
            generated_at,
            abandoned: record.abandoned.clone(),
            files: record
                .files
                .iter()
                .map(|(name, f)| {
                    let (error, error_code) = f.shown_failure();
                    ManifestFile {
                        name: name.clone(),
                        key: f.key.clone(),
                        status: f.status.public(),
                        bytes: f.bytes,
                        sha256: f.sha256.clone(),
                        content_type: f.content_type.clone(),
                        error,
                        error_code,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::FileEntry;

    #[test]
    fn a_manifest_is_written_as_the_same_json() {
        let received = "2026-11-23T15:00:00.000Z".parse().unwrap();
        let mut record = TaskRecord::new("t1", Family::CoverImage, Stage::Final, 200, "ok", received);
        let mut image = FileEntry::pending("https://cdn.example/i.png", "tasks/t1/image.png".into(), Stage::Final);
        (image.status, image.bytes, image.content_type) =
            (crate::FileStatus::Stored, Some(7), Some("image/png".into()));
        record.files.insert("image".into(), image);
        record.generation = 3;
        let generated_at = Timestamp::from_unix_ms(1_795_446_000_120);
        let manifest = Manifest::of(&record, VaultState::Complete, generated_at);
        let written = json!({
            "task_id": "t1",
            "family": "cover_image",
            "stage": "final",
            "code": 200,
            "message": "ok",
            "vault": "complete",
            "generation": 3,
            "generated_at": "2026-11-23T15:00:00.120Z",
            "files": [{
                "name": "image",
                "key": "tasks/t1/image.png",
                "status": "stored",
                "bytes": 7,
                "sha256": null,
                "content_type": "image/png",
                "error": null,
                "error_code": null
            }]
        });
        assert_eq!(serde_json::to_value(&manifest).unwrap(), written);
        assert_eq!(serde_json::from_value::<Manifest>(written.clone()).unwrap(), manifest);
        let mut older = written.clone();
        older.as_object_mut().unwrap().remove("generation");
        older["files"][0].as_object_mut().unwrap().remove("error_code");
        let older = serde_json::from_value::<Manifest>(older).unwrap();
        assert_eq!((older.generation, older.files[0].error_code), (0, None));

        // A registered task's own id is in it (what a registration that adds one rewrites it for).
        record.client_ref = Some("order-17".into());
        let registered = serde_json::to_value(Manifest::of(&record, VaultState::Complete, generated_at)).unwrap();
        let mut with_ref = written;
        with_ref["client_ref"] = json!("order-17");
        assert_eq!(registered, with_ref);
    }
}

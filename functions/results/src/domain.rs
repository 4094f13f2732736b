//! What `GET /tasks/<task_id>` answers: the task record, reduced to what callers need, with a
//! presigned download link for each stored file. Plain Rust over two small traits.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::{LoadTask, Manifest, ManifestFile, PublicFileStatus, VaultState};
use suno_callbacks::{Family, Stage, TaskId};

use crate::error::{PresignError, ResultsError};

/// Make a time-limited GET link for one object of the vault bucket.
pub trait PresignDownload {
    fn presign(&self, key: &str, expires_in: Duration) -> impl Future<Output = Result<String, PresignError>> + Send;
}

/// Everything the use-case needs.
pub trait Ports: LoadTask + PresignDownload + Sync {}

impl<T> Ports for T where T: LoadTask + PresignDownload + Sync {}

/// The response body: the task as its manifest shows it, with download links.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub family: Family,
    pub stage: Stage,
    pub code: i64,
    pub message: String,
    pub vault: VaultState,
    pub files: Vec<FileView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileView {
    /// name, status, key, bytes, sha256, content_type, and error (only once failed for good).
    #[serde(flatten)]
    pub file: ManifestFile,
    /// Presigned GET link, only for stored files.
    pub download_url: Option<String>,
}

/// The view of one task, or None when no such task was recorded.
pub async fn task_view(
    ports: &impl Ports,
    task_id: &TaskId,
    link_expiry: Duration,
) -> Result<Option<TaskView>, ResultsError> {
    let Some(record) = ports.load_task(task_id).await? else {
        return Ok(None);
    };
    // The same projection the manifest uses, so both always agree; its timestamp is unused.
    let manifest = Manifest::of(&record, record.vault, record.last_received_at);
    let mut files = Vec::with_capacity(manifest.files.len());
    for file in manifest.files {
        let download_url = match file.status {
            PublicFileStatus::Stored => Some(ports.presign(&file.key, link_expiry).await?),
            _ => None,
        };
        files.push(FileView { file, download_url });
    }
    Ok(Some(TaskView {
        task_id: manifest.task_id,
        family: manifest.family,
        stage: manifest.stage,
        code: manifest.code,
        message: manifest.message,
        vault: manifest.vault,
        files,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;
    use stemvault_vault::{FileEntry, FileStatus, StoreError, TaskRecord};

    /// Records by task id; `fail` makes every load fail with that error. Signs `key` as
    /// `signed:<key>?expires=<secs>` (or fails when `fail_signing`) and remembers what it
    /// signed.
    #[derive(Default)]
    pub(crate) struct MemoryPorts {
        pub records: HashMap<String, TaskRecord>,
        pub fail: Option<StoreError>,
        pub signed: Mutex<Vec<String>>,
        pub fail_signing: bool,
    }

    impl MemoryPorts {
        pub(crate) fn with(ids: &[&str]) -> MemoryPorts {
            MemoryPorts { records: ids.iter().map(|id| (id.to_string(), record(id))).collect(), ..Default::default() }
        }
    }

    impl LoadTask for MemoryPorts {
        async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
            match &self.fail {
                Some(e) => Err(e.clone()),
                None => Ok(self.records.get(task_id.as_str()).cloned()),
            }
        }
    }

    impl PresignDownload for MemoryPorts {
        async fn presign(&self, key: &str, expires_in: Duration) -> Result<String, PresignError> {
            if self.fail_signing {
                return Err(PresignError("no credentials".into()));
            }
            self.signed.lock().unwrap().push(key.to_owned());
            Ok(format!("signed:{key}?expires={}", expires_in.as_secs()))
        }
    }

    pub(crate) fn file(key: &str, status: FileStatus) -> FileEntry {
        FileEntry {
            status,
            attempts: 1,
            ..FileEntry::pending(&format!("https://cdn.example/{key}?sig=secret"), key.into(), Stage::Complete)
        }
    }

    /// A task with one stored, one failed and one still downloading file.
    pub(crate) fn record(task_id: &str) -> TaskRecord {
        let mut stored = file(&format!("tasks/{task_id}/tracks/a/audio.mp3"), FileStatus::Stored);
        stored.bytes = Some(1234);
        stored.sha256 = Some("ab".repeat(32));
        stored.content_type = Some("audio/mpeg".into());
        let mut failed = file(&format!("tasks/{task_id}/tracks/a/image.jpeg"), FileStatus::Failed);
        failed.error = Some("source answered 404".into());
        let mut retrying = file(&format!("tasks/{task_id}/tracks/b/audio.mp3"), FileStatus::Downloading);
        retrying.error = Some("connection reset".into());
        let files = BTreeMap::from([
            ("tracks/a/audio".to_owned(), stored),
            ("tracks/a/image".to_owned(), failed),
            ("tracks/b/audio".to_owned(), retrying),
        ]);
        TaskRecord {
            last_received_at: "2026-01-01T00:01:00.000Z".parse().unwrap(),
            deliveries: 3,
            files,
            vault: VaultState::Pending,
            version: 7,
            ..TaskRecord::new(
                task_id,
                Family::Music,
                Stage::Complete,
                200,
                "All generated successfully.",
                "2026-01-01T00:00:00.000Z".parse().unwrap(),
            )
        }
    }

    fn id(raw: &str) -> TaskId {
        TaskId::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn presigns_stored_files_only_and_hides_errors_of_open_files() {
        let ports = MemoryPorts::with(&["t1"]);
        let view = task_view(&ports, &id("t1"), Duration::from_secs(90)).await.unwrap().unwrap();

        assert_eq!((view.task_id.as_str(), view.family, view.stage), ("t1", Family::Music, Stage::Complete));
        assert_eq!(
            (view.code, view.message.as_str(), view.vault),
            (200, "All generated successfully.", VaultState::Pending)
        );
        let names: Vec<_> = view.files.iter().map(|f| f.file.name.as_str()).collect();
        assert_eq!(names, ["tracks/a/audio", "tracks/a/image", "tracks/b/audio"]);

        let [stored, failed, open] = &view.files[..] else { panic!("three files expected") };
        assert_eq!(stored.file.status, PublicFileStatus::Stored);
        assert_eq!(stored.download_url.as_deref(), Some("signed:tasks/t1/tracks/a/audio.mp3?expires=90"));
        assert_eq!((stored.file.bytes, stored.file.content_type.as_deref()), (Some(1234), Some("audio/mpeg")));
        assert_eq!(failed.file.status, PublicFileStatus::Failed);
        assert_eq!(failed.file.error.as_deref(), Some("source answered 404"));
        assert_eq!(failed.download_url, None);
        assert_eq!(open.file.status, PublicFileStatus::Pending);
        assert_eq!((open.file.error.as_deref(), open.download_url.as_deref()), (None, None));
        assert_eq!(*ports.signed.lock().unwrap(), ["tasks/t1/tracks/a/audio.mp3"]);
    }

    #[tokio::test]
    async fn unknown_task_is_none() {
        let view = task_view(&MemoryPorts::default(), &id("nope"), Duration::from_secs(1)).await;
        assert_eq!(view, Ok(None));
    }

    #[tokio::test]
    async fn failures_say_whether_to_retry() {
        let unavailable = MemoryPorts { fail: Some(StoreError::Unavailable("timeout".into())), ..Default::default() };
        let err = task_view(&unavailable, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");

        let malformed =
            MemoryPorts { fail: Some(StoreError::Malformed("files: not a map".into())), ..Default::default() };
        let err = task_view(&malformed, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");

        let broken_signer = MemoryPorts { fail_signing: true, ..MemoryPorts::with(&["t1"]) };
        let err = task_view(&broken_signer, &id("t1"), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err, ResultsError::Presign(PresignError("no credentials".into())));
        assert!(err.is_retryable());
    }
}

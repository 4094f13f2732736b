//! The pure decisions of the download function: what one SQS message should do given the task
//! record, when a task's files are settled and what its manifest says, and how long a failed
//! message waits before it is tried again.
//!
//! The caller reads the record (strongly consistent), asks [`next_step`], claims the file with
//! a conditional update, copies it, records the outcome conditional on its claim, then reads
//! again and asks [`settle_plan`].

use std::time::Duration;

use suno_callbacks::{TaskId, s3_key};

use crate::{FileJob, FileStatus, Manifest, Now, TaskRecord, VaultState};

/// What a message for one file should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing can ever be done for this message: log it and delete it.
    Drop(DropReason),
    /// The file is already `stored` or `failed` for good (a redelivery): copy nothing, but
    /// check whether the task is settled, in case an earlier attempt stopped in between.
    AlreadySettled(FileStatus),
    /// Another worker holds an unexpired claim on the file: try again later.
    Busy { lease_until: i64 },
    /// Claim the file and copy `url` to `key`.
    Copy(CopyPlan),
}

/// Why a message is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No record for the task (the record is written before any message is sent).
    TaskMissing,
    /// The record has no such file.
    FileMissing,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TaskMissing => "the task has no record",
            DropReason::FileMissing => "the task record has no such file",
        }
    }
}

/// The file to copy, as the record says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The record's URL: a newer callback may have replaced the one in the message.
    pub url: String,
    /// The record's key.
    pub key: String,
    /// The message carried another URL than the record (logged, not an error).
    pub replaced: bool,
}

/// Decide what a message should do. `now` decides whether another worker's claim expired.
///
/// A file may be claimed from `pending`, `enqueuing` and `queued` (the message exists, so it
/// was sent, whether or not ingest has marked it `queued` yet) and from `downloading` once
/// the holder's lease has run out (that worker stopped without releasing it).
pub fn next_step(record: Option<&TaskRecord>, job: &FileJob, now: Now) -> NextStep {
    let Some(record) = record else {
        return NextStep::Drop(DropReason::TaskMissing);
    };
    let Some(file) = record.files.get(&job.name) else {
        return NextStep::Drop(DropReason::FileMissing);
    };
    match file.status {
        FileStatus::Stored | FileStatus::Failed => NextStep::AlreadySettled(file.status),
        FileStatus::Downloading if lease_holds(file.lease_until, now) => {
            NextStep::Busy { lease_until: file.lease_until.unwrap_or_default() }
        }
        FileStatus::Pending | FileStatus::Enqueuing | FileStatus::Queued | FileStatus::Downloading => {
            NextStep::Copy(CopyPlan { url: file.url.clone(), key: file.key.clone(), replaced: file.url != job.url })
        }
    }
}

/// A lease holds until (and including) its last second.
fn lease_holds(lease_until: Option<i64>, now: Now) -> bool {
    lease_until.is_some_and(|until| until >= now.unix_seconds())
}

/// What to do about a task's vault state after one of its files changed.
#[derive(Debug, Clone, PartialEq)]
pub enum SettlePlan {
    /// Some file is still open.
    Open,
    /// The vault is already `complete` or `partial`: its manifest was (or is being) written.
    AlreadySettled,
    /// Flip `vault` from `pending` to `vault`, conditional on `expected_version`; the worker
    /// whose flip wins writes `manifest` to `manifest_key`.
    Settle { vault: VaultState, manifest_key: String, manifest: Manifest, expected_version: u64 },
}

/// Decide whether the task is settled now. `task_id` is the validated id of the record.
pub fn settle_plan(record: &TaskRecord, task_id: &TaskId, now: Now) -> SettlePlan {
    if record.vault != VaultState::Pending {
        return SettlePlan::AlreadySettled;
    }
    let Some(vault) = record.settled_vault_state() else {
        return SettlePlan::Open;
    };
    let manifest_key = s3_key::manifest_key(task_id);
    let mut settled = record.clone();
    settled.vault = vault;
    settled.manifest_key = Some(manifest_key.clone());
    let manifest = Manifest::of(&settled, vault, &now.rfc3339());
    SettlePlan::Settle { vault, manifest_key, manifest, expected_version: record.version }
}

/// Delay before the first retry.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Longest delay between two retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// How long a message that failed transiently stays invisible, given how many times it has
/// been received (SQS `ApproximateReceiveCount`, 1 on the first delivery):
/// 30 s × 2^(n-1), at most 15 min.
pub fn retry_delay(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{FileEntry, ManifestFile, PublicFileStatus};

    fn file(url: &str, status: FileStatus) -> FileEntry {
        FileEntry {
            url: url.to_owned(),
            key: "tasks/t1/vocal.mp3".to_owned(),
            status,
            stage: "first".to_owned(),
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

    fn record(files: Vec<(&str, FileEntry)>) -> TaskRecord {
        TaskRecord {
            task_id: "t1".to_owned(),
            family: "vocal_separation".to_owned(),
            stage: "first".to_owned(),
            code: 200,
            message: "ok".to_owned(),
            succeeded: true,
            first_received_at: "2026-11-23T15:00:00.000Z".to_owned(),
            last_received_at: "2026-11-23T15:00:00.000Z".to_owned(),
            deliveries: 1,
            callbacks: BTreeMap::new(),
            files: files.into_iter().map(|(n, f)| (n.to_owned(), f)).collect(),
            streams: BTreeMap::new(),
            details: None,
            vault: VaultState::Pending,
            failure: None,
            manifest_key: None,
            version: 7,
        }
    }

    fn job(name: &str, url: &str) -> FileJob {
        FileJob { task_id: "t1".into(), name: name.into(), url: url.into(), key: "tasks/t1/vocal.mp3".into() }
    }

    const NOW: Now = Now { unix_ms: 1_000_000_000 };

    #[test]
    fn missing_task_or_file_is_dropped() {
        let j = job("vocal", "https://a/x.mp3");
        assert_eq!(next_step(None, &j, NOW), NextStep::Drop(DropReason::TaskMissing));
        let r = record(vec![("drums", file("https://a/d.mp3", FileStatus::Queued))]);
        assert_eq!(next_step(Some(&r), &j, NOW), NextStep::Drop(DropReason::FileMissing));
    }

    #[test]
    fn open_files_are_copied_from_the_record_url() {
        for status in [FileStatus::Pending, FileStatus::Enqueuing, FileStatus::Queued] {
            let r = record(vec![("vocal", file("https://a/x.mp3", status))]);
            let step = next_step(Some(&r), &job("vocal", "https://a/x.mp3"), NOW);
            let expected =
                CopyPlan { url: "https://a/x.mp3".into(), key: "tasks/t1/vocal.mp3".into(), replaced: false };
            assert_eq!(step, NextStep::Copy(expected), "{status:?}");
        }
    }

    #[test]
    fn a_replaced_url_is_taken_from_the_record() {
        let r = record(vec![("vocal", file("https://a/new.mp3", FileStatus::Queued))]);
        let NextStep::Copy(plan) = next_step(Some(&r), &job("vocal", "https://a/old.mp3"), NOW) else {
            panic!("expected a copy");
        };
        assert_eq!(plan.url, "https://a/new.mp3");
        assert!(plan.replaced);
    }

    #[test]
    fn settled_files_are_not_copied_again() {
        for status in [FileStatus::Stored, FileStatus::Failed] {
            let r = record(vec![("vocal", file("https://a/x.mp3", status))]);
            assert_eq!(next_step(Some(&r), &job("vocal", "https://a/x.mp3"), NOW), NextStep::AlreadySettled(status));
        }
    }

    #[test]
    fn an_unexpired_claim_is_respected_and_an_expired_one_taken_over() {
        let mut f = file("https://a/x.mp3", FileStatus::Downloading);
        f.claim = Some("other".into());
        f.lease_until = Some(NOW.unix_seconds());
        let r = record(vec![("vocal", f.clone())]);
        let j = job("vocal", "https://a/x.mp3");
        assert_eq!(next_step(Some(&r), &j, NOW), NextStep::Busy { lease_until: NOW.unix_seconds() });
        f.lease_until = Some(NOW.unix_seconds() - 1);
        let r = record(vec![("vocal", f)]);
        assert!(matches!(next_step(Some(&r), &j, NOW), NextStep::Copy(_)));
    }

    #[test]
    fn a_task_settles_only_when_every_file_is_stored_or_failed() {
        let id = TaskId::parse("t1").unwrap();
        let open = record(vec![
            ("vocal", file("https://a/v.mp3", FileStatus::Stored)),
            ("drums", file("https://a/d.mp3", FileStatus::Downloading)),
        ]);
        assert_eq!(settle_plan(&open, &id, NOW), SettlePlan::Open);

        let mut done = open.clone();
        done.files.get_mut("drums").unwrap().status = FileStatus::Stored;
        let SettlePlan::Settle { vault, manifest_key, expected_version, .. } = settle_plan(&done, &id, NOW) else {
            panic!("expected settle");
        };
        assert_eq!(
            (vault, manifest_key.as_str(), expected_version),
            (VaultState::Complete, "tasks/t1/manifest.json", 7)
        );

        let mut partial = done.clone();
        partial.files.get_mut("drums").unwrap().status = FileStatus::Failed;
        assert!(matches!(settle_plan(&partial, &id, NOW), SettlePlan::Settle { vault: VaultState::Partial, .. }));

        let mut already = done;
        already.vault = VaultState::Complete;
        assert_eq!(settle_plan(&already, &id, NOW), SettlePlan::AlreadySettled);
    }

    #[test]
    fn the_manifest_lists_every_file_with_its_outcome() {
        let id = TaskId::parse("t1").unwrap();
        let mut stored = file("https://a/v.mp3", FileStatus::Stored);
        stored.bytes = Some(42);
        stored.sha256 = Some("ab".repeat(32));
        stored.content_type = Some("audio/mpeg".into());
        let mut failed = file("https://a/d.mp3", FileStatus::Failed);
        failed.key = "tasks/t1/drums.mp3".into();
        failed.error = Some("source answered 403 Forbidden".into());
        let r = record(vec![("vocal", stored), ("drums", failed)]);
        let SettlePlan::Settle { manifest, .. } = settle_plan(&r, &id, NOW) else { panic!("expected settle") };
        assert_eq!(manifest.task_id, "t1");
        assert_eq!(manifest.family, "vocal_separation");
        assert_eq!(manifest.stage, "first");
        assert_eq!(manifest.vault, VaultState::Partial);
        assert_eq!(manifest.generated_at, NOW.rfc3339());
        assert_eq!(
            manifest.files,
            vec![
                ManifestFile {
                    name: "drums".into(),
                    key: "tasks/t1/drums.mp3".into(),
                    status: PublicFileStatus::Failed,
                    bytes: None,
                    sha256: None,
                    content_type: None,
                    error: Some("source answered 403 Forbidden".into()),
                },
                ManifestFile {
                    name: "vocal".into(),
                    key: "tasks/t1/vocal.mp3".into(),
                    status: PublicFileStatus::Stored,
                    bytes: Some(42),
                    sha256: Some("ab".repeat(32)),
                    content_type: Some("audio/mpeg".into()),
                    error: None,
                },
            ]
        );
    }

    #[test]
    fn retry_delay_doubles_from_30_seconds_up_to_15_minutes() {
        let secs: Vec<u64> = (0..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 30, 60, 120, 240, 480, 900, 900, 900, 900]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}

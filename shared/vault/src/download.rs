//! The pure decisions of the download function: what one SQS message should do given the task
//! record, when a task's files are settled and what its manifest says, and how long a failed
//! message waits before it is tried again.
//!
//! The caller claims the file with a conditional update of its item (which returns the item:
//! [`next_step`] says what a claim that did not apply means), copies it, records the outcome
//! conditional on its claim, then reads the task's items and asks [`settle_plan`].

use std::time::Duration;

use suno_callbacks::{Stage, TaskId, s3_key};

use crate::delay::Backoff;
use crate::{FileJob, FileStatus, LeaseEnd, Manifest, TaskRecord, Timestamp, VaultState};

/// What a message for one file should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing can ever be done for this message: log it and delete it.
    Drop(DropReason),
    /// The file is already `stored` or `failed` for good (a redelivery): copy nothing, but
    /// check whether the task is settled, in case an earlier attempt stopped in between.
    AlreadySettled(FileStatus),
    /// Another worker holds an unexpired claim on the file: try again later.
    Busy { lease_until: LeaseEnd },
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
    /// Claims of the file before this one (the record's `attempts`): when there were any, an
    /// earlier attempt may have stored the file without recording it, so the key is looked
    /// at before copying.
    pub earlier_attempts: u64,
}

/// Decide what a message should do. `now` decides whether another worker's claim expired.
///
/// A file may be claimed from `pending`, `enqueuing` and `queued` (the message exists, so it
/// was sent, whether or not ingest has marked it `queued` yet) and from `downloading` once
/// the holder's lease has run out (that worker stopped without releasing it).
pub fn next_step(record: Option<&TaskRecord>, job: &FileJob, now: Timestamp) -> NextStep {
    let Some(record) = record else {
        return NextStep::Drop(DropReason::TaskMissing);
    };
    let Some(file) = record.files.get(&job.name) else {
        return NextStep::Drop(DropReason::FileMissing);
    };
    // Another worker's download claim, while its lease holds.
    let held = file.lease_until.filter(|lease| file.status == FileStatus::Downloading && lease.holds_at(now));
    match (file.status, held) {
        (FileStatus::Stored | FileStatus::Failed, _) => NextStep::AlreadySettled(file.status),
        (_, Some(lease_until)) => NextStep::Busy { lease_until },
        (FileStatus::Pending | FileStatus::Enqueuing | FileStatus::Queued | FileStatus::Downloading, None) => {
            NextStep::Copy(CopyPlan {
                url: file.url.clone(),
                key: file.key.clone(),
                replaced: job.url_replaced_by(&file.url),
                earlier_attempts: file.attempts,
            })
        }
    }
}

/// What to do about a task's vault state after one of its files changed.
#[derive(Debug, Clone, PartialEq)]
pub enum SettlePlan {
    /// Some file is still open, or a save is adding files ([`TaskRecord::adding`]: they are
    /// downloaded and settle the task, or the sweeper commits and sends them).
    Open,
    /// The vault is settled and its manifest recorded.
    AlreadySettled,
    /// Every file is settled, and the vault is still `pending` or its manifest was never
    /// recorded (the worker that settled it stopped in between, or a task without files).
    Settle(Box<ManifestPlan>),
}

/// The steps that settle a vault, whoever takes them and however often:
/// 1. write `manifest` to `manifest_key`, fenced by `generation`, the manifest's stage and
///    the task item's `version` read: never over a manifest of a later generation, a later
///    stage of this one, or one of this generation and stage read from a later version (one
///    of the same read says the same);
/// 2. set `vault` and `manifest_key` and remove `open`, conditional on the task item still
///    being the one read (its `version`; so its `generation` and its stage the manifest's:
///    ingest did not add or reopen a file, or record a new stage, since).
///
/// The version, not the generation alone: two requests adding files at one generation (the
/// second took the first's fence over, README "The DynamoDB items") commit it twice, and a
/// settle read between the two, without the second's files, would otherwise apply after the
/// second committed: the task settled, its manifest and `Task Vaulted` saying those files
/// failed, for good. A file's write never refuses a settle, and only the worker holding the
/// last settled file settles at once ([`settled_last`]); two that both take them
/// (redeliveries): the second is refused, and its read after finds the vault settled.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestPlan {
    pub vault: VaultState,
    pub manifest_key: String,
    pub manifest: Manifest,
    /// The file set's generation the manifest is of.
    pub generation: u64,
    /// The task item's version read: the settle write applies only to that item.
    pub version: u64,
    /// When the reconciler should first poll the task, set by the settle write unless a watch
    /// is there when it lands (its schedule is kept): a file of the set failed because its URL
    /// expired (the provider may still give a fresh URL) or for a reason that may pass (a poll
    /// may reopen it). Asked for even when the settle read the task watched (if_not_exists
    /// keeps a watch's schedule). None when no file asks for a watch.
    pub watch_from: Option<Timestamp>,
    /// What the plan's `Task Vaulted` says ([`crate::events::announcement`]): published only
    /// when the task's last one said otherwise, and kept by the settle write.
    pub announcement: String,
}

/// The `name` of a manifest job: a download message that names no file, only asks for the
/// task's manifest. No file has this name ([`s3_key::is_reserved_name`]).
pub const MANIFEST_JOB_NAME: &str = "manifest";

/// The message that gets a task settled by ingest its manifest, when it needs one.
///
/// The downloader that settles a task's vault writes its manifest, but a task without files
/// (lyrics, MIDI, Suno Voice, a failure) is settled the moment ingest records it, as is a
/// task reaching a new stage whose files are all settled already (its manifest, of the
/// earlier stage, is out of date), and no download message would ever come for it. So
/// ingest sends this job instead, on every delivery until the manifest is recorded: the
/// downloader copies nothing, it only takes the [`settle_plan`] of the settled vault, as for
/// a writer that stopped.
pub fn manifest_job(record: &TaskRecord) -> Option<FileJob> {
    let wanted = record.vault != VaultState::Pending && record.manifest_key.is_none();
    TaskId::parse(&record.task_id).ok().filter(|_| wanted).map(|task_id| manifest_job_of(&task_id))
}

/// The manifest job of `task_id` (no file, the manifest's key), whatever its record says: its
/// downloader reads the task and settles it if it still needs it (the sweeper's, for an open
/// task whose files are all settled).
pub fn manifest_job_of(task_id: &TaskId) -> FileJob {
    FileJob {
        task_id: task_id.as_str().to_owned(),
        name: MANIFEST_JOB_NAME.to_owned(),
        url: String::new(),
        key: s3_key::manifest_key(task_id),
    }
}

/// Decide whether the task is settled now. `task_id` is the validated id of the record.
pub fn settle_plan(record: &TaskRecord, task_id: &TaskId, now: Timestamp) -> SettlePlan {
    let Some(vault) = record.vault_to_settle() else {
        // A registered task without a result yet has no files because none came, not
        // because they are all settled.
        let settled = record.stage != Stage::Submitted && record.files_settled() && record.is_settled();
        return if settled { SettlePlan::AlreadySettled } else { SettlePlan::Open };
    };
    let watch = crate::reconcile::needs_watching(record);
    let manifest_key = s3_key::manifest_key(task_id);
    SettlePlan::Settle(Box::new(ManifestPlan {
        vault,
        announcement: crate::events::announcement(record, vault, &manifest_key),
        manifest_key,
        manifest: Manifest::of(record, vault, now),
        generation: record.generation,
        version: record.version,
        watch_from: watch
            .then(|| crate::reconcile::first_poll_at(record, now.plus(crate::reconcile::FIRST_POLL_INTERVAL))),
    }))
}

/// Whether the file settled last in `record` (the latest `stored_at` or `failed_at`, by name
/// on a tie) is one of `settled_here`, or no file has a time: then the worker that settled
/// `settled_here` is the one to settle the task. Two workers that finish a task's last files
/// at once both see every file settled; only the one holding the last file settles at once,
/// so the task's settle is written once (the other defers its check; should the last one
/// not have seen the others settled, the deferred check settles it).
pub fn settled_last(record: &TaskRecord, settled_here: &[String]) -> bool {
    let last = record.files.iter().filter_map(|(name, f)| f.stored_at.or(f.failed_at).map(|at| (at, name))).max();
    last.is_none_or(|(_, name)| settled_here.contains(name))
}

/// How long the download queue keeps a message (its `MessageRetentionPeriod`: template.yaml,
/// `provision`). No message sent before a file's last claim outlives that claim's lease by
/// more: a file still `queued` or `downloading` that long after is stranded (its message went
/// to the dead-letter queue, or expired, without a word on the file item), and
/// [`crate::ingest::reclaim`] sends it again.
pub const DOWNLOAD_QUEUE_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);

/// The download queue's `maxReceiveCount` (template.yaml, `provision`): the receive after
/// which SQS moves a message to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 8;

/// Delay before the first retry.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Longest delay between two retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// The longest wait a source's `Retry-After` (or another claim's lease) gets: SQS keeps a
/// received message invisible for at most 12 hours from its receipt (ChangeMessageVisibility
/// refuses more), and the invocation that received it may have run for up to its 15-minute
/// timeout before asking, after a cold start and the time Lambda took to invoke it (another
/// 15 minutes of margin, for those).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600 - 30 * 60);

/// The download queue's retry schedule: a message that failed transiently stays invisible
/// 30 s × 2^(n-1) after its nth receive, at most 15 min; when the source said when to come
/// back (`Retry-After` on a 429 or 503), or another claim holds the file until its lease
/// ends, that long, but never less and never more than [`MAX_RETRY_AFTER`].
pub const DOWNLOAD_BACKOFF: Backoff =
    Backoff { first: FIRST_RETRY_DELAY, max: MAX_RETRY_DELAY, max_retry_after: MAX_RETRY_AFTER };

#[cfg(test)]
mod tests {

    use suno_callbacks::{Family, Stage};

    use super::*;
    use crate::{FileEntry, ManifestFile, PublicFileStatus};

    fn file(url: &str, status: FileStatus) -> FileEntry {
        FileEntry { status, ..FileEntry::pending(url, "tasks/t1/vocal.mp3".to_owned(), Stage::First) }
    }

    fn record(files: Vec<(&str, FileEntry)>) -> TaskRecord {
        TaskRecord {
            files: files.into_iter().map(|(n, f)| (n.to_owned(), f)).collect(),
            vault: VaultState::Pending,
            version: 7,
            ..TaskRecord::new("t1", Family::VocalSeparation, Stage::First, 200, "ok", NOW)
        }
    }

    fn job(name: &str, url: &str) -> FileJob {
        FileJob { task_id: "t1".into(), name: name.into(), url: url.into(), key: "tasks/t1/vocal.mp3".into() }
    }

    const NOW: Timestamp = Timestamp { unix_ms: 1_000_000_000 };

    #[test]
    fn a_registered_task_without_a_result_is_never_settled() {
        let mut r = record(vec![]);
        r.stage = Stage::Submitted;
        assert_eq!(settle_plan(&r, &TaskId::parse("t1").unwrap(), NOW), SettlePlan::Open);
        assert_eq!(manifest_job(&r), None, "its vault is pending");
    }

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
            let expected = CopyPlan {
                url: "https://a/x.mp3".into(),
                key: "tasks/t1/vocal.mp3".into(),
                replaced: false,
                earlier_attempts: 0,
            };
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

    /// A job too large for a message is sent without its URL: the record's is copied.
    #[test]
    fn a_job_without_a_url_copies_the_record_url() {
        let r = record(vec![("vocal", file("https://a/x.mp3", FileStatus::Queued))]);
        let NextStep::Copy(plan) = next_step(Some(&r), &job("vocal", ""), NOW) else {
            panic!("expected a copy");
        };
        assert_eq!((plan.url.as_str(), plan.replaced), ("https://a/x.mp3", false));
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
        f.lease_until = Some(LeaseEnd::at(NOW));
        let r = record(vec![("vocal", f.clone())]);
        let j = job("vocal", "https://a/x.mp3");
        assert_eq!(next_step(Some(&r), &j, NOW), NextStep::Busy { lease_until: LeaseEnd::at(NOW) });
        f.lease_until = Some(LeaseEnd::at(NOW.minus(Duration::from_secs(1))));
        f.attempts = 2;
        let r = record(vec![("vocal", f)]);
        let NextStep::Copy(plan) = next_step(Some(&r), &j, NOW) else { panic!("expected a copy") };
        assert_eq!(plan.earlier_attempts, 2, "the key is looked at before copying again");
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
        done.generation = 3;
        done.files.get_mut("drums").unwrap().status = FileStatus::Stored;
        let SettlePlan::Settle(plan) = settle_plan(&done, &id, NOW) else {
            panic!("expected settle");
        };
        assert_eq!(
            (plan.vault, plan.manifest_key.as_str(), plan.generation),
            (VaultState::Complete, "tasks/t1/manifest.json", 3)
        );
        assert_eq!(plan.manifest.vault, VaultState::Complete);

        let mut partial = done.clone();
        partial.files.get_mut("drums").unwrap().status = FileStatus::Failed;
        assert!(matches!(
            settle_plan(&partial, &id, NOW),
            SettlePlan::Settle(plan) if plan.vault == VaultState::Partial
        ));
    }

    /// A vault a worker settled without recording its manifest (it stopped in between).
    fn settled_without_manifest() -> TaskRecord {
        let mut r = record(vec![
            ("vocal", file("https://a/v.mp3", FileStatus::Stored)),
            ("drums", file("https://a/d.mp3", FileStatus::Failed)),
        ]);
        r.vault = VaultState::Partial;
        r
    }

    #[test]
    fn a_settled_vault_without_manifest_is_settled_again() {
        let id = TaskId::parse("t1").unwrap();
        let r = settled_without_manifest();
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected a settle") };
        assert_eq!((plan.vault, plan.manifest_key.as_str()), (VaultState::Partial, "tasks/t1/manifest.json"));
        assert_eq!(plan.manifest, Manifest::of(&r, VaultState::Partial, NOW));
        assert_eq!(plan.manifest.files.len(), 2);
    }

    /// A save adding files fenced the task: no settle until they are committed (or the
    /// sweeper takes the fence of a save that stopped away).
    #[test]
    fn no_settle_is_planned_while_a_save_adds_files() {
        let id = TaskId::parse("t1").unwrap();
        let mut r = record(vec![("vocal", file("https://a/v.mp3", FileStatus::Stored))]);
        assert!(matches!(settle_plan(&r, &id, NOW), SettlePlan::Settle(_)));
        r.adding = Some(r.generation + 1);
        assert_eq!(settle_plan(&r, &id, NOW), SettlePlan::Open);
        r.manifest_key = Some("tasks/t1/manifest.json".into());
        r.vault = VaultState::Complete;
        assert_eq!(settle_plan(&r, &id, NOW), SettlePlan::AlreadySettled, "a settled task read marked: nothing to do");
    }

    #[test]
    fn a_file_failed_by_expiry_has_the_settle_ask_the_reconciler_to_poll() {
        let id = TaskId::parse("t1").unwrap();
        let mut r = settled_without_manifest();
        r.stage = Stage::Complete;
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected a settle") };
        assert_eq!(plan.watch_from, None, "drums failed, but not because its URL expired");
        r.files.get_mut("drums").unwrap().error = Some("source answered 403 Forbidden".into());
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected a settle") };
        assert_eq!(plan.watch_from, Some(NOW.plus(crate::reconcile::FIRST_POLL_INTERVAL)));
        // Failed for a reason that may pass: watched from when a poll may reopen it, not polled
        // for nothing before.
        let drums = r.files.get_mut("drums").unwrap();
        drums.error = Some("dead_lettered: source answered 503 Service Unavailable (receive 8, the last)".into());
        drums.failed_at = Some(NOW);
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected a settle") };
        assert_eq!(plan.watch_from, Some(NOW.plus(crate::reconcile::FIRST_RELINK_AFTER)));
        // Read as watched: asked for all the same (the write keeps a schedule it finds).
        r.reconcile = Some(crate::RECONCILE_DUE.into());
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected a settle") };
        assert_eq!(plan.watch_from, Some(NOW.plus(crate::reconcile::FIRST_RELINK_AFTER)));
    }

    #[test]
    fn the_worker_holding_the_last_settled_file_is_the_one_to_settle() {
        let at = |ms| Some(Timestamp::from_unix_ms(ms));
        let mut r = settled_without_manifest();
        r.files.get_mut("vocal").unwrap().stored_at = at(2_000);
        r.files.get_mut("drums").unwrap().failed_at = at(1_000);
        let here = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert!(settled_last(&r, &here(&["vocal"])));
        assert!(!settled_last(&r, &here(&["drums"])), "a failure before the last store");
        r.files.get_mut("drums").unwrap().failed_at = at(3_000);
        assert!(settled_last(&r, &here(&["drums"])), "a failure is a settle too");
        r.files.get_mut("drums").unwrap().failed_at = at(2_000);
        assert!(settled_last(&r, &here(&["vocal"])), "a tie goes to the last name");
        let mut untimed = settled_without_manifest();
        untimed.files.values_mut().for_each(|f| (f.stored_at, f.failed_at) = (None, None));
        assert!(settled_last(&untimed, &[]), "nothing says who was last: settle");
    }

    #[test]
    fn a_recorded_manifest_means_nothing_to_do() {
        let id = TaskId::parse("t1").unwrap();
        let mut written = settled_without_manifest();
        written.manifest_key = Some("tasks/t1/manifest.json".into());
        assert_eq!(settle_plan(&written, &id, NOW), SettlePlan::AlreadySettled);
    }

    #[test]
    fn a_reopened_vault_is_open_until_its_new_files_settle() {
        let id = TaskId::parse("t1").unwrap();
        // Ingest reopens: a new file, vault pending, manifest key cleared.
        let mut reopened = settled_without_manifest();
        reopened.vault = VaultState::Pending;
        reopened.files.insert("bass".into(), file("https://a/b.mp3", FileStatus::Queued));
        assert_eq!(settle_plan(&reopened, &id, NOW), SettlePlan::Open);
        // Even a settled vault state left behind does not settle a vault whose files are open.
        let mut stale = reopened.clone();
        stale.vault = VaultState::Partial;
        assert_eq!(settle_plan(&stale, &id, NOW), SettlePlan::Open);
    }

    #[test]
    fn a_settled_task_without_files_or_manifest_gets_a_manifest_job() {
        let mut lyrics = TaskRecord::new("t1", Family::Lyrics, Stage::Complete, 200, "ok", NOW);
        let job = manifest_job(&lyrics).expect("a manifest job");
        assert_eq!(
            job,
            FileJob {
                task_id: "t1".into(),
                name: "manifest".into(),
                url: String::new(),
                key: "tasks/t1/manifest.json".into()
            }
        );
        assert!(s3_key::is_reserved_name(&job.name), "no file can have the job's name");
        // Its manifest is the settled, empty vault's.
        let id = TaskId::parse("t1").unwrap();
        let SettlePlan::Settle(plan) = settle_plan(&lyrics, &id, NOW) else { panic!("expected a settle") };
        assert_eq!((plan.vault, plan.manifest.files.len()), (VaultState::Complete, 0));

        lyrics.manifest_key = Some("tasks/t1/manifest.json".into());
        assert_eq!(manifest_job(&lyrics), None, "written already");
        let with_files = record(vec![("vocal", file("https://a/v.mp3", FileStatus::Stored))]);
        assert_eq!(with_files.vault, VaultState::Pending);
        assert_eq!(manifest_job(&with_files), None, "the downloader that settles it writes it");
        // Settled with files, but its manifest not recorded: a new stage over settled files.
        let mut next_stage = with_files.clone();
        next_stage.vault = VaultState::Complete;
        assert_eq!(manifest_job(&next_stage).map(|j| j.name), Some("manifest".to_owned()));
    }

    #[test]
    fn retry_after_is_honoured_within_the_queue_s_limits() {
        let (s, h) = (Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(1, None), 30 * s);
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(3, None), 120 * s);
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(1, Some(120 * s)), 120 * s, "longer than the backoff: as asked");
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(1, Some(5 * h)), 5 * h);
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(2, Some(s)), 60 * s, "shorter: the backoff, so receives last");
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(1, Some(Duration::ZERO)), 30 * s);
        assert_eq!(
            DOWNLOAD_BACKOFF.retry_delay_after(1, Some(24 * h)),
            11 * h + 30 * 60 * s,
            "at most 12 h less one invocation and a margin"
        );
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay_after(9, Some(Duration::MAX)), MAX_RETRY_AFTER);
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
        failed.error_code = Some(crate::reason::FailureCode::SourceExpired);
        let r = record(vec![("vocal", stored), ("drums", failed)]);
        let SettlePlan::Settle(plan) = settle_plan(&r, &id, NOW) else { panic!("expected settle") };
        let manifest = plan.manifest;
        assert_eq!(manifest.task_id, "t1");
        assert_eq!((manifest.family, manifest.stage), (Family::VocalSeparation, Stage::First));
        assert_eq!(manifest.vault, VaultState::Partial);
        assert_eq!(manifest.generated_at, NOW);
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
                    error_code: Some(crate::reason::FailureCode::SourceExpired),
                },
                ManifestFile {
                    name: "vocal".into(),
                    key: "tasks/t1/vocal.mp3".into(),
                    status: PublicFileStatus::Stored,
                    bytes: Some(42),
                    sha256: Some("ab".repeat(32)),
                    content_type: Some("audio/mpeg".into()),
                    error: None,
                    error_code: None,
                },
            ]
        );
    }

    #[test]
    fn retry_delay_doubles_from_30_seconds_up_to_15_minutes() {
        let secs: Vec<u64> = (0..=9).map(|n| DOWNLOAD_BACKOFF.retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 30, 60, 120, 240, 480, 900, 900, 900, 900]);
        assert_eq!(DOWNLOAD_BACKOFF.retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}

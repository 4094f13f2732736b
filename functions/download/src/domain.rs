//! One SQS message, start to end, over small traits (implemented for AWS in `aws.rs` and in
//! memory for the unit tests), bundled as [`Ports`]; the task read ([`LoadTask`]) and the
//! clock ([`Clock`]) are the shared ones of `stemvault_vault`. The task is an item
//! collection ([`stemvault_vault::items`]): each file has its own item, and the task item
//! holds the vault state.
//!
//! Per message ([`process_message`]):
//!
//! 1. parse the [`FileJob`] (a body this build cannot read is sent back, slowly, until the
//!    dead-letter queue: [`Outcome::Unreadable`]); a manifest job (a task whose
//!    manifest is due without any file to copy: one without files, settled by ingest, or one
//!    whose settler stopped, found by the sweeper) only asks for step 4;
//! 2. claim the file with ONE conditional update of its item, with no read before it
//!    (`downloading`, our worker id, a lease until the invocation's deadline; from `pending`,
//!    `enqueuing`, `queued`, or `downloading` once its lease ran out). Applied, it returns
//!    the item: its URL, key and attempts are the copy plan. Refused, it returns the item as
//!    it is, and [`next_step`] on it says why: no such file (drop), already stored or failed
//!    (a redelivery: nothing to copy), or another worker's claim (try later). Two copies of
//!    one message thus never both copy. A claim that fails (perhaps applied, every answer
//!    lost) is given back at once, conditional on being ours, so that the redelivery need not
//!    wait for its lease;
//! 3. copy it ([`crate::upload`]), then record `stored` or, for a permanent failure, `failed`,
//!    with one update of the file item conditional on still holding the claim (refused, it
//!    returns the item: holding what it wrote, the write was ours, its answer lost and the
//!    SDK's retry refused; settled otherwise, another worker took over once our lease ran
//!    out, and nothing is left to do; neither, the claim was lost). `failed` is also
//!    conditional on no newer URL waiting in the item (`next_url`, written by ingest for a
//!    callback that came during the copy): refused for one while still ours, the newer URL
//!    is copied under the same claim, and the `stored` or `failed` write that ends it sets
//!    the URL and key copied and removes `next_url`. Either write failing (perhaps applied,
//!    its answers lost) is followed by a release conditional on the claim, which one applied
//!    refuses. A retryable
//!    failure releases the claim (`pending` again: its message is still on the queue), except
//!    on the message's last receive, when the file is recorded `failed` (`dead_lettered`)
//!    and the message goes on to the dead-letter queue; but a newer URL whose copy the
//!    deadline cut short (or left no time to start) is released as the file's URL even then,
//!    for a redrive or the sweeper (`copy_held`). A URL that answers as expired (403, 404, 410,
//!    441) is asked a fresh link for ([`crate::fresh_link`]) before the file fails, and fails
//!    so only on the message's [`EXPIRY_CONFIRMED_ON_RECEIVE`]th receive (a newer URL copied in
//!    turn, after a second try). A
//!    file claimed before is first looked for under its key ([`crate::existing`]): a
//!    complete copy of the same URL that an earlier attempt stored but could not record is
//!    recorded `stored` without being copied again.
//!
//! Per task, once per SQS batch, after all of the batch's messages for it are done
//! ([`settle_check_for`] says which messages ask for it; [`check_settled`] does it):
//!
//! 4. read the task's items (one strongly consistent Query) and ask [`settle_plan`]; when
//!    every file is stored or failed and the manifest is not recorded yet: (a) write the
//!    manifest to S3, fenced by the file set's generation, the stage and the task item's
//!    version read (`put_fenced`), then (b) ONE update of the task item setting `vault` and
//!    `manifest_key` and removing `open`, conditional on the task item being the one read
//!    (its version; so its generation and stage the manifest's), not settled and marked open
//!    again since, nor fenced by a request adding files
//!    ([`stemvault_vault::TaskRecord::adding`]; a read showing the fence plans no settle).
//!    A file's write never refuses a settle, and only the worker holding the task's last
//!    settled file settles at once ([`stemvault_vault::download::settled_last`]) (of two
//!    that both settle, the second is refused and reads the task settled); the one whose
//!    write found the vault `pending` is the one that settled it
//!    (it logs it, and emits `SecondsToSettled` if it published `Task Vaulted`). A refused
//!    write means the task item was written since the read: ingest added or reopened a file
//!    (the task settles when those files do), recorded a new stage or counted a delivery, or
//!    is adding or reopening files right now; the reconciler recorded a poll; another worker
//!    settled it. The check reads again and settles what there is to settle (after
//!    [`SETTLE_CHECKS`] refused writes, a message comes back to check later). A retryable failure here returns the
//!    messages that asked for the check to the queue, and their redeliveries (the file
//!    already settled) check again: a worker that stopped between
//!    the manifest write and the settle write is thus healed by its own redelivery.
//!    Between (a) and (b), `Task Vaulted` is published ([`stemvault_vault::events::vaulted`],
//!    its id made of the task, the generation and the stage): a failed publish is such a retryable
//!    failure (no settle write; the redelivery publishes it again, same id), and a worker
//!    that stops after the settle write has published already. (But for a last check over a
//!    manifest newer than its read, which publishes only once its settle write applied: the
//!    table behind S3, restored from a backup. Its publish is tried a few times, and if it
//!    still fails the event is lost, with an ERROR: no redelivery would publish it.) Two workers settling at once
//!    may both publish it: the same id, which consumers drop. No table write is spent on it:
//!    the settle write keeps what it said (`announced`), and a settle that would say exactly
//!    that again (a reopened file failing again as before) publishes nothing.
//!
//! DynamoDB per file: two writes (the claim, then stored or failed; one more when a newer
//! URL is copied after the first failed, or a write failed and a release follows), no read; per task and batch: one Query, and one
//! write when it settles.

use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(doc)]
use stemvault_vault::download::manifest_job;
use stemvault_vault::download::{
    CopyPlan, DOWNLOAD_BACKOFF, DOWNLOAD_QUEUE_RETENTION, DropReason, MANIFEST_JOB_NAME, MAX_RETRY_AFTER, ManifestPlan,
    NextStep, SettlePlan, next_step, settle_plan, settled_last,
};
use stemvault_vault::events::{self, PublishEvents};
use stemvault_vault::{
    Attempt, BEST_EFFORT_CALL_TIMEOUT, Clock, Conditional, FileEntry, FileJob, FileStatus, LeaseEnd, LoadTask,
    Manifest, StoreError, TaskRecord, Timestamp, VaultState, answer_within, retry_on_conflict,
};
use suno_callbacks::{Family, Stage, TaskId};

use crate::error::{CopyError, DownloadError, FetchError, StorageError};
use crate::existing::{ReadObject, find_copy};
use crate::source::{ChunkStream, FetchSource, FreshLink};
use crate::upload::{Destination, ObjectStore, SourceBody, StoredObject, UploadLimits, upload};
use stemvault_vault::shown::{loggable_str, url_sha256};

pub use stemvault_vault::reason::{DEAD_LETTERED, FailureCode};

pub use stemvault_vault::download::MAX_RECEIVE_COUNT;

/// The receive on which a URL that answers as expired (403, 404, 410, 441) is failed so.
/// Before it the source may only not serve the file yet (a CDN behind the callback that
/// announced it, or refusing a burst for a while: an expired URL is days old, but a link
/// minutes old answering 404 would be lost for good, a poll bringing the same URL again), so
/// the message is retried, 30 s, 60 s, 120 s and 240 s on
/// ([`stemvault_vault::download::DOWNLOAD_BACKOFF`]): about 7.5 minutes, at the cost of a few
/// requests to a URL that did expire.
pub const EXPIRY_CONFIRMED_ON_RECEIVE: u32 = 5;
const _: () = assert!(EXPIRY_CONFIRMED_ON_RECEIVE < MAX_RECEIVE_COUNT, "confirmed before the dead-letter queue");

/// How many times a manifest write that lost a race is tried, each from a fresh read.
const MANIFEST_ATTEMPTS: u32 = 5;

/// How many times one settle check reads the task when its settle write is refused.
pub const SETTLE_CHECKS: u32 = 3;

/// Even a source that asks for the longest wait at every receive lets a message reach its
/// last receive, and then the dead-letter queue, within the download queue's retention.
const _: () = assert!((MAX_RECEIVE_COUNT as u64 - 1) * MAX_RETRY_AFTER.as_secs() < DOWNLOAD_QUEUE_RETENTION.as_secs());

/// A download claim on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unique per attempt.
    pub worker: String,
    /// Another worker may take over after this.
    pub lease_until: LeaseEnd,
    /// Now: a `downloading` file whose lease ended before this second may be taken over.
    pub now: Timestamp,
}

/// What a claim did.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimAnswer {
    /// The file is ours: its item as the claim left it (attempts counts this claim).
    Claimed(FileEntry),
    /// The condition did not hold: the file's item as it is (None: no such file).
    Refused(Option<FileEntry>),
}

pub trait ClaimFile {
    /// `pending`/`enqueuing`/`queued`, or `downloading` with a lease that ended before
    /// `claim.now`, -> `downloading` under `claim` (attempts + 1): one conditional write of
    /// the file's item, returning the item either way.
    fn claim_file(
        &self,
        task_id: &TaskId,
        name: &str,
        claim: &Claim,
    ) -> impl Future<Output = Result<ClaimAnswer, StoreError>> + Send;
}

/// What the claim holder's last write of its file (`stored`, `failed`) did.
#[derive(Debug, Clone, PartialEq)]
pub enum FileWrite {
    Applied,
    /// The condition did not hold: the file's item as it is (None: no such file). It may be
    /// our own write, applied, its answer lost, and the SDK's retry of it refused.
    Refused(Option<Box<FileEntry>>),
}

/// The claim holder's copy of a file: who holds it, and the newer URL and key it copies
/// instead of the item's own (its `next_url` and `next_key`, or the key that URL would be
/// given when an edited item has none, once the own URL failed for good; None while it copies
/// the item's `url` into its `key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCopy<'a> {
    pub worker: &'a str,
    pub next: Option<NextSource<'a>>,
}

/// A newer URL a callback brought for a file being copied, and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextSource<'a> {
    pub url: &'a str,
    pub key: &'a str,
}

pub trait RecordStored {
    /// `downloading` under `held.worker` -> `stored` with size, digest, content type and
    /// time, `url` and `key` set to `held.next` when that was copied, and `next_url` removed
    /// (a newer URL ingest wrote meanwhile gives way to the copy made); refused, the item as
    /// it is.
    fn record_stored(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        stored: &StoredObject,
        stored_at: Timestamp,
    ) -> impl Future<Output = Result<FileWrite, StoreError>> + Send;
}

/// Why and when a file failed for good: its code, its reason in words, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub code: FailureCode,
    pub reason: &'a str,
    pub at: Timestamp,
}

pub trait RecordFailed {
    /// `downloading` under `held.worker`, with no newer URL than the one copied waiting in
    /// `next_url` (none, or `held.next`'s, which becomes `url` and `key`) -> `failed` for
    /// good, with the failure; refused, the item as it is (a newer URL came while the copied
    /// one was copied: the holder copies that instead).
    fn record_failed(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        failure: &Failure<'_>,
    ) -> impl Future<Output = Result<FileWrite, StoreError>> + Send;
}

pub trait ReleaseFile {
    /// `downloading` under `held.worker` -> `pending` again (its message is still on the
    /// queue, so the task's `queued` set still names it and it reads as `queued`), keeping
    /// the last error for people to see, and `lease_until` set to now, when the claim ended:
    /// should the message never come back, the sweeper counts from it (`ingest::reclaim`).
    /// With `held.next` (its `next_url` was being copied, the own URL failed for good), only
    /// while the item has a `next_url` (that one, or one newer still), which becomes its `url`
    /// and `key`: the retry copies the newest, not the URL that failed.
    fn release_file(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        error: &str,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

/// What the settle write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleWrite {
    /// Applied, and the vault was `pending` before: this write settled the task.
    Settled,
    /// Applied over a vault already settled (by ingest, for a task without files or a new
    /// stage; by a settler that stopped before recording the manifest): the manifest recorded.
    Rewritten,
    /// The task item was written since the read (its version moved: ingest added or reopened
    /// a file, recorded a new stage or counted a delivery; the reconciler recorded a poll;
    /// another worker settled it), or a request adding or reopening files marked and fenced it
    /// (its file items may not have been read): nothing written.
    Refused,
}

pub trait SettleTask {
    /// Set `vault` and `manifest_key` and remove `open` (version + 1), if the task item is
    /// still at the plan's version (so its `generation` and `stage` the plan's), no request's
    /// add fence (`adding`) is there, and it is not settled and marked open again: one
    /// conditional write of the task item, saying whether the vault was `pending` before.
    fn settle_task(
        &self,
        task_id: &TaskId,
        plan: &ManifestPlan,
    ) -> impl Future<Output = Result<SettleWrite, StoreError>> + Send;
}

/// Object metadata (`x-amz-meta-file-generation`) of a manifest: its plan's
/// [generation](ManifestPlan::generation), which orders manifests from older to newer. (Not
/// `generation`: manifests written before item collections carry the record's old version
/// under that name, which is no file-set generation; they count as having none.)
pub const GENERATION_METADATA: &str = "file-generation";

/// Object metadata (`x-amz-meta-stage`) of a manifest: the stage it names, which orders
/// manifests of one generation (a new stage over the same files gets a new manifest).
pub const STAGE_METADATA: &str = "stage";

/// Object metadata (`x-amz-meta-task-version`) of a manifest: the task item's version its plan
/// was read at ([`ManifestPlan::version`]), which orders manifests of one generation and
/// stage: two requests adding files at one generation commit it twice, and the manifest of a
/// settle read between the two (refused since) is replaced by the one read after. Absent
/// (written before 2026-12-07): 0.
pub const VERSION_METADATA: &str = "task-version";

/// What a manifest is written with to order it among a task's manifests (with its stage, from
/// the manifest itself): [`GENERATION_METADATA`] and [`VERSION_METADATA`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFence {
    pub generation: u64,
    pub version: u64,
}

impl ManifestFence {
    pub fn of(plan: &ManifestPlan) -> ManifestFence {
        ManifestFence { generation: plan.generation, version: plan.version }
    }

    /// The object metadata a manifest of `stage` is written with under this fence.
    pub fn metadata(self, stage: Stage) -> [(&'static str, String); 3] {
        [
            (GENERATION_METADATA, self.generation.to_string()),
            (STAGE_METADATA, stage.as_str().to_owned()),
            (VERSION_METADATA, self.version.to_string()),
        ]
    }
}

pub trait WriteManifest {
    /// The vault bucket the manifests (and files) are written to, which `Task Vaulted`
    /// names.
    fn vault_bucket(&self) -> &str;

    /// Write `manifest` to `key` with `fence` as its [`GENERATION_METADATA`] and
    /// [`VERSION_METADATA`] and the manifest's stage as its [`STAGE_METADATA`], only if
    /// the object under `key` is still the one `expected` names: the ETag it had when read,
    /// or None for no object at all (S3's conditional writes, `If-Match` and
    /// `If-None-Match: *`). [`Conditional::Conflict`] when another write came first.
    fn write_manifest(
        &self,
        key: &str,
        manifest: &Manifest,
        fence: ManifestFence,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<Conditional, StorageError>> + Send;
}

/// What the function measures, one event at a time (CloudWatch metrics in [`crate::aws`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// A file was recorded `stored`: its size, and how long the copy took (None when an
    /// earlier attempt's copy was found and recorded).
    Stored { bytes: u64, copy_seconds: Option<f64> },
    /// A file was recorded `failed` for good ([`CopyError::failure_code`]).
    Failed { reason: &'static str },
    /// This worker settled a task's vault and published its `Task Vaulted`: seconds since the
    /// task's first callback.
    Settled { seconds: f64 },
    /// A settle check failed ([`DownloadError::settle_failure_reason`]): its messages come
    /// back, and the sweeper asks again every 5 minutes, so a fault no retry mends (a grant
    /// gone, a write the table refuses) keeps tasks unsettled with nothing else failing.
    SettleCheckFailed { reason: &'static str },
}

/// What the function counts ([`Measure`]s: its metrics).
pub use stemvault_vault::EmitMetrics;

/// Delay a retried message's next delivery (the trait every SQS-triggered function shares).
pub use stemvault_vault::delay::DelayMessage;
use stemvault_vault::delay::delay_next_delivery;

/// Everything one message needs.
pub trait Ports:
    Clock
    + LoadTask
    + ClaimFile
    + RecordStored
    + RecordFailed
    + ReleaseFile
    + SettleTask
    + WriteManifest
    + PublishEvents
    + DelayMessage
    + EmitMetrics<Measure>
    + FetchSource
    + FreshLink
    + ObjectStore
    + ReadObject
    + Sync
{
}

impl<T> Ports for T where
    T: Clock
        + LoadTask
        + ClaimFile
        + RecordStored
        + RecordFailed
        + ReleaseFile
        + SettleTask
        + WriteManifest
        + PublishEvents
        + DelayMessage
        + EmitMetrics<Measure>
        + FetchSource
        + FreshLink
        + ObjectStore
        + ReadObject
        + Sync
{
}

/// Fixed settings of the function.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_file_bytes: u64,
    pub part_size: usize,
}

/// One delivery of one message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: String,
    pub receipt_handle: Option<String>,
    /// `ApproximateReceiveCount`, 1 on the first delivery.
    pub receive_count: u32,
    /// Unique for this attempt.
    pub worker: String,
    /// Copying stops here, leaving time to record the outcome before the invocation ends.
    pub stop_at: Instant,
    /// When the invocation ends: the claim's lease.
    pub lease_until: LeaseEnd,
}

impl Delivery {
    /// The queue's last receive of this message ([`MAX_RECEIVE_COUNT`]): sent back, it would
    /// go to the dead-letter queue on its next receive.
    pub fn is_last_receive(&self) -> bool {
        self.receive_count >= MAX_RECEIVE_COUNT
    }
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored(StoredObject),
    /// The file was already stored or failed for good (a redelivery).
    AlreadySettled,
    /// A manifest job ([`manifest_job`]): nothing to copy, only the task's settle check.
    ManifestChecked,
    /// The file failed for good; the record says why.
    FailedForGood(String),
    /// The file failed again, retryably, on the message's last receive
    /// ([`MAX_RECEIVE_COUNT`]): recorded `failed` with a [`DEAD_LETTERED`] reason (so its
    /// task can settle), and the message goes on to the dead-letter queue (a failure for the
    /// batch response).
    DeadLettered(String),
    /// Nothing could be done, ever: the message is deleted.
    Dropped(DownloadError),
    /// The body is no job this build reads (a mismatch between releases during a deploy or
    /// a rollback, a message sent by hand): sent back after [`UNREADABLE_RETRY`] times its
    /// receive count, so that a deploy under way has minutes to bring a build that reads it,
    /// and one still unreadable reaches the dead-letter queue (and its alarm) about half an
    /// hour after it was sent, kept there for a redrive. Deleted, its file would wait,
    /// `queued`, for the sweeper's resend 4 days on, its URL likely expired by then.
    Unreadable(DownloadError),
    /// Try again later: the message goes back to the queue.
    Retry(DownloadError),
}

impl Outcome {
    /// Whether the message is reported as a batch item failure (so it is not deleted).
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Retry(_) | Outcome::DeadLettered(_) | Outcome::Unreadable(_))
    }

    /// How long to leave the file alone, at `now`: as long as the source asked (`Retry-After`
    /// on a 429 or 503), or, for a file another claim holds, until a second after its lease
    /// (a claim left by a failed write lapses then; redeliveries before only meet it again,
    /// each spending one of the message's receives).
    pub fn retry_after(&self, now: Timestamp) -> Option<Duration> {
        match self {
            Outcome::Retry(DownloadError::Copy(CopyError::Fetch(
                FetchError::Status { retry_after, .. } | FetchError::NoFreshLinkYet { retry_after, .. },
            ))) => *retry_after,
            Outcome::Retry(DownloadError::Busy { lease_until }) => Some(lease_until.lapses_in(now)),
            _ => None,
        }
    }

    /// Whether the message's task is to be checked for settling once the batch's messages of
    /// it are done: its file is stored or failed for good now (or was already), or it is a
    /// manifest job.
    pub fn wants_settle_check(&self) -> bool {
        matches!(
            self,
            Outcome::Stored(_)
                | Outcome::FailedForGood(_)
                | Outcome::DeadLettered(_)
                | Outcome::AlreadySettled
                | Outcome::ManifestChecked
        )
    }
}

/// Parse a message body; anything unusable is a permanent [`DownloadError::Malformed`].
pub fn parse_job(body: &str) -> Result<(FileJob, TaskId), DownloadError> {
    let job: FileJob =
        serde_json::from_str(body).map_err(|e| DownloadError::Malformed(format!("not a file job: {e}")))?;
    let task_id = TaskId::parse(&job.task_id).map_err(|e| DownloadError::Malformed(e.to_string()))?;
    if job.name.is_empty() {
        return Err(DownloadError::Malformed("the file name is empty".into()));
    }
    Ok((job, task_id))
}

/// The task whose settle check a handled message asks for ([`Outcome::wants_settle_check`]),
/// to be made once per task and batch, once the batch's messages of it are done
/// ([`check_settled`]).
pub fn settle_check_for(delivery: &Delivery, outcome: &Outcome) -> Option<TaskId> {
    outcome.wants_settle_check().then(|| parse_job(&delivery.body).ok().map(|(_, task_id)| task_id)).flatten()
}

/// Handle one delivery, up to its task's settle check (the caller's, once per task per
/// batch: [`settle_check_for`], [`check_settled`]). The current span gets `task_id` and
/// `file` recorded.
pub async fn process_message<P: Ports>(ports: &P, settings: &Settings, delivery: &Delivery) -> Outcome {
    let (job, task_id) = match parse_job(&delivery.body) {
        Ok(parsed) => parsed,
        Err(e) => return Outcome::Unreadable(e),
    };
    let span = tracing::Span::current();
    span.record("task_id", task_id.as_str());
    span.record("file", job.name.as_str());
    if Instant::now() >= delivery.stop_at {
        return Outcome::Retry(DownloadError::NoTimeLeft);
    }
    if job.name == MANIFEST_JOB_NAME {
        return Outcome::ManifestChecked;
    }
    match claim(ports, delivery, &task_id, &job).await {
        Ok(Claimed::Copy(plan)) => copy_claimed(ports, settings, delivery, &task_id, &job.name, plan).await,
        Ok(Claimed::AlreadySettled) => Outcome::AlreadySettled,
        Err(e) if e.is_retryable() => Outcome::Retry(e),
        Err(e) => Outcome::Dropped(e),
    }
}

/// What a successful [`claim`] leaves to do.
enum Claimed {
    /// The file is ours to copy, as planned.
    Copy(CopyPlan),
    /// The file is already stored or failed for good (a redelivery): nothing to copy.
    AlreadySettled,
}

/// Claim the file, with no read before: the claim's answer is the file's item. An error is
/// a decision too: [`DownloadError::Dropped`] (nothing to do, ever) or
/// [`DownloadError::Busy`] (another worker has it).
async fn claim<P: Ports>(
    ports: &P,
    delivery: &Delivery,
    task_id: &TaskId,
    job: &FileJob,
) -> Result<Claimed, DownloadError> {
    let now = ports.now();
    let claim = Claim { worker: delivery.worker.clone(), lease_until: delivery.lease_until, now };
    let answer = match ports.claim_file(task_id, &job.name, &claim).await {
        Ok(answer) => answer,
        Err(e) => {
            // The claim may have been applied with every answer lost: given back, it does not
            // hold the file from the redelivery until this invocation's lease ends (refused,
            // as it is conditional on our claim, when nothing was applied).
            let held = HeldCopy { worker: &delivery.worker, next: None };
            release_claim(ports, task_id, &job.name, held, &e.to_string()).await;
            return Err(e.into());
        }
    };
    let file = match answer {
        ClaimAnswer::Claimed(file) => file,
        ClaimAnswer::Refused(None) => return Err(DownloadError::Dropped(DropReason::FileMissing)),
        // Our own claim: it was applied, its answer lost, and the SDK's retry of the same
        // write found it (each delivery has its own worker id and claims once). Not another
        // worker's, which would hold the file until this invocation's lease runs out.
        ClaimAnswer::Refused(Some(file)) if file.is_held_by(&delivery.worker) => file,
        ClaimAnswer::Refused(Some(file)) => return refused(task_id, job, file, now),
    };
    let plan = CopyPlan {
        replaced: job.url_replaced_by(&file.url),
        // The item counts this claim.
        earlier_attempts: file.attempts.saturating_sub(1),
        url: file.url,
        key: file.key,
    };
    if plan.replaced {
        tracing::info!(url = %loggable_str(&plan.url), "the record has a newer URL than the message; copying that");
    }
    Ok(Claimed::Copy(plan))
}

/// Why a claim was refused, from the file's item as it is ([`next_step`] on a record
/// holding that one file).
fn refused(task_id: &TaskId, job: &FileJob, file: FileEntry, now: Timestamp) -> Result<Claimed, DownloadError> {
    let mut record = TaskRecord::new(task_id.as_str(), Family::Unknown, file.stage, 200, "", now);
    record.files.insert(job.name.clone(), file);
    match next_step(Some(&record), job, now) {
        NextStep::Drop(reason) => Err(DownloadError::Dropped(reason)),
        NextStep::Busy { lease_until } => Err(DownloadError::Busy { lease_until }),
        NextStep::AlreadySettled(status) => {
            tracing::info!(status = %status, "the file is already settled; nothing to copy");
            Ok(Claimed::AlreadySettled)
        }
        // The condition DynamoDB evaluated said no, yet the item it returned looks
        // claimable (a `downloading` item without a lease, which no claim writes).
        NextStep::Copy(_) => Err(DownloadError::Contention),
    }
}

/// How long a settle check deferred to the worker holding the task's last file
/// ([`Settling::Deferred`]) waits before its message checks again: that worker settles in
/// well under it (a Query, the manifest, `Task Vaulted`, the settle write). Should that worker
/// not have seen this one's file settled (a file's `stored_at` is taken before its write, so
/// the write stamped last may land first, before the other worker's read), this check is the
/// task's settle, and `Task Vaulted` waits this long rather than the download backoff's 30 s.
pub const SETTLE_DEFERRED_CHECK: Duration = Duration::from_secs(5);

/// The function's Lambda timeout (kept equal to template.yaml; the queue's visibility timeout
/// is 6 x this).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The delay per receive before a message this build cannot read comes back
/// ([`Outcome::Unreadable`]): 1, 2, ... 7 minutes, about half an hour to its last receive.
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(60);

/// After a retryable outcome: keep the message away for a delay that grows with its
/// receive count, [spread](stemvault_vault::delay::spread) so that files failing together (a
/// source host's outage) come back apart, or as long as the source's `Retry-After` or another
/// claim's lease asks ([`DOWNLOAD_BACKOFF`], [`Outcome::retry_after`]; for a message this build cannot read,
/// [`UNREADABLE_RETRY`] times its receive count); after its last receive
/// ([`MAX_RECEIVE_COUNT`]), for no time at all: no delay buys another attempt (the queue moves
/// it to the dead-letter queue at its next receive), and the dead-letter alarm should not
/// wait for it. Failing to do so only means a retry once the
/// queue's visibility timeout is over (so does SQS not answering
/// within [`BEST_EFFORT_CALL_TIMEOUT`]).
pub async fn delay_retry<P: DelayMessage + Clock>(ports: &P, delivery: &Delivery, outcome: &Outcome) {
    let Some(receipt_handle) = &delivery.receipt_handle else { return };
    let delay = match (delivery.is_last_receive(), outcome) {
        (true, _) => Duration::ZERO,
        (false, Outcome::Unreadable(_)) => UNREADABLE_RETRY.saturating_mul(delivery.receive_count),
        (false, Outcome::Retry(DownloadError::SettleDeferred)) => SETTLE_DEFERRED_CHECK,
        (false, _) => DOWNLOAD_BACKOFF.next_delay(delivery.receive_count, outcome.retry_after(ports.now())),
    };
    delay_next_delivery(ports, receipt_handle, delay).await;
}

/// After `delivery`'s handling ended with no outcome of its own (a panic, or the time before
/// the invocation's deadline ran out), the claim it may hold (if it took one): given back,
/// so the retry need not wait for the lease to run out; on the message's last receive
/// recorded failed as `dead_lettered` instead, as a copy failing so on it is, so that the
/// task can settle (partial; the sweeper's next lap settles it) and the reconciler may reopen
/// the file, rather than the file waiting out the queue's retention (4 days) for the sweeper
/// while its URL ages. A newer URL waiting in the item (`next_url`) is released as the file's
/// URL instead, as the copy path leaves one it had no time to copy. Best effort.
pub async fn release_or_fail_claim<P: Ports>(ports: &P, delivery: &Delivery, reason: &str) {
    let Ok((job, task_id)) = parse_job(&delivery.body) else { return };
    let held = HeldCopy { worker: &delivery.worker, next: None };
    if !delivery.is_last_receive() {
        return release_claim(ports, &task_id, &job.name, held, reason).await;
    }
    let failed_at = ports.now();
    let dead_lettered = dead_lettered_on(delivery, reason);
    let failure = Failure { code: FailureCode::DeadLettered, reason: &dead_lettered, at: failed_at };
    let failing = ports.record_failed(&task_id, &job.name, held, &failure);
    let ours = |f: &FileEntry| f.status == FileStatus::Failed && f.failed_at == Some(failed_at);
    let written = match answer_within(BEST_EFFORT_CALL_TIMEOUT, "recording the file failed", failing).await {
        // Still ours, so a newer URL waits in it (the failed write is conditional on none): the
        // release moves it in (the item's own `next_url` and `next_key`; an edited item
        // without the key is released as it is).
        Ok(FileWrite::Refused(Some(f))) if f.is_held_by(&delivery.worker) => {
            let next = f.next_url.as_deref().zip(f.next_key.as_deref()).map(|(url, key)| NextSource { url, key });
            if next.is_some() {
                tracing::error!(
                    "a newer URL came and the handling ended before it was copied, on the last receive: the file \
                     is left queued at it, for the sweeper; its message goes to the dead-letter queue"
                );
            }
            return release_claim(ports, &task_id, &job.name, HeldCopy { next, ..held }, reason).await;
        }
        Ok(written) => written,
        Err(e) => {
            return tracing::error!(
                error = %e,
                "not done on its last receive: recording the file failed gave no answer, so the message goes to \
                 the dead-letter queue with the file perhaps not recorded failed (its claim ends with its lease, \
                 its task stays open); redrive it once the table answers, or the sweeper sends the file again \
                 once its message can no longer be on the queue"
            );
        }
    };
    // Ours (applied, or its answer lost and the SDK's retry refused); else another claim, none
    // taken, or settled by this handling before it ended: its holder (or that write) settles it.
    if !matches!(after_refusal(written, ours), Finished::Ours) {
        return tracing::warn!(
            "not recorded failed on its last receive: the file is settled or another worker's, or was never \
             claimed (then the sweeper sends it again); its message goes to the dead-letter queue"
        );
    }
    ports.emit_metrics(&Measure::Failed { reason: FailureCode::DeadLettered.as_str() });
    tracing::error!(reason = %dead_lettered, "the file failed on its last receive; its message goes to the dead-letter queue");
}

/// The reason a file failed on `delivery`'s last receive keeps: [`DEAD_LETTERED`], `why`, and
/// which receive that was.
pub(crate) fn dead_lettered_on(delivery: &Delivery, why: &str) -> String {
    stemvault_vault::reason::dead_lettered(&format!("{why} (receive {}, the last)", delivery.receive_count))
}

/// Give the claim back (`pending` again, `why` kept), within the best-effort bound: often
/// just after the deadline stopped a copy, as the delay after it is. Unanswered in time, it
/// failed, and the claim ends with its lease. A release of a newer URL being copied makes the
/// item's newest URL its `url`; refused (no newer URL is left: the item changed under it) or
/// failed, it is made again as a plain release.
async fn release_claim<P: ReleaseFile>(ports: &P, task_id: &TaskId, name: &str, held: HeldCopy<'_>, why: &str) {
    let plain = HeldCopy { next: None, ..held };
    let releasing = async {
        match ports.release_file(task_id, name, held, why).await {
            // Whatever refused or failed the write moving the newer URL in, the claim still
            // goes back.
            at_next @ (Ok(Conditional::Conflict) | Err(_)) if held.next.is_some() => {
                if let Err(e) = at_next {
                    tracing::warn!(error = %e, "could not release the claim at the newer URL; releasing it as it is");
                }
                ports.release_file(task_id, name, plain, why).await
            }
            released => released,
        }
    };
    if let Err(e) = answer_within(BEST_EFFORT_CALL_TIMEOUT, "releasing the claim", releasing).await {
        tracing::warn!(error = %e, "could not release the claim; it ends with its lease");
    }
}

mod copy;
mod settle;

use copy::{Finished, after_refusal, copy_claimed};
#[cfg(test)]
use settle::{Fenced, put_fenced};
pub use settle::{Settling, check_settled};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod publish_tests;

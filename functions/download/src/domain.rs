//! One SQS message, start to end, over small traits (implemented for AWS in `aws.rs` and in
//! memory for the unit tests), bundled as [`Ports`]; the task read ([`LoadTask`]) and the
//! clock ([`Clock`]) are the shared ones of `stemvault_vault`:
//!
//! 1. parse the [`FileJob`] (a malformed body is dropped); a manifest job (a task without
//!    files, settled by ingest) goes straight to step 5;
//! 2. read the task record and decide ([`next_step`]): drop, nothing to copy, busy, or copy;
//! 3. claim the file (`downloading`, our worker id, lease until the invocation's deadline)
//!    with a conditional update, so two copies of one message never both copy (a claim that
//!    loses a race is tried again from a fresh read, with [`retry_on_conflict`]);
//! 4. copy it ([`crate::upload`]), then record `stored` or, for a permanent failure, `failed`,
//!    conditional on still holding the claim; a retryable failure releases the claim. A file
//!    claimed before is first looked for under its key ([`crate::existing`]): a complete copy
//!    of the same URL that an earlier attempt stored but could not record is recorded
//!    `stored` without being copied again;
//! 5. if every file of the task is now settled, flip the vault state (with a short manifest
//!    lease) conditional on the version read (retried likewise); the winner of that flip
//!    writes the manifest, then records its key. A redelivery resumes a manifest whose
//!    writer stopped in between.

use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(doc)]
use stemvault_vault::download::manifest_job;
use stemvault_vault::download::{
    CopyPlan, MANIFEST_JOB_NAME, MAX_RETRY_AFTER, ManifestPlan, NextStep, SettlePlan, next_step, retry_delay_after,
    settle_plan,
};
use stemvault_vault::{
    Attempt, Clock, Conditional, FileJob, LoadTask, Manifest, StoreError, Timestamp, VaultState, retry_on_conflict,
};
use suno_callbacks::TaskId;

use crate::error::{CopyError, DownloadError, FetchError, StorageError};
use crate::existing::{ReadObject, find_copy, source_sha256};
use crate::source::{FetchSource, loggable_str};
use crate::upload::{Destination, ObjectStore, StoredObject, UploadLimits, upload};

/// How many times a claim that lost a race is tried, each from a fresh read.
const CLAIM_ATTEMPTS: u32 = 3;
/// How many times a settle flip that lost a race is tried, each from a fresh read.
const SETTLE_ATTEMPTS: u32 = 5;
/// How many times a manifest write that lost a race is tried, each from a fresh read.
const MANIFEST_ATTEMPTS: u32 = 5;

/// The download queue keeps a message for SQS's default retention of 4 days (the template
/// sets none): even a source that asks for the longest wait at every receive lets the
/// message reach its last receive, and then the dead-letter queue, within it.
const _: () =
    assert!((stemvault_aws::provision::MAX_RECEIVE_COUNT as u64 - 1) * MAX_RETRY_AFTER.as_secs() < 4 * 24 * 3600);

/// A download claim on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unique per attempt.
    pub worker: String,
    /// The URL the claim is for: the claim fails if the record's URL changed since it was read.
    pub url: String,
    /// Unix seconds; another worker may take over after this.
    pub lease_until: i64,
    /// Unix seconds now: a `downloading` file whose lease ended before this may be taken over.
    pub now: i64,
}

pub trait ClaimFile {
    /// `pending`/`enqueuing`/`queued`, or `downloading` with an expired lease, -> `downloading`
    /// under `claim` (attempts + 1), if the file's URL is still `claim.url`.
    fn claim_file(
        &self,
        task_id: &TaskId,
        name: &str,
        claim: &Claim,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

pub trait RecordStored {
    /// `downloading` under `worker` -> `stored` with size, digest, content type and time.
    fn record_stored(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        stored: &StoredObject,
        stored_at: Timestamp,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

pub trait RecordFailed {
    /// `downloading` under `worker` -> `failed` for good, with the reason.
    fn record_failed(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

pub trait ReleaseFile {
    /// `downloading` under `worker` -> `queued` again (the message will be retried), keeping
    /// the last error for people to see.
    fn release_file(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        error: &str,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

pub trait SettleTask {
    /// Set `vault` and `manifest_lease_until = lease_until` (the flip from `pending`, or the
    /// takeover of a manifest whose writer stopped), if the record is still at
    /// `expected_version`.
    fn settle_task(
        &self,
        task_id: &TaskId,
        expected_version: u64,
        vault: VaultState,
        lease_until: i64,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
    /// After the manifest is written: set `manifest_key` and remove the lease, if `vault`
    /// and the lease are still the ones [`SettleTask::settle_task`] set (not reopened by
    /// ingest, not taken over by another worker).
    fn record_manifest(
        &self,
        task_id: &TaskId,
        vault: VaultState,
        lease_until: i64,
        manifest_key: &str,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
    /// Undo [`SettleTask::settle_task`] (its write made the record `settled_version`) when
    /// the manifest could not be written.
    fn reopen_task(
        &self,
        task_id: &TaskId,
        settled_version: u64,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

/// Object metadata (`x-amz-meta-generation`) of a manifest: its plan's
/// [generation](ManifestPlan::generation), which orders manifests from older to newer.
pub const GENERATION_METADATA: &str = "generation";

pub trait WriteManifest {
    /// Write `manifest` to `key` with `generation` as its [`GENERATION_METADATA`], only if
    /// the object under `key` is still the one `expected` names: the ETag it had when read,
    /// or None for no object at all (S3's conditional writes, `If-Match` and
    /// `If-None-Match: *`). [`Conditional::Conflict`] when another write came first.
    fn put_manifest(
        &self,
        key: &str,
        manifest: &Manifest,
        generation: u64,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<Conditional, StorageError>> + Send;
}

/// What the function measures, one event at a time (CloudWatch metrics in [`crate::aws`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// A file was recorded `stored`: its size, and how long the copy took (None when an
    /// earlier attempt's copy was found and recorded).
    Stored { bytes: u64, copy_seconds: Option<f64> },
    /// A file was recorded `failed` for good ([`CopyError::reason_code`]).
    Failed { reason: &'static str },
    /// This worker settled a task's vault: seconds since the task's first callback.
    Settled { seconds: f64 },
}

pub trait EmitMetrics {
    /// Never fails the caller.
    fn emit_metrics(&self, measure: &Measure);
}

pub trait DelayMessage {
    /// Keep the message invisible for `delay` from now.
    fn delay_message(&self, receipt_handle: &str, delay: Duration) -> impl Future<Output = Result<(), String>> + Send;
}

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
    + DelayMessage
    + EmitMetrics
    + FetchSource
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
        + DelayMessage
        + EmitMetrics
        + FetchSource
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
    /// Unix seconds when the invocation ends: the claim's lease.
    pub lease_until: i64,
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored(StoredObject),
    /// The file was already stored or failed for good (a redelivery).
    AlreadySettled,
    /// A manifest job ([`manifest_job`]): the task's manifest is written, or was not due.
    ManifestChecked,
    /// The file failed for good; the record says why.
    FailedForGood(String),
    /// Nothing could be done, ever: the message is deleted.
    Dropped(DownloadError),
    /// Try again later: the message goes back to the queue.
    Retry(DownloadError),
}

impl Outcome {
    /// Whether the message is reported as a batch item failure (so it is not deleted).
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Retry(_))
    }

    /// How long the source asked to be left alone (`Retry-After` on a 429 or 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retry(DownloadError::Copy(CopyError::Fetch(FetchError::Status { retry_after, .. }))) => {
                *retry_after
            }
            _ => None,
        }
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

/// Handle one delivery. The current span gets `task_id` and `file` recorded.
pub async fn process_message<P: Ports>(ports: &P, settings: &Settings, delivery: &Delivery) -> Outcome {
    let (job, task_id) = match parse_job(&delivery.body) {
        Ok(parsed) => parsed,
        Err(e) => return Outcome::Dropped(e),
    };
    let span = tracing::Span::current();
    span.record("task_id", task_id.as_str());
    span.record("file", job.name.as_str());
    if Instant::now() >= delivery.stop_at {
        return Outcome::Retry(DownloadError::NoTimeLeft);
    }
    if job.name == MANIFEST_JOB_NAME {
        return after_settling(ports, &task_id, Outcome::ManifestChecked).await;
    }
    let claimed = retry_on_conflict(ports, CLAIM_ATTEMPTS, |_| claim(ports, delivery, &task_id, &job)).await;
    match claimed {
        Ok(Some(Claimed::Copy(plan))) => copy_claimed(ports, settings, delivery, &task_id, &job.name, &plan).await,
        Ok(Some(Claimed::AlreadySettled)) => after_settling(ports, &task_id, Outcome::AlreadySettled).await,
        Ok(None) => Outcome::Retry(DownloadError::Contended),
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

/// Read the record, decide, and claim the file if it is to be copied. An error is a
/// decision too: [`DownloadError::Dropped`] (nothing to do, ever) or
/// [`DownloadError::Busy`] (another worker has it).
async fn claim<P: Ports>(
    ports: &P,
    delivery: &Delivery,
    task_id: &TaskId,
    job: &FileJob,
) -> Result<Attempt<Claimed>, DownloadError> {
    let record = ports.load_task(task_id).await?;
    let plan = match next_step(record.as_ref(), job, ports.now()) {
        NextStep::Drop(reason) => return Err(DownloadError::Dropped(reason)),
        NextStep::Busy { lease_until } => return Err(DownloadError::Busy { lease_until }),
        NextStep::AlreadySettled(status) => {
            tracing::info!(status = %status, "the file is already settled; nothing to copy");
            return Ok(Attempt::Done(Claimed::AlreadySettled));
        }
        NextStep::Copy(plan) => plan,
    };
    if plan.replaced {
        tracing::info!(url = %loggable_str(&plan.url), "the record has a newer URL than the message; copying that");
    }
    let claim = Claim {
        worker: delivery.worker.clone(),
        url: plan.url.clone(),
        lease_until: delivery.lease_until,
        now: ports.now().unix_seconds(),
    };
    Ok(match ports.claim_file(task_id, &job.name, &claim).await? {
        Conditional::Applied => Attempt::Done(Claimed::Copy(plan)),
        Conditional::Conflict => {
            tracing::debug!("the claim lost a race; reading the record again");
            Attempt::Conflict
        }
    })
}

/// After a retryable outcome: keep the message away for a delay that grows with its
/// receive count, or as long as the source's `Retry-After` asked ([`retry_delay_after`]).
/// Failing to do so only means a retry once the queue's visibility timeout is over.
pub async fn delay_retry<P: DelayMessage>(ports: &P, delivery: &Delivery, outcome: &Outcome) {
    let Some(receipt_handle) = &delivery.receipt_handle else { return };
    let delay = retry_delay_after(delivery.receive_count, outcome.retry_after());
    if let Err(e) = ports.delay_message(receipt_handle, delay).await {
        tracing::warn!(error = %e, "could not delay the message's next delivery");
    }
}

/// After a panic while handling `delivery`: give back its claim (if it took one), so the
/// retry need not wait for the lease to run out. Best effort.
pub async fn release_after_panic<P: ReleaseFile>(ports: &P, delivery: &Delivery, reason: &str) {
    let Ok((job, task_id)) = parse_job(&delivery.body) else { return };
    if let Err(e) = ports.release_file(&task_id, &job.name, &delivery.worker, reason).await {
        tracing::warn!(error = %e, "could not release the claim after a panic; it ends with its lease");
    }
}

async fn copy_claimed<P: Ports>(
    ports: &P,
    settings: &Settings,
    delivery: &Delivery,
    task_id: &TaskId,
    name: &str,
    plan: &CopyPlan,
) -> Outcome {
    let started = Instant::now();
    let worker = delivery.worker.as_str();
    let found = match plan.earlier_attempts {
        0 => None,
        _ => stored_before(ports, plan, delivery.stop_at).await,
    };
    let copied_now = found.is_none();
    let copied = match found {
        Some(stored) => Ok(stored),
        None => {
            tracing::info!(source = %loggable_str(&plan.url), key = %plan.key, "copying");
            copy(ports, settings, plan, delivery.stop_at).await
        }
    };
    let error = match copied {
        Ok(stored) => {
            let stored_at = ports.now();
            return match ports.record_stored(task_id, name, worker, &stored, stored_at).await {
                Ok(Conditional::Applied) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(bytes = stored.bytes, sha256 = %stored.sha256_hex, parts = stored.parts, seconds, "stored");
                    let copy_seconds = copied_now.then_some(seconds);
                    ports.emit_metrics(&Measure::Stored { bytes: stored.bytes, copy_seconds });
                    after_settling(ports, task_id, Outcome::Stored(stored)).await
                }
                Ok(Conditional::Conflict) => Outcome::Retry(DownloadError::LostClaim),
                Err(e) => Outcome::Retry(e.into()),
            };
        }
        Err(e) => e,
    };
    if error.is_retryable() {
        match ports.release_file(task_id, name, worker, &error.to_string()).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not release the claim; it ends with its lease"),
        }
        return Outcome::Retry(error.into());
    }
    let reason = error.to_string();
    match ports.record_failed(task_id, name, worker, &reason).await {
        Ok(Conditional::Applied) => {
            tracing::warn!(reason = %reason, "the file failed for good");
            ports.emit_metrics(&Measure::Failed { reason: error.reason_code() });
            after_settling(ports, task_id, Outcome::FailedForGood(reason)).await
        }
        Ok(Conditional::Conflict) => Outcome::Retry(DownloadError::LostClaim),
        Err(e) => Outcome::Retry(e.into()),
    }
}

async fn after_settling<P: Ports>(ports: &P, task_id: &TaskId, outcome: Outcome) -> Outcome {
    match settle(ports, task_id).await {
        Ok(()) => outcome,
        Err(e) => Outcome::Retry(e),
    }
}

/// The complete copy of the plan's URL an earlier attempt stored under its key, if any. Not
/// being able to tell only means copying again, as if there were none.
async fn stored_before<P: ReadObject + Sync>(ports: &P, plan: &CopyPlan, stop_at: Instant) -> Option<StoredObject> {
    match find_copy(ports, &plan.key, &plan.url, stop_at).await {
        Ok(Some(stored)) => {
            tracing::info!(key = %plan.key, bytes = stored.bytes, "an earlier attempt stored the file; recording it");
            Some(stored)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for an earlier copy; copying");
            None
        }
    }
}

/// Fetch and upload, stopping at `stop_at`.
async fn copy<P: FetchSource + ObjectStore + Sync>(
    ports: &P,
    settings: &Settings,
    plan: &CopyPlan,
    stop_at: Instant,
) -> Result<StoredObject, CopyError> {
    let opening = ports.open(&plan.url, settings.max_file_bytes);
    let body = tokio::time::timeout_at(stop_at.into(), opening).await.map_err(|_| CopyError::Deadline)??;
    let limits = UploadLimits { part_size: settings.part_size, max_bytes: settings.max_file_bytes, stop_at };
    let source = source_sha256(&plan.url);
    upload(ports, Destination { key: &plan.key, source_sha256: &source }, body, limits).await
}

/// If the task's files are all settled and its vault still `pending`, settle it and write
/// its manifest (once: only the worker whose conditional flip wins writes it, under a short
/// lease). A vault that settled without its manifest being recorded (its writer stopped in
/// between) gets it written once the lease is over.
///
/// The lease holder's message is kept until the manifest is recorded (any failure on the way
/// retries it), so when a writer stops, its own redelivery comes back here and resumes.
async fn settle<P: Ports>(ports: &P, task_id: &TaskId) -> Result<(), DownloadError> {
    match retry_on_conflict(ports, SETTLE_ATTEMPTS, |_| flip_vault(ports, task_id)).await? {
        Some(Some(plan)) => write_manifest(ports, task_id, &plan).await,
        Some(None) => Ok(()),
        None => Err(DownloadError::Contended),
    }
}

/// Read the record and, if the task is to be settled (or its stopped manifest writer
/// resumed), flip its vault state under a manifest lease: `Some(plan)` when this worker is
/// to write the manifest, `None` when there is nothing to do.
async fn flip_vault<P: Ports>(ports: &P, task_id: &TaskId) -> Result<Attempt<Option<ManifestPlan>>, DownloadError> {
    let Some(record) = ports.load_task(task_id).await? else { return Ok(Attempt::Done(None)) };
    let now = ports.now();
    let plan = match settle_plan(&record, task_id, now) {
        SettlePlan::Open | SettlePlan::AlreadySettled => return Ok(Attempt::Done(None)),
        SettlePlan::Settle(plan) => plan,
        // A task without files settles when ingest records it; its manifest job writes it.
        SettlePlan::Resume(plan) if record.files.is_empty() => plan,
        SettlePlan::Resume(plan) => {
            tracing::warn!(
                vault = %plan.vault,
                "the vault settled but its manifest was never recorded; writing it"
            );
            plan
        }
    };
    let settling = record.vault == VaultState::Pending;
    Ok(match ports.settle_task(task_id, plan.expected_version, plan.vault, plan.lease_until).await? {
        Conditional::Applied => {
            if settling {
                let seconds = (now.unix_ms - record.first_received_at.unix_ms).max(0) as f64 / 1000.0;
                ports.emit_metrics(&Measure::Settled { seconds });
            }
            Attempt::Done(Some(plan))
        }
        Conditional::Conflict => Attempt::Conflict,
    })
}

/// Under the lease [`settle`] took: write the manifest, then record its key.
async fn write_manifest<P: Ports>(ports: &P, task_id: &TaskId, plan: &ManifestPlan) -> Result<(), DownloadError> {
    if let Err(e) = put_fenced(ports, plan).await {
        match ports.reopen_task(task_id, plan.generation()).await {
            Ok(Conditional::Applied) => {}
            Ok(Conditional::Conflict) => tracing::warn!("the task changed before it could be reopened"),
            Err(reopen) => tracing::error!(error = %reopen, "could not reopen the task after the manifest failed"),
        }
        return Err(e);
    }
    let key = plan.manifest_key.as_str();
    match ports.record_manifest(task_id, plan.vault, plan.lease_until, key).await? {
        Conditional::Applied => {
            let (vault, files) = (plan.vault.as_str(), plan.manifest.files.len());
            tracing::info!(vault, key, files, "task settled; manifest written");
        }
        // Reopened by ingest (a new manifest follows when it settles again) or taken over by
        // another worker after the lease ran out (that one records it).
        Conditional::Conflict => {
            tracing::info!(key, "manifest written, but the task changed meanwhile; not recording it")
        }
    }
    Ok(())
}

/// Write the plan's manifest unless a newer one is already under its key.
///
/// The record fences who *starts* a manifest (one lease holder per generation), but not when
/// its PutObject lands: a writer that stalls past its lease can be overtaken by the worker
/// that takes the lease over, or by the next settle after ingest reopened the task, and its
/// late PutObject would replace their newer manifest. So the object is fenced too, by
/// generation ([`ManifestPlan::generation`], kept as [`GENERATION_METADATA`]): read what is
/// under the key; if its generation is this plan's or later, there is nothing to write (a
/// newer manifest, or this one, is there); otherwise write conditionally on the object read
/// still being there (its ETag, or none). Every write that lands thus replaces exactly the
/// object its writer saw, which was older, so the generation under the key only grows,
/// whatever the timing; a write that loses the race reads again.
///
/// (The other design, a new key per generation with the record pointing at the current
/// one, would leave `tasks/<task_id>/manifest.json` stale or gone; this keeps that one key.)
async fn put_fenced<P: Ports>(ports: &P, plan: &ManifestPlan) -> Result<(), DownloadError> {
    let (key, generation) = (plan.manifest_key.as_str(), plan.generation());
    let written = retry_on_conflict(ports, MANIFEST_ATTEMPTS, |_| async move {
        let current = ports.head_object(key).await?;
        let expected = match &current {
            Some(head) => {
                let theirs = head.metadata.get(GENERATION_METADATA).and_then(|g| g.parse::<u64>().ok());
                // A manifest without one predates generations: any plan is newer.
                if theirs.is_some_and(|theirs| theirs >= generation) {
                    tracing::info!(key, generation, theirs, "a manifest as new or newer is already written");
                    return Ok(Attempt::Done(()));
                }
                Some(head.etag.as_str())
            }
            None => None,
        };
        Ok::<_, DownloadError>(match ports.put_manifest(key, &plan.manifest, generation, expected).await? {
            Conditional::Applied => Attempt::Done(()),
            Conditional::Conflict => {
                tracing::debug!(key, "the manifest changed since it was read; reading it again");
                Attempt::Conflict
            }
        })
    })
    .await?;
    written.ok_or(DownloadError::Contended)
}

#[cfg(test)]
mod tests;

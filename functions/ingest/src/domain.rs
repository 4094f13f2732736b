//! The ingest use-case: record one valid callback, archive its body and queue its files,
//! over small ports that the AWS adapters ([`crate::aws`]) and the in-memory ones
//! ([`crate::memory`]) implement.
//!
//! 1. Archive the body and write the record **at the same time**. The record write is a
//!    read, a pure merge ([`stemvault_vault::ingest`]) and a put conditional on the version
//!    read, retried from the read on a conflict. The body is archived on every delivery
//!    (same key, same bytes), so a retry repairs an archive that failed, even as a duplicate.
//! 2. Send one message per file the merge claimed for this request, mark the sent ones
//!    `queued` (conditional on the claim) and release the others back to `pending`.
//! 3. Files of this callback that a concurrent delivery is queueing are waited for (bounded);
//!    whatever that delivery released, or left when its lease ran out, is taken over.

use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stemvault_vault::ingest::{
    BodyInfo, Claimant, MAX_ITEM_ESTIMATE_BYTES, Merge, ingest_callback, item_size_estimate, reclaim,
};
use stemvault_vault::{FileJob, Now, TaskRecord};
use suno_callbacks::{CallbackEvent, TaskId, s3_key};

use crate::error::{IngestError, StoreError};

/// Strongly consistent read of a task's record.
pub trait LoadRecord {
    fn load_record(&self, task_id: &TaskId) -> impl Future<Output = Result<Option<TaskRecord>, StoreError>> + Send;
}

/// Whole-record write if the stored version is still `expected_version` (None: if no record
/// exists). `record.version` is already the new version.
pub trait SaveRecord {
    fn save_record(
        &self,
        record: &TaskRecord,
        expected_version: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Keep a callback body verbatim under `key`.
pub trait ArchiveBody {
    fn archive_body(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<(), String>> + Send;
}

/// Send one message per job; one result per job, in order: the message id or why it failed.
pub trait EnqueueFiles {
    fn enqueue_files(&self, jobs: &[FileJob]) -> impl Future<Output = Vec<Result<String, String>>> + Send;
}

/// A file whose message was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentJob {
    pub name: String,
    pub message_id: String,
}

/// Mark sent files `queued`, each only while it is still `enqueuing` under `claimant`'s claim
/// (a file taken over or already picked up by a downloader is left alone).
pub trait MarkQueued {
    fn mark_queued(
        &self,
        task_id: &TaskId,
        claimant: &str,
        sent: &[SentJob],
        queued_at: Now,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Put files whose message could not be sent back to `pending`, each only while it is still
/// `enqueuing` under `claimant`'s claim.
pub trait ReleaseClaims {
    fn release_claims(
        &self,
        task_id: &TaskId,
        claimant: &str,
        names: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The clock, and waiting (so tests can run leases and backoffs in virtual time).
pub trait Clock {
    fn now(&self) -> Now;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Everything the use-case needs.
pub trait IngestPorts:
    LoadRecord + SaveRecord + ArchiveBody + EnqueueFiles + MarkQueued + ReleaseClaims + Clock
{
}

impl<T> IngestPorts for T where
    T: LoadRecord + SaveRecord + ArchiveBody + EnqueueFiles + MarkQueued + ReleaseClaims + Clock
{
}

/// The IngestFunction's `Timeout` in template.yaml (tests/tests/ingest.rs checks they agree):
/// no request runs longer than this.
pub const LAMBDA_TIMEOUT: Duration = Duration::from_secs(12);

/// Timing of the claim protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long this request's enqueue claims hold before others may take them over. At least
    /// [`LAMBDA_TIMEOUT`], so a live request keeps its claims; barely more, because a request
    /// that dies holding claims makes every retry wait until they lapse.
    pub lease: Duration,
    /// How long a request waits for files a concurrent delivery is queueing.
    pub wait_budget: Duration,
    /// Read-merge-put attempts before giving up on a contended record.
    pub max_save_attempts: u32,
    /// When the whole use-case gives up and answers "retry" (the provider waits 10 to 15 s;
    /// shorter than [`LAMBDA_TIMEOUT`], so the answer is ours, not a Lambda timeout).
    pub deadline: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        // The provider waits 10 to 15 s for an answer: stay well inside that.
        Settings {
            lease: LAMBDA_TIMEOUT + Duration::from_secs(3),
            wait_budget: Duration::from_secs(5),
            max_save_attempts: 40,
            deadline: Duration::from_secs(8),
        }
    }
}

/// What happened to an accepted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The same body was accepted before.
    pub duplicate: bool,
    /// The task's stage after this callback.
    pub task_stage: String,
    /// Messages this request sent.
    pub files_queued: usize,
}

/// Record, archive and queue one valid callback within `settings.deadline`. `request_id`
/// names this request's claims.
///
/// Giving up midway is safe: the body is archived again and the record merged again by the
/// retry, and claims left behind lapse with their lease and are taken over.
pub async fn ingest<P: IngestPorts>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
) -> Result<Outcome, IngestError> {
    tokio::time::timeout(settings.deadline, ingest_unbounded(ports, settings, event, body, request_id))
        .await
        .unwrap_or(Err(IngestError::Deadline { after: settings.deadline }))
}

async fn ingest_unbounded<P: IngestPorts>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
) -> Result<Outcome, IngestError> {
    let sha256_hex = hex::encode(Sha256::digest(body));
    let archive_key = s3_key::callback_body_key(&event.task_id, event.stage, &sha256_hex);
    let info = BodyInfo { sha256_hex, archive_key, bytes: body.len() as u64 };
    let claimant = Claimant { id: request_id.to_owned(), lease: settings.lease };

    let (archived, recorded) =
        tokio::join!(ports.archive_body(&info.archive_key, body), record(ports, settings, event, &info, &claimant));
    let merge = recorded?;
    let task = &event.task_id;
    let mut files_queued = send_claimed(ports, task, &claimant, &merge.claims.to_enqueue).await?;
    if !merge.claims.wait_for.is_empty() {
        let wanted: Vec<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
        files_queued += wait_for_others(ports, settings, task, &claimant, &wanted).await?;
    }
    // Checked last: the files are worth queueing even when the archive failed.
    archived.map_err(IngestError::Archive)?;
    Ok(Outcome { duplicate: merge.duplicate, task_stage: merge.record.stage, files_queued })
}

/// Read, merge, put conditional on the version read; again on a conflict.
async fn record<P: IngestPorts>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &BodyInfo,
    claimant: &Claimant,
) -> Result<Merge, IngestError> {
    for attempt in 0..settings.max_save_attempts {
        let existing = ports.load_record(&event.task_id).await?;
        let merge = ingest_callback(existing.as_ref(), event, body, claimant, ports.now());
        // Messages and details are bounded by the merge; hundreds of long URLs are not.
        let bytes = item_size_estimate(&merge.record);
        if bytes > MAX_ITEM_ESTIMATE_BYTES {
            return Err(IngestError::TooLargeToRecord { bytes });
        }
        match ports.save_record(&merge.record, existing.map(|r| r.version)).await {
            Ok(()) => return Ok(merge),
            Err(StoreError::Conflict) => ports.sleep(conflict_backoff(attempt)).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IngestError::Contention { attempts: settings.max_save_attempts })
}

/// Send the claimed jobs, mark the sent ones queued, release the rest. Returns how many
/// were sent. The sweeper sends what it claims through here too.
pub(crate) async fn send_claimed<P: EnqueueFiles + MarkQueued + ReleaseClaims + Clock>(
    ports: &P,
    task: &TaskId,
    claimant: &Claimant,
    jobs: &[FileJob],
) -> Result<usize, IngestError> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut results = ports.enqueue_files(jobs).await.into_iter();
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    let mut reason = None;
    for job in jobs {
        match results.next().unwrap_or_else(|| Err("no result for this job".into())) {
            Ok(message_id) => sent.push(SentJob { name: job.name.clone(), message_id }),
            Err(why) => {
                reason.get_or_insert(why);
                failed.push(job.name.clone());
            }
        }
    }
    if !sent.is_empty() {
        if let Err(e) = ports.mark_queued(task, &claimant.id, &sent, ports.now()).await {
            // The messages exist and the downloader takes files that are still `enqueuing`,
            // so the files will be stored; the record only lags behind until then.
            tracing::warn!(error = %e, files = sent.len(), "messages sent but files not marked queued");
        }
    }
    if failed.is_empty() {
        return Ok(sent.len());
    }
    if let Err(e) = ports.release_claims(task, &claimant.id, &failed).await {
        tracing::warn!(error = %e, files = failed.len(), "claims not released; they lapse with their lease");
    }
    Err(IngestError::Enqueue { failed: failed.len(), total: jobs.len(), reason: reason.unwrap_or_default() })
}

/// Wait until every wanted file is queued or beyond, taking over released or lapsed claims.
/// Returns how many messages this request sent while waiting.
async fn wait_for_others<P: IngestPorts>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    claimant: &Claimant,
    wanted: &[&str],
) -> Result<usize, IngestError> {
    let deadline = ports.now().plus(settings.wait_budget);
    let mut delay = Duration::from_millis(25);
    let mut queued = 0;
    loop {
        ports.sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(400));
        let Some(current) = ports.load_record(task).await? else {
            return Err(StoreError::Unavailable("the task record disappeared".into()).into());
        };
        let (claimed, claims) = reclaim(&current, claimant, ports.now(), wanted);
        if let Some(claimed) = claimed {
            match ports.save_record(&claimed, Some(current.version)).await {
                Ok(()) => queued += send_claimed(ports, task, claimant, &claims.to_enqueue).await?,
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        } else if claims.wait_for.is_empty() {
            return Ok(queued);
        }
        if ports.now() >= deadline {
            return Err(IngestError::StillEnqueuing { files: claims.wait_for.len().max(1) });
        }
    }
}

/// Exponential backoff with full jitter (5 ms doubling up to 200 ms), so concurrent
/// deliveries of one task spread out instead of colliding again.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap_ms = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt);
    Duration::from_millis(1 + jitter % cap_ms)
}

#[cfg(test)]
mod tests;

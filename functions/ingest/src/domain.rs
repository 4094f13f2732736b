//! The ingest use-case: record one valid callback, archive its body and queue its files; and
//! register for polling the task of a callback refused as stale but signed by a key.
//! It is [`stemvault_vault::accept`], which the reconciler runs too for a result it polled,
//! over the ports the AWS adapters ([`crate::aws`]) and the in-memory ones of the tests and
//! the benchmark implement; ingest adds the callback secret for the checks in front of it.

use std::future::Future;
use std::time::Duration;

pub use stemvault_vault::accept::{ArchiveBody, Outcome, Settings};
use stemvault_vault::register::Registration;
use stemvault_vault::time::passed_or_stepped_back;
use stemvault_vault::{Clock, LoadTask, SaveTask, StorageError, Timestamp};
use suno_callbacks::{CallbackEvent, Family, TaskId, s3_key};

use crate::credentials::{ReadPreviousSecret, ReadSecret};
use crate::error::{AcceptError, StoreError};
// What the use-case's tests (domain/tests.rs, which moved here with it) name.
#[cfg(test)]
use {
    sha2::{Digest, Sha256},
    stemvault_vault::enqueue::{EnqueueFiles, MarkQueued, ReleaseClaims},
};

/// Keep a verified callback the table failed under `key` (under `parked/`), unless a copy is
/// there already: the first park's time dates the callback when it is replayed.
pub trait ParkBody {
    fn park_body(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// Everything the function needs from outside: the use-case's ports
/// ([`stemvault_vault::accept::Ports`]: the task table, the archive, the claim-and-send ports
/// and the clock), parking, and the callback secret for the checks in front of it, its
/// previous version too ([`crate::credentials`]).
pub trait Ports:
    stemvault_vault::accept::Ports + ParkBody + ReadSecret + ReadPreviousSecret + EmitMetrics<Measure>
{
}

impl<T> Ports for T where
    T: stemvault_vault::accept::Ports + ParkBody + ReadSecret + ReadPreviousSecret + EmitMetrics<Measure>
{
}

/// What the function counts ([`Measure`]s: its metrics).
pub use stemvault_vault::EmitMetrics;

/// What the function measures, one answer (or one read of the secret) at a time (CloudWatch
/// metrics in [`crate::aws`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Recorded and answered 200 (a duplicate included).
    Accepted,
    /// Not recorded now but parked for the reconciler to replay, answered 200 ([`ingest_or_park`]);
    /// `reason`: why it was not recorded ([`stemvault_vault::accept::AcceptError::reason_code`]).
    Parked { reason: &'static str },
    /// Refused, nothing written (but a stale callback's task registered for polling): 4xx, or
    /// 503 when a retry may pass; `reason`: the answer's reason code.
    Refused { reason: &'static str },
    /// A valid callback answered 5xx, which the provider retries; `reason`: the error code.
    Failed { reason: &'static str },
    /// A callback refused as stale but signed by a key had its task registered for polling
    /// ([`register_for_polling`]).
    StaleRegistered,
    /// A callback refused because its signature headers are missing or malformed, or for its
    /// path token, while its body names a task: the provider not signing (or signing
    /// otherwise) where the secret holds keys, or a `callBackUrl` with another token or none,
    /// loses every callback so (a scanner's or a hand's request names no task).
    Unverifiable,
    /// A verified callback the parser refused was kept whole, unrecorded.
    UnparsableKept,
    /// A re-read of the callback secret brought nothing usable: the checks in force stay
    /// ([`crate::credentials`]). Once per read, not per request.
    SecretRereadFailed,
}

/// The IngestFunction's `Timeout` in template.yaml (tests/tests/ingest.rs checks they agree):
/// no request runs longer than this.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(12);

/// Record, archive and queue one valid callback within `settings.deadline`. `request_id`
/// names this request's claims ([`stemvault_vault::accept::accept`]).
pub async fn ingest<P: stemvault_vault::accept::Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
) -> Result<Outcome, AcceptError> {
    stemvault_vault::accept::accept(ports, settings, event, body, request_id, None).await
}

/// What became of a valid callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Recorded, archived and queued.
    Recorded(Outcome),
    /// Not (fully) processed now: its body is kept under `key` ([`s3_key::parked_body_key`])
    /// for the reconciler to replay (or, refused for good, to archive); `because` says why.
    Parked { key: String, because: AcceptError },
}

/// How long parking may take.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Every valid callback is answered within this long of its request's start (the provider
/// waits 10 s at least; an instance's first request also counts the secret's read at the
/// instance's start, when it came during that start: `WAITED_FOR_THE_START_WITHIN`): the
/// checks in front (a secret re-read among them), then
/// recording within what is left but [`PARK_TIMEOUT`], then parking.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(9);

/// After recording failed having taken longer than this, the instance's next callbacks get
/// only this long to record before they are parked, for [`OUTAGE_MEMORY`].
pub const QUICK_RECORDING: Duration = Duration::from_millis(1500);
/// How long an instance remembers recording that failed slowly.
pub const OUTAGE_MEMORY: Duration = Duration::from_secs(30);

/// An instance's memory of recording that failed slowly (the table, bucket or queue hanging
/// rather than refusing): while it lasts, each callback gets [`QUICK_RECORDING`] to record before it
/// is parked, so an instance parks a callback in about 2 s rather than 9, and the function's
/// reserved concurrency takes four times the callbacks before Lambda throttles them (a
/// throttled callback is answered 5xx unparked: only the provider's few retries are left
/// for it). A callback recorded ends it; a parked one is replayed later, so nothing is lost
/// to a table that was only slow.
#[derive(Debug, Default)]
pub struct Outage {
    /// When recording last failed slowly, by the wall clock: the memory outlives the
    /// invocation, and a frozen instance's monotonic clock may not advance between them.
    last: std::sync::Mutex<Option<Timestamp>>,
}

impl Outage {
    /// How long recording gets at `now`, of `left`.
    fn recording_budget(&self, left: Duration, now: Timestamp) -> Duration {
        let last = *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last {
            Some(at) if !passed_or_stepped_back(OUTAGE_MEMORY, at, now) => left.min(QUICK_RECORDING),
            _ => left,
        }
    }

    /// Remember how recording went, after `took`: recorded ends the memory; a failure another
    /// try may mend, slow, starts it; one refused for good, or one task's own wait (its record
    /// kept changing under a flood of its deliveries, or another delivery still held its
    /// files), says nothing of the table's health.
    fn observe(&self, recorded: &Result<Outcome, AcceptError>, took: Duration, now: Timestamp) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match recorded {
            Ok(_) => *last = None,
            Err(AcceptError::Contention { .. } | AcceptError::StillEnqueuing { .. }) => {}
            Err(e) if e.is_retryable() && took >= QUICK_RECORDING => *last = Some(now),
            Err(_) => {}
        }
    }
}

/// [`ingest`], and when it fails, keep the body under `parked/` (one PutObject unless a copy
/// is there: [`ParkBody`]) so that no verified callback, and no event of it, is lost to an
/// outage longer than the provider's retries: a later replay finishes what this could not
/// ([`AcceptError::is_retryable`]: the table failed it; or, recorded, its archive, its files'
/// messages or its events were not all written, or another delivery held its files), or
/// does once the task's record is fixed ([`AcceptError::waits_for_the_record`]). A callback
/// no delivery can record (too large for the table, or refused by it) is parked too: the
/// provider's retries could not help, and the replay moves its body to its archive key
/// (`parked-callbacks-refused`), where it is kept, not lost with a 4xx/5xx answer. Only when
/// parking fails too is the failure the answer. `spent` is how long the request ran before: recording gets
/// `settings.deadline`, or less so that parking still ends within [`ANSWER_WITHIN`], or less
/// still while the instance's `outage` lasts.
pub async fn ingest_or_park<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
    spent: Duration,
    outage: &Outage,
) -> Result<Ingested, AcceptError> {
    let left = ANSWER_WITHIN.saturating_sub(spent).saturating_sub(PARK_TIMEOUT);
    let settings = &settings.within(outage.recording_budget(left, ports.now()));
    let began = tokio::time::Instant::now();
    let recorded = ingest(ports, settings, event, body, request_id).await;
    outage.observe(&recorded, began.elapsed(), ports.now());
    let failed = match recorded {
        Ok(outcome) => return Ok(Ingested::Recorded(outcome)),
        Err(e) => e,
    };
    let key = s3_key::parked_body_key(&event.task_id, event.stage, &stemvault_vault::accept::body_sha256_hex(body));
    match tokio::time::timeout(PARK_TIMEOUT, ports.park_body(&key, body)).await {
        Ok(Ok(())) => Ok(Ingested::Parked { key, because: failed }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, retryable = e.is_retryable(), "the callback could not be parked either");
            Err(failed)
        }
        Err(_) => {
            tracing::warn!(timeout_seconds = PARK_TIMEOUT.as_secs(), "the callback could not be parked in time");
            Err(failed)
        }
    }
}

/// What the task of a callback refused as stale but signed by a key came to
/// ([`register_for_polling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleTask {
    /// New to the table: registered (stage `submitted`), so the reconciler's next run polls
    /// the provider for it.
    Registered,
    /// Recorded already (by a callback, a registration or a poll): left as it is.
    Known,
}

/// Register for polling the task of a callback refused for its timestamp alone: signed by a
/// key at that time, so a task of the provider's, whose retries (if not signed again) would
/// all be refused too. Only the task id is signed, not the body, so nothing of the body is
/// recorded but the `family` it names, which decides the polling endpoint and which a
/// client's `PUT /tasks/{id}` may still correct ([`Registration::unsigned_record`]). A task
/// the table knows is left alone.
pub async fn register_for_polling<P: LoadTask + SaveTask + Clock>(
    ports: &P,
    task_id: &TaskId,
    family: Family,
) -> Result<StaleTask, StoreError> {
    if ports.load_task(task_id).await?.is_some() {
        return Ok(StaleTask::Known);
    }
    let record = Registration::unsigned_record(family, task_id, ports.now());
    match ports.save_task(None, &record).await {
        Ok(()) => Ok(StaleTask::Registered),
        // Recorded since the read: by a callback, a registration or another stale one.
        Err(StoreError::Conflict) => Ok(StaleTask::Known),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;

//! The sweep: re-enqueue files that no ingest request will ever send, and get a settle for
//! tasks whose files are all settled but whose vault or manifest never was.
//!
//! An ingest request that dies between writing the record and sending the messages (or
//! answers 503 after SQS failed and released its claims) leaves files `pending` or
//! `enqueuing`; only another delivery of the task would pick them up, and the provider stops
//! retrying. On a schedule, the sweeper reads the unsettled tasks (vault pending, or manifest
//! not recorded) from the sparse `open-tasks` index (only those whose last delivery is older than the grace period,
//! so requests still in flight are left alone), reads each one's item collection (one
//! Query), claims its orphaned files with the same [`reclaim`] as ingest (a conditional put of
//! each claimed file item), and sends them through the same [`send_claimed`]. Files already
//! `queued` or `downloading` belong to the queue until no message of them can be left on it
//! (their last lease ended longer ago than the queue keeps a message: the message went to the
//! dead-letter queue on a receive that could not write the table, or expired); then
//! [`reclaim`] claims and sends them again too.
//!
//! A later callback that adds or reopens files of a task (of a settled one too) marks its
//! task item open and fenced before writing them ([`stemvault_vault::items::MarkOpen`]; no
//! settle applies while the fence is there); should its request stop before the task item,
//! the task is in the index, with files at a generation its task item has not reached: the
//! fence is taken away, and the task swept like any other (the claim's save commits them;
//! should they all be settled since, a save of their commit alone, then a manifest job). A
//! settled task marked so with no such file (its request stopped before any) is taken out of
//! the index, its fence with it.
//!
//! Each run resumes after the last index entry the previous run checked (a cursor item in
//! the table, [`ReadCursor`]) and wraps around at the end, so tasks that stay open for long
//! (a file waiting out its message's retention) never hide newer orphans behind them.
//!
//! A downloader that stopped between writing a task's manifest and its settle write leaves a
//! pending vault whose files are all stored or failed, and no message that would settle it;
//! a task ingest settled as it recorded it (no files, or a new stage over settled ones) whose
//! manifest job was lost, or a registration completed since (its manifest is to carry the
//! family or client_ref given), leaves a settled vault without a manifest. Such a task gets a
//! manifest job ([`manifest_job_of`], a
//! [`stemvault_vault::download::MANIFEST_JOB_NAME`] job): the downloader reads the task and
//! settles it, as it settles a task without files.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::download::manifest_job_of;
use stemvault_vault::enqueue::{EnqueueError, EnqueueFiles, MarkQueued, ReleaseClaims, send_claimed};
use stemvault_vault::ingest::{Claimant, commit_uncommitted, reclaim};
use stemvault_vault::panic::guarded;
use stemvault_vault::{
    Attempt, BEST_EFFORT_CALL_TIMEOUT, Clock, Conditional, LoadTask, SaveTask, TaskRecord, Timestamp, VaultState,
    answer_within, retry_on_conflict,
};
use suno_callbacks::{Stage, TaskId};
use tracing::Instrument;

use crate::error::{StoreError, SweepError};

/// One entry of the `open-tasks` index (its keys), and where the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTask {
    pub task_id: String,
    pub last_received_at: Timestamp,
}

/// One entry of an index page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEntry {
    Open(OpenTask),
    /// An entry whose `last_received_at` is not a time (edited by hand): its task is never
    /// swept, so it is counted as broken.
    Unreadable {
        task_id: String,
    },
}

/// One page of open tasks, oldest delivery first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenTaskPage {
    pub entries: Vec<IndexEntry>,
    /// Continue after this entry; None when the index has no more.
    pub next: Option<OpenTask>,
}

impl IndexEntry {
    /// The entry, when it is readable.
    pub fn open(&self) -> Option<&OpenTask> {
        match self {
            IndexEntry::Open(task) => Some(task),
            IndexEntry::Unreadable { .. } => None,
        }
    }
}

impl OpenTaskPage {
    /// The page's first readable entry.
    fn first_open(&self) -> Option<&OpenTask> {
        self.entries.iter().find_map(IndexEntry::open)
    }
}

/// Unsettled tasks (`open`) whose last delivery was before `received_before`,
/// starting after `after`.
pub trait ListOpenTasks {
    fn list_open_tasks(
        &self,
        received_before: Timestamp,
        after: Option<&OpenTask>,
    ) -> impl Future<Output = Result<OpenTaskPage, StoreError>> + Send;
}

/// Where the previous run stopped: the last `open-tasks` entry it checked, kept in the table
/// (one item that no reader takes for a task, read and written once per run). None: start at
/// the oldest entry.
pub trait ReadCursor {
    fn read_cursor(&self) -> impl Future<Output = Result<Option<OpenTask>, StoreError>> + Send;
}

/// Keep where this run stopped ([`ReadCursor`]'s item).
pub trait WriteCursor {
    fn write_cursor(&self, after: Option<&OpenTask>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Take a settled task out of the `open-tasks` index: remove `open` from its task item if it
/// is still at the `version` and `last_received_at` of `record`, as read
/// ([`Conditional::Conflict`] if not). Both: a save marking the task open again since
/// (`stemvault_vault::items::MarkOpen`) moves only the latter, and its files would otherwise be
/// left out of the index.
pub trait CloseTask {
    fn close_task(&self, record: &TaskRecord) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

/// What the function measures (CloudWatch metrics in [`crate::aws`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A sweep: the open tasks it checked, those it could not sweep that a later run may
    /// (`failed`), those no retry mends (`broken`: a panic, a record the table cannot read, an
    /// index entry that cannot be read; apart, since the sweep meets them on every lap: counted
    /// as failed they would hold the tasks-not-swept alarm in ALARM, hiding a later outage);
    /// and how long ago the oldest open task past the grace period last received a
    /// callback, in seconds (0: none; None: the index could not be read). Measured by every
    /// run; its metrics leave out the zeros no alarm needs ([`crate::aws::metrics_of`]), and
    /// keep `TasksNotSwept`'s, so an alarm can tell a quiet run from none.
    Swept { checked: usize, failed: usize, broken: usize, oldest_open_seconds: Option<u64> },
}

/// What the function counts ([`Measure`]s: its metrics).
pub use stemvault_vault::EmitMetrics;

/// Everything the sweep needs: the index and the cursor, the task table, the claim-and-send
/// ports, the clock and the metrics.
pub trait Ports:
    ListOpenTasks
    + ReadCursor
    + WriteCursor
    + LoadTask
    + SaveTask
    + CloseTask
    + EnqueueFiles
    + MarkQueued
    + ReleaseClaims
    + Clock
    + EmitMetrics<Measure>
{
}

impl<T> Ports for T where
    T: ListOpenTasks
        + ReadCursor
        + WriteCursor
        + LoadTask
        + SaveTask
        + CloseTask
        + EnqueueFiles
        + MarkQueued
        + ReleaseClaims
        + Clock
        + EmitMetrics<Measure>
{
}

/// How long the sweeper's enqueue claims hold: as long as an ingest request's (its Lambda
/// timeout and 3 s), far more than sending one task's files takes.
const CLAIM_LEASE: Duration = Duration::from_secs(15);

/// The most tasks one run checks (its time bounds it too): a task with nothing to send costs
/// one strongly consistent Query, some 5 to 10 ms, so about 5,000 fit in a run's 40 s, and a
/// pass over 100,000 open tasks (a provider's outage) takes about two hours.
pub const MAX_TASKS_PER_RUN: usize = 5_000;

/// How a sweep is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Tasks whose last delivery is more recent than this are left to their ingest requests
    /// (far longer than an ingest request lives, so their claims have lapsed too).
    pub grace: Duration,
    /// The sweeper's enqueue claims (as an ingest request's).
    pub lease: Duration,
    /// At most this many tasks per run; the next run continues with the rest.
    pub max_tasks: usize,
    /// Read-merge-put attempts per task before leaving it to the next run.
    pub max_save_attempts: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            grace: Duration::from_secs(120),
            lease: CLAIM_LEASE,
            max_tasks: MAX_TASKS_PER_RUN,
            max_save_attempts: 5,
        }
    }
}

/// What one sweep did (also the scheduled invocation's answer).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Outcome {
    /// Open tasks read from the index and examined.
    pub tasks_checked: usize,
    /// Messages sent for orphaned files.
    pub files_requeued: usize,
    /// Manifest jobs sent for open tasks whose files were all settled.
    pub manifests_requested: usize,
    /// Tasks that could not be swept this time (a later run tries again).
    pub tasks_failed: usize,
    /// Of those, the ones no retry mends (a panic, a record the table cannot read, an index
    /// entry that cannot be read).
    pub tasks_broken: usize,
    /// Stopped at `max_tasks` or the deadline before every entry was checked once; the next
    /// run resumes after the last one checked.
    pub stopped_early: bool,
    /// The run started after the previous run's last entry, reached the end of the index and
    /// went on from its oldest entry.
    pub wrapped: bool,
}

impl Outcome {
    /// Nothing was found to do.
    pub fn is_idle(&self) -> bool {
        self.tasks_checked == 0 && self.tasks_failed == 0 && !self.stopped_early
    }
}

/// The most one task may take (its reads, claims, sends and marks, retried on conflicts): a
/// task started just before `stop_at` then still ends before the invocation's deadline (the
/// reserve after `stop_at`, less the shared margin), and the run writes its cursor. Throttled
/// table or queue calls could otherwise run one task past the deadline, and a run killed by
/// its timeout writes no cursor: the next would start at the same place, and do the same.
pub const TASK_BUDGET: Duration = Duration::from_secs(10);

/// Sweep the open tasks: from just after the entry the previous run checked last (its
/// cursor) to the end of the index, then from the oldest entry back up to the cursor's time
/// (its entries of that time checked again: the index keeps no order among them), until
/// every entry was checked, `max_tasks` were checked, or `stop_at`. The cursor is then
/// set to the last entry checked (or cleared after a whole lap), so however many tasks stay
/// open for long (a file waiting out its message's retention), every open task is checked within
/// ceil(open tasks / `max_tasks`) runs. `claimant_id` names this run's claims. Fails only
/// when the index cannot be read (after writing the cursor for the entries checked); a task
/// that cannot be swept (or not within [`TASK_BUDGET`]) is counted and left to a later run,
/// a cursor that cannot be read means starting at the oldest entry, and one that cannot be
/// written the next run starting where this one did. Every call is bounded (a page read and a
/// task by [`TASK_BUDGET`], the cursor's by
/// [`BEST_EFFORT_CALL_TIMEOUT`]), so a run stops in
/// its reserve after `stop_at`.
pub async fn sweep<P: Ports>(
    ports: &P,
    settings: &Settings,
    claimant_id: &str,
    stop_at: Timestamp,
) -> Result<Outcome, SweepError> {
    let claimant = Claimant { id: claimant_id.to_owned(), lease: settings.lease };
    let received_before = ports.now().minus(settings.grace);
    let start = match answer_within(BEST_EFFORT_CALL_TIMEOUT, "reading the sweep cursor", ports.read_cursor()).await {
        // An entry past the query's range (a longer grace since) cannot start a page.
        Ok(cursor) => cursor.filter(|c| c.last_received_at < received_before),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the sweep cursor; starting at the oldest open task");
            None
        }
    };
    let mut outcome = Outcome::default();
    let mut last: Option<OpenTask> = None;
    let mut after = start.clone();
    let mut index_failure = None;
    let mut unreadable_counted = std::collections::HashSet::new();
    // The index's first entry, when a page is read from its start (no cursor, or wrapped).
    let mut oldest: Option<Option<Timestamp>> = None;
    'lap: loop {
        if ports.now() >= stop_at {
            outcome.stopped_early = true;
            break;
        }
        // Bounded like a task: a page read started before `stop_at` ends within the reserve.
        let reading = ports.list_open_tasks(received_before, after.as_ref());
        let from_the_start = after.is_none();
        let page = match answer_within(TASK_BUDGET, "from the open-tasks index", reading).await {
            Ok(page) => page,
            Err(e) => {
                // Stopped as if out of time: the next run resumes after the last entry checked.
                outcome.stopped_early = true;
                index_failure = Some(e);
                break;
            }
        };
        if from_the_start {
            oldest.get_or_insert(page.first_open().map(|task| task.last_received_at));
        }
        for entry in &page.entries {
            let task = match entry {
                // Past the cursor again after wrapping: this run checked these already. By time
                // alone: the index does not promise an order among entries of one time, so those
                // at the cursor's are checked again rather than perhaps skipped.
                IndexEntry::Open(task)
                    if outcome.wrapped
                        && start.as_ref().is_some_and(|s| task.last_received_at > s.last_received_at) =>
                {
                    break 'lap;
                }
                // Counted once a run: a page after an unreadable page key, or one straddling the
                // cursor after a wrap, reads it again (and stops nothing then).
                IndexEntry::Unreadable { task_id } if unreadable_counted.contains(task_id) => continue,
                _ if outcome.tasks_checked >= settings.max_tasks || ports.now() >= stop_at => {
                    outcome.stopped_early = true;
                    break 'lap;
                }
                IndexEntry::Open(task) => task,
                IndexEntry::Unreadable { task_id } => {
                    unreadable_counted.insert(task_id.clone());
                    outcome.tasks_failed += 1;
                    outcome.tasks_broken += 1;
                    tracing::error!(
                        task_id = %task_id,
                        "skipped an unreadable open-tasks entry: its task is never swept; fix its \
                         last_received_at (an RFC 3339 time)"
                    );
                    continue;
                }
            };
            outcome.tasks_checked += 1;
            last = Some(task.clone());
            // What shared code logs of the task (claims not released, ...) names it.
            let span = tracing::error_span!("task", task_id = %task.task_id);
            // A panic (a bug) fails this task alone: the others are swept and the cursor written.
            let until = tokio::time::Instant::now() + TASK_BUDGET;
            let sweeping = sweep_task(ports, settings, &claimant, &task.task_id).instrument(span);
            let swept = guarded(until, sweeping)
                .await
                .into_result(SweepError::Panicked, SweepError::OutOfTime { after: TASK_BUDGET });
            match swept {
                Ok(Swept::Files(sent)) => outcome.files_requeued += sent,
                Ok(Swept::ManifestRequested) => outcome.manifests_requested += 1,
                Err(e) => {
                    // Files of the task that went out before others did not still count.
                    if let SweepError::Enqueue(unsent) = &e {
                        outcome.files_requeued += unsent.total.saturating_sub(unsent.failed);
                    }
                    outcome.tasks_failed += 1;
                    if e.is_retryable() {
                        tracing::warn!(task_id = %task.task_id, error = %e, "task not swept; a later run retries");
                    } else {
                        outcome.tasks_broken += 1;
                        // Fails again every run (a malformed item): as the reconciler says it.
                        tracing::error!(
                            task_id = %task.task_id,
                            error = %e,
                            "task not swept, and no retry can mend it: fix its items (or the build)"
                        );
                    }
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None if start.is_some() && !outcome.wrapped => {
                outcome.wrapped = true;
                after = None;
            }
            None => break,
        }
    }
    // Stopped early: resume after the last entry checked (none checked: where this run began).
    // A whole lap: the next run starts at the oldest entry.
    let cursor = if outcome.stopped_early { last.or(start.clone()) } else { None };
    if cursor != start {
        let writing = ports.write_cursor(cursor.as_ref());
        if let Err(e) = answer_within(BEST_EFFORT_CALL_TIMEOUT, "writing the sweep cursor", writing).await {
            tracing::warn!(error = %e, "could not write the sweep cursor; the next run starts where this one did");
        }
    }
    let (checked, broken) = (outcome.tasks_checked, outcome.tasks_broken);
    let failed = outcome.tasks_failed.saturating_sub(broken);
    let oldest = match oldest {
        Some(oldest) => Some(oldest),
        // Started after a cursor and never wrapped: the index's start read for it alone.
        None if index_failure.is_none() => oldest_open(ports, received_before).await,
        None => None,
    };
    let now = ports.now();
    let oldest_open_seconds = oldest.map(|at| at.map_or(0, |at| now.seconds_since(at)));
    ports.emit_metrics(&Measure::Swept { checked, failed, broken, oldest_open_seconds });
    match index_failure {
        Some(e) => Err(e.into()),
        None => Ok(outcome),
    }
}

/// When the oldest open task past the grace period last received a callback (None inside:
/// no open task); None when the index cannot be read in time.
async fn oldest_open<P: Ports>(ports: &P, received_before: Timestamp) -> Option<Option<Timestamp>> {
    let reading = ports.list_open_tasks(received_before, None);
    match answer_within(BEST_EFFORT_CALL_TIMEOUT, "reading the oldest open task", reading).await {
        Ok(page) => Some(page.first_open().map(|task| task.last_received_at)),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the oldest open task; its age is not counted this run");
            None
        }
    }
}

/// What sweeping one task did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swept {
    /// Messages sent for its orphaned files (0: nothing to do).
    Files(usize),
    /// Its files were all settled: a manifest job was sent.
    ManifestRequested,
}

/// Claim and send one task's orphaned files, or ask for its settle when its files are all
/// settled.
async fn sweep_task<P: Ports>(
    ports: &P,
    settings: &Settings,
    claimant: &Claimant,
    task_id: &str,
) -> Result<Swept, SweepError> {
    let Ok(task) = TaskId::parse(task_id) else {
        return Err(StoreError::Malformed(format!("the index lists an invalid task id {task_id:?}")).into());
    };
    let task = &task;
    let swept = retry_on_conflict(ports, settings.max_save_attempts, |_| async move {
        let Some(record) = ports.load_task(task).await? else { return Ok(Attempt::Done(Swept::Files(0))) };
        let now = ports.now();
        // The index is eventually consistent: re-check what it said against the record.
        // Settled means settled with its manifest recorded (until then ingest's manifest job
        // may be lost), and no file of a save that reopened it and stopped before its task
        // item (it marked the task open first: `items::MarkOpen`). A registered task without a
        // result is the reconciler's, whose poll adopts what a stopped save of its first
        // result wrote.
        if record.last_received_at >= now.minus(settings.grace) {
            return Ok(Attempt::Done(Swept::Files(0)));
        }
        if record.stage == Stage::Submitted {
            return match &record.open {
                // Marked by a save of its first result that stopped (its fence with it), or
                // by a registration of a release before 2026-12-03: out of the index, or it
                // takes a place in every lap and ages the oldest open task. The reconciler
                // still polls it, and its poll (or the callback's retry) adopts the file
                // items such a save wrote.
                Some(_) => close(ports, &record, "a registered task without a result").await,
                None => Ok(Attempt::Done(Swept::Files(0))),
            };
        }
        if record.is_settled() && !record.has_uncommitted_files() {
            return match record.open {
                // Marked open by a save that stopped before writing any file item.
                Some(_) => close(ports, &record, "a settled task").await,
                None => Ok(Attempt::Done(Swept::Files(0))),
            };
        }
        let record = match take_fence_away(ports, task, record).await? {
            Some(record) => record,
            None => return Ok(Attempt::Conflict),
        };
        if record.files_settled() {
            // Files of a save that stopped, settled since (a redriven message copied them):
            // committed first, else the settle would find the task item settled and do
            // nothing, and every run would ask again.
            if let Some(committed) = commit_uncommitted(&record) {
                match ports.save_task(Some(&record), &committed).await {
                    Ok(()) => tracing::info!(task_id = %task, "committed files a stopped save left"),
                    Err(StoreError::Conflict) => return Ok(Attempt::Conflict),
                    Err(e) => return Err(SweepError::from(e)),
                }
            }
            request_manifest(ports, task, &record).await?;
            return Ok(Attempt::Done(Swept::ManifestRequested));
        }
        let (claimed, claims) = reclaim(&record, claimant, now, &[]);
        let Some(claimed) = claimed else { return Ok(Attempt::Done(Swept::Files(0))) };
        match ports.save_task(Some(&record), &claimed).await {
            Ok(()) => {
                let sent = send_claimed(ports, task, claimant, &claims.to_enqueue).await;
                // Each file that went out, even when others did not (the task then fails).
                for file in &sent.out {
                    tracing::info!(task_id = %task, file = %file, "re-enqueued an orphaned file");
                }
                Ok(Attempt::Done(Swept::Files(sent.result()?)))
            }
            Err(StoreError::Conflict) => Ok(Attempt::Conflict),
            Err(e) => Err(SweepError::from(e)),
        }
    })
    .await?;
    swept.ok_or(SweepError::Contention { attempts: settings.max_save_attempts })
}

/// The record with the add fence ([`TaskRecord::adding`]) of a save that stopped taken away,
/// as stored (one task item put over the version and fence read); None when the task item
/// changed since it was read. Past the grace period the save that set it is over, and no
/// settle applies while it is there; the files it wrote, if any, are uncommitted, and the
/// sweep commits and sends them.
async fn take_fence_away<P: Ports>(
    ports: &P,
    task: &TaskId,
    record: TaskRecord,
) -> Result<Option<TaskRecord>, SweepError> {
    let Some(adding) = record.adding else { return Ok(Some(record)) };
    let cleared = TaskRecord { adding: None, adding_at: None, version: record.version + 1, ..record.clone() };
    match ports.save_task(Some(&record), &cleared).await {
        Ok(()) => {
            tracing::info!(task_id = %task, adding, "took away the add fence of a save that stopped");
            Ok(Some(cleared))
        }
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(SweepError::from(e)),
    }
}

/// Take `record`'s task out of the open-tasks index (`what` it is, for the log): a settled
/// task whose `open` a save that marked it and stopped before writing any file left, or a
/// registered task a stopped save of its first result (or an older release) marked.
async fn close<P: Ports>(ports: &P, record: &TaskRecord, what: &str) -> Result<Attempt<Swept>, SweepError> {
    match ports.close_task(record).await? {
        Conditional::Applied => {
            tracing::info!(task_id = %record.task_id, "{what} left marked open: taken out of the index");
            Ok(Attempt::Done(Swept::Files(0)))
        }
        Conditional::Conflict => Ok(Attempt::Conflict),
    }
}

/// Send the manifest job of an open task whose files are all settled (no claim: a second
/// job, from another run, only finds the task settled).
async fn request_manifest<P: Ports>(ports: &P, task: &TaskId, record: &TaskRecord) -> Result<(), SweepError> {
    let job = manifest_job_of(task);
    match ports.enqueue_files(std::slice::from_ref(&job)).await.into_iter().next() {
        Some(Ok(message_id)) => {
            let why = match record.vault {
                VaultState::Pending => "files all settled but the vault pending",
                _ => "the vault settled but its manifest not recorded",
            };
            tracing::info!(
                task_id = %task,
                files = record.files.len(),
                message_id,
                "{why}: asked the downloader to settle it"
            );
            Ok(())
        }
        failed => {
            let reason = match failed {
                Some(Err(why)) => why.to_string(),
                _ => "no result for the manifest job".to_owned(),
            };
            Err(EnqueueError { failed: 1, total: 1, reason }.into())
        }
    }
}

#[cfg(test)]
mod tests;

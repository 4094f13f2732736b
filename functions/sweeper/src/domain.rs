//! The sweep: re-enqueue files that no ingest request will ever send.
//!
//! An ingest request that dies between writing the record and sending the messages (or
//! answers 503 after SQS failed and released its claims) leaves files `pending` or
//! `enqueuing`; only another delivery of the task would pick them up, and the provider stops
//! retrying. On a schedule, the sweeper reads the tasks whose vault is still pending from the
//! sparse `open-tasks` index (only those whose last delivery is older than the grace period,
//! so requests still in flight are left alone), claims their orphaned files with the same
//! [`reclaim`] as ingest, and sends them through the same [`send_claimed`]. Files already
//! `queued` or beyond belong to the queue and its dead-letter queue and are not touched.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::enqueue::{EnqueueFiles, MarkQueued, ReleaseClaims, send_claimed};
use stemvault_vault::ingest::{Claimant, reclaim};
use stemvault_vault::{Attempt, Clock, LoadTask, SaveTask, Timestamp, VaultState, retry_on_conflict};
use suno_callbacks::TaskId;

use crate::error::{StoreError, SweepError};

/// One entry of the `open-tasks` index (its keys), and where the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTask {
    pub task_id: String,
    pub last_received_at: Timestamp,
}

/// One page of open tasks, oldest delivery first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenTaskPage {
    pub tasks: Vec<OpenTask>,
    /// Continue after this entry; None when the index has no more.
    pub next: Option<OpenTask>,
}

/// Tasks whose vault is pending and whose last delivery was before `received_before`,
/// starting after `after`.
pub trait ListOpenTasks {
    fn open_tasks(
        &self,
        received_before: Timestamp,
        after: Option<&OpenTask>,
    ) -> impl Future<Output = Result<OpenTaskPage, StoreError>> + Send;
}

/// Everything the sweep needs: the index, the task table, the claim-and-send ports and the
/// clock.
pub trait Ports: ListOpenTasks + LoadTask + SaveTask + EnqueueFiles + MarkQueued + ReleaseClaims + Clock {}

impl<T> Ports for T where T: ListOpenTasks + LoadTask + SaveTask + EnqueueFiles + MarkQueued + ReleaseClaims + Clock {}

/// How long the sweeper's enqueue claims hold: as long as an ingest request's (its Lambda
/// timeout and 3 s), far more than sending one task's files takes.
const CLAIM_LEASE: Duration = Duration::from_secs(15);

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
        Settings { grace: Duration::from_secs(120), lease: CLAIM_LEASE, max_tasks: 200, max_save_attempts: 5 }
    }
}

/// What one sweep did (also the scheduled invocation's answer).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Outcome {
    /// Open tasks read from the index and examined.
    pub tasks_checked: usize,
    /// Messages sent for orphaned files.
    pub files_requeued: usize,
    /// Tasks that could not be swept this time (the next run tries again).
    pub tasks_failed: usize,
    /// Stopped at `max_tasks` or the deadline before the index was exhausted.
    pub stopped_early: bool,
}

/// Sweep the open tasks until the index is exhausted, `max_tasks` were checked, or `stop_at`.
/// `claimant_id` names this run's claims. Fails only when the index cannot be read; a task
/// that cannot be swept is counted and left to the next run.
pub async fn sweep<P: Ports>(
    ports: &P,
    settings: &Settings,
    claimant_id: &str,
    stop_at: Timestamp,
) -> Result<Outcome, SweepError> {
    let claimant = Claimant { id: claimant_id.to_owned(), lease: settings.lease };
    let received_before = before(ports.now(), settings.grace);
    let mut outcome = Outcome::default();
    let mut after: Option<OpenTask> = None;
    loop {
        let page = ports.open_tasks(received_before, after.as_ref()).await?;
        for task in &page.tasks {
            if outcome.tasks_checked >= settings.max_tasks || ports.now() >= stop_at {
                outcome.stopped_early = true;
                return Ok(outcome);
            }
            outcome.tasks_checked += 1;
            match sweep_task(ports, settings, &claimant, &task.task_id).await {
                Ok(sent) => outcome.files_requeued += sent,
                Err(e) => {
                    outcome.tasks_failed += 1;
                    tracing::warn!(
                        task_id = %task.task_id,
                        error = %e,
                        retryable = e.is_retryable(),
                        "task not swept; the next run retries"
                    );
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(outcome),
        }
    }
}

/// Claim and send one task's orphaned files; returns how many messages were sent.
async fn sweep_task<P: Ports>(
    ports: &P,
    settings: &Settings,
    claimant: &Claimant,
    task_id: &str,
) -> Result<usize, SweepError> {
    let Ok(task) = TaskId::parse(task_id) else {
        return Err(StoreError::Malformed(format!("the index lists an invalid task id {task_id:?}")).into());
    };
    let task = &task;
    let sent = retry_on_conflict(ports, settings.max_save_attempts, |_| async move {
        let Some(record) = ports.load_task(task).await? else { return Ok(Attempt::Done(0)) };
        let now = ports.now();
        // The index is eventually consistent: re-check what it said against the record.
        if record.vault != VaultState::Pending || record.last_received_at >= before(now, settings.grace) {
            return Ok(Attempt::Done(0));
        }
        let (claimed, claims) = reclaim(&record, claimant, now, &[]);
        let Some(claimed) = claimed else { return Ok(Attempt::Done(0)) };
        match ports.save_task(&claimed, Some(record.version)).await {
            Ok(()) => {
                let sent = send_claimed(ports, task, claimant, &claims.to_enqueue).await?;
                for job in &claims.to_enqueue {
                    tracing::info!(task_id = %task, file = %job.name, "re-enqueued an orphaned file");
                }
                Ok(Attempt::Done(sent))
            }
            Err(StoreError::Conflict) => Ok(Attempt::Conflict),
            Err(e) => Err(SweepError::from(e)),
        }
    })
    .await?;
    sent.ok_or(SweepError::Contention { attempts: settings.max_save_attempts })
}

fn before(now: Timestamp, grace: Duration) -> Timestamp {
    Timestamp::from_unix_ms(now.unix_ms.saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests;

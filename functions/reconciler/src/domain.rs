//! A reconciliation run: poll the provider for the tasks whose callback is missing, and ingest
//! what it says exactly as a callback would.
//!
//! Each run reads the sparse `reconcile-due` index (`reconcile = due`, `reconcile_at <= now`,
//! oldest first, at most `max_tasks`; never a scan). Per task, it reads the task's items,
//! then either gives it up (`RECONCILE_GIVE_UP_SECONDS` after its registration or first
//! callback, or after its current stage came when later, reason `abandoned`; or after a day
//! of "not found" answers, reason `not_found`: a `Task Failed` event with that reason, then
//! `abandoned` recorded, and it leaves both indexes; a task still without its result whose
//! polls came late, or whose last poll the provider did not answer, is polled again first:
//! [`reconcile::owes_a_last_poll`]) or polls the family's record-info
//! endpoint and reads the answer, its callback URLs redacted ([`crate::redact`]), with
//! [`suno_callbacks::parse_poll`]:
//!
//! * a result: recorded, archived and queued by [`stemvault_vault::accept::accept`], the very
//!   code ingest runs for a callback (so a callback and a poll bringing the same result merge
//!   once; the second adds no file and sends no message), which also takes the task out of the
//!   index once its stage is final;
//! * pending, a rate limit or maintenance ([`suno_callbacks::poll::asks_to_wait`]), a 5xx, a
//!   refusal for the key or the credits (401/403, 402: counted, logged once a run, alarmed
//!   on), no answer: the next poll is scheduled, 30 s doubling to 1 hour; after a rate limit
//!   or maintenance the run polls no other task: a task is polled at most every 30 s, far
//!   inside the provider's per-task limit, so the limit hit is the account's, and every other
//!   poll would be refused too and only use it up; they stay due for the next run;
//! * "not found" (400/404/422 as the `code` of the provider's answer, read in kie's terms
//!   ([`suno_callbacks::poll::code_meaning`]: docs.sunoapi.org's 404 is a path it does not
//!   serve), or a success whose `data` is null: no record of the task at its family's
//!   endpoint; an HTTP 404/422 is a path it does not serve, read as unreadable): the same, and once every
//!   answer has said so for a day (any other answer, or none, restarts the count), the task
//!   is given up like one waited for too long, with reason `not_found`;
//! * 401/403 (as HTTP status or as the body's `code`), still so after the poll port re-read
//!   the key (at most once a minute) and polled again with a rotated one: the same, and one
//!   error per run naming the setting to fix; nothing but the poll bookkeeping changes.
//!
//! Every task handled moves its `reconcile_at` forward (one write of its task item), so the
//! next run continues with the others.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::accept::{self, accept};
use stemvault_vault::events;
use stemvault_vault::panic::guarded;
use stemvault_vault::reconcile::{self, PollOutcome};
use stemvault_vault::{
    Attempt, Conditional, GiveUpReason, RECONCILE_DUE, TaskRecord, Timestamp, answer_within, retry_on_conflict,
};
use suno_callbacks::poll::answer_code;
use suno_callbacks::{Family, PollError, PollResult, TaskId, parse_poll};
use tracing::Instrument;

use crate::error::{ReconcileError, StoreError};

/// The `reconcile-due` index's tasks due by `due_by`, oldest first, at most `limit`.
pub trait ListDueTasks {
    fn list_due_tasks(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueTask>, StoreError>> + Send;
}

/// One entry of the `reconcile-due` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTask {
    pub task_id: String,
    /// Its `reconcile_at` (None: not a time the index could hold, an item edited by hand).
    pub reconcile_at: Option<Timestamp>,
}

/// What the provider answered to one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    Http {
        status: u16,
        body: Vec<u8>,
    },
    /// No answer: connection refused, timeout.
    Unreachable(String),
    /// Not sent: no provider API key has been readable since start-up (`why`).
    NoKey(String),
    /// An answer longer than `limit` bytes, not read.
    TooLarge {
        limit: usize,
    },
}

/// Poll the record-info endpoint of `family` for `task_id`.
pub trait PollProvider {
    fn poll_provider(&self, family: Family, task_id: &TaskId) -> impl Future<Output = ProviderAnswer> + Send;
}

/// Wait for the provider's next turn (its requests are spaced: [`crate::request_spacing`])
/// when it comes within `within` (true); false at once when it comes later. A run waits
/// before each task, outside the task's budget.
pub trait AwaitPollTurn {
    fn await_poll_turn(&self, within: Duration) -> impl Future<Output = bool> + Send;
}

/// Move the next poll of the task `task_id` to `until` without writing its record, only while
/// the task is still watched and due by `due_by`, and, when its record was read, still at
/// that `read_version` (Conflict: it is not, or a write since scheduled its next poll, which
/// then stands: a registration giving the family it can be polled at, say). Nothing else of
/// the item is touched, not even `version`, which may be what cannot be read; nobody can
/// read the record to write over the change.
pub trait PostponePoll {
    fn postpone_poll(
        &self,
        task_id: &str,
        due_by: Timestamp,
        read_version: Option<u64>,
        until: Timestamp,
    ) -> impl Future<Output = Result<Conditional, StoreError>> + Send;
}

/// What the function measures (CloudWatch metrics in [`crate::aws`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A run that listed the parked callbacks ([`crate::replay::replay_parked`]): how many it
    /// left under `parked/` (not recordable yet, left for an operator, or not reached), and how
    /// many the table refuses for good that it moved to their archive key unrecorded.
    ParkedCallbacks { still_parked: usize, refused: usize },
    /// A run that read the due tasks: how many polls it made, how many brought no word of their
    /// task ([`PollOutcome::unanswered`]), how many the provider refused for the key
    /// (401/403), how many for the account's credits (402), how many tasks it gave up (no result in time, or unknown to the provider for
    /// a day), how many it could not handle (the next run tries them again), and of those, with
    /// the tasks whose record cannot be read, how many no retry mends (a panic, a record or
    /// write the table refuses: put off an hour, until someone fixes it). And how late the
    /// oldest due task's poll was when the run read the index (0 with none due): more tasks
    /// watched than runs poll make it grow. Measured by every such run; its metrics leave
    /// out the zeros no alarm needs (TasksBroken's: its alarm FILLs its gaps;
    /// [`crate::aws::metrics_of`]).
    Reconciled {
        polls: usize,
        unanswered: usize,
        refused: usize,
        unpaid: usize,
        given_up: usize,
        failed: usize,
        broken: usize,
        oldest_due_seconds: u64,
    },
}

/// What the function counts ([`Measure`]s: its metrics).
pub use stemvault_vault::EmitMetrics;

/// Everything a run needs: the accept use-case's ports, the parked callbacks
/// ([`crate::replay`]), the index and the provider.
pub trait Ports: crate::replay::Ports + ListDueTasks + PostponePoll + PollProvider + AwaitPollTurn + Sync {}

impl<T> Ports for T where T: crate::replay::Ports + ListDueTasks + PostponePoll + PollProvider + AwaitPollTurn + Sync {}

/// How a run is bounded and what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The accept use-case's (its `reconcile_after` is `RECONCILE_AFTER_SECONDS`).
    pub accept: accept::Settings,
    /// `RECONCILE_GIVE_UP_SECONDS`.
    pub give_up_after: Duration,
    /// At most this many tasks per run; the next run continues with the rest.
    pub max_tasks: usize,
    /// Read-write attempts per task before leaving it to the next run.
    pub max_save_attempts: u32,
    /// Named in the error a refused key logs: where the key comes from.
    pub key_source: String,
    /// Whether runs poll the provider (a key is configured). Without, they only give tasks up
    /// when their time comes (a task due before is put off, an hour at a time).
    pub polls: bool,
    /// `PROVIDER`'s documentation, which says what its answers' codes mean.
    pub site: suno_callbacks::poll::Site,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            accept: accept::Settings::default(),
            give_up_after: reconcile::DEFAULT_GIVE_UP_AFTER,
            max_tasks: 50,
            max_save_attempts: 5,
            key_source: "PROVIDER_API_KEY".into(),
            polls: true,
            site: suno_callbacks::poll::Site::Kie,
        }
    }
}

/// What one run did (also the scheduled invocation's answer).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Outcome {
    /// Due tasks read from the index.
    pub tasks_due: usize,
    /// Polls made.
    pub polls: usize,
    /// Results ingested (a result the task already had counts: it was a duplicate).
    pub results: usize,
    /// Polls answered pending, or whose answer counts as pending (a rate limit, a 5xx, no
    /// answer).
    pub pending: usize,
    /// Polls the provider refused for the key (401/403).
    pub unauthorized: usize,
    /// Polls the provider refused for the account's credits (402).
    pub unpaid: usize,
    /// Polls that brought no word of their task ([`PollOutcome::unanswered`]; counted in
    /// `pending` too).
    pub unanswered: usize,
    /// Polls answered that the provider does not know the task (400/404/422).
    pub not_found: usize,
    /// Tasks given up: no result in time, or unknown to the provider for a day.
    pub abandoned: usize,
    /// Tasks with their result no longer watched: no new URL for their expired files in time
    /// (or the provider no longer knows them).
    pub unwatched: usize,
    /// Tasks that could not be handled this time (the next run tries again).
    pub tasks_failed: usize,
    /// Of those, the ones no retry mends (a panic, a record or write the table refuses).
    pub tasks_broken: usize,
    /// Tasks whose record cannot be read, each put off an hour (logged as an error).
    pub unreadable: usize,
    /// Without a provider key: tasks put off until they are given up (not polled).
    pub put_off: usize,
    /// Tasks no poll reaches whose files that failed for what may pass were reopened at their
    /// own URLs ([`reconcile::relink_own`]).
    pub reopened: usize,
    /// Tasks to poll left due once polls were held this run (`rate_limited`, `refused`,
    /// `misdirected`, or the next turn past the run's time: `stopped_early`).
    pub left_due: usize,
    /// Stopped at the deadline before every due task was handled, or held its polls because
    /// the provider's next turn lay past the run's time (the tasks to poll left due).
    pub stopped_early: bool,
    /// Stopped after the provider asked to wait (a rate limit or maintenance); the tasks left
    /// wait for the next run.
    pub rate_limited: bool,
    /// Stopped after the provider refused the key (a 401/403 that a re-read key did not mend)
    /// or the account's credits (402): every other poll would be refused alike, so the tasks
    /// left wait for the next run.
    pub refused: bool,
    /// Stopped after `PROVIDER_BASE_URL` answered what the provider's API never answers (200
    /// without its JSON, a redirect, or HTTP 404/422): a wrong setting or a maintenance page,
    /// which every other poll would meet alike (one error line a run, not one a task); the
    /// tasks left wait for the next run.
    pub misdirected: bool,
    /// Due tasks not polled for want of a provider API key (none readable since start-up:
    /// the secret's own alarm says so): nothing sent, each recorded `unreachable` and polled
    /// again on its schedule, as a poll the provider did not answer would be, but not counted
    /// as a poll (`polls`, `unanswered`), which would point at the provider.
    pub not_sent: usize,
    /// The parked callbacks replayed before the polls ([`crate::replay`]).
    #[serde(flatten)]
    pub replayed: crate::replay::Replayed,
}

impl Outcome {
    /// Whether the run polls no more: the provider asked for quiet (a rate limit, a wait, a
    /// refusal that stands), answered as its API never does, or its next turn lies past the
    /// run's time.
    fn polls_held(&self) -> bool {
        self.rate_limited || self.refused || self.misdirected || self.stopped_early
    }

    /// Nothing was found to do.
    pub fn is_idle(&self) -> bool {
        self.tasks_due == 0
            && self.tasks_failed == 0
            && !self.stopped_early
            && self.replayed == crate::replay::Replayed::default()
    }
}

/// Whether a run still polls the provider ([`Outcome::polls_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polls {
    Go,
    /// No more this run.
    Held,
}

/// What handling one task did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handled {
    /// Not due after all (the index lags), or gone.
    Skipped,
    /// Due, but polls are held this run: left due, nothing written, first in the next run.
    LeftDue,
    /// Due, but no provider key could be read to poll it with: nothing sent, its poll's
    /// bookkeeping written as for an unanswered poll ([`Outcome::not_sent`]).
    NotSent,
    /// Polled; `misdirected`: answered as the provider's API never answers
    /// ([`Outcome::misdirected`]).
    Polled {
        outcome: PollOutcome,
        misdirected: bool,
    },
    Abandoned,
    Unwatched,
    /// Its record cannot be read: its next poll was put off.
    Unreadable,
    /// No provider key: put off until its give-up time.
    PutOff,
    /// No poll reaches it: files that failed for what may pass reopened at their own URLs.
    Reopened,
}

/// The most one task may take: a task started just before `stop_at` then still ends before
/// the invocation's deadline (the reserve after `stop_at`, less the shared margin). A
/// refused key's two polls (10 s each; four for a voice task asked at both its records) and a
/// result's accept (up to 8 s) could outlast it: the poll is cut off
/// [`FAILURE_RECORD_RESERVE`] before it (recorded unanswered), and the accept gets what is
/// left less that reserve.
pub const TASK_BUDGET: Duration = Duration::from_secs(20);

/// What a poll, and a polled result's accept, leave of [`TASK_BUDGET`] for recording how it
/// went (a read and a write): a poll cut off by the task's budget instead would not back off
/// (the task due again at once, in every run), and an accept, its result perhaps saved but
/// its events not published, would leave the task unwatched.
pub const FAILURE_RECORD_RESERVE: Duration = Duration::from_secs(3);

/// One run: handle the due tasks until `stop_at`. `run_id` names this run's claims. Fails only
/// when the index cannot be read; a task that cannot be handled is counted and left to the
/// next run.
pub async fn reconcile<P: Ports>(
    ports: &P,
    settings: &Settings,
    run_id: &str,
    stop_at: Timestamp,
) -> Result<Outcome, ReconcileError> {
    // The replay may have used the run's time; the due list is read within a task's budget.
    if ports.now() >= stop_at {
        return Ok(Outcome { stopped_early: true, ..Outcome::default() });
    }
    let read_at = ports.now();
    let due =
        answer_within(TASK_BUDGET, "reading the due tasks", ports.list_due_tasks(read_at, settings.max_tasks)).await?;
    // The first time that reads (the list is oldest first; one edited by hand may not read).
    let oldest_due_seconds = due.iter().find_map(|task| task.reconcile_at).map_or(0, |at| read_at.seconds_since(at));
    let mut outcome = Outcome { tasks_due: due.len(), ..Outcome::default() };
    let claimant = format!("reconciler-{run_id}");
    // Once the provider asked for quiet (a rate limit, a wait, a refusal that stands), answered
    // as its API never does, or its next turn lies past the run's time, no task is polled; the
    // rest are still read, so that those whose time came and that are owed no poll are given
    // up (the others stay due).
    for DueTask { task_id, .. } in &due {
        if ports.now() >= stop_at {
            outcome.stopped_early = true;
            break;
        }
        // The provider's next turn, before the task's budget starts (a slow pace never eats
        // it); one past the run's time is left to the next run.
        let until_stop = Duration::from_secs(stop_at.seconds_since(ports.now()));
        if settings.polls && !outcome.polls_held() && !ports.await_poll_turn(until_stop).await {
            outcome.stopped_early = true;
        }
        let polls = if outcome.polls_held() { Polls::Held } else { Polls::Go };
        let deadline = tokio::time::Instant::now() + TASK_BUDGET;
        // What shared code logs of the task (a newer URL too long to keep, ...) names it.
        let span = tracing::error_span!("task", task_id = %task_id);
        // A panic (a bug) fails this task alone: it is put behind, and the others are polled.
        let task = reconcile_task(ports, settings, &claimant, task_id, deadline, polls).instrument(span);
        let handled = guarded(deadline, task)
            .await
            .into_result(ReconcileError::Panicked, ReconcileError::OutOfTime { after: TASK_BUDGET });
        match handled {
            Ok(Handled::Skipped) => {}
            Ok(Handled::LeftDue) => outcome.left_due += 1,
            Ok(Handled::NotSent) => outcome.not_sent += 1,
            Ok(Handled::Abandoned) => outcome.abandoned += 1,
            Ok(Handled::Unwatched) => outcome.unwatched += 1,
            Ok(Handled::Unreadable) => outcome.unreadable += 1,
            Ok(Handled::PutOff) => outcome.put_off += 1,
            Ok(Handled::Reopened) => outcome.reopened += 1,
            Ok(Handled::Polled { outcome: polled, misdirected }) => {
                outcome.polls += 1;
                // Its own error line says what was answered.
                outcome.misdirected |= misdirected;
                match polled {
                    PollOutcome::Result(_) => outcome.results += 1,
                    PollOutcome::Http(401 | 403) | PollOutcome::Provider(401 | 403) => outcome.unauthorized += 1,
                    PollOutcome::Http(402) | PollOutcome::Provider(402) => outcome.unpaid += 1,
                    ref not_found if not_found.not_found() => outcome.not_found += 1,
                    _ => outcome.pending += 1,
                }
                outcome.unanswered += usize::from(polled.unanswered());
                if polled.rate_limited() {
                    outcome.rate_limited = true;
                    let answer = polled.as_text();
                    tracing::warn!(
                        task_id,
                        answer,
                        "the provider asked to slow down (or is down for maintenance): no more polls this run"
                    );
                }
                if polled.refused() {
                    // The run's error line (below) names what to fix.
                    outcome.refused = true;
                }
            }
            Err(e) => {
                outcome.tasks_failed += 1;
                // The table refusing its writes for good (an item too large, a record it
                // cannot read, a write it refuses as invalid) would have it polled again,
                // first, in every run: hourly, with an error, until mended.
                let by = if e.is_retryable() {
                    tracing::warn!(task_id, error = %e, "task not reconciled; the next run retries");
                    reconcile::FIRST_POLL_INTERVAL
                } else {
                    outcome.tasks_broken += 1;
                    tracing::error!(task_id, error = %e, "task not reconciled, and no retry can mend it: fix its items (or the build)");
                    reconcile::MAX_POLL_INTERVAL
                };
                put_behind(ports, task_id, by).await;
            }
        }
    }
    let (polls, unanswered, refused, unpaid) =
        (outcome.polls, outcome.unanswered, outcome.unauthorized, outcome.unpaid);
    let (given_up, failed, broken) =
        (outcome.abandoned, outcome.tasks_failed, outcome.tasks_broken + outcome.unreadable);
    ports.emit_metrics(&Measure::Reconciled {
        polls,
        unanswered,
        refused,
        unpaid,
        given_up,
        failed,
        broken,
        oldest_due_seconds,
    });
    if outcome.unauthorized > 0 {
        tracing::error!(
            refused = outcome.unauthorized,
            "the provider refused the API key (401/403), re-read at most once a minute: set a valid key in {} \
             (a key of the provider PROVIDER names: a docs.sunoapi.org key sent to kie's API is refused, and the \
             other way round); no task was changed but its poll bookkeeping",
            settings.key_source
        );
    }
    if outcome.not_sent > 0 {
        // One line a run, as for a refused key: the cause is the run's, not a task's.
        tracing::warn!(
            not_sent = outcome.not_sent,
            "due tasks not polled: no provider API key could be read (the reconciler-secret-unreadable alarm's \
             cause); each is polled again on its schedule"
        );
    }
    if outcome.unpaid > 0 {
        tracing::error!(
            refused = outcome.unpaid,
            "the provider refused polls for the account's credits (402): top the account up; the tasks stay \
             watched (polled as pending) and are given up when their time comes (polled again for up to a \
             day past it)"
        );
    }
    Ok(outcome)
}

/// How long putting a failed task behind may take: one attempt the SDK gives up
/// ([`stemvault_aws::ATTEMPT_TIMEOUT`]) and a second (a task that failed on the table may
/// well meet a stalled first attempt).
pub const PUT_BEHIND_BUDGET: Duration = Duration::from_secs(4);

/// A task that failed (ran out of its budget, a table error) keeps its place at the head of
/// the due list, oldest first: one that fails every time (a provider that hangs for it) would
/// take its budget out of every run before any other task. Its next poll moves `by` from now
/// (the first poll interval; the longest after a failure no retry mends), behind every task
/// due now, unless the task
/// failed after its poll was recorded (its next poll is scheduled then, on the doubling
/// schedule: not due now). Best effort.
async fn put_behind<P: Ports>(ports: &P, task_id: &str, by: Duration) {
    let now = ports.now();
    let until = now.plus(by);
    match tokio::time::timeout(PUT_BEHIND_BUDGET, ports.postpone_poll(task_id, now, None, until)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(task_id, error = %e, "could not put the failed task behind the others"),
        Err(_) => tracing::warn!(task_id, "could not put the failed task behind the others in time"),
    }
}

mod task;

use task::reconcile_task;

#[cfg(test)]
mod tests;

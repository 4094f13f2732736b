//! Replaying parked callbacks: a verified callback that ingest could not record (the table
//! unavailable, too contended or too slow), or recorded but could not archive, queue or
//! publish events for (S3, SQS or EventBridge failing), is kept under `parked/` in the vault
//! bucket ([`suno_callbacks::s3_key::parked_body_key`]) and answered 200. Each run, before its
//! polls, the reconciler lists what is parked (one ListObjectsV2 page of [`LISTED`] keys),
//! and, a task's bodies in stage order, at most [`MAX_REPLAYS`] of them, reads each body,
//! records, archives, queues and publishes it with
//! [`stemvault_vault::accept::accept`] (the very code ingest runs: a body recorded meanwhile is
//! a duplicate that sends what is missing), and deletes it once that succeeds. A body that
//! fails again stays for the next run, and so do the other bodies of its task this run (one
//! task failing every time must not stand in front of the keys after it); after
//! [`MAX_FAILURES_IN_A_ROW`] tasks failing in a row the run stops replaying (what failed is
//! still failing: no point reading the rest now); tasks that failed in an earlier run are
//! replayed after the others ([`HeldTasks`]). One that can never be recorded (too large for
//! the table, a record the table refuses) is moved to its archive key, as ingest keeps every
//! accepted body, and logged as an error: it no longer stands in front of the others. One
//! whose task's record cannot be read, or whose writes the table refuses as invalid (a faulty
//! build), waits for an operator to fix it, its task's bodies skipped meanwhile. One parked
//! before 2026-12-07 holding more JSON values than a callback is read with now is moved to its
//! task's unparsable key, where ingest now keeps such a body. One that is no callback (put
//! there by hand), or that could not be moved, is skipped itself for a while ([`HeldTasks`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::accept::{self, ParkedBody, accept};
use stemvault_vault::panic::{Guarded, guarded};
use stemvault_vault::{Timestamp, answer_within};
use suno_callbacks::{ParseError, Stage, TaskId, parse_callback, s3_key};
use tracing::Instrument;

use crate::domain::{EmitMetrics, Measure};
use crate::error::StoreError;

/// The bodies under `parked/` in key order (by task id), after the key `after` when given, at
/// most `limit`.
pub trait ListParked {
    fn list_parked(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ParkedBody>, StoreError>> + Send;
}

/// Whether the body parked under `key` is still listed (a read that failed may have met
/// another run's delete).
pub trait StillParked {
    fn still_parked(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The body parked under `key` (None: gone, replayed by another run).
pub trait ReadParked {
    fn read_parked(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
}

/// Delete the body parked under `key`, once recorded.
pub trait DeleteParked {
    fn delete_parked(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Everything replaying needs: the accept use-case's ports and the parked bodies.
pub trait Ports:
    accept::Ports + ListParked + StillParked + ReadParked + DeleteParked + EmitMetrics<Measure> + Sync
{
}

impl<T> Ports for T where
    T: accept::Ports + ListParked + StillParked + ReadParked + DeleteParked + EmitMetrics<Measure> + Sync
{
}

/// At most this many parked callbacks are replayed per run (about 100 ms each): a backlog of
/// thousands after a long outage drains in an hour of runs every 2 minutes, and leaves each
/// run time for its polls.
pub const MAX_REPLAYS: usize = 200;

/// The most one parked callback's replay may take (its read, accept and delete): one started
/// just before `stop_at` still ends within the run's reserve; the next run replays what it cut
/// short (a duplicate, should its accept have landed).
pub const REPLAY_BUDGET: Duration = Duration::from_secs(15);

/// Keys listed per run: one ListObjectsV2 page. A full page is the first of a window: the next
/// run lists on after its last whole task ([`HeldTasks`]), and the run after the window's last
/// page from the start again, so that more bodies than a page holds that no run can replay
/// (held for an operator, refused, failing every time) never hide the keys after them.
pub const LISTED: usize = 1000;

/// How long a task whose record could not be read is left alone: its parked bodies are
/// skipped without reading them until then (an operator must fix the record first). So is a
/// body that is no callback, or that could not be moved to its archive key (the move is tried
/// again then).
pub const HELD_RECHECK: Duration = Duration::from_secs(15 * 60);

/// What runs learned of parked tasks, kept by a warm instance across runs (a cold one learns
/// it again, once): the tasks whose parked bodies wait for an operator to fix their record (or
/// the build), and the bodies refused (no callback, or not movable), each with when it is
/// tried again; and the tasks whose bodies could not be replayed yet
/// in an earlier run, replayed after the others, so that a few tasks failing every run for
/// reasons of their own (a body unreadable, a replay over its budget) do not stop every run
/// ([`MAX_FAILURES_IN_A_ROW`]) before the keys after them.
/// And where the next run's listing starts ([`LISTED`]), with the tasks and bodies listed
/// since the window's first page.
#[derive(Debug, Default)]
pub struct HeldTasks {
    held: Mutex<HashMap<String, Timestamp>>,
    failing: Mutex<HashSet<String>>,
    window: Mutex<Window>,
}

/// The listing window a run is in ([`LISTED`]).
#[derive(Debug, Default)]
struct Window {
    /// The key the next listing starts after (None: the first).
    after: Option<String>,
    /// The tasks and bodies listed since the window's first page.
    seen: HashSet<String>,
}

impl HeldTasks {
    /// The key the next listing starts after (None: the first).
    fn list_after(&self) -> Option<String> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).after.clone()
    }

    /// After a listing that started after `after` and brought `listed` (whole when `next`,
    /// where the next one starts, is None): once a window's pages have all been listed, the
    /// tasks and bodies in none of them are forgotten ([`Self::keep_only`]).
    fn listed(&self, after: Option<&str>, listed: &[ParkedBody], next: Option<String>) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if after.is_none() {
            window.seen.clear();
        }
        // Both names a body may be remembered by: its task's, and its own (a refused body).
        for body in listed {
            window.seen.insert(held_as(&body.key).to_owned());
            window.seen.insert(body.key.clone());
        }
        if next.is_none() {
            self.keep_only(&window.seen.iter().map(String::as_str).collect());
            window.seen.clear();
        }
        window.after = next;
    }

    /// Whether the parked body under `key` is left alone `now`: its task held, or itself.
    fn skips(&self, key: &str, now: Timestamp) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        [held_as(key), key].iter().any(|name| held.get(*name).is_some_and(|until| now < *until))
    }

    /// Leave `name`, a task or a body's key, alone until [`HELD_RECHECK`] from `now`.
    fn hold(&self, name: &str, now: Timestamp) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned(), now.plus(HELD_RECHECK));
    }

    /// Forget the tasks and bodies a whole listing of `parked/` (`listed`) did not bring:
    /// replayed or removed by another instance, or by hand.
    fn keep_only(&self, listed: &HashSet<&str>) {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner).retain(|task| listed.contains(task.as_str()));
        self.held.lock().unwrap_or_else(PoisonError::into_inner).retain(|task, _| listed.contains(task.as_str()));
    }

    /// Whether a body of the task could not be replayed yet in an earlier run.
    fn failed_before(&self, task: &str) -> bool {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner).contains(task)
    }

    /// What a replay of one of the task's bodies came to.
    fn replayed(&self, task: &str, key: &str, replay: Replay, now: Timestamp) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match replay {
            Replay::NotYet => {
                failing.insert(task.to_owned());
            }
            Replay::Held => self.hold(task, now),
            Replay::Recorded => {
                failing.remove(task);
                self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(task);
            }
            Replay::Gone | Replay::Archived => {
                failing.remove(task);
            }
            // Not read every run: the body alone is left for a while (its task's others go on).
            Replay::Refused => self.hold(key, now),
        }
    }
}

/// A run stops replaying after the bodies of this many tasks in a row could not finish yet
/// (the table, the bucket, the queue or the bus failing).
pub const MAX_FAILURES_IN_A_ROW: usize = 3;

/// What one run's replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Replayed {
    /// Parked callbacks recorded (and deleted from `parked/`, unless that delete failed: then
    /// the next run replays it again, a duplicate).
    pub callbacks_replayed: usize,
    /// Parked callbacks left for the next run: not recordable yet, left for an operator, or
    /// not reached.
    pub callbacks_still_parked: usize,
    /// Parked callbacks the table refuses for good (too large, a record it rejects): moved to
    /// their archive key unrecorded, out of `parked/`.
    pub callbacks_refused: usize,
}

/// What became of one parked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    Recorded,
    Gone,
    /// Not recordable, or not finished, yet (a later run may succeed): the table, the bucket,
    /// the queue or the bus failing; a run stops replaying after a few of these in a row.
    NotYet,
    /// The task's record cannot be read, or the table refuses its writes as invalid: left
    /// parked until an operator fixes it (not an outage: the run goes on replaying the others).
    Held,
    /// Refused for good and moved to its archive key, out of `parked/`.
    Archived,
    /// Left for an operator: no callback, or refused for good and not movable.
    Refused,
}

/// Replay what is parked, at most `limit` bodies, taking none after `stop_at` and none `held`
/// skips (of a task held, or a body refused). `run_id` names the claims of the replays. Fails
/// only when the parked bodies cannot be listed.
pub async fn replay_parked<P: Ports>(
    ports: &P,
    settings: &accept::Settings,
    held: &HeldTasks,
    run_id: &str,
    limit: usize,
    stop_at: Timestamp,
) -> Result<Replayed, StoreError> {
    let listed = LISTED.max(limit);
    let after = held.list_after();
    let listing = ports.list_parked(after.as_deref(), listed);
    let mut parked = answer_within(REPLAY_BUDGET, "listing parked/", listing).await?;
    let mut replayed = Replayed::default();
    // A full listing may have cut the last task's bodies short (its `first-` key the first one
    // not listed): that task waits for the next run, which lists on from the task before it.
    let next = if parked.len() < listed {
        None
    } else {
        let last = parked.last().and_then(|b| parked_task(&b.key)).map(str::to_owned);
        let cut = parked.iter().rposition(|b| parked_task(&b.key) != last.as_deref()).map_or(0, |i| i + 1);
        if cut > 0 {
            replayed.callbacks_still_parked += parked.len() - cut;
            parked.truncate(cut);
        }
        parked.last().map(|b| b.key.clone())
    };
    held.listed(after.as_deref(), &parked, next);
    // A task's bodies in the order its stages come (`text`, `first`, then the final ones), not
    // their keys' (`complete-` before `first-`): replayed after a later stage, an earlier
    // one would be a late callback that publishes no Task Stage Changed of its own.
    // Tasks that failed in an earlier run go last.
    parked.sort_by_cached_key(|body| {
        let task = held_as(&body.key).to_owned();
        (held.failed_before(&task), task, parked_stage(&body.key).map_or(u8::MAX, Stage::rank))
    });
    let mut failures_in_a_row = 0;
    let mut attempts = 0;
    // Tasks a body of which could not be replayed this run: their other bodies wait too.
    let mut failing_tasks = HashSet::new();
    for (i, body) in parked.iter().enumerate() {
        if ports.now() >= stop_at || failures_in_a_row >= MAX_FAILURES_IN_A_ROW || attempts >= limit {
            replayed.callbacks_still_parked += parked.len() - i;
            break;
        }
        let task = held_as(&body.key);
        if failing_tasks.contains(task) || held.skips(&body.key, ports.now()) {
            replayed.callbacks_still_parked += 1;
            continue;
        }
        attempts += 1;
        let span = tracing::error_span!("replay", key = %body.key, task_id = tracing::field::Empty);
        let claimant = format!("replay-{run_id}-{i}");
        let until = tokio::time::Instant::now() + REPLAY_BUDGET;
        let replay = match guarded(until, replay_one(ports, settings, body, &claimant).instrument(span)).await {
            Guarded::Done(replay) => replay,
            // A bug the body or its record reaches: held like a record an operator must fix,
            // so that it does not fail first in every run.
            Guarded::Panicked => {
                tracing::error!(key = %body.key, "a parked callback's replay panicked (the panic's own line says where); left parked: fix the build");
                Replay::Held
            }
            Guarded::OutOfTime => {
                tracing::warn!(key = %body.key, "a parked callback's replay took over {}s; the next run tries again", REPLAY_BUDGET.as_secs());
                Replay::NotYet
            }
        };
        failures_in_a_row = if replay == Replay::NotYet { failures_in_a_row + 1 } else { 0 };
        if matches!(replay, Replay::NotYet | Replay::Held) {
            failing_tasks.insert(task);
        }
        held.replayed(task, &body.key, replay, ports.now());
        match replay {
            Replay::Recorded => replayed.callbacks_replayed += 1,
            Replay::Gone => {}
            Replay::Archived => replayed.callbacks_refused += 1,
            Replay::NotYet | Replay::Held | Replay::Refused => replayed.callbacks_still_parked += 1,
        }
    }
    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
        tracing::warn!(
            still_parked = replayed.callbacks_still_parked,
            "none of the last {MAX_FAILURES_IN_A_ROW} parked callbacks could be replayed; replaying again next run"
        );
    }
    let (still_parked, refused) = (replayed.callbacks_still_parked, replayed.callbacks_refused);
    ports.emit_metrics(&Measure::ParkedCallbacks { still_parked, refused });
    Ok(replayed)
}

/// When a run that started `now` and stops by `stop_at` stops replaying: halfway, so that a
/// backlog after an outage leaves its polls the other half.
pub fn replay_until(now: Timestamp, stop_at: Timestamp) -> Timestamp {
    Timestamp::from_unix_ms(now.unix_ms + (stop_at.unix_ms - now.unix_ms).max(0) / 2)
}

/// The task a parked key's replays are remembered by ([`HeldTasks`]), or the key itself when
/// it is under none (put there by hand); a refused body is remembered by its key as well.
fn held_as(key: &str) -> &str {
    parked_task(key).unwrap_or(key)
}

/// The task a parked key is under (`parked/<task_id>/...`; None for a key put elsewhere by hand).
fn parked_task(key: &str) -> Option<&str> {
    key.strip_prefix(s3_key::PARKED_PREFIX)?.split_once('/').map(|(task, _)| task)
}

/// The stage a parked key names (`parked/<task_id>/<stage>-<sha256>.json`).
fn parked_stage(key: &str) -> Option<Stage> {
    let name = key.rsplit('/').next()?;
    name.split_once('-')?.0.parse().ok()
}

async fn replay_one<P: Ports>(ports: &P, settings: &accept::Settings, parked: &ParkedBody, claimant: &str) -> Replay {
    let key = parked.key.as_str();
    let body = match ports.read_parked(key).await {
        Ok(Some(body)) => body,
        Ok(None) => return Replay::Gone,
        // A run beside this one (a schedule delivered twice) may have replayed and deleted it
        // since the listing: S3 answers that GetObject 403, not 404, to a role that may list
        // only `parked/` itself.
        Err(e) if matches!(ports.still_parked(key).await, Ok(false)) => {
            tracing::info!(error = %e, "a parked callback is no longer listed: another run replayed it");
            return Replay::Gone;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read a parked callback; the next run tries again");
            return Replay::NotYet;
        }
    };
    // Ingest parsed it before parking it: only a body put there by hand fails here, or one
    // parked before 2026-12-07 holding more JSON values than are read now (MAX_JSON_MARKS),
    // which is kept where ingest now keeps such a verified body, out of the way.
    let event = match (parse_callback(&body), parked_task_id(key)) {
        (Ok(event), _) => event,
        (Err(e @ ParseError::TooManyValues), Some(task)) => {
            let kept_key = s3_key::unparsable_body_key(&task, &accept::body_sha256_hex(&body));
            return match move_out_of_parked(ports, key, &kept_key, &body).await {
                Ok(()) => {
                    tracing::error!(error = %e, kept_key, "a parked body can no longer be read; kept as an unparsable body, not recorded");
                    Replay::Archived
                }
                Err(why) => {
                    tracing::error!(error = %e, why, "a parked body can no longer be read, nor moved; left for an operator");
                    Replay::Refused
                }
            };
        }
        (Err(e), _) => {
            tracing::error!(error = %e, "a parked body is no callback; left for an operator");
            return Replay::Refused;
        }
    };
    tracing::Span::current().record("task_id", event.task_id.as_str());
    match accept(ports, settings, &event, &body, claimant, parked.parked_at).await {
        Ok(outcome) => {
            tracing::info!(
                stage = %event.stage,
                duplicate = outcome.duplicate,
                files_queued = outcome.files_queued,
                "parked callback replayed"
            );
            if let Err(e) = ports.delete_parked(key).await {
                // Replayed again by the next run: a duplicate that queues nothing.
                tracing::warn!(error = %e, "a replayed callback could not be deleted from parked/");
            }
            Replay::Recorded
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, code = e.reason_code(), "a parked callback is not recordable yet; the next run tries again");
            Replay::NotYet
        }
        Err(e) if e.waits_for_the_record() => {
            tracing::error!(
                error = %e,
                code = e.reason_code(),
                "the task's record cannot be read, or the table refuses its writes as invalid: fix its items (or \
                 the build), and a run after that records this parked callback"
            );
            Replay::Held
        }
        Err(e) => {
            // Never recordable (too large for the table, or a record it refuses): kept where
            // every accepted body is kept, and out of the way of the parked ones behind it.
            let archive_key = s3_key::callback_body_key(&event.task_id, event.stage, &accept::body_sha256_hex(&body));
            match move_out_of_parked(ports, key, &archive_key, &body).await {
                Ok(()) => {
                    tracing::error!(
                        error = %e,
                        code = e.reason_code(),
                        archive_key,
                        "a parked callback cannot be recorded; its body is archived, not recorded: its files are not vaulted and nothing retries it (ask the provider for the task's result if it is needed)"
                    );
                    Replay::Archived
                }
                Err(why) => {
                    tracing::error!(
                        error = %e,
                        code = e.reason_code(),
                        why,
                        "a parked callback cannot be recorded, nor moved to the archive; left for an operator"
                    );
                    Replay::Refused
                }
            }
        }
    }
}

/// The task a parked key is under, when it is one a callback may name.
fn parked_task_id(key: &str) -> Option<TaskId> {
    parked_task(key).and_then(|task| TaskId::parse(task).ok())
}

/// Keep `body`, parked under `key`, under `to` instead: written there, then deleted from
/// `parked/` (a failed delete leaves it for the next run, which writes the same key again).
async fn move_out_of_parked<P: Ports>(ports: &P, key: &str, to: &str, body: &[u8]) -> Result<(), String> {
    ports.archive_body(to, body).await.map_err(|e| e.to_string())?;
    ports.delete_parked(key).await.map_err(|e| e.to_string())
}

// Tested with the run's in-memory ports: `crate::domain::tests`.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_takes_half_of_a_run_at_most() {
        let now = Timestamp::from_unix_ms(1_000_000);
        assert_eq!(replay_until(now, now.plus(Duration::from_secs(58))), now.plus(Duration::from_secs(29)));
        assert_eq!(replay_until(now, now), now);
        assert_eq!(replay_until(now, now.minus(Duration::from_secs(5))), now, "a run already over replays nothing");
    }
}

//! When the reconciler watches a task, and what a poll does to its bookkeeping. Pure: the
//! reconciler function (functions/reconciler) reads the `reconcile-due` index, polls the
//! provider and saves what these functions decide.
//!
//! A task is watched (its task item carries `reconcile = due` and `reconcile_at`, so the
//! sparse `reconcile-due` index lists it) while a callback may still be missing (and, a poll's
//! result saved, until the poll's own write: [`keep_watched`]):
//!
//! * registered (`PUT /tasks/{id}`, stage `submitted`) and no callback yet;
//! * stuck at `text` or `first` (music, lyrics);
//! * a file failed because its URL expired (the downloader marks the task), or for a reason
//!   that may pass while it may still be reopened ([`relink`], [`relink_own`]), and one
//!   reopened until it settles;
//! * a polled result left unfinished (its events, file messages or archive failed after the
//!   save: [`PolledResult::Unfinished`]), until a poll records it.
//!
//! Every field is set in a write the task item gets anyway (registration, ingest's put), so
//! a normal task (one `complete` callback) costs no write and no index entry at all.

use std::time::Duration;

use crate::ingest::adopt_uncommitted;
use crate::{
    Abandoned, FileEntry, FileStatus, LastPoll, PolledResult, RECONCILE_DUE, TaskRecord, Timestamp, VaultState,
};
use suno_callbacks::Stage;
use suno_callbacks::poll::renews_file;

mod relink;
pub use relink::{FIRST_RELINK_AFTER, MAX_RELINKS, awaits_retry, relink, relink_at, relink_due, relink_own};

/// `RECONCILE_AFTER_SECONDS` by default: a task is first polled this long after it was
/// registered or stopped at `text`/`first`.
pub const DEFAULT_RECONCILE_AFTER: Duration = Duration::from_secs(600);
/// The shortest `RECONCILE_AFTER_SECONDS`.
pub const MIN_RECONCILE_AFTER: Duration = Duration::from_secs(5);
/// `RECONCILE_GIVE_UP_SECONDS` by default: 14 days, how long the providers keep a task.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);
/// The wait before the second poll; each further wait doubles it. Also the wait before a
/// first poll that need not wait for callbacks (a stale callback's task, a file to watch).
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait between two polls of a task still without its result.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest wait between two polls of a task watched only for files whose URLs expired:
/// a poll that can bring a fresh URL brings it at once, so later ones rarely do, and polled
/// hourly for 14 days such tasks (a CDN incident leaves thousands) would take the turns of
/// tasks whose callback never came. (A file a poll may reopen is polled for at its time.)
pub const MAX_FILE_POLL_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// How long the provider may answer that it does not know a task ([`PollOutcome::not_found`]),
/// poll after poll, before the task is given up: one registered under the wrong family, or
/// with an id the provider never issued, is then polled about 30 times rather than for 14
/// days. Any other answer (or none), and any callback, restarts the count.
pub const NOT_FOUND_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an expired URL answers: the downloader asks a fresh link for a source answering one
/// of these, and fails the file as `source_expired` (its reason `source answered <status>`).
pub const EXPIRED_STATUSES: [u16; 4] = [403, 404, 410, 441];

/// A file that failed for good because its URL expired ([`EXPIRED_STATUSES`]), at once or on
/// its last receive (`dead_lettered: `, when no fresh link could be had, or copied from, in
/// time): the provider may still give a fresh one.
pub fn failed_by_expiry(file: &FileEntry) -> bool {
    file.status == FileStatus::Failed
        && file.error.as_deref().and_then(crate::reason::source_status).is_some_and(|s| EXPIRED_STATUSES.contains(&s))
}

/// Whether the task still waits for its result (registered, or only `text`/`first` came).
pub fn awaits_result(record: &TaskRecord) -> bool {
    matches!(record.stage, Stage::Submitted | Stage::Text | Stage::First)
}

/// Whether a callback or a poll may still bring the task something: its result, a new URL for
/// an expired file, or the reopen of a file that failed for a reason that may pass
/// ([`relink_at`]; and while such a file is copied, its failure must find the task watched,
/// for the next reopen). A task waiting for its result is watched whatever its family (it is
/// given up, with an event, when nothing comes); one watched only for a file's sake is not
/// for an expired file no poll could bring again ([`renews_file`]: an unknown family has no
/// record-info endpoint, and music's answers never carry a track's `source_*` URLs): each
/// poll would only write its bookkeeping, for 14 days. Such a file that failed for what may
/// pass is still reopened at its own URL when its wait is over ([`relink`], [`relink_own`]).
pub fn needs_watching(record: &TaskRecord) -> bool {
    if record.abandoned.is_some() {
        return false;
    }
    awaits_result(record) || file_watches(record).any(|watch| watch != FileWatch::Never)
}

/// What each file asks of the watch.
fn file_watches(record: &TaskRecord) -> impl Iterator<Item = FileWatch> + '_ {
    record.files.iter().map(|(name, file)| file_watch(file, renews_file(record.family, name)))
}

/// What one file asks of the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileWatch {
    /// Polls at the interval: its URL expired (a new one may come any time), or a poll
    /// reopened it and it is being copied (should the copy fail again, the task is still
    /// watched when it does; the settle would also watch it again: [`crate::download::settle_plan`]).
    Now,
    /// A poll may reopen it from then on ([`relink_at`]).
    At(Timestamp),
    Never,
}

/// `renewed`: a poll's answer may bring the file again ([`renews_file`]), so a new URL for
/// an expired one.
fn file_watch(file: &FileEntry, renewed: bool) -> FileWatch {
    let reopened_by_a_poll = file.relinks > 0 && !file.status.is_settled();
    match relink_at(file) {
        _ if (renewed && failed_by_expiry(file)) || reopened_by_a_poll => FileWatch::Now,
        Some(at) => FileWatch::At(at),
        None => FileWatch::Never,
    }
}

/// Commit a reopen whose task item never came (see `ingest::adopt_uncommitted`), unless the
/// task was given up: a task given up takes no new file set.
pub(crate) fn adopt_unless_abandoned(record: &mut TaskRecord) {
    if record.abandoned.is_none() {
        let read = record.generation;
        adopt_uncommitted(record, Some(read));
    }
}

/// Start watching (first poll `after` from `now`), keeping the poll count.
pub fn watch(record: &mut TaskRecord, now: Timestamp, after: Duration) {
    watch_from(record, now.plus(after));
}

/// Start watching, first poll at `at`, keeping the poll count.
fn watch_from(record: &mut TaskRecord, at: Timestamp) {
    record.reconcile = Some(RECONCILE_DUE.to_owned());
    record.reconcile_at = Some(at);
    record.poll_interval_seconds = None;
}

/// Stop watching: the task leaves the `reconcile-due` index.
pub fn unwatch(record: &mut TaskRecord) {
    record.reconcile = None;
    record.reconcile_at = None;
    record.poll_interval_seconds = None;
}

/// After ingest merged a callback (or a poll's result) into `record`, whose stage was
/// `before` (None: a new task): a task that just reached `text`/`first` (or still needs
/// watching and is not watched) is first polled `after` from `now` (or, watched only for a
/// file a poll may reopen, when it may: [`first_poll_at`]); a task that needs nothing more
/// leaves the index. The provider knows the task, whatever a poll said before. Changes
/// only fields of the task item ingest puts anyway.
pub fn after_merge(record: &mut TaskRecord, before: Option<Stage>, now: Timestamp, after: Duration) {
    record.not_found_since = None;
    if !needs_watching(record) {
        unwatch(record);
        return;
    }
    let moved = before != Some(record.stage);
    if moved || record.reconcile.is_none() {
        watch_from(record, first_poll_at(record, now.plus(after)));
    }
}

/// A poll's result saved ([`crate::accept::Settings::polled`]), or files reopened without one
/// ([`relink_own`]): the task stays in the index,
/// due again within [`FIRST_POLL_INTERVAL`] (not at the later first poll [`after_merge`]
/// schedules for a stage the result moved), even when the result ends it, until the poll's
/// own write ([`after_poll`]) takes it out or schedules it. Should its events fail to publish
/// and that write fail too, the task is polled again soon and the duplicate publishes them (a
/// callback's are parked for that); left out of the index, a task polled because its
/// callback never came would never get them.
pub fn keep_watched(record: &mut TaskRecord, now: Timestamp) {
    let soon = now.plus(FIRST_POLL_INTERVAL);
    let due_soon = record.reconcile.is_some() && record.reconcile_at.is_some_and(|at| at <= soon);
    if !due_soon && record.abandoned.is_none() {
        watch(record, now, FIRST_POLL_INTERVAL);
    }
}

/// What one poll came to, for the schedule and the record's `last_poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// The provider says not done yet.
    Pending,
    /// A result was ingested at this stage.
    Result(Stage),
    /// The provider answered this HTTP status (429, 5xx, 401, ...).
    Http(u16),
    /// HTTP 200 with this error code in the body.
    Provider(i64),
    /// HTTP 200, code 200, and no record in it (`data` null): the endpoint holds no such task.
    NoRecord,
    /// No answer (connection refused, timeout).
    Unreachable,
    /// An answer that is not a usable record-info answer.
    Unreadable,
    /// A result that could not be recorded (the table failed or refused it).
    Unrecorded,
}

impl PollOutcome {
    /// The provider said it does not know the task: 404, 422 (not a task id it takes at this
    /// family's endpoint) or 400 (both sites' "parameter error": the one parameter is the
    /// task id), as the `code` of its answer read in kie's terms
    /// ([`suno_callbacks::poll::code_meaning`]; an HTTP 404 or 422 is a path it does not
    /// serve, and is read as no answer); or a success holding no record (a task registered
    /// under another family: its endpoint never will). A day of them gives the task up.
    pub fn not_found(&self) -> bool {
        matches!(self, PollOutcome::Provider(400 | 404 | 422) | PollOutcome::NoRecord)
    }

    /// The provider refused the key (401/403, after a re-read key was tried) or the account's
    /// credits (402), as HTTP status or as the body's `code`.
    pub fn refused(&self) -> bool {
        matches!(self, PollOutcome::Http(401..=403) | PollOutcome::Provider(401..=403))
    }

    /// The provider asked to slow down, or is down for maintenance
    /// ([`suno_callbacks::poll::asks_to_wait`]): 429, 430 or 455 as HTTP status or the body's
    /// `code`, or 405 as the body's `code`. Polling other tasks would only meet the same answer.
    pub fn rate_limited(&self) -> bool {
        match self {
            PollOutcome::Http(status) => suno_callbacks::poll::WAIT_STATUSES.contains(status),
            PollOutcome::Provider(code) => suno_callbacks::poll::asks_to_wait(*code),
            _ => false,
        }
    }

    /// The poll brought no word of the task: no answer, an unreadable one (a page, a redirect,
    /// a path the provider does not serve), a rate limit, or the provider failing (an HTTP
    /// error, or as the body's `code` a rate limit or a 5xx): not a refusal of the key
    /// (401/403) or the credits (402), which are counted apart, nor an answer about the task
    /// (pending, unknown, or another error code about it: 400, 409, 451...).
    pub fn unanswered(&self) -> bool {
        match self {
            PollOutcome::Unreachable | PollOutcome::Unreadable => true,
            PollOutcome::Http(status) => !(401..=403).contains(status),
            // A request timed out, misdirected or too early on its way (408, 421, 425: a
            // gateway's), as the downloader reads them of a fresh link.
            PollOutcome::Provider(code) => {
                suno_callbacks::poll::asks_to_wait(*code)
                    || suno_callbacks::poll::provider_failing(*code)
                    || matches!(*code, 408 | 421 | 425)
            }
            PollOutcome::Pending | PollOutcome::Result(_) | PollOutcome::NoRecord | PollOutcome::Unrecorded => false,
        }
    }

    /// Read back from `last_poll.outcome` ([`PollOutcome::as_text`]); None for other text.
    pub fn from_text(text: &str) -> Option<PollOutcome> {
        Some(match text {
            "pending" => PollOutcome::Pending,
            "no_record" => PollOutcome::NoRecord,
            "unreachable" => PollOutcome::Unreachable,
            "unreadable" => PollOutcome::Unreadable,
            "unrecorded" => PollOutcome::Unrecorded,
            _ => {
                if let Some(stage) = text.strip_prefix("result:") {
                    PollOutcome::Result(stage.parse().ok()?)
                } else if let Some(status) = text.strip_prefix("http_") {
                    PollOutcome::Http(status.parse().ok()?)
                } else {
                    PollOutcome::Provider(text.strip_prefix("provider_")?.parse().ok()?)
                }
            }
        })
    }

    /// Whether the poll had the provider say something of the task (pending, a result, not
    /// known, an error about it): not [`PollOutcome::unanswered`], nor a refusal of the key or
    /// the credits (401-403), nor a result the table did not take.
    pub fn spoke(&self) -> bool {
        let refused = matches!(self, PollOutcome::Http(401..=403) | PollOutcome::Provider(401..=403));
        !self.unanswered() && !refused && *self != PollOutcome::Unrecorded
    }

    /// As stored in `last_poll.outcome`.
    pub fn as_text(&self) -> String {
        match self {
            PollOutcome::Pending => "pending".into(),
            PollOutcome::Result(stage) => format!("result:{stage}"),
            PollOutcome::Http(status) => format!("http_{status}"),
            PollOutcome::Provider(code) => format!("provider_{code}"),
            PollOutcome::NoRecord => "no_record".into(),
            PollOutcome::Unreachable => "unreachable".into(),
            PollOutcome::Unreadable => "unreadable".into(),
            PollOutcome::Unrecorded => "unrecorded".into(),
        }
    }
}

/// The wait before the next poll after one that waited `previous` (None: the first).
pub fn next_interval(previous: Option<u64>, max: Duration) -> Duration {
    match previous {
        None | Some(0) => FIRST_POLL_INTERVAL,
        Some(secs) => Duration::from_secs(secs.saturating_mul(2)).min(max),
    }
}

/// When a task that starts to be watched is first polled: at `earliest`, or, when only files
/// a poll may reopen keep it watched, not before the first of them may be ([`relink_at`]).
pub fn first_poll_at(record: &TaskRecord, earliest: Timestamp) -> Timestamp {
    next_poll_at(record, earliest, false)
}

/// The longest wait between two polls of `record` ([`MAX_FILE_POLL_INTERVAL`] when only
/// expired URLs keep it watched).
fn longest_wait(record: &TaskRecord, unfinished: bool) -> Duration {
    let reopens = file_watches(record).any(|watch| matches!(watch, FileWatch::At(_)));
    if unfinished || awaits_result(record) || reopens { MAX_POLL_INTERVAL } else { MAX_FILE_POLL_INTERVAL }
}

/// When a watched task is polled next: at `by_interval`, unless only files a poll may reopen
/// ([`relink_at`]) keep it watched: then not before the first of them may be (a poll before
/// would bring nothing; the waits run to days).
fn next_poll_at(record: &TaskRecord, by_interval: Timestamp, unfinished: bool) -> Timestamp {
    if unfinished || awaits_result(record) {
        return by_interval;
    }
    let mut first_reopen = None;
    for watch in file_watches(record) {
        match watch {
            FileWatch::Now => return by_interval,
            FileWatch::At(at) => first_reopen = Some(first_reopen.map_or(at, |first: Timestamp| first.min(at))),
            FileWatch::Never => {}
        }
    }
    first_reopen.map_or(by_interval, |at| at.max(by_interval))
}

/// Whether a poll recorded a result at the task's stage and published its events
/// ([`TaskRecord::polled_result`], which polls that bring nothing leave as it is).
pub fn poll_recorded(record: &TaskRecord) -> bool {
    polled_result(record) == Some(PolledResult::Recorded(record.stage))
}

/// [`TaskRecord::polled_result`]; on an item written before it existed, what the last poll
/// said of a result (`result:<stage>` or `unrecorded`).
fn polled_result(record: &TaskRecord) -> Option<PolledResult> {
    if record.polled_result.is_some() {
        return record.polled_result;
    }
    match PollOutcome::from_text(&record.last_poll.as_ref()?.outcome)? {
        PollOutcome::Unrecorded => Some(PolledResult::Unfinished),
        PollOutcome::Result(stage) => Some(PolledResult::Recorded(stage)),
        _ => None,
    }
}

/// Record a poll of a still-watched task: one more poll, `last_poll`, and the next poll
/// scheduled with a doubled interval (429, 5xx and unreachable count as pending). A task no
/// longer watched (a result settled it) is only counted, unless a result was
/// [`PollOutcome::Unrecorded`] (saved perhaps, but not finished) and no poll since recorded
/// one ([`PolledResult::Unfinished`], kept across polls that bring nothing): polled again
/// until a poll records it (or the task is given up). `not_found_since` dates the first of
/// an unbroken run of "not found" answers; any other answer, or none, ends the run (so a task
/// is never given up as unknown on old answers, across an outage or a refused key). A reopen
/// whose task item never came (a polled result the table then refused) is committed with it,
/// the vault pending and the task open for the sweeper. Returns the record to save (`version`
/// incremented).
pub fn after_poll(record: &TaskRecord, outcome: &PollOutcome, now: Timestamp) -> TaskRecord {
    let mut next = record.clone();
    adopt_unless_abandoned(&mut next);
    next.polls += 1;
    next.last_poll = Some(LastPoll { at: now, outcome: outcome.as_text() });
    if outcome.not_found() {
        next.not_found_since.get_or_insert(now);
    } else {
        next.not_found_since = None;
    }
    next.polled_result = match outcome {
        // An answer of another stage than the task's (a provider lagging behind the callbacks)
        // was a late result: it published nothing of the task's own stage.
        PollOutcome::Result(stage) if *stage == next.stage => Some(PolledResult::Recorded(*stage)),
        PollOutcome::Unrecorded => Some(PolledResult::Unfinished),
        _ => polled_result(record),
    };
    // A result saved but not finished (its events, file messages or archive failed after the
    // save) is polled again, through answers that bring nothing, until a poll's duplicate
    // finishes it: left unwatched, a task polled because its callback never came would never
    // get its events.
    let unfinished = next.polled_result == Some(PolledResult::Unfinished) && next.abandoned.is_none();
    if needs_watching(&next) || unfinished {
        let wait = next_interval(record.poll_interval_seconds, longest_wait(&next, unfinished));
        next.reconcile = Some(RECONCILE_DUE.to_owned());
        next.reconcile_at = Some(next_poll_at(&next, now.plus(wait), unfinished));
        next.poll_interval_seconds = Some(wait.as_secs());
    } else {
        unwatch(&mut next);
    }
    next.version += 1;
    next
}

/// Since when the task has been waited for: since its current stage came (the first callback
/// or poll that brought it, never before the first callback), else (a registered task without
/// a result) its registration. Minutes after the first callback as a task goes, but a callback
/// that revives a task given up (a late stage) starts the wait again: else the task would be
/// given up at its next run, without a poll.
pub fn waiting_since(record: &TaskRecord) -> Timestamp {
    let first = record.registered_at.unwrap_or(record.first_received_at).min(record.first_received_at);
    let stage_came = record.callbacks.values().filter(|c| c.stage == record.stage).map(|c| c.received_at).min();
    stage_came.unwrap_or(first)
}

/// When a task still without its result is given up: `give_up_after` after it was last
/// waited for ([`waiting_since`]).
pub fn give_up_at(record: &TaskRecord, give_up_after: Duration) -> Timestamp {
    waiting_since(record).plus(give_up_after)
}

/// How long from its first poll past its give-up time a task may wait for its last poll to
/// be answered ([`owes_a_last_poll`]): a provider down (or a key refused) for longer does not
/// keep it watched.
pub const LAST_POLL_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// How long past its give-up time a task not yet polled since is still owed its last poll
/// ([`owes_a_last_poll`]): the runs behind reach it late, and a poll whose save keeps failing
/// (a record the table refuses) does not keep it watched for ever.
pub const LATE_POLL_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether a task whose give-up time came is owed one more poll first: unless its last poll
/// came within [`MAX_POLL_INTERVAL`] before that time or after it and had the provider speak
/// of it ([`PollOutcome::spoke`]: not a rate limit, an outage, no answer, a key or credits
/// refused, an answer not read or recorded), it is, for [`LAST_POLL_WITHIN`] from its first
/// poll past that time ([`TaskRecord::last_chance_from`]), or, until one, for
/// [`LATE_POLL_WITHIN`] past that time. Polled on time and answered, a task is given up as it
/// comes due.
pub fn owes_a_last_poll(record: &TaskRecord, now: Timestamp, give_up_after: Duration) -> bool {
    let give_up_at = give_up_at(record, give_up_after);
    let on_time = give_up_at.minus(MAX_POLL_INTERVAL);
    let spoke = |poll: &LastPoll| PollOutcome::from_text(&poll.outcome).is_some_and(|outcome| outcome.spoke());
    if record.last_poll.as_ref().is_some_and(|poll| poll.at >= on_time && spoke(poll)) {
        return false;
    }
    let owed_until = match last_chance_from(record, give_up_at) {
        Some(first_poll_past) => first_poll_past.plus(LAST_POLL_WITHIN),
        None => give_up_at.plus(LATE_POLL_WITHIN),
    };
    now < owed_until
}

/// This wait's first poll past its give-up time: a mark from before (a revived task's earlier
/// wait) is none.
fn last_chance_from(record: &TaskRecord, give_up_at: Timestamp) -> Option<Timestamp> {
    record.last_chance_from.filter(|from| *from >= give_up_at)
}

/// `polled` (the task's record after a poll at `now`), marked with when its last chance
/// began ([`TaskRecord::last_chance_from`]) when the poll came past its give-up time and this
/// wait has no mark yet. (Every such poll is a last chance's: a task past that time is given
/// up unless it is owed one.)
pub fn mark_last_chance(mut polled: TaskRecord, now: Timestamp, give_up_after: Duration) -> TaskRecord {
    let give_up_at = give_up_at(&polled, give_up_after);
    if now >= give_up_at && last_chance_from(&polled, give_up_at).is_none() {
        polled.last_chance_from = Some(now);
    }
    polled
}

/// Why the reconciler should stop watching the task now, if it should: it was waited for
/// `give_up_after` ([`crate::GiveUpReason::Abandoned`]), or the provider has said it does not know it for
/// [`NOT_FOUND_GIVE_UP_AFTER`] ([`crate::GiveUpReason::NotFound`]). A task still without its result is then
/// given up ([`abandon`]); one that has it (watched for files whose URL expired) only leaves
/// the index ([`stop_watching`]). When both hold, the one whose time came first: a give-up
/// tried again by a later run (its event went out, its record write failed) names the reason
/// its event named, and so publishes under the same id ([`crate::events::given_up`]).
pub fn give_up_reason(record: &TaskRecord, now: Timestamp, give_up_after: Duration) -> Option<crate::GiveUpReason> {
    if record.abandoned.is_some() {
        return None;
    }
    let abandoned_at = Some(give_up_at(record, give_up_after)).filter(|at| now >= *at);
    match (abandoned_at, not_known_for_a_day(record, now)) {
        (Some(abandoned_at), Some(not_found_at)) if not_found_at < abandoned_at => Some(crate::GiveUpReason::NotFound),
        (Some(_), _) => Some(crate::GiveUpReason::Abandoned),
        (None, Some(_)) => Some(crate::GiveUpReason::NotFound),
        (None, None) => None,
    }
}

/// When the provider's saying it does not know the task reached [`NOT_FOUND_GIVE_UP_AFTER`],
/// if it has and a poll after that said it again (the run is unbroken, so the last poll said
/// it): not answers from before a time without polls (no key since).
fn not_known_for_a_day(record: &TaskRecord, now: Timestamp) -> Option<Timestamp> {
    let day = record.not_found_since?.plus(NOT_FOUND_GIVE_UP_AFTER);
    (now >= day && record.last_poll.as_ref().is_some_and(|poll| poll.at >= day)).then_some(day)
}

/// Stop watching a task that has its result: nothing failed, no new URL came for its expired
/// files in time (or the provider no longer knows the task). A reopen whose task item never
/// came is committed with it, as in [`after_poll`]. Returns the record to save (`version`
/// incremented).
pub fn stop_watching(record: &TaskRecord) -> TaskRecord {
    let mut next = record.clone();
    adopt_unless_abandoned(&mut next);
    unwatch(&mut next);
    next.version += 1;
    next
}

/// Give the task up: `abandoned` recorded, the task leaves the `reconcile-due` index, and the
/// `open-tasks` index too when it has no files and no result; any other stays there until its
/// files and manifest are settled (`sync_open`): the sweeper still sees those through (a
/// lost settle, a lost message). Returns the record to save (`version` incremented).
pub fn abandon(record: &TaskRecord, reason: crate::GiveUpReason, now: Timestamp) -> TaskRecord {
    let mut next = record.clone();
    next.abandoned = Some(Abandoned { reason, at: now });
    unwatch(&mut next);
    sync_open(&mut next);
    next.version += 1;
    next
}

/// Set `open` as the sweeper is to see it: a task given up without files or a result is out
/// of the `open-tasks` index (nothing would ever settle it); any other is in it until it is
/// settled, so one given up with its result settled but its manifest not (a registration's
/// `client_ref` asks for it again) has it written.
pub(crate) fn sync_open(record: &mut TaskRecord) {
    if record.abandoned.is_some() && record.files.is_empty() && record.vault == VaultState::Pending {
        record.open = None;
    } else {
        record.sync_open_marker();
    }
}

#[cfg(test)]
mod tests {
    use suno_callbacks::Family;

    use super::*;
    use crate::VaultState;

    pub(super) const NOW: Timestamp = Timestamp { unix_ms: 1_800_000_000_000 };

    pub(super) fn task(stage: Stage) -> TaskRecord {
        TaskRecord::new("t1", Family::Music, stage, 200, "ok", NOW)
    }

    pub(super) fn failed(error: &str) -> FileEntry {
        FileEntry {
            status: FileStatus::Failed,
            error: Some(error.into()),
            ..FileEntry::pending("https://a/x.mp3", "tasks/t1/x.mp3".into(), Stage::Complete)
        }
    }

    /// Polls back off, doubling from 30 s, to an hour for a task still without its result (or
    /// with a file a poll may reopen) and to six for one watched only for an expired file (a
    /// poll that brings a fresh URL does so at once): thousands of those, after a CDN incident,
    /// would take the turns of tasks whose callback never came.
    #[test]
    fn polls_of_a_task_watched_only_for_expired_files_back_off_further() {
        let mut expired = task(Stage::Complete);
        expired.files.insert("a".into(), failed("source answered 403 Forbidden"));
        let awaiting = task(Stage::First);
        let mut reopening = expired.clone();
        let dead_lettered = "dead_lettered: source answered 503 Service Unavailable";
        reopening.files.insert("b".into(), FileEntry { failed_at: Some(NOW), ..failed(dead_lettered) });
        let cases = [(awaiting, MAX_POLL_INTERVAL), (reopening, MAX_POLL_INTERVAL), (expired, MAX_FILE_POLL_INTERVAL)];
        for (record, longest) in cases {
            let (mut polled, mut now, mut waits) = (record.clone(), NOW, Vec::new());
            for _ in 0..16 {
                polled = after_poll(&polled, &PollOutcome::Pending, now);
                let wait = Duration::from_secs(polled.poll_interval_seconds.expect("watched"));
                waits.push(wait);
                now = now.plus(wait);
            }
            assert_eq!(waits[0], FIRST_POLL_INTERVAL);
            assert_eq!(waits.iter().max(), Some(&longest), "{:?}", record.stage);
            assert_eq!(waits.last(), Some(&longest));
        }
    }

    #[test]
    fn submitted_text_first_and_expired_files_are_watched_and_nothing_else() {
        for stage in [Stage::Submitted, Stage::Text, Stage::First] {
            assert!(needs_watching(&task(stage)), "{stage}");
        }
        for stage in [Stage::Complete, Stage::Error, Stage::Final] {
            assert!(!needs_watching(&task(stage)), "{stage}");
        }
        let mut expired = task(Stage::Complete);
        expired.files.insert("a".into(), failed("source answered 403 Forbidden"));
        assert!(needs_watching(&expired));
        let unknown_family = TaskRecord { family: Family::Unknown, ..expired.clone() };
        assert!(!needs_watching(&unknown_family), "no endpoint could bring a new URL");
        let mut source_only = task(Stage::Complete);
        source_only.files.insert("tracks/8551/source_audio".into(), failed("source answered 404 Not Found"));
        assert!(!needs_watching(&source_only), "no record-info answer brings a source_* URL");
        source_only.files.insert("tracks/8551/audio".into(), failed("source answered 404 Not Found"));
        assert!(needs_watching(&source_only), "but one brings the track's audio");
        let unknown_waiting = TaskRecord { family: Family::Unknown, ..task(Stage::First) };
        assert!(needs_watching(&unknown_waiting), "given up with an event when nothing comes");
        // A file no poll brings again, failed for what may pass: reopened at its own URL.
        let outage = || FileEntry { failed_at: Some(NOW), ..failed("dead_lettered: S3 PutObject failed: 503") };
        let mut source_outage = task(Stage::Complete);
        source_outage.files.insert("tracks/8551/source_audio".into(), outage());
        assert!(needs_watching(&source_outage), "its own URL tried again");
        let mut unknown_outage = TaskRecord { family: Family::Unknown, ..task(Stage::Complete) };
        unknown_outage.files.insert("a".into(), outage());
        assert!(needs_watching(&unknown_outage), "its own URL tried again");
        let mut relinked = task(Stage::Complete);
        let copying = FileEntry { status: FileStatus::Queued, relinks: 1, ..failed("") };
        relinked.files.insert("a".into(), copying.clone());
        assert!(needs_watching(&relinked), "a file a poll reopened, until it settles");
        let dead_lettered =
            FileEntry { failed_at: Some(NOW), ..failed("dead_lettered: source answered 503 Service Unavailable") };
        relinked.files.insert("a".into(), dead_lettered.clone());
        assert!(needs_watching(&relinked), "a file a poll may reopen");
        relinked.files.insert("a".into(), FileEntry { relinks: MAX_RELINKS, ..dead_lettered });
        assert!(!needs_watching(&relinked), "no reopen left");
        relinked.files.insert("a".into(), FileEntry { status: FileStatus::Stored, ..copying });
        assert!(!needs_watching(&relinked));
        let mut too_large = task(Stage::Complete);
        too_large.files.insert("a".into(), failed("the file is larger than the 1-byte limit (MAX_FILE_BYTES)"));
        assert!(!needs_watching(&too_large));
        let mut abandoned = task(Stage::Submitted);
        abandoned.abandoned = Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW });
        assert!(!needs_watching(&abandoned));
    }

    /// An item written before `polled_result` existed: its last poll's outcome stands for it,
    /// through polls that bring nothing.
    #[test]
    fn an_item_from_before_polled_result_reads_its_last_poll() {
        let mut unfinished = task(Stage::Final);
        unfinished.last_poll = Some(LastPoll { at: NOW, outcome: "unrecorded".into() });
        let next = after_poll(&unfinished, &PollOutcome::Http(503), NOW);
        assert_eq!(next.reconcile.as_deref(), Some(RECONCILE_DUE), "still unfinished");
        assert_eq!(next.polled_result, Some(PolledResult::Unfinished));

        let mut recorded = task(Stage::First);
        recorded.last_poll = Some(LastPoll { at: NOW, outcome: "result:first".into() });
        assert!(poll_recorded(&recorded));
        let next = after_poll(&recorded, &PollOutcome::Http(503), NOW);
        assert!(poll_recorded(&next), "a 503 since does not make its events due again");
        assert!(!poll_recorded(&TaskRecord { stage: Stage::Complete, ..next }));
    }

    /// A poll's saved result keeps the task due within the first interval, whether it was
    /// watched or not and whatever later first poll the merge scheduled for a new stage.
    #[test]
    fn a_saved_poll_result_keeps_the_task_due_soon() {
        let soon = NOW.plus(FIRST_POLL_INTERVAL);
        let mut moved = task(Stage::First);
        after_merge(&mut moved, Some(Stage::Submitted), NOW, Duration::from_secs(600));
        assert!(moved.reconcile_at.is_some_and(|at| at > soon));
        let mut ended = task(Stage::Final);
        after_merge(&mut ended, Some(Stage::Submitted), NOW, Duration::from_secs(600));
        assert_eq!(ended.reconcile, None);
        for mut saved in [moved, ended] {
            keep_watched(&mut saved, NOW);
            assert_eq!((saved.reconcile.as_deref(), saved.reconcile_at), (Some(RECONCILE_DUE), Some(soon)));
        }
        let mut abandoned = task(Stage::Final);
        abandoned.abandoned = Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW });
        keep_watched(&mut abandoned, NOW);
        assert_eq!(abandoned.reconcile, None);
    }

    /// A result whose save landed but whose events (or file messages, or archive) failed:
    /// watched still, so the next poll's duplicate publishes them; a recorded one is not.
    #[test]
    fn a_result_not_finished_is_polled_again_until_one_is_recorded() {
        let saved = task(Stage::Final);
        let mut next = after_poll(&saved, &PollOutcome::Unrecorded, NOW);
        // Answers that bring nothing keep it watched: only a recorded result ends it.
        for nothing in [PollOutcome::Http(503), PollOutcome::Unreachable, PollOutcome::Pending, PollOutcome::Http(401)]
        {
            next = after_poll(&next, &nothing, NOW);
            assert_eq!(next.reconcile.as_deref(), Some(crate::RECONCILE_DUE), "{nothing:?}");
            assert!(next.reconcile_at.is_some_and(|at| at > NOW));
            assert!(!poll_recorded(&next));
        }
        // An answer lagging behind (an earlier stage, late: nothing published) is not it.
        next = after_poll(&next, &PollOutcome::Result(Stage::First), NOW);
        assert_eq!(
            (next.polled_result, next.reconcile.as_deref()),
            (Some(PolledResult::Unfinished), Some(crate::RECONCILE_DUE))
        );
        let recorded = after_poll(&next, &PollOutcome::Result(Stage::Final), NOW);
        assert!(poll_recorded(&recorded));
        assert_eq!((recorded.reconcile, recorded.reconcile_at), (None, None));
        let mut abandoned = task(Stage::Final);
        abandoned.abandoned = Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW });
        assert_eq!(after_poll(&abandoned, &PollOutcome::Unrecorded, NOW).reconcile, None);
    }

    #[test]
    fn the_bookkeeping_commits_an_uncommitted_reopen_unless_the_task_was_given_up() {
        let mut settled = task(Stage::Complete);
        let reopened = FileEntry { generation: Some(settled.generation + 1), ..failed("x") };
        settled.files.insert("a".into(), FileEntry { status: FileStatus::Enqueuing, error: None, ..reopened });
        (settled.vault, settled.open) = (VaultState::Partial, None);
        for next in [after_poll(&settled, &PollOutcome::Unreachable, NOW), stop_watching(&settled)] {
            assert_eq!((next.vault, next.open.as_deref()), (VaultState::Pending, Some(crate::OPEN_MARKER)));
            assert_eq!(next.generation, settled.generation + 1);
        }
        let mut abandoned = settled.clone();
        abandoned.abandoned = Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW });
        let next = after_poll(&abandoned, &PollOutcome::Unreachable, NOW);
        assert_eq!((next.vault, next.open), (VaultState::Partial, None), "left out of the sweeper's index");
    }

    #[test]
    fn a_merge_that_reaches_first_schedules_a_poll_and_a_terminal_one_clears_it() {
        let after = Duration::from_secs(600);
        let mut r = task(Stage::First);
        after_merge(&mut r, Some(Stage::Submitted), NOW, after);
        assert_eq!((r.reconcile.as_deref(), r.reconcile_at), (Some("due"), Some(NOW.plus(after))));
        // A duplicate at the same stage leaves the schedule alone.
        let later = NOW.plus(Duration::from_secs(5));
        after_merge(&mut r, Some(Stage::First), later, after);
        assert_eq!(r.reconcile_at, Some(NOW.plus(after)));
        r.stage = Stage::Complete;
        after_merge(&mut r, Some(Stage::First), later, after);
        assert_eq!((r.reconcile, r.reconcile_at), (None, None));
        // A normal task never enters the index.
        let mut normal = task(Stage::Complete);
        after_merge(&mut normal, None, NOW, after);
        assert_eq!(normal.reconcile, None);
    }

    #[test]
    fn polls_back_off_from_30_s_doubling_to_an_hour() {
        let mut r = task(Stage::Submitted);
        watch(&mut r, NOW, Duration::from_secs(600));
        let mut waits = Vec::new();
        for n in 0..10 {
            r = after_poll(&r, &PollOutcome::Http(429), NOW);
            waits.push(r.poll_interval_seconds.unwrap());
            assert_eq!(r.polls, n + 1);
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(r.reconcile_at, Some(NOW.plus(Duration::from_secs(3600))));
        assert_eq!(r.last_poll, Some(LastPoll { at: NOW, outcome: "http_429".into() }));
        assert_eq!(r.version, 11);
    }

    #[test]
    fn a_poll_of_a_task_a_result_settled_leaves_the_index() {
        let mut r = task(Stage::Complete);
        r.reconcile = Some("due".into());
        r.reconcile_at = Some(NOW);
        let next = after_poll(&r, &PollOutcome::Result(Stage::Complete), NOW);
        assert_eq!((next.reconcile, next.reconcile_at, next.polls), (None, None, 1));
        assert_eq!(next.last_poll.unwrap().outcome, "result:complete");
    }

    #[test]
    fn a_poll_outcome_reads_back_as_stored() {
        use PollOutcome::*;
        for outcome in
            [Pending, Result(Stage::First), Http(430), Provider(455), NoRecord, Unreachable, Unreadable, Unrecorded]
        {
            assert_eq!(PollOutcome::from_text(&outcome.as_text()), Some(outcome.clone()), "{outcome:?}");
        }
        for text in ["", "result:later", "http_x", "provider_", "pending "] {
            assert_eq!(PollOutcome::from_text(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_task_is_given_up_after_the_retention_since_it_was_registered() {
        let give_up = Duration::from_secs(14 * 24 * 3600);
        let mut r = task(Stage::Submitted);
        r.registered_at = Some(NOW);
        r.vault = VaultState::Pending;
        r.sync_open_marker();
        watch(&mut r, NOW, Duration::from_secs(600));
        assert_eq!(give_up_reason(&r, NOW.plus(give_up - Duration::from_secs(1)), give_up), None);
        assert_eq!(give_up_reason(&r, NOW.plus(give_up), give_up), Some(crate::GiveUpReason::Abandoned));
        // Owed a last poll: never polled (the runs behind), for a week past its time until a
        // poll past it; then, unless that poll had the provider speak of it, for a day from it.
        let due = NOW.plus(give_up);
        assert!(owes_a_last_poll(&r, due, give_up));
        assert!(owes_a_last_poll(&r, due.plus(LAST_POLL_WITHIN * 3), give_up), "reached days late");
        assert!(!owes_a_last_poll(&r, due.plus(LATE_POLL_WITHIN), give_up), "not past a week");
        let polled_at = |at: Timestamp, outcome: &str| {
            let polled = TaskRecord { last_poll: Some(LastPoll { at, outcome: outcome.into() }), ..r.clone() };
            mark_last_chance(polled, at, give_up)
        };
        // Reached three days late, its poll unanswered: asked again for a day from that poll.
        let late_by = LAST_POLL_WITHIN * 3;
        let reached = polled_at(due.plus(late_by), "http_430");
        assert_eq!(reached.last_chance_from, Some(due.plus(late_by)));
        assert!(owes_a_last_poll(&reached, due.plus(late_by + MAX_POLL_INTERVAL), give_up));
        assert!(!owes_a_last_poll(&reached, due.plus(late_by + LAST_POLL_WITHIN), give_up));
        let again = mark_last_chance(reached.clone(), due.plus(late_by * 2), give_up);
        assert_eq!(again.last_chance_from, Some(due.plus(late_by)), "its first poll past the time stays");
        assert!(!owes_a_last_poll(&polled_at(due.plus(late_by), "pending"), due.plus(late_by), give_up));
        // A poll before its time marks nothing; a mark from an earlier wait (a revived task's)
        // counts as none.
        assert_eq!(polled_at(due.minus(Duration::from_secs(1)), "http_430").last_chance_from, None);
        let earlier_wait =
            TaskRecord { last_chance_from: Some(NOW), ..polled_at(due.minus(Duration::from_secs(60)), "http_430") };
        assert!(
            owes_a_last_poll(&earlier_wait, due.plus(late_by), give_up),
            "a week from its time, not a day from the old mark"
        );
        assert_eq!(
            mark_last_chance(earlier_wait, due.plus(late_by), give_up).last_chance_from,
            Some(due.plus(late_by))
        );
        // Polled within the hour before its time: answered, owed none; unanswered, owed one
        // (until a poll past its time, a week; here never reached: a week).
        let polled = |before: Duration, outcome: &str| polled_at(due.minus(before), outcome);
        assert!(owes_a_last_poll(&polled(MAX_POLL_INTERVAL + Duration::from_millis(1), "pending"), due, give_up));
        for outcome in ["pending", "no_record", "result:first", "provider_400", "provider_422"] {
            assert!(!owes_a_last_poll(&polled(MAX_POLL_INTERVAL, outcome), due, give_up), "{outcome}");
            assert!(!owes_a_last_poll(&polled(Duration::ZERO, outcome), due, give_up), "{outcome}");
        }
        let unanswered = [
            "http_430",
            "http_503",
            "provider_455",
            "provider_408",
            "unreachable",
            "unreadable",
            "unrecorded",
            "other",
        ];
        for outcome in unanswered.into_iter().chain(["http_401", "http_402", "provider_403"]) {
            // At its time exactly: that poll marks the last chance, asked again for a day.
            let at_due = polled(Duration::ZERO, outcome);
            assert!(owes_a_last_poll(&at_due, due, give_up), "{outcome}");
            assert!(!owes_a_last_poll(&at_due, due.plus(LAST_POLL_WITHIN), give_up), "{outcome}");
            // Just before it, unanswered, then reached two days late: still owed.
            let before = polled(Duration::from_secs(60), outcome);
            assert!(owes_a_last_poll(&before, due.plus(LAST_POLL_WITHIN * 2), give_up), "{outcome}");
        }
        let gone = abandon(&r, crate::GiveUpReason::Abandoned, NOW.plus(give_up));
        assert_eq!(gone.abandoned.as_ref().unwrap().reason.as_str(), "abandoned", "stored as");
        assert_eq!((gone.reconcile.clone(), gone.open.clone(), gone.version), (None, None, r.version + 1));
        assert_eq!(give_up_reason(&gone, NOW.plus(give_up * 2), give_up), None);

        // Given up at `first` with a file still being copied: still open for the sweeper,
        // until the settle; with its files settled and recorded, not.
        let mut first = task(Stage::First);
        first.files.insert(
            "a".into(),
            crate::FileEntry::pending("https://cdn.example/a.mp3", "tasks/t/a.mp3".into(), Stage::First),
        );
        first.vault = VaultState::Pending;
        first.sync_open_marker();
        let gone = abandon(&first, crate::GiveUpReason::Abandoned, NOW);
        assert_eq!(gone.open.as_deref(), Some("open"));
        first.files.get_mut("a").unwrap().status = crate::FileStatus::Stored;
        first.vault = VaultState::Complete;
        first.manifest_key = Some("tasks/t/manifest.json".into());
        first.open = None; // as the settle write leaves it
        assert_eq!(abandon(&first, crate::GiveUpReason::Abandoned, NOW).open, None);
        // Marked open again by a request reopening it (its file items maybe being written):
        // the mark is kept for the sweeper, which commits such files or takes a stale mark away.
        first.open = Some(crate::OPEN_MARKER.into());
        assert_eq!(abandon(&first, crate::GiveUpReason::Abandoned, NOW).open.as_deref(), Some("open"));
    }

    #[test]
    fn a_task_the_provider_keeps_saying_it_does_not_know_is_given_up_after_a_day() {
        let give_up = DEFAULT_GIVE_UP_AFTER;
        let at = |secs: u64| NOW.plus(Duration::from_secs(secs));
        let mut r = task(Stage::Submitted);
        watch(&mut r, NOW, Duration::from_secs(600));
        r = after_poll(&r, &PollOutcome::Provider(404), at(600));
        assert_eq!(r.not_found_since, Some(at(600)));
        // Later "not found"s keep its start.
        for outcome in [PollOutcome::Provider(422), PollOutcome::Provider(404)] {
            r = after_poll(&r, &outcome, at(3600));
            assert_eq!(r.not_found_since, Some(at(600)), "{outcome:?}");
        }
        let day = NOT_FOUND_GIVE_UP_AFTER.as_secs();
        assert_eq!(give_up_reason(&r, at(600 + day - 1), give_up), None);
        // A day is out, but the last answer came before it (no poll since: no key, say).
        assert_eq!(give_up_reason(&r, at(600 + day), give_up), None);
        r = after_poll(&r, &PollOutcome::Provider(404), at(600 + day));
        assert_eq!(give_up_reason(&r, at(600 + day), give_up), Some(crate::GiveUpReason::NotFound));
        // Any other answer, or none, ends the run (an outage is no evidence), and so does a
        // callback.
        let others = [
            PollOutcome::Pending,
            PollOutcome::Result(Stage::First),
            PollOutcome::Unrecorded,
            PollOutcome::Http(503),
            PollOutcome::Http(404),
            PollOutcome::Provider(401),
            PollOutcome::Unreachable,
            PollOutcome::Unreadable,
        ];
        for other in others {
            let again = after_poll(&r, &other, at(7200));
            assert_eq!(again.not_found_since, None, "{other:?}");
            assert_eq!(give_up_reason(&again, at(600 + day), give_up), None);
        }
        let mut called_back = r.clone();
        after_merge(&mut called_back, Some(Stage::Submitted), at(7200), Duration::from_secs(600));
        assert_eq!(called_back.not_found_since, None);
        // The retention still comes first when it is shorter.
        assert_eq!(give_up_reason(&r, at(600 + day), Duration::from_secs(600)), Some(crate::GiveUpReason::Abandoned));
        // Given up as not found, its record write failed: tried again once the retention is
        // out too, it is still not found (its event's id names the reason).
        let retention_after_the_day = Duration::from_secs(600 + day + 60);
        assert_eq!(give_up_reason(&r, at(600 + day), retention_after_the_day), Some(crate::GiveUpReason::NotFound));
        assert_eq!(
            give_up_reason(&r, at(600 + day + 120), retention_after_the_day),
            Some(crate::GiveUpReason::NotFound)
        );
        let outcomes =
            [PollOutcome::Provider(400), PollOutcome::Provider(404), PollOutcome::Provider(422), PollOutcome::NoRecord];
        assert!(outcomes.iter().all(PollOutcome::not_found));
        // An HTTP 404 or 422 is a path the provider does not serve (a wrong base URL).
        let others = [
            PollOutcome::Http(404),
            PollOutcome::Http(422),
            PollOutcome::Http(400),
            PollOutcome::Provider(500),
            PollOutcome::Unreadable,
        ];
        assert!(!others.iter().any(PollOutcome::not_found));
    }

    /// A task watched only for a file a poll may reopen is polled next when the file may be
    /// reopened, not every hour before; one with an expired file (a new URL may come any
    /// time) keeps the interval.
    #[test]
    fn a_task_watched_only_for_a_reopen_is_polled_next_when_it_may_be_reopened() {
        let mut record = task(Stage::Final);
        let dead_lettered = FileEntry { failed_at: Some(NOW), ..failed("dead_lettered: source answered 503") };
        record.files.insert("a".into(), dead_lettered.clone());
        record.poll_interval_seconds = Some(60);
        let polled = after_poll(&record, &PollOutcome::Pending, NOW.plus(Duration::from_secs(30)));
        assert_eq!(polled.reconcile_at, relink_at(&dead_lettered), "an hour after it failed");
        assert_eq!(polled.poll_interval_seconds, Some(120), "the interval goes on doubling");

        let later = after_poll(&record, &PollOutcome::Pending, NOW.plus(Duration::from_secs(7200)));
        assert_eq!(later.reconcile_at, Some(NOW.plus(Duration::from_secs(7320))), "its time came: the interval");

        let mut expired = record.clone();
        expired.files.insert("b".into(), failed("source answered 410 Gone"));
        let polled = after_poll(&expired, &PollOutcome::Pending, NOW);
        assert_eq!(polled.reconcile_at, Some(NOW.plus(Duration::from_secs(120))), "a new URL may come any time");

        // An expired file no poll brings again (a track's source_audio: music's answers never
        // carry it) does not keep the interval.
        let mut source_expired = record.clone();
        source_expired.files.insert("tracks/1/source_audio".into(), failed("source answered 410 Gone"));
        let polled = after_poll(&source_expired, &PollOutcome::Pending, NOW.plus(Duration::from_secs(30)));
        assert_eq!(polled.reconcile_at, relink_at(&dead_lettered), "at the reopen, as with no such file");

        // A callback finding it unwatched watches it from then too (as the settle does).
        let mut merged = TaskRecord { poll_interval_seconds: None, ..record.clone() };
        after_merge(&mut merged, Some(Stage::Final), NOW, FIRST_POLL_INTERVAL);
        assert_eq!(
            (merged.reconcile.as_deref(), merged.reconcile_at),
            (Some(RECONCILE_DUE), relink_at(&dead_lettered))
        );
        after_merge(&mut expired, Some(Stage::Final), NOW, FIRST_POLL_INTERVAL);
        assert_eq!(expired.reconcile_at, Some(NOW.plus(FIRST_POLL_INTERVAL)));
    }

    #[test]
    fn outcomes_read_as_stored() {
        let texts: Vec<String> = [
            PollOutcome::Pending,
            PollOutcome::Result(Stage::First),
            PollOutcome::Http(503),
            PollOutcome::Provider(401),
            PollOutcome::NoRecord,
            PollOutcome::Unreachable,
            PollOutcome::Unreadable,
        ]
        .iter()
        .map(PollOutcome::as_text)
        .collect();
        assert_eq!(
            texts,
            ["pending", "result:first", "http_503", "provider_401", "no_record", "unreachable", "unreadable"]
        );
    }
}

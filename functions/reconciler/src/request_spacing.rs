//! Requests to the provider spaced evenly: the reconciler shares the account's API key, and
//! its rate limit, with the user's own application (docs.sunoapi.org reports about 20
//! requests in 10 s per key), so a run's polls leave room for the application's submissions
//! instead of using the limit up in a burst.
//!
//! Each request books a turn as it goes ([`RequestSpacing::take_turn`]); a run waits for the
//! next turn before a task, outside the task's time budget ([`RequestSpacing::wait_for_turn`]),
//! so however slow the pace, no task runs out of time waiting, and a wait given up books
//! nothing. Requests one task makes together (a voice task's two records, a poll repeated
//! with a rotated key) go at once, each pushing the next turn on by a spacing.
//!
//! A provider's asked-for wait ([`RequestSpacing::hold_off`]) is kept by the wall clock: it
//! outlasts the run (up to an hour), and a frozen instance's monotonic clock may not advance
//! between runs, which would stretch an hour's hold over as many runs as an hour of their own
//! time takes. The spacing, a second or so, stays on tokio's clock, which a run sleeps on.

use std::sync::Mutex;
use std::time::Duration;

use stemvault_vault::Timestamp;
use tokio::time::Instant;

/// `RECONCILE_POLLS_PER_MINUTE` by default: one request a second, half the reported limit; a
/// run takes a minute's turns of tasks ([`tasks_per_run`]), within its time.
pub const DEFAULT_POLLS_PER_MINUTE: u32 = 60;

/// The fewest and most `RECONCILE_POLLS_PER_MINUTE` may ask for (the template's bounds).
pub const POLLS_PER_MINUTE_RANGE: std::ops::RangeInclusive<u32> = 1..=1200;

/// The most due tasks a run takes from the index at `per_minute` polls a minute: a run has
/// about a minute of polls (a 90 s invocation less what it keeps back), so about a minute's
/// turns; at least 50 (tasks given up or put off take no turn), at most 1,000 (one Query).
/// Fixed at 50 before, a pace over about 50 a minute polled no more tasks.
pub fn tasks_per_run(per_minute: u32) -> usize {
    usize::try_from(per_minute).unwrap_or(usize::MAX).clamp(50, 1000)
}

/// The longest a provider's `Retry-After` holds the polls back: a task's longest poll
/// interval (a wait asked for longer is likelier a mistake than a plan).
pub const MAX_HOLD: Duration = stemvault_vault::reconcile::MAX_POLL_INTERVAL;

/// How far behind a hold's time a wall clock must be to have been stepped back.
const CLOCK_STEP: Duration = Duration::from_secs(60);

/// A provider's asked-for wait: asked `since`, holding requests back `until`.
#[derive(Debug, Clone, Copy)]
struct Hold {
    since: Timestamp,
    until: Timestamp,
}

impl Hold {
    /// Whether the wall clock, at `now`, went back more than [`CLOCK_STEP`] before the hold
    /// was asked for: the hold is over.
    fn stepped_back(&self, now: Timestamp) -> bool {
        now.plus(CLOCK_STEP) < self.since
    }
}

/// Turns at most `per_minute` a minute.
#[derive(Debug)]
pub struct RequestSpacing {
    spacing: Duration,
    /// When the next request may go (a time past: at once).
    next_turn: Mutex<Instant>,
    /// When the provider last asked for quiet and until when, by the wall clock.
    held: Mutex<Option<Hold>>,
}

impl RequestSpacing {
    pub fn per_minute(per_minute: u32) -> RequestSpacing {
        RequestSpacing {
            spacing: Duration::from_secs(60) / per_minute.max(1),
            next_turn: Mutex::new(Instant::now()),
            held: Mutex::new(None),
        }
    }

    /// Book a request going now: the next turn is a spacing after it, or after the turn
    /// already booked when that is later (no burst is saved up while nothing is asked).
    pub fn take_turn(&self) {
        let mut next_turn = self.next_turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *next_turn = (*next_turn).max(Instant::now()) + self.spacing;
    }

    /// Hold every request back for `wait` from `now` (a 429's or 503's `Retry-After`), at
    /// most [`MAX_HOLD`]: the runs of this instance poll nothing before then, leaving the due
    /// tasks due, rather than asking a provider that asked for quiet once per task. A hold that
    /// ends later stays, unless it was asked more than a minute after the clock now
    /// reads (the clock stepped back: it is over).
    pub fn hold_off(&self, wait: Duration, now: Timestamp) {
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let asked = Hold { since: now, until: now.plus(wait.min(MAX_HOLD)) };
        // A hold from before a clock stepped back is over (see held_for): the new one counts.
        if held.is_none_or(|h| asked.until > h.until || h.stepped_back(now)) {
            *held = Some(asked);
        }
    }

    /// How long the provider's asked-for wait still holds requests back at `now`: none once
    /// the wall clock has passed it, or gone back more than [`CLOCK_STEP`] before it was asked
    /// for (a hold kept through a step back would last the step too; a time read just before
    /// another poll asked for it is no step).
    fn held_for(&self, now: Timestamp) -> Duration {
        let held = *self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let left = held.filter(|h| !h.stepped_back(now)).map_or(0, |h| h.until.unix_ms.saturating_sub(now.unix_ms));
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    /// When the next request may go, at `now` on the wall clock.
    pub(crate) fn next_turn(&self, now: Timestamp) -> Instant {
        let next_turn = *self.next_turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        next_turn.max(Instant::now() + self.held_for(now))
    }

    /// Wait for the next turn if it comes within `within` of `now` (true); false at once
    /// otherwise.
    pub async fn wait_for_turn(&self, within: Duration, now: Timestamp) -> bool {
        let next_turn = self.next_turn(now);
        if next_turn > Instant::now() + within {
            return false;
        }
        tokio::time::sleep_until(next_turn).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: Duration = Duration::from_secs(3600);
    /// The wall clock's time in the tests that hold nothing.
    const T: Timestamp = Timestamp { unix_ms: 1_800_000_000_000 };

    /// Turns are a spacing apart, the first at once; a pause longer than the spacing gives
    /// the next at once again (no burst is saved up).
    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_and_no_burst_is_saved_up() {
        let spacing = RequestSpacing::per_minute(60);
        let start = Instant::now();
        let mut started = Vec::new();
        for _ in 0..3 {
            assert!(spacing.wait_for_turn(FOREVER, T).await);
            spacing.take_turn();
            started.push(start.elapsed());
        }
        assert_eq!(started, [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2)]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resumed = Instant::now();
        for _ in 0..2 {
            spacing.wait_for_turn(FOREVER, T).await;
            spacing.take_turn();
        }
        assert_eq!(resumed.elapsed(), Duration::from_secs(1));
    }

    /// Requests made together each push the next turn on by a spacing; a turn further off
    /// than the time given is not waited for, and booking nothing, changes nothing.
    #[tokio::test(start_paused = true)]
    async fn requests_made_together_push_the_next_turn_on() {
        let spacing = RequestSpacing::per_minute(2);
        spacing.take_turn();
        spacing.take_turn();
        let start = Instant::now();
        assert!(!spacing.wait_for_turn(Duration::from_secs(59), T).await, "a minute off");
        assert_eq!(start.elapsed(), Duration::ZERO, "not waited for");
        assert!(spacing.wait_for_turn(FOREVER, T).await);
        assert_eq!(start.elapsed(), Duration::from_secs(60), "two spacings of 30 s");
    }

    #[test]
    fn a_run_takes_a_minute_of_turns_from_50_to_1000_tasks() {
        let taken: Vec<usize> = [1, 60, 300, 1200].into_iter().map(tasks_per_run).collect();
        assert_eq!(taken, [50, 60, 300, 1000]);
    }

    /// A hold puts the next turn that far off (at most [`MAX_HOLD`]), never nearer, and ends
    /// when the wall clock passes it, whether or not tokio's clock moved (a frozen instance's
    /// monotonic clock may not).
    #[tokio::test(start_paused = true)]
    async fn a_hold_lasts_by_the_wall_clock_at_most_an_hour() {
        let spacing = RequestSpacing::per_minute(60);
        let start = Instant::now();
        spacing.hold_off(Duration::from_secs(120), T);
        assert_eq!(spacing.next_turn(T), start + Duration::from_secs(120));
        spacing.hold_off(Duration::from_secs(5), T);
        assert_eq!(spacing.next_turn(T), start + Duration::from_secs(120), "a shorter hold changes nothing");
        assert!(!spacing.wait_for_turn(Duration::from_secs(119), T).await);
        assert!(
            spacing.wait_for_turn(Duration::ZERO, T.plus(Duration::from_secs(120))).await,
            "over by the wall clock"
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "with tokio's clock where it was");
        spacing.hold_off(Duration::from_secs(u64::MAX), T);
        assert_eq!(spacing.next_turn(T), start + MAX_HOLD);
        let stepped_back = T.minus(Duration::from_secs(86_400));
        assert_eq!(spacing.next_turn(stepped_back), start, "a clock stepped back before the hold ends it");
        let read_just_before = T.minus(Duration::from_secs(1));
        let held = start + MAX_HOLD + Duration::from_secs(1);
        assert_eq!(spacing.next_turn(read_just_before), held, "a time read just before it does not");
        // A shorter hold asked later keeps the longer one, and when it was asked.
        spacing.hold_off(Duration::from_secs(5), T.plus(Duration::from_secs(600)));
        assert_eq!(spacing.next_turn(T.plus(Duration::from_secs(300))), start + MAX_HOLD - Duration::from_secs(300));
        // Asked for again after a step back: that hold counts, not the one from before.
        spacing.hold_off(Duration::from_secs(120), stepped_back);
        assert_eq!(spacing.next_turn(stepped_back), start + Duration::from_secs(120));
    }
}

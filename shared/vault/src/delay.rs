//! A retry's backoff on an SQS queue: the message's next delivery is delayed by keeping it
//! invisible (ChangeMessageVisibility). Shared by the SQS-triggered functions (download,
//! notify).

use std::future::Future;
use std::time::Duration;

use crate::QueueError;
use crate::time::best_effort;

/// A queue's retry schedule: a message received `n` times (SQS `ApproximateReceiveCount`, 1
/// on the first delivery) waits `first` × 2^(n-1), at most `max`; when the other side said
/// when to come back (`Retry-After`), that long, up to `max_retry_after`, but never less than
/// the backoff (every retry spends one of the queue's receives, after which the message goes
/// to the dead-letter queue: a source asking for 1 s must not use them up in seconds). Each
/// SQS-triggered function has its own ([`crate::download::DOWNLOAD_BACKOFF`], notify's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub max_retry_after: Duration,
}

impl Backoff {
    /// The wait after the `receive_count`th receive, without a `Retry-After` (const: a
    /// schedule's times are computed from it at compile time).
    pub const fn retry_delay(&self, receive_count: u32) -> Duration {
        let doublings = if receive_count > 17 { 16 } else { receive_count.saturating_sub(1) };
        let doubled = self.first.saturating_mul(1 << doublings);
        if doubled.as_nanos() > self.max.as_nanos() { self.max } else { doubled }
    }

    /// The wait after the `receive_count`th receive, the other side having asked for
    /// `retry_after` (None: [`Backoff::retry_delay`]), before [`spread`]: what the tests read
    /// a spread wait against.
    #[cfg(any(test, feature = "test-support"))]
    pub fn retry_delay_after(&self, receive_count: u32, retry_after: Option<Duration>) -> Duration {
        self.at_least(self.retry_delay(receive_count), retry_after)
    }

    /// The wait to keep a message away after its `receive_count`th receive, the other side
    /// having asked for `retry_after`: [`Backoff::retry_delay`] [`spread`] (up to the
    /// schedule's longest), so that messages failing together come back apart: a time the other side
    /// named wins only when longer (a receiver or source answering `Retry-After: 1` through
    /// an outage would otherwise have them all back in step).
    pub fn next_delay(&self, receive_count: u32, retry_after: Option<Duration>) -> Duration {
        self.at_least(spread(self.retry_delay(receive_count), self.max), retry_after)
    }

    /// `backoff`, or the time the other side asked for (at most `max_retry_after`) when longer.
    fn at_least(&self, backoff: Duration, retry_after: Option<Duration>) -> Duration {
        retry_after.map_or(backoff, |asked| asked.min(self.max_retry_after).max(backoff))
    }

    /// The backoff's time from a message's first receive to its `receive`th: the shortest,
    /// as [`spread`] only lengthens a wait.
    pub const fn until(&self, receive: u32) -> Duration {
        self.sum_until(receive, false)
    }

    /// The longest the same can take, every wait [`spread`] its most (the tests' bound).
    #[cfg(any(test, feature = "test-support"))]
    pub const fn longest_until(&self, receive: u32) -> Duration {
        self.sum_until(receive, true)
    }

    const fn sum_until(&self, receive: u32, spread_most: bool) -> Duration {
        let (mut total, mut n) = (Duration::ZERO, 1);
        while n < receive {
            let wait = self.retry_delay(n);
            let wait = if spread_most { longest_spread(wait, self.max) } else { wait };
            total = total.saturating_add(wait);
            n += 1;
        }
        total
    }
}

/// `delay` and a random part of a fifth more, at most `ceiling` (the schedule's longest wait):
/// messages that failed together (a receiver's or a source host's outage) come back spread
/// out, not all at once at every step. Never shorter than the schedule, so what it promises
/// (a day of retries, a webhook counted late after 85 minutes) holds, and never longer than
/// its ceiling, so no wait outgrows what the queue allows.
pub fn spread(delay: Duration, ceiling: Duration) -> Duration {
    let room = longest_spread(delay, ceiling).saturating_sub(delay);
    let Ok(room) = u64::try_from(room.as_millis()) else { return delay };
    if room == 0 {
        return delay;
    }
    delay.saturating_add(Duration::from_millis(crate::retry::random_below(room)))
}

/// The most [`spread`] makes of `delay`: a fifth more, at most `ceiling` (never less than
/// `delay` itself).
const fn longest_spread(delay: Duration, ceiling: Duration) -> Duration {
    let fifth = match delay.checked_div(5) {
        Some(fifth) => fifth,
        None => Duration::ZERO,
    };
    let most = delay.saturating_add(fifth);
    if most.as_nanos() < ceiling.as_nanos() {
        most
    } else if delay.as_nanos() > ceiling.as_nanos() {
        delay
    } else {
        ceiling
    }
}

/// Whether `delay` is `backoff` [`spread`] (up to a fifth more; `backoff` well under its
/// schedule's longest wait).
#[cfg(any(test, feature = "test-support"))]
pub fn is_spread(delay: Duration, backoff: Duration) -> bool {
    (backoff..=longest_spread(backoff, Duration::MAX)).contains(&delay)
}

/// Delay a received message's next delivery.
pub trait DelayMessage {
    /// Keep the message invisible for `delay` from now.
    fn delay_message(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Keep the message `receipt_handle` away for `delay`, best effort: failing, or no answer from
/// SQS within [`BEST_EFFORT_CALL_TIMEOUT`](crate::BEST_EFFORT_CALL_TIMEOUT), only means its
/// next delivery comes once the queue's visibility timeout is over (logged).
pub async fn delay_next_delivery<P: DelayMessage>(ports: &P, receipt_handle: &str, delay: Duration) {
    match best_effort(ports.delay_message(receipt_handle, delay)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::warn!(
            error = %e,
            "could not delay the message's next delivery; it comes back when the queue's visibility timeout ends"
        ),
        None => tracing::warn!(
            "no answer from SQS delaying the message's next delivery; it comes back when the queue's visibility timeout ends"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const SCHEDULE: Backoff = Backoff {
        first: Duration::from_secs(10),
        max: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(300),
    };

    #[test]
    fn the_backoff_doubles_up_to_its_longest_and_honours_a_retry_after_within_bounds() {
        let waits: Vec<u64> = (0..=6).map(|n| SCHEDULE.retry_delay(n).as_secs()).collect();
        assert_eq!(waits, [10, 10, 20, 40, 60, 60, 60]);
        assert_eq!(SCHEDULE.retry_delay(u32::MAX), 60 * S);
        assert_eq!(SCHEDULE.retry_delay_after(2, Some(45 * S)), 45 * S, "longer than the backoff: as asked");
        assert_eq!(SCHEDULE.retry_delay_after(3, Some(S)), 40 * S, "shorter: the backoff");
        assert_eq!(SCHEDULE.retry_delay_after(1, Some(3600 * S)), 300 * S, "at most max_retry_after");
        assert_eq!(SCHEDULE.retry_delay_after(1, None), 10 * S);
        // The backoff is spread, a time asked for shorter than it too; one longer than its
        // spread is as asked.
        assert!(is_spread(SCHEDULE.next_delay(3, None), 40 * S));
        assert_eq!(SCHEDULE.next_delay(2, Some(45 * S)), 45 * S);
        let asked_short: Vec<Duration> = (0..20).map(|_| SCHEDULE.next_delay(3, Some(S))).collect();
        assert!(asked_short.iter().all(|w| is_spread(*w, 40 * S)), "{asked_short:?}");
        assert!(asked_short.iter().any(|w| *w != asked_short[0]), "spread, not in step: {asked_short:?}");
        assert_eq!(SCHEDULE.next_delay(1, Some(3600 * S)), 300 * S, "at most max_retry_after");
        // From the first receive to the fourth: the first three waits.
        assert_eq!(SCHEDULE.until(1), Duration::ZERO);
        assert_eq!(SCHEDULE.until(4), (10 + 20 + 40) * S);
    }

    #[test]
    fn a_spread_wait_is_up_to_a_fifth_longer_within_its_ceiling_and_varies() {
        let waits: Vec<Duration> = (0..20).map(|_| spread(40 * S, 3600 * S)).collect();
        assert!(waits.iter().all(|w| is_spread(*w, 40 * S)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "not all alike: {waits:?}");
        assert_eq!(spread(Duration::from_millis(4), 3600 * S), Duration::from_millis(4), "too short to spread");
        assert!(!is_spread(39 * S, 40 * S) && !is_spread(49 * S, 40 * S));
        // At the ceiling, or near it: never past it.
        assert_eq!(spread(60 * S, 60 * S), 60 * S);
        assert_eq!(spread(90 * S, 60 * S), 90 * S, "over its ceiling (a Retry-After's): as it is");
        assert!((0..20).all(|_| (55 * S..=60 * S).contains(&spread(55 * S, 60 * S))));
        // The schedule's sums: the shortest as before, the longest each wait a fifth more, capped.
        assert_eq!(SCHEDULE.longest_until(4), (12 + 24 + 48) * S);
        assert_eq!(SCHEDULE.longest_until(6), (12 + 24 + 48 + 60 + 60) * S);
    }
}

//! The one way a conditional write that lost a race is retried: from a fresh read, after a
//! bounded, jittered backoff, a bounded number of times.

use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::ports::Clock;

/// What one attempt of a read-decide-write loop came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T> {
    /// Finished (written, or nothing to write).
    Done(T),
    /// The conditional write lost a race: read again and retry.
    Conflict,
}

/// How long to wait before attempt `attempt + 1`: exponential backoff with full jitter
/// (5 ms doubling, at most 200 ms), so writers of one item spread out instead of colliding
/// again.
pub fn conflict_backoff(attempt: u32) -> Duration {
    let cap_ms = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    Duration::from_millis(1 + random_below(cap_ms))
}

/// A random number under `bound` (not 0), from the process's random hasher keys: jitter, not
/// cryptography.
pub(crate) fn random_below(bound: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(bound) % bound
}

/// Run `attempt(0)`, `attempt(1)`, … until one is [`Attempt::Done`] or fails, sleeping
/// [`conflict_backoff`] between conflicts. `Ok(None)` when all `attempts` conflicted.
pub async fn retry_on_conflict<C, T, E, F, Fut>(clock: &C, attempts: u32, mut attempt: F) -> Result<Option<T>, E>
where
    C: Clock,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    for n in 0..attempts {
        if n > 0 {
            clock.sleep(conflict_backoff(n - 1)).await;
        }
        match attempt(n).await? {
            Attempt::Done(value) => return Ok(Some(value)),
            Attempt::Conflict => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::Timestamp;

    #[derive(Default)]
    struct Sleeps(Mutex<Vec<Duration>>);

    impl Clock for Sleeps {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix_ms(0)
        }
        async fn sleep(&self, duration: Duration) {
            self.0.lock().unwrap().push(duration);
        }
    }

    #[test]
    fn backoff_is_jittered_within_a_growing_bounded_cap() {
        for attempt in 0..20 {
            let cap = 5u64 * (1 << attempt.min(6));
            let d = conflict_backoff(attempt);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(cap.min(200)), "{attempt}: {d:?}");
        }
        let spread: std::collections::BTreeSet<Duration> = (0..50).map(|_| conflict_backoff(6)).collect();
        assert!(spread.len() > 5, "not jittered: {spread:?}");
    }

    #[tokio::test]
    async fn retries_conflicts_until_done_sleeping_between() {
        let clock = Sleeps::default();
        let result: Result<Option<u32>, ()> =
            retry_on_conflict(
                &clock,
                5,
                |n| async move { Ok(if n < 2 { Attempt::Conflict } else { Attempt::Done(n) }) },
            )
            .await;
        assert_eq!(result, Ok(Some(2)));
        assert_eq!(clock.0.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_the_bound_and_stops_at_an_error() {
        let clock = Sleeps::default();
        let conflicts: Result<Option<()>, ()> = retry_on_conflict(&clock, 3, |_| async { Ok(Attempt::Conflict) }).await;
        assert_eq!(conflicts, Ok(None));
        assert_eq!(clock.0.lock().unwrap().len(), 2);
        let mut calls = 0;
        let failed: Result<Option<()>, &str> = retry_on_conflict(&clock, 3, |_| {
            calls += 1;
            async { Err("down") }
        })
        .await;
        assert_eq!((failed, calls), (Err("down"), 1));
    }
}

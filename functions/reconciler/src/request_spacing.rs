//! Requests to the provider spaced evenly: the reconciler shares the account's API key, and
//! its rate limit, with the user's own application (docs.sunoapi.org reports about 20
//! requests in 10 s per key), so a run's polls leave room for the application's submissions
//! instead of using the limit up in a burst.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// `RECONCILE_POLLS_PER_MINUTE` by default: one request a second, half the reported limit; a
/// run's 50 polls take under a minute, within its time.
pub const DEFAULT_POLLS_PER_MINUTE: u32 = 60;

/// Hands out turns at most `per_minute` a minute, in the order asked.
#[derive(Debug)]
pub struct RequestSpacing {
    spacing: Duration,
    /// When the next turn may start (none given yet: at once).
    next_turn: Mutex<Option<Instant>>,
}

impl RequestSpacing {
    pub fn per_minute(per_minute: u32) -> RequestSpacing {
        RequestSpacing { spacing: Duration::from_secs(60) / per_minute.max(1), next_turn: Mutex::new(None) }
    }

    /// Wait for this request's turn: the first at once, each later one a spacing after the
    /// one before (or at once, when the last was longer ago).
    pub async fn wait_turn(&self) {
        let turn = {
            let mut next_turn = self.next_turn.lock().await;
            let turn = next_turn.map_or_else(Instant::now, |at| at.max(Instant::now()));
            *next_turn = Some(turn + self.spacing);
            turn
        };
        tokio::time::sleep_until(turn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns are a spacing apart, the first at once; a pause longer than the spacing gives
    /// the next at once again (no burst is saved up).
    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_and_no_burst_is_saved_up() {
        let spacing = RequestSpacing::per_minute(60);
        let start = Instant::now();
        let mut started = Vec::new();
        for _ in 0..3 {
            spacing.wait_turn().await;
            started.push(start.elapsed());
        }
        assert_eq!(started, [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2)]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resumed = Instant::now();
        spacing.wait_turn().await;
        spacing.wait_turn().await;
        assert_eq!(resumed.elapsed(), Duration::from_secs(1));
    }

    /// Turns asked at once are given in order, a spacing apart.
    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_take_turns() {
        let spacing = std::sync::Arc::new(RequestSpacing::per_minute(120));
        let start = Instant::now();
        let waits: Vec<_> = (0..4)
            .map(|_| {
                let spacing = spacing.clone();
                tokio::spawn(async move {
                    spacing.wait_turn().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut started = Vec::new();
        for wait in waits {
            started.push(wait.await.unwrap());
        }
        started.sort();
        assert_eq!(started, [0, 500, 1000, 1500].map(Duration::from_millis));
    }
}

//! The invocation's deadline, which Lambda gives in milliseconds since the epoch: as an
//! [`Instant`] for a batch's work (download, notify), and as the time to stop taking work
//! for a scheduled run (sweeper, reconciler).

use std::time::{Duration, Instant};

use stemvault_vault::Timestamp;

/// The deadline as an [`Instant`].
pub fn as_instant(deadline_epoch_ms: u64) -> Instant {
    instant_of(deadline_epoch_ms, Timestamp::now(), Instant::now())
}

/// `deadline_epoch_ms` as an [`Instant`], given the time now on both clocks.
fn instant_of(deadline_epoch_ms: u64, now: Timestamp, now_instant: Instant) -> Instant {
    let now_ms = u64::try_from(now.unix_ms).unwrap_or(0);
    now_instant + Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms))
}

/// When to stop taking work: `margin` before the deadline.
pub fn stop_at(deadline_epoch_ms: u64, margin: Duration) -> Timestamp {
    Timestamp::from_unix_ms(i64::try_from(deadline_epoch_ms).unwrap_or(i64::MAX)).minus(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_deadline_becomes_an_instant() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let at = Instant::now();
        assert_eq!(instant_of(1_800_000_060_000, now, at), at + Duration::from_secs(60));
        assert_eq!(instant_of(1_799_999_000_000, now, at), at, "a past deadline is now");
    }

    #[test]
    fn a_run_stops_its_margin_before_the_deadline() {
        let margin = Duration::from_secs(30);
        assert_eq!(stop_at(1_800_000_060_000, margin), Timestamp::from_unix_ms(1_800_000_030_000));
        assert_eq!(stop_at(10_000, margin), Timestamp::from_unix_ms(-20_000), "no overflow below the epoch");
        assert_eq!(stop_at(u64::MAX, margin), Timestamp::from_unix_ms(i64::MAX - 30_000));
    }
}

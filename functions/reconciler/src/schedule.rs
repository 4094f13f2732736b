//! When a scheduled run stops taking work. Lambda may start a run up to a minute late (the
//! function's `MaximumEventAgeInSeconds`), and a late run stopping by its own deadline alone
//! would still be replaying parked callbacks when the next run starts: each would then read
//! bodies the other had just deleted (403, not 404: the role may list `parked/` only). So a
//! run also stops in time for the next one, by the time EventBridge scheduled it.

use std::time::Duration;

use stemvault_vault::Timestamp;

/// The schedule's period (template.yaml: `rate(2 minutes)`; a test holds the two together).
pub const RUN_EVERY: Duration = Duration::from_secs(120);

/// When to stop taking work: `margin` before the invocation's deadline, or `margin` before
/// the next scheduled run if that comes first. The next run's time is the event's own (an
/// EventBridge "Scheduled Event", whose `time` is when it was scheduled) plus [`RUN_EVERY`];
/// an event with no such time (an invoke by hand), or one whose next run is no later than
/// `now` (an old event sent again by hand), stops by the deadline alone.
pub fn stop_at(event: &serde_json::Value, deadline_epoch_ms: u64, margin: Duration, now: Timestamp) -> Timestamp {
    let by_deadline = stemvault_aws::deadline::stop_at(deadline_epoch_ms, margin);
    let next_run = scheduled_at(event).map(|at| at.plus(RUN_EVERY)).filter(|next| *next > now);
    match next_run {
        Some(next) => by_deadline.min(next.minus(margin)),
        None => by_deadline,
    }
}

/// The time a scheduled event was scheduled for.
fn scheduled_at(event: &serde_json::Value) -> Option<Timestamp> {
    if event.get("detail-type")?.as_str()? != "Scheduled Event" {
        return None;
    }
    event.get("time")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::STOP_BEFORE_DEADLINE;
    use serde_json::json;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().expect("a time")
    }

    /// Where a run of `event` started at `started`, with Lambda's 90 s, stops.
    fn stop_of(event: &serde_json::Value, started: &str) -> Timestamp {
        let started = at(started);
        let deadline = u64::try_from(started.plus(Duration::from_secs(90)).unix_ms).expect("after the epoch");
        stop_at(event, deadline, STOP_BEFORE_DEADLINE, started)
    }

    fn scheduled(time: &str) -> serde_json::Value {
        json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": time,
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/stemvault-reconciler"],
            "detail": {}
        })
    }

    #[test]
    fn a_run_started_on_time_stops_by_its_deadline() {
        let event = scheduled("2026-12-04T20:00:00Z");
        let deadline = at("2026-12-04T20:01:31Z");
        assert_eq!(stop_of(&event, "2026-12-04T20:00:01Z"), deadline.minus(STOP_BEFORE_DEADLINE));
    }

    #[test]
    fn a_run_started_late_stops_in_time_for_the_next_one() {
        let event = scheduled("2026-12-04T20:00:00Z");
        // Its deadline (20:02:20) would have it working until after the next run starts.
        let next_run = at("2026-12-04T20:02:00Z");
        assert_eq!(stop_of(&event, "2026-12-04T20:00:50Z"), next_run.minus(STOP_BEFORE_DEADLINE));
    }

    #[test]
    fn an_event_with_no_schedule_time_stops_by_the_deadline_alone() {
        let by_deadline = at("2026-12-04T20:02:20Z").minus(STOP_BEFORE_DEADLINE);
        let mut not_scheduled = scheduled("2026-12-04T20:00:00Z");
        not_scheduled["detail-type"] = json!("Object Created");
        let unreadable = scheduled("yesterday");
        for event in [json!({}), json!(null), json!({"time": "2026-12-04T20:00:00Z"}), not_scheduled, unreadable] {
            assert_eq!(stop_of(&event, "2026-12-04T20:00:50Z"), by_deadline, "{event}");
        }
    }

    #[test]
    fn an_old_event_sent_again_by_hand_stops_by_the_deadline_alone() {
        let event = scheduled("2026-11-30T09:00:00Z");
        let deadline = at("2026-12-04T20:01:30Z");
        assert_eq!(stop_of(&event, "2026-12-04T20:00:00Z"), deadline.minus(STOP_BEFORE_DEADLINE));
    }
}

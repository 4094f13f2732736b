use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::memory::{MemoryPorts, NOW, SECRET, assert_one_spread_delay, detail, signer, status, vaulted_message};
use stemvault_vault::delay::is_spread;

fn delivery(body: &str, receive_count: u32) -> Delivery {
    Delivery {
        body: body.to_owned(),
        receipt_handle: Some("rh".into()),
        receive_count,
        sent_at: None,
        stop_at: Instant::now() + Duration::from_secs(60),
    }
}

/// The signature is the one the `standardwebhooks` crate makes for the same id, timestamp
/// and body with the same secret. Its `verify` reads the system clock, and the webhook is
/// signed at [`NOW`]: the headers and the age are checked by the HTTP test
/// (tests/tests/notify.rs, with the Python `standardwebhooks` library).
fn verifies(webhook: &Webhook) -> bool {
    signer().sign(&webhook.id, webhook.timestamp, &webhook.body) == webhook.signature
        && standardwebhooks::Webhook::new(SECRET)
            .unwrap()
            .sign(&webhook.id, webhook.timestamp, webhook.body.as_bytes())
            .unwrap()
            == webhook.signature
}

#[test]
fn an_event_becomes_a_standard_webhooks_payload_of_its_detail() {
    let event = parse_event(&vaulted_message()).unwrap();
    assert_eq!(
        (event.kind, event.event_id.as_str(), event.task_id.as_str()),
        (EventType::Vaulted, "t1.vaulted.3.final", "t1")
    );
    let body = payload(&event);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        json!({
            "type": "task.vaulted",
            "timestamp": "2026-11-23T15:00:00Z",
            "data": serde_json::to_value(detail()).unwrap(),
        })
    );
    assert_eq!(payload(&parse_event(&vaulted_message()).unwrap()), body, "the same bytes every time");
    for (detail_type, webhook_type) in
        [("Task Stage Changed", "task.stage_changed"), ("Task Failed", "task.failed"), ("Task Vaulted", "task.vaulted")]
    {
        let message = vaulted_message().replace("Task Vaulted", detail_type);
        let json: Value = serde_json::from_str(&payload(&parse_event(&message).unwrap())).unwrap();
        assert_eq!(json["type"], webhook_type);
    }
}

#[test]
fn what_is_not_a_stemvault_event_is_malformed() {
    let good: Value = serde_json::from_str(&vaulted_message()).unwrap();
    let with = |path: &[&str], value: Value| {
        let mut v = good.clone();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        v.to_string()
    };
    let cases = [
        "not json".to_owned(),
        "{}".to_owned(),
        with(&["source"], json!("aws.s3")),
        with(&["detail-type"], json!("Object Created")),
        with(&["detail"], json!({"task_id": "t1"})),
        with(&["detail", "event_id"], json!("")),
        with(&["detail", "event_id"], json!("t1 vaulted\n3")),
        with(&["time"], json!(" ")),
    ];
    for body in cases {
        assert!(matches!(parse_event(&body), Err(NotifyError::Malformed(_))), "{body}");
    }
    // What it says of a long source or detail-type (logged) is their first characters.
    for field in ["source", "detail-type"] {
        let long = with(&[field], json!("x".repeat(100_000)));
        let Err(NotifyError::Malformed(why)) = parse_event(&long) else { panic!("{field}: malformed") };
        assert!(why.contains(&"x".repeat(64)) && !why.contains(&"x".repeat(65)), "{field}: {why}");
    }
}

/// An event published by a newer release (ingest deployed before notify, or a dead-letter
/// redrive after a rollback) may name a stage or family this build does not know: it is
/// delivered as published, not dead-lettered as malformed.
#[test]
fn an_event_with_values_this_build_does_not_know_is_forwarded_as_published() {
    let mut newer: Value = serde_json::from_str(&vaulted_message()).unwrap();
    newer["detail"]["stage"] = json!("remastered");
    newer["detail"]["family"] = json!("karaoke");
    newer["detail"]["added_later"] = json!({"x": 1});
    let event = parse_event(&newer.to_string()).unwrap();
    assert_eq!(event.detail, newer["detail"]);
    let sent: Value = serde_json::from_str(&payload(&event)).unwrap();
    assert_eq!(sent["data"]["stage"], "remastered", "{sent}");
}

#[tokio::test]
async fn a_2xx_delivers_a_signed_post_whose_id_is_the_event_id() {
    let ports = MemoryPorts::answering([status(204)]);
    let outcome = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
    assert_eq!(outcome, Outcome::Delivered { status: 204 });
    let posted = ports.posted();
    assert_eq!(posted.len(), 1);
    let webhook = &posted[0];
    assert_eq!((webhook.id.as_str(), webhook.timestamp), ("t1.vaulted.3.final", NOW.unix_seconds()));
    assert!(webhook.signature.starts_with("v1,"), "{}", webhook.signature);
    assert!(verifies(webhook));
    assert_eq!(ports.metrics(), [Measure::Delivered]);
    delay_retry(&ports, &delivery(&vaulted_message(), 1), &outcome).await;
    assert!(ports.delays().is_empty(), "nothing to delay");
}

#[tokio::test]
async fn only_410_is_not_retried() {
    let ports = MemoryPorts::answering([status(410)]);
    let outcome = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
    assert_eq!(outcome, Outcome::DeadLettered(NotifyError::Gone));
    assert!(!outcome.is_failure(), "deleted from the notify queue");
    assert_eq!(ports.metrics(), [Measure::Rejected { reason: "status_410" }]);
    for retried in [400, 401, 403, 404, 422, 408, 429, 500, 503, 302] {
        let ports = MemoryPorts::answering([status(retried)]);
        let outcome = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
        assert!(outcome.is_failure(), "{retried}: {outcome:?}");
        let reason = NotifyError::Status { status: retried, retry_after: None }.reason_code();
        assert_eq!(reason, format!("status_{retried}"));
        assert_eq!(ports.metrics(), [Measure::Retried { reason, late: false }]);
        assert!(ports.dead_letters().is_empty(), "{retried}: retried, not dead-lettered");
    }
    for error in [PostError::Connect("refused".into()), PostError::Timeout("10 s".into())] {
        let ports = MemoryPorts::answering([Err(error.clone())]);
        let outcome = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
        assert_eq!(outcome, Outcome::Retry(NotifyError::Post(error)));
    }
}

/// A retry is the same webhook (id and body) signed afresh at its own time: receivers refuse
/// a timestamp over 5 minutes old, and retries come up to hours later.
#[tokio::test]
async fn a_retry_sends_the_same_id_and_body_signed_at_its_own_time() {
    let ports = MemoryPorts::answering([status(503), status(200)]);
    let first = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
    assert!(first.is_failure());
    ports.advance(Duration::from_secs(640));
    let second = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 2)).await;
    assert_eq!(second, Outcome::Delivered { status: 200 });
    let posted = ports.posted();
    assert_eq!((&posted[0].id, &posted[0].body), (&posted[1].id, &posted[1].body));
    assert_eq!(posted[0].timestamp, NOW.unix_seconds());
    assert_eq!(posted[1].timestamp, NOW.unix_seconds() + 640);
    assert!(posted.iter().all(verifies), "each signature is of its own timestamp");
}

/// A 410 by mistake (a receiver mid-deploy, a CDN) loses nothing: the message, exactly as
/// received, goes to the dead-letter queue with its reason (to redrive once the receiver is
/// fixed), and only then is it deleted from the notify queue.
#[tokio::test]
async fn a_410_moves_the_message_to_the_dead_letter_queue_with_its_reason() {
    let ports = MemoryPorts::answering([status(410)]);
    let d = delivery(&vaulted_message(), 3);
    let outcome = process_message(&ports, Some(&signer()), &d).await;
    assert_eq!(outcome, Outcome::DeadLettered(NotifyError::Gone));
    assert!(!outcome.is_failure(), "deleted from the notify queue");
    assert_eq!(ports.dead_letters(), [(vaulted_message(), "status_410".to_owned())]);
    assert_eq!(ports.posted().len(), 1, "posted once");
    delay_retry(&ports, &d, &outcome).await;
    assert!(ports.delays().is_empty(), "nothing to delay");
}

/// When SQS refuses the dead letter, the message is kept on the notify queue (a batch item
/// failure) and retried after its backoff, like a failed post: nothing is deleted unmoved.
#[tokio::test]
async fn a_failed_dead_letter_keeps_the_message_for_a_retry() {
    let ports = MemoryPorts { dead_letters_fail: true, ..MemoryPorts::answering([status(410)]) };
    let d = delivery(&vaulted_message(), 2);
    let outcome = process_message(&ports, Some(&signer()), &d).await;
    let Outcome::Retry(NotifyError::DeadLetter { refusal, error }) = &outcome else {
        panic!("kept for a retry: {outcome:?}")
    };
    assert_eq!(**refusal, NotifyError::Gone);
    assert!(error.contains("AccessDenied"), "{error}");
    assert!(outcome.is_failure(), "reported as a batch item failure");
    assert_eq!(ports.metrics(), [Measure::Retried { reason: "dead_letter", late: false }]);
    delay_retry(&ports, &d, &outcome).await;
    assert_one_spread_delay(&ports.delays(), "rh", 40);
}

/// SQS not answering the dead letter keeps the message too, without waiting past the
/// invocation's margin.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_hangs_keeps_the_message_for_a_retry() {
    let ports = MemoryPorts { dead_letters_hang: true, ..MemoryPorts::answering([status(410)]) };
    let started = tokio::time::Instant::now();
    let outcome = process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), 1)).await;
    assert!(matches!(&outcome, Outcome::Retry(NotifyError::DeadLetter { .. })), "{outcome:?}");
    assert!(started.elapsed() <= stemvault_vault::BEST_EFFORT_CALL_TIMEOUT, "{:?}", started.elapsed());
}

/// What this build cannot read (here an event type from a newer release) is moved to the
/// dead-letter queue unposted, for a redrive once the function reads it; never deleted
/// unmoved, so a failed move keeps it for a retry.
#[tokio::test]
async fn a_message_it_cannot_read_is_dead_lettered_without_a_post() {
    let newer = vaulted_message().replace("Task Vaulted", "Task Archived");
    let ports = MemoryPorts::default();
    let outcome = process_message(&ports, Some(&signer()), &delivery(&newer, 1)).await;
    assert!(matches!(&outcome, Outcome::DeadLettered(NotifyError::Malformed(_))), "{outcome:?}");
    assert!(!outcome.is_failure(), "deleted from the notify queue");
    assert_eq!(ports.dead_letters(), [(newer.clone(), "malformed".to_owned())]);
    assert!(ports.posted().is_empty());
    assert_eq!(ports.metrics(), [Measure::Rejected { reason: "malformed" }]);

    let refusing = MemoryPorts { dead_letters_fail: true, ..MemoryPorts::default() };
    let outcome = process_message(&refusing, Some(&signer()), &delivery(&newer, 1)).await;
    assert!(matches!(&outcome, Outcome::Retry(NotifyError::DeadLetter { .. })), "{outcome:?}");
    assert!(outcome.is_failure(), "kept on the notify queue");
}

#[tokio::test]
async fn no_post_starts_that_could_outlive_the_invocation() {
    let ports = MemoryPorts::default();
    let mut late = delivery(&vaulted_message(), 1);
    late.stop_at = Instant::now() + REQUEST_TIMEOUT - Duration::from_secs(1);
    assert_eq!(process_message(&ports, Some(&signer()), &late).await, Outcome::Retry(NotifyError::NoTimeLeft));
    assert!(ports.posted().is_empty());
}

#[test]
fn retries_start_within_a_minute_and_back_off_to_four_hours() {
    let secs: Vec<u64> = (1..=12).map(|n| NOTIFY_BACKOFF.retry_delay(n).as_secs()).collect();
    assert_eq!(secs, [20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 14400, 14400]);
    assert_eq!(NOTIFY_BACKOFF.retry_delay(0), FIRST_RETRY_DELAY);
    assert_eq!(NOTIFY_BACKOFF.retry_delay(u32::MAX), MAX_RETRY_DELAY);
    let s = Duration::from_secs;
    assert_eq!(
        NOTIFY_BACKOFF.retry_delay_after(1, Some(s(120))),
        s(120),
        "Retry-After longer than the backoff: as asked"
    );
    assert_eq!(NOTIFY_BACKOFF.retry_delay_after(3, Some(s(1))), s(80), "shorter: the backoff");
    assert_eq!(NOTIFY_BACKOFF.retry_delay_after(1, Some(s(86_400))), MAX_RETRY_AFTER);
}

/// What the README and the dead-letter alarm promise: the last of the queue's receives comes
/// more than a day after the first (a receiver down overnight, or for a day, still gets every
/// event), and the event reaches the dead-letter queue within 27 hours.
#[test]
fn the_retries_span_a_day_before_the_dead_letter_queue() {
    let before_last: Duration = (1..MAX_RECEIVE_COUNT).map(|n| NOTIFY_BACKOFF.retry_delay(n)).sum();
    assert_eq!(NOTIFY_BACKOFF.until(MAX_RECEIVE_COUNT), before_last);
    assert!(before_last > Duration::from_secs(24 * 3600), "{before_last:?}");
    // Every wait spread its most ([`stemvault_vault::delay::spread`]): still under 27 hours.
    let longest = NOTIFY_BACKOFF.longest_until(MAX_RECEIVE_COUNT);
    assert!(longest > before_last && longest < Duration::from_secs(27 * 3600), "{longest:?}");
}

/// A webhook still failing on its `LATE_AT_RECEIVE`th delivery, an hour or two after the first
/// (the `webhooks-late` alarm's promise), is counted late from then on, not before; so is one
/// queued `LATE_AFTER` ago whatever its receive (a `Retry-After` spaced the receives out).
#[tokio::test]
async fn a_webhook_failing_for_over_an_hour_is_counted_late() {
    let since_first: Duration = (1..LATE_AT_RECEIVE).map(|n| NOTIFY_BACKOFF.retry_delay(n)).sum();
    assert_eq!(since_first, LATE_AFTER, "the two marks of lateness agree");
    assert_eq!(LATE_AFTER, Duration::from_secs(85 * 60), "the alarm's description says so");
    for receive in 1..=MAX_RECEIVE_COUNT {
        let ports = MemoryPorts::answering([status(503)]);
        process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), receive)).await;
        let late = receive >= LATE_AT_RECEIVE;
        assert_eq!(ports.metrics(), [Measure::Retried { reason: "status_503", late }], "receive {receive}");
    }
    let ports = MemoryPorts::answering([status(204)]);
    process_message(&ports, Some(&signer()), &delivery(&vaulted_message(), LATE_AT_RECEIVE)).await;
    assert_eq!(ports.metrics(), [Measure::Delivered], "delivered is not late");

    for (queued_ago, late) in [(LATE_AFTER - Duration::from_secs(1), false), (LATE_AFTER, true)] {
        let ports = MemoryPorts::answering([status(503)]);
        let spaced_out = Delivery { sent_at: Some(ports.now().minus(queued_ago)), ..delivery(&vaulted_message(), 2) };
        process_message(&ports, Some(&signer()), &spaced_out).await;
        assert_eq!(ports.metrics(), [Measure::Retried { reason: "status_503", late }], "{queued_ago:?}");
    }
}

/// After the last receive no delay buys another attempt: the message is visible again at
/// once, so the queue moves it to the dead-letter queue (and the alarm fires) without
/// waiting out another backoff or a receiver's `Retry-After`.
#[tokio::test]
async fn the_last_receive_is_not_delayed() {
    let retry_after = Some(Duration::from_secs(3600));
    let ports = MemoryPorts::answering([status(500), Ok(Answer { status: 429, retry_after })]);
    // Past the last too (a redrive policy lowered while the message was out).
    for receive_count in [MAX_RECEIVE_COUNT, MAX_RECEIVE_COUNT + 1] {
        let d = delivery(&vaulted_message(), receive_count);
        let outcome = process_message(&ports, Some(&signer()), &d).await;
        assert!(matches!(outcome, Outcome::Retry(_)), "{outcome:?}");
        delay_retry(&ports, &d, &outcome).await;
    }
    assert_eq!(ports.delays(), [("rh".to_owned(), Duration::ZERO), ("rh".to_owned(), Duration::ZERO)]);
}

/// Events failing together (a receiver's outage) come back apart.
#[tokio::test]
async fn retries_of_one_step_are_spread() {
    let ports = MemoryPorts::answering(std::iter::repeat_with(|| status(500)).take(20));
    let d = delivery(&vaulted_message(), 2);
    for _ in 0..20 {
        let outcome = process_message(&ports, Some(&signer()), &d).await;
        delay_retry(&ports, &d, &outcome).await;
    }
    let delays: Vec<Duration> = ports.delays().into_iter().map(|(_, d)| d).collect();
    assert!(delays.len() == 20 && delays.iter().all(|d| is_spread(*d, Duration::from_secs(40))), "{delays:?}");
    assert!(delays.iter().any(|d| *d != delays[0]), "not all alike: {delays:?}");
}

#[tokio::test]
async fn a_retry_is_delayed_by_the_backoff_or_the_receivers_retry_after() {
    let ports =
        MemoryPorts::answering([status(500), Ok(Answer { status: 429, retry_after: Some(Duration::from_secs(300)) })]);
    for receive_count in [3, 1] {
        let d = delivery(&vaulted_message(), receive_count);
        let outcome = process_message(&ports, Some(&signer()), &d).await;
        delay_retry(&ports, &d, &outcome).await;
    }
    let delays = ports.delays();
    assert!(
        matches!(&delays[..], [(_, backoff), (_, asked)] if is_spread(*backoff, Duration::from_secs(80)) && *asked == Duration::from_secs(300)),
        "the backoff spread, the receiver's time as asked: {delays:?}"
    );
}

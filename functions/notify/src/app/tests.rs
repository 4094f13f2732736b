use std::time::{Duration, Instant};
use tracing::Level;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};

use super::*;
use crate::domain::{LATE_AFTER, Measure};
use crate::memory::{
    MemoryPorts, NEW_SECRET, NOW, SECRET, app, assert_one_spread_delay, status, vaulted_message, vaulted_message_of,
};
use crate::secret::Signer;

fn message(id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_owned());
    m.receipt_handle = Some(format!("rh-{id}"));
    m.body = Some(body.to_owned());
    m.attributes.insert("ApproximateReceiveCount".into(), "2".into());
    m
}

fn batch(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages;
    event
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn only_messages_to_retry_are_reported_and_each_is_delayed() {
    // Posted in order: m1 200, m2 503, m3 410; m4 is no event.
    let app = app(MemoryPorts::answering([status(200), status(503), status(410)]));
    let messages = vec![
        message("m1", &vaulted_message()),
        message("m2", &vaulted_message()),
        message("m3", &vaulted_message()),
        message("m4", "garbage"),
    ];
    // One at a time, so the answers go to the messages in order.
    let mut response = SqsBatchResponse::default();
    for m in messages {
        let r = app.handle_batch(batch(vec![m]), Instant::now() + Duration::from_secs(60)).await;
        response.batch_item_failures.extend(r.batch_item_failures);
    }
    assert_eq!(failed_ids(&response), ["m2"]);
    assert_one_spread_delay(&app.ports.delays(), "rh-m2", 40);
    assert_eq!(app.ports.metrics().iter().filter(|m| **m == Measure::Delivered).count(), 1);
}

/// Two messages of one event in one batch (two settlers published it): posted once, so a
/// receiver never gets the same webhook-id twice at once, by the message with the most
/// receives left (here the second; its failure is retried); the other message is deleted.
#[tokio::test]
async fn one_event_twice_in_a_batch_is_posted_once() {
    let app = app(MemoryPorts::answering([status(503)]));
    let mut worn = message("m1", &vaulted_message());
    worn.attributes.insert("ApproximateReceiveCount".into(), "9".into());
    let messages = vec![worn, message("m2", &vaulted_message()), message("m3", "garbage")];
    let response = app.handle_batch(batch(messages), Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(failed_ids(&response), ["m2"]);
    assert_eq!(app.ports.posted().len(), 1);

    // A copy without a message id is kept only when no other can be: its failure could not
    // be reported, and Lambda would delete it.
    let app = crate::memory::app(MemoryPorts::answering([status(503)]));
    let mut anonymous = message("", &vaulted_message());
    anonymous.message_id = None;
    let mut named = message("m5", &vaulted_message());
    named.attributes.insert("ApproximateReceiveCount".into(), "9".into());
    let response = app.handle_batch(batch(vec![anonymous, named]), Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(failed_ids(&response), ["m5"]);
    assert_eq!(app.ports.posted().len(), 1);
}

#[tokio::test]
async fn a_panic_fails_only_its_own_message() {
    let ports = MemoryPorts { panics: true, ..MemoryPorts::default() };
    let app = app(ports);
    let response = app
        .handle_batch(
            batch(vec![message("m1", &vaulted_message()), message("m2", "garbage")]),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed_ids(&response), ["m1"]);
    assert_one_spread_delay(&app.ports.delays(), "rh-m1", 40);
    assert!(app.ports.metrics().contains(&Measure::Retried { reason: "panicked", late: false }), "counted");
}

/// A panic reading the secret again is the message's own, as any other: retried after its
/// delay and counted.
#[tokio::test]
async fn a_panic_reading_the_secret_fails_its_message_with_a_delay() {
    let app = app(MemoryPorts::answering([status(200)]));
    app.secret.panic();
    app.ports.advance(Duration::from_secs(300));
    let response = app
        .handle_batch(batch(vec![message("m1", &vaulted_message())]), Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(failed_ids(&response), ["m1"]);
    assert_eq!(app.secret.reads(), 1, "the read that panicked");
    assert_one_spread_delay(&app.ports.delays(), "rh-m1", 40);
    assert!(app.ports.metrics().contains(&Measure::Retried { reason: "panicked", late: false }), "counted");
}

/// SQS not answering the retry's delay leaves the message to the visibility timeout; the
/// batch is still answered (an invocation run into its timeout answers nothing).
#[tokio::test(start_paused = true)]
async fn a_delay_that_hangs_is_given_up_and_the_batch_answered() {
    let app = app(MemoryPorts { delays_hang: true, ..MemoryPorts::answering([status(503)]) });
    let handling =
        app.handle_batch(batch(vec![message("m1", &vaulted_message())]), Instant::now() + Duration::from_secs(60));
    let response = tokio::time::timeout(Duration::from_secs(30), handling).await.expect("answered");
    assert_eq!(failed_ids(&response), ["m1"]);
    assert_eq!(app.ports.delays().len(), 1, "asked");
}

#[tokio::test]
async fn a_failure_without_a_message_id_is_never_reported_as_an_empty_id() {
    let app = app(MemoryPorts::answering([status(500), status(500)]));
    let mut anonymous = message("", &vaulted_message());
    anonymous.message_id = None;
    let response = app
        .handle_batch(
            batch(vec![anonymous, message("m2", &vaulted_message_of(2))]),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed_ids(&response), ["m2"]);
}

/// A message's `SentTimestamp` reaches the lateness rule: one first queued LATE_AFTER ago
/// fails late on its second receive, one queued a moment before that does not.
#[tokio::test]
async fn a_message_queued_long_ago_fails_late() {
    for (queued_ago, late) in [(LATE_AFTER - Duration::from_secs(1), false), (LATE_AFTER, true)] {
        let app = app(MemoryPorts::answering([status(503)]));
        let mut m = message("m1", &vaulted_message());
        m.attributes.insert("SentTimestamp".into(), NOW.minus(queued_ago).unix_ms.to_string());
        app.handle_batch(batch(vec![m]), Instant::now() + Duration::from_secs(60)).await;
        assert_eq!(app.ports.metrics(), [Measure::Retried { reason: "status_503", late }], "{queued_ago:?}");
    }
}

// --- the signing secret, rotated ------------------------------------------------------------

/// Deliver `count` vaulted messages in one batch.
async fn deliver(app: &App<MemoryPorts, crate::memory::MemorySecret>, count: usize) {
    let messages = (0..count).map(|i| message(&format!("m{i}"), &vaulted_message_of(i))).collect();
    let response = app.handle_batch(batch(messages), Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
}

/// Which of [`SECRET`] and [`NEW_SECRET`] signed each webhook posted, in order.
fn signed_with(app: &App<MemoryPorts, crate::memory::MemorySecret>) -> Vec<&'static str> {
    let (old, new) = (Signer::parse(SECRET).unwrap(), Signer::parse(NEW_SECRET).unwrap());
    let by = |w: &crate::domain::Webhook, s: &Signer| s.sign(&w.id, w.timestamp, &w.body) == w.signature;
    app.ports
        .posted()
        .iter()
        .map(|w| match (by(w, &old), by(w, &new)) {
            (true, false) => "old",
            (false, true) => "new",
            _ => panic!("signed by neither secret: {w:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_rotated_secret_signs_once_the_signer_is_five_minutes_old_not_before() {
    let app = app(MemoryPorts::default());
    app.secret.set(NEW_SECRET);
    app.ports.advance(Duration::from_secs(299));
    deliver(&app, 1).await;
    assert_eq!((signed_with(&app), app.secret.reads()), (vec!["old"], 0), "read 299 s ago: in force");

    app.ports.advance(Duration::from_secs(1));
    deliver(&app, 1).await;
    deliver(&app, 1).await;
    assert_eq!(signed_with(&app), ["old", "new", "new"]);
    assert_eq!(app.secret.reads(), 1, "one read for the age, none per message after it");

    // The next read is five minutes after that one.
    app.secret.set(SECRET);
    app.ports.advance(Duration::from_secs(299));
    deliver(&app, 1).await;
    app.ports.advance(Duration::from_secs(1));
    deliver(&app, 1).await;
    assert_eq!(signed_with(&app), ["old", "new", "new", "new", "old"]);
    assert_eq!(app.secret.reads(), 2);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_or_used_keeps_the_signer_without_a_read_per_message() {
    let app = app(MemoryPorts::default());
    app.secret.fail();
    app.ports.advance(Duration::from_secs(300));
    deliver(&app, 3).await;
    deliver(&app, 2).await;
    assert_eq!(signed_with(&app), ["old"; 5], "still in force");
    assert_eq!(app.secret.reads(), 1, "the failed read counts as one: none per message after it");
    assert_eq!(rereads_failed(&app), 1, "five messages, one failed read");

    for unusable in ["", "whsec_c2hvcnQ=", "{\"key\": 1}"] {
        app.secret.set(unusable);
        app.ports.advance(Duration::from_secs(300));
        deliver(&app, 2).await;
    }
    assert_eq!(signed_with(&app), ["old"; 11]);
    assert_eq!(app.secret.reads(), 4);
    assert_eq!(rereads_failed(&app), 4, "an unusable text counts too, once per read");

    app.secret.set(NEW_SECRET);
    app.ports.advance(Duration::from_secs(300));
    deliver(&app, 1).await;
    assert_eq!(signed_with(&app).last(), Some(&"new"), "readable again");
    assert_eq!(app.secret.reads(), 5);
    assert_eq!(rereads_failed(&app), 4, "a read that brought a usable secret counts nothing");
}

/// How many failed re-reads of the secret `app` counted.
fn rereads_failed(app: &App<MemoryPorts, crate::memory::MemorySecret>) -> usize {
    app.ports.metrics().iter().filter(|m| **m == Measure::SecretRereadFailed).count()
}

#[tokio::test]
async fn concurrent_messages_share_one_read() {
    let app = app(MemoryPorts::default());
    app.secret.set(NEW_SECRET);
    app.ports.advance(Duration::from_secs(300));
    deliver(&app, 10).await;
    assert_eq!(signed_with(&app), ["new"; 10]);
    assert_eq!(app.secret.reads(), 1, "ten messages at once, one read");
}

#[tokio::test]
async fn a_clock_stepped_back_reads_the_secret_again() {
    let ports = MemoryPorts::default();
    let app = App::with_ports(
        ports,
        crate::memory::MemorySecret::holding(NEW_SECRET),
        crate::secret::Signers::new(Signer::parse(SECRET).unwrap(), NOW.plus(Duration::from_secs(1))),
    );
    deliver(&app, 1).await;
    assert_eq!((signed_with(&app), app.secret.reads()), (vec!["new"], 1));
}

/// Reading the secret again, whether it changed, cannot be used or cannot be read, logs what
/// happened and never the secret (old, new or unusable).
#[tokio::test]
async fn secret_rereads_are_logged_without_the_secret() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let app = app(MemoryPorts::default());
    // Base64 of 18 bytes: too short to be a Standard Webhooks key, and a secret all the same.
    let unusable = "whsec_dW51c2FibGUtc2VjcmV0MTIz";
    for text in [unusable, NEW_SECRET] {
        app.secret.set(text);
        app.ports.advance(Duration::from_secs(300));
        deliver(&app, 1).await;
    }
    app.secret.fail();
    app.ports.advance(Duration::from_secs(300));
    deliver(&app, 1).await;

    let logs = captured.text();
    let said = |message: &str| captured.lines_with(message).len();
    assert_eq!(said("unusable; signing with the current one"), 2, "{logs}");
    assert_eq!(said("notify secret changed"), 1, "{logs}");
    for secret in [SECRET, NEW_SECRET, unusable] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!logs.contains(key), "{secret:?} logged: {logs}");
    }
}

/// A secret that cannot be read (or used) when the instance starts: the instance starts all
/// the same, with no signer; its webhooks are retried on their backoff, not posted unsigned,
/// and the secret is read again once a minute (not per message) until it brings a signer.
#[tokio::test]
async fn a_secret_unusable_at_start_up_holds_webhooks_until_a_read_brings_one() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let secret = crate::memory::MemorySecret::holding(SECRET);
    secret.fail();
    let ports = MemoryPorts::default();
    let signers = crate::secret::Signers::load(&secret, &ports).await;
    let app = App::with_ports(ports, secret, signers);
    assert_eq!((app.secret.reads(), rereads_failed(&app)), (1, 1), "the start-up read, counted");

    let response = app
        .handle_batch(batch(vec![message("m1", &vaulted_message())]), Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(failed_ids(&response), ["m1"]);
    assert!(app.ports.posted().is_empty(), "nothing posted unsigned");
    assert_one_spread_delay(&app.ports.delays(), "rh-m1", 40);
    assert!(app.ports.metrics().contains(&Measure::Retried { reason: "no_signing_secret", late: false }));
    assert_eq!(app.secret.reads(), 1, "no read per message within the minute");

    // Unusable text is no better than none.
    app.secret.set("whsec_c2hvcnQ=");
    app.ports.advance(Duration::from_secs(60));
    let response = app
        .handle_batch(batch(vec![message("m2", &vaulted_message())]), Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(failed_ids(&response), ["m2"]);
    assert_eq!((app.secret.reads(), rereads_failed(&app)), (2, 2), "read again after a minute, counted");

    app.secret.set(SECRET);
    app.ports.advance(Duration::from_secs(59));
    let response = app
        .handle_batch(batch(vec![message("m3", &vaulted_message())]), Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!((failed_ids(&response), app.secret.reads()), (vec!["m3".to_owned()], 2), "59 s: not yet");
    app.ports.advance(Duration::from_secs(1));
    deliver(&app, 2).await;
    assert_eq!(signed_with(&app), ["old", "old"]);
    assert_eq!((app.secret.reads(), rereads_failed(&app)), (3, 2));

    let logs = captured.text();
    assert!(logs.contains("the notify secret cannot be used; webhooks wait until it can"), "{logs}");
    assert!(logs.contains("notify secret read: webhooks resume"), "{logs}");
    assert!(!logs.contains("c2hvcnQ"), "the unusable secret logged: {logs}");
}

/// A failure on the last receive (SQS then moves the message to the dead-letter queue) and a
/// refusal that dead-letters at once are errors, for an operator to redrive; a retry before
/// the last receive is a warning.
#[test]
fn only_what_ends_in_the_dead_letter_queue_is_logged_as_an_error() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let failed = || Outcome::Retry(NotifyError::Status { status: 503, retry_after: None });
    let received = |receive_count| Delivery {
        body: String::new(),
        receipt_handle: None,
        receive_count,
        sent_at: None,
        stop_at: Instant::now(),
    };
    log_outcome(&failed(), &received(crate::domain::MAX_RECEIVE_COUNT - 1));
    log_outcome(&failed(), &received(crate::domain::MAX_RECEIVE_COUNT));
    log_outcome(&Outcome::DeadLettered(NotifyError::Gone), &received(1));
    let lines: Vec<(Level, bool)> =
        captured.lines_with("").iter().map(|l| (l.level, l.text.contains("dead-letter queue"))).collect();
    assert_eq!(lines, [(Level::WARN, false), (Level::ERROR, true), (Level::ERROR, true)], "{}", captured.text());
}

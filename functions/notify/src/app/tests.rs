use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};

use super::*;
use crate::domain::Measure;
use crate::test_support::{MemoryPorts, signer, status, vaulted_message};

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
    // Posted in order: m1 200, m2 503, m3 404; m4 is no event.
    let app = App::with_ports(MemoryPorts::answering([status(200), status(503), status(404)]), signer());
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
    assert_eq!(app.ports.delays(), [("rh-m2".to_owned(), Duration::from_secs(40))], "second receive: 40 s");
    assert_eq!(app.ports.metrics().iter().filter(|m| **m == Measure::Delivered).count(), 1);
}

#[tokio::test]
async fn a_panic_fails_only_its_own_message() {
    let ports = MemoryPorts { panics: true, ..MemoryPorts::default() };
    let app = App::with_ports(ports, signer());
    let response = app
        .handle_batch(
            batch(vec![message("m1", &vaulted_message()), message("m2", "garbage")]),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed_ids(&response), ["m1"]);
    assert_eq!(app.ports.delays(), [("rh-m1".to_owned(), Duration::from_secs(40))]);
}

#[tokio::test]
async fn a_failure_without_a_message_id_is_never_reported_as_an_empty_id() {
    let app = App::with_ports(MemoryPorts::answering([status(500), status(500)]), signer());
    let mut anonymous = message("", &vaulted_message());
    anonymous.message_id = None;
    let response = app
        .handle_batch(
            batch(vec![anonymous, message("m2", &vaulted_message())]),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed_ids(&response), ["m2"]);
}

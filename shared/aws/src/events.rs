//! Task events on EventBridge: the [`PublishEvents`] port over `PutEvents`, to the bus named
//! by `EVENT_BUS_NAME` (the template's `EventBus`; the emulator's under `make run`).
//!
//! Each event is one entry: `Source` [`EVENT_SOURCE`], `DetailType` its type's
//! [`EventType::detail_type`], `Detail` the JSON of its [`EventDetail`]. At most
//! [`MAX_ENTRIES_PER_CALL`] entries and [`MAX_REQUEST_BYTES`] per call, as PutEvents allows. An
//! entry EventBridge did not take (a non-zero `FailedEntryCount`: throttling, an internal
//! error) makes the whole publish a [`PublishError`] naming the entries' error codes: the
//! caller's retry publishes them all again with the same ids, and consumers drop the
//! duplicates by `detail.event_id`.

use crate::sdk_error::sdk_error_text;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
#[cfg(any(doc, test))]
use stemvault_vault::events::EventDetail;
#[cfg(doc)]
use stemvault_vault::events::EventType;
use stemvault_vault::events::{EVENT_SOURCE, PublishError, PublishEvents, TaskEvent};

/// PutEvents takes at most 10 entries per call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// And at most 256 KiB of entries per call.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The most one entry may take, for an event to go without its files past it: under
/// [`MAX_REQUEST_BYTES`] by what EventBridge wraps it in (`version`, `id`, `account`, `time`,
/// ...) and the notify function adds when it dead-letters it (its `reason`), so that the
/// delivered event still fits an SQS message of 256 KiB, the notify queues' limit.
pub const MAX_ENTRY_BYTES: usize = MAX_REQUEST_BYTES - 4 * 1024;

/// One event bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    name: String,
}

impl EventBus {
    /// Build the client once, at start-up; `name` is the bus's name or ARN.
    pub fn new(sdk: &aws_config::SdkConfig, name: &str) -> EventBus {
        EventBus { client: aws_sdk_eventbridge::Client::new(sdk), name: name.to_owned() }
    }
}

/// An event as a PutEvents entry on `bus`, and its size as EventBridge counts it (the UTF-8
/// bytes of Source, DetailType and Detail). An entry over [`MAX_ENTRY_BYTES`] goes without
/// its files (`files_omitted`), as one whose files the vault's budget finds too many does:
/// EventBridge would refuse it on every try (a `Task Vaulted` never published, a task never
/// settled), or take one the notify queue could not (a webhook lost).
pub fn entry(bus: &str, event: &TaskEvent) -> (PutEventsRequestEntry, usize) {
    // A derived Serialize of plain data: cannot fail. Kept to what SQS takes: the notify rule
    // delivers it to a queue.
    let detail = serde_json::to_string(&event.detail).expect("an event detail serializes");
    let detail = crate::sqs_text::refused_characters_replaced(detail);
    let detail_type = event.kind.detail_type();
    let size = EVENT_SOURCE.len() + detail_type.len() + detail.len();
    if size > MAX_ENTRY_BYTES && !event.detail.files.is_empty() {
        let mut without_files = event.clone();
        without_files.detail.files_omitted = Some(event.detail.files.len());
        without_files.detail.files.clear();
        return entry(bus, &without_files);
    }
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(EVENT_SOURCE)
        .detail_type(detail_type)
        .detail(detail)
        .build();
    (entry, size)
}

/// Split sized entries into calls: at most [`MAX_ENTRIES_PER_CALL`] entries and
/// [`MAX_REQUEST_BYTES`] each (an entry larger than that alone goes alone, and EventBridge
/// says what it thinks of it).
pub fn batches<T>(entries: Vec<(T, usize)>) -> Vec<Vec<T>> {
    let mut calls: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for (entry, size) in entries {
        let fits = calls.last().is_some_and(|c| c.len() < MAX_ENTRIES_PER_CALL && bytes + size <= MAX_REQUEST_BYTES);
        if !fits {
            calls.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        calls.last_mut().expect("a call was just pushed").push(entry);
    }
    calls
}

impl PublishEvents for EventBus {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        let total = events.len();
        let calls = batches(events.iter().map(|e| entry(&self.name, e)).collect());
        let (mut failed, mut reasons) = (0, Vec::new());
        for call in calls {
            let count = call.len();
            match self.client.put_events().set_entries(Some(call)).send().await {
                Ok(out) if out.failed_entry_count() == 0 => {}
                Ok(out) => {
                    failed += (out.failed_entry_count().max(0) as usize).min(count);
                    for e in out.entries().iter().filter(|e| e.error_code().is_some()) {
                        let code = e.error_code().unwrap_or_default();
                        let text = format!("{code}: {}", e.error_message().unwrap_or_default());
                        if !reasons.contains(&text) {
                            reasons.push(text);
                        }
                    }
                }
                Err(e) => {
                    failed += count;
                    reasons.push(format!("PutEvents failed: {}", sdk_error_text(&e)));
                }
            }
        }
        if failed == 0 {
            return Ok(());
        }
        if reasons.is_empty() {
            reasons.push("FailedEntryCount without error codes".into());
        }
        Err(PublishError { failed, total, reason: reasons.join("; ") })
    }
}

/// One line for an EventBridge event as an SQS target receives it (`detail-type`,
/// `detail`): what the local runner prints for each event.
pub fn describe(body: &str) -> String {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("(not an event: {body})");
    };
    let detail = &event["detail"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{} {} stage={} vault={}",
        text(&event["detail-type"]),
        text(&detail["task_id"]),
        text(&detail["stage"]),
        text(&detail["vault"]),
    );
    if let Some(files) = detail["files"].as_array() {
        let stored = files.iter().filter(|f| f["status"] == "stored").count();
        line.push_str(&format!(" files={}/{} stored", stored, files.len()));
    }
    if let Some(key) = detail["manifest_key"].as_str() {
        line.push_str(&format!(" manifest={key}"));
    }
    line.push_str(&format!(" id={}", text(&detail["event_id"])));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PutEvents answered in part: the call is an error naming how many of how many failed
    /// and why (each code once), so the publisher tries them all again.
    #[tokio::test]
    async fn events_the_bus_refused_in_part_are_an_error_saying_which_failed_and_why() {
        use stemvault_vault::{TaskRecord, Timestamp};
        use suno_callbacks::{Family, Stage};
        let answer = br#"{"FailedEntryCount":2,"Entries":[{"EventId":"e-0"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"try again"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"try again"}]}"#;
        let (origin, served) = crate::test_http::answer_once(crate::test_http::json_reply(200, answer)).await;
        let bus = EventBus::new(&crate::test_http::sdk_at(&origin), "stemvault-events");
        let events: Vec<TaskEvent> = ["t1", "t2", "t3"]
            .into_iter()
            .map(|id| {
                let record = TaskRecord::new(id, Family::Music, Stage::Complete, 200, "ok", Timestamp::from_unix_ms(0));
                stemvault_vault::events::stage_changed(&record, "vault")
            })
            .collect();
        let published = bus.publish_events(&events).await;
        assert_eq!(published, Err(PublishError { failed: 2, total: 3, reason: "InternalFailure: try again".into() }));
        assert!(served.await.expect("one request").contains("t3.stage.complete"), "the three in one call");
    }

    #[test]
    fn at_most_ten_entries_and_256_kib_per_call() {
        let calls = batches((0..23).map(|i| (i, 100)).collect());
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        let calls = batches(vec![(1, 200 * 1024), (2, 100 * 1024), (3, 100 * 1024), (4, 300 * 1024)]);
        assert_eq!(calls, [vec![1], vec![2, 3], vec![4]]);
        assert!(batches(Vec::<(u8, usize)>::new()).is_empty());
    }

    /// An entry past what the notify queue takes (between that and what EventBridge takes, or
    /// over both: a detail the vault's budget let through, here by a message no callback could
    /// bring) goes without its files, saying how many there are.
    #[test]
    fn an_entry_past_what_the_notify_queue_takes_goes_without_its_files() {
        use stemvault_vault::{FileEntry, TaskRecord, Timestamp};
        use suno_callbacks::{Family, Stage};
        let mut record = TaskRecord::new("t1", Family::Music, Stage::Complete, 200, "ok", Timestamp::from_unix_ms(0));
        for i in 0..3 {
            let file = FileEntry::pending("https://cdn1.suno.ai/a.mp3", format!("tasks/t1/{i}.mp3"), Stage::Complete);
            record.files.insert(format!("stem-{i}"), file);
        }
        let vaulted =
            stemvault_vault::events::vaulted(&record, stemvault_vault::VaultState::Complete, "vault", "m.json");
        let size_of = |event: &TaskEvent| {
            EVENT_SOURCE.len() + event.kind.detail_type().len() + serde_json::to_string(&event.detail).unwrap().len()
        };
        for past in [MAX_ENTRY_BYTES + 1, MAX_REQUEST_BYTES + 1] {
            let mut event = vaulted.clone();
            event.detail.message = "x".repeat(past - size_of(&vaulted) + "ok".len());
            assert_eq!(size_of(&event), past);
            let (entry, size) = entry("stemvault-events", &event);
            assert!(size < past, "{size}");
            let detail: serde_json::Value = serde_json::from_str(entry.detail().unwrap()).unwrap();
            assert_eq!(
                (detail["files"].as_array().map(Vec::len), detail["files_omitted"].as_u64()),
                (Some(0), Some(3))
            );
            assert_eq!(detail["event_id"], event.detail.event_id.as_str(), "the same event");
        }
        let mut at_the_limit = vaulted.clone();
        at_the_limit.detail.message = "x".repeat(MAX_ENTRY_BYTES - size_of(&vaulted) + "ok".len());
        let (entry, size) = entry("stemvault-events", &at_the_limit);
        assert_eq!(size, MAX_ENTRY_BYTES);
        assert!(entry.detail().unwrap().contains("stem-2"), "files kept up to the limit");
    }

    #[test]
    fn an_entry_is_the_event_on_the_bus() {
        use stemvault_vault::{TaskRecord, Timestamp};
        use suno_callbacks::{Family, Stage};
        // A provider's message with a character SQS refuses (the notify rule's target).
        let message = "ok \u{ffff}";
        let record = TaskRecord::new("t1", Family::Music, Stage::Complete, 200, message, Timestamp::from_unix_ms(0));
        let event = stemvault_vault::events::stage_changed(&record, "vault");
        let (entry, size) = entry("stemvault-events", &event);
        assert_eq!(entry.event_bus_name(), Some("stemvault-events"));
        assert_eq!((entry.source(), entry.detail_type()), (Some("stemvault"), Some("Task Stage Changed")));
        let detail: serde_json::Value = serde_json::from_str(entry.detail().unwrap()).unwrap();
        assert_eq!(detail["message"], "ok \u{fffd}", "replaced: EventBridge may not keep an escape");
        assert_eq!(detail["event_id"], "t1.stage.complete");
        let replaced = EventDetail { message: "ok \u{fffd}".into(), ..event.detail.clone() };
        assert_eq!(serde_json::from_value::<EventDetail>(detail).unwrap(), replaced);
        assert_eq!(size, "stemvault".len() + "Task Stage Changed".len() + entry.detail().unwrap().len());
    }

    #[test]
    fn a_received_event_is_one_line() {
        let body = r#"{"id":"x","detail-type":"Task Vaulted","source":"stemvault","detail":{"event_id":"t1.vaulted.1.complete",
            "task_id":"t1","stage":"complete","vault":"complete","manifest_key":"tasks/t1/manifest.json",
            "files":[{"name":"a","status":"stored"},{"name":"b","status":"failed"}]}}"#;
        assert_eq!(
            describe(body),
            "Task Vaulted t1 stage=complete vault=complete files=1/2 stored manifest=tasks/t1/manifest.json id=t1.vaulted.1.complete"
        );
    }
}

//! Task events under `make run`. The functions publish to the emulator's bus
//! (`<base>-events`, `EVENT_BUS_NAME`); the runner subscribes to it as a user's application
//! would, with rules on source `stemvault` (`stemvault_aws::provision::subscribe_queue`):
//!
//! * `<base>-events-log`: a queue the runner drains, printing each event as one line
//!   (`stemvault_aws::events::describe`);
//! * `<base>-notify` (with `NOTIFY_URL` set): the notify queue, as the template's `NotifyRule`
//!   feeds it, so the notify function delivers every event as a signed webhook.
//!
//! [`EventWatch`] is `make demo`'s own subscription: a queue of its own on the runner's bus,
//! for the events of the tasks it posts, removed when done.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use stemvault_aws::events::describe;
use stemvault_aws::provision::subscribe_queue;
use tokio::sync::broadcast;

use crate::poller::{BatchHandler, QueueSource};
use stemvault_aws::sdk_error::sdk_error_text;

/// How many printed lines a slow [`EventLog::subscribe`]r may fall behind.
const LOG_CAPACITY: usize = 1024;

/// A plain SQS queue: (url, arn).
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<(String, String), String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what} {name}: {e}");
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| failed("create queue", &sdk_error_text(&e)))?
        .queue_url
        .ok_or_else(|| format!("create queue {name}: no url"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed("queue attributes of", &sdk_error_text(&e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| format!("queue {name} has no ARN"))?;
    Ok((url, arn))
}

/// The printed line of each event the runner receives: to stdout (when asked) and to every
/// subscriber.
#[derive(Debug, Clone)]
pub struct EventLog {
    lines: broadcast::Sender<String>,
    print: bool,
}

impl EventLog {
    pub fn new(print: bool) -> EventLog {
        EventLog { lines: broadcast::Sender::new(LOG_CAPACITY), print }
    }

    /// The lines printed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.lines.subscribe()
    }

    /// One event as the runner prints it.
    pub fn line(body: &str) -> String {
        format!("event: {}", describe(body))
    }
}

impl BatchHandler for EventLog {
    async fn handle_batch(&self, event: SqsEvent, _deadline: Instant) -> SqsBatchResponse {
        for record in event.records {
            let line = EventLog::line(record.body.as_deref().unwrap_or_default());
            if self.print {
                // Not println!: it panics once stdout is gone (the terminal closed).
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            let _ = self.lines.send(line);
        }
        // Printed: every message is done.
        SqsBatchResponse::default()
    }
}

/// The runner's subscriptions on `bus`: the event log's queue (returned, to poll), and the
/// notify queue when webhooks are on.
pub async fn subscribe(
    sdk: &aws_config::SdkConfig,
    base: &str,
    bus: &str,
    region: &str,
    notify: Option<&crate::pipeline::NotifySummary>,
) -> Result<QueueSource, String> {
    let name = format!("{base}-events-log");
    let (queue_url, queue_arn) = create_queue(&aws_sdk_sqs::Client::new(sdk), &name).await?;
    subscribe_queue(sdk, bus, &name, &queue_url, &queue_arn).await?;
    if let Some(notify) = notify {
        subscribe_queue(sdk, bus, &format!("{base}-notify"), &notify.queue_url, &notify.queue_arn).await?;
    }
    // Only printed, in moments: any batch size and budget do.
    let budget = Duration::from_secs(60);
    Ok(QueueSource {
        name: "events-log",
        queue_url,
        queue_arn,
        region: region.to_owned(),
        batch_size: 10,
        invocation_budget: budget,
    })
}

/// A queue of its own subscribed to every event on a bus, until [`EventWatch::remove`].
pub struct EventWatch {
    sdk: aws_config::SdkConfig,
    bus: String,
    name: String,
    queue_url: String,
    received: Vec<Value>,
}

impl EventWatch {
    /// Subscribe a fresh queue `<bus>-watch-<random>` to `bus`.
    pub async fn subscribe(sdk: &aws_config::SdkConfig, bus: &str) -> Result<EventWatch, String> {
        let name = format!("{bus}-watch-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let (queue_url, queue_arn) = create_queue(&aws_sdk_sqs::Client::new(sdk), &name).await?;
        let watch = EventWatch { sdk: sdk.clone(), bus: bus.to_owned(), name, queue_url, received: Vec::new() };
        if let Err(e) = subscribe_queue(sdk, bus, &watch.name, &watch.queue_url, &queue_arn).await {
            watch.remove().await;
            return Err(e);
        }
        Ok(watch)
    }

    /// Receive events until those of `task_id` include a `detail-type` one, or `timeout`.
    /// The task's distinct events (by `detail.event_id`), in the order received.
    pub async fn until(&mut self, task_id: &str, detail_type: &str, timeout: Duration) -> Vec<Value> {
        let sqs = stemvault_aws::long_polling_sqs_client(&self.sdk);
        let deadline = Instant::now() + timeout;
        loop {
            let events = task_events(&self.received, task_id);
            if events.iter().any(|e| e["detail-type"] == detail_type) || Instant::now() >= deadline {
                return events;
            }
            let received =
                sqs.receive_message().queue_url(&self.queue_url).max_number_of_messages(10).wait_time_seconds(1).send();
            let messages = match received.await {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = sdk_error_text(&e), "receiving events failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for message in messages {
                if let Ok(event) = serde_json::from_str(message.body().unwrap_or_default()) {
                    self.received.push(event);
                }
                let handle = message.receipt_handle().unwrap_or_default();
                let _ = sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
            }
        }
    }

    /// Remove the rule and the queue (best effort: the emulator is fresh on every `make run`).
    pub async fn remove(self) {
        if let Err(e) = stemvault_aws::provision::unsubscribe_queue(&self.sdk, &self.bus, &self.name).await {
            tracing::debug!(error = %e, "removing the watch's rule");
        }
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let _ = sqs.delete_queue().queue_url(&self.queue_url).send().await;
    }
}

/// The distinct events (by `detail.event_id`) of `task_id`, in order.
pub fn task_events(events: &[Value], task_id: &str) -> Vec<Value> {
    let mut ids = BTreeSet::new();
    events
        .iter()
        .filter(|e| e["detail"]["task_id"] == task_id)
        .filter(|e| ids.insert(e["detail"]["event_id"].as_str().unwrap_or_default().to_owned()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, task: &str, id: &str) -> Value {
        serde_json::json!({"detail-type": kind, "source": "stemvault",
            "detail": {"event_id": id, "task_id": task, "stage": "complete", "vault": "pending"}})
    }

    #[test]
    fn a_tasks_events_once_each_in_order() {
        let events = [
            event("Task Stage Changed", "t1", "t1.stage.complete"),
            event("Task Stage Changed", "t2", "t2.stage.complete"),
            event("Task Stage Changed", "t1", "t1.stage.complete"),
            event("Task Vaulted", "t1", "t1.vaulted.1.complete"),
        ];
        let mine = task_events(&events, "t1");
        let ids: Vec<&str> = mine.iter().map(|e| e["detail"]["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["t1.stage.complete", "t1.vaulted.1.complete"]);
        assert!(task_events(&events, "t3").is_empty());
    }

    #[tokio::test]
    async fn the_log_prints_one_line_per_event_and_deletes_them_all() {
        let log = EventLog::new(false);
        let mut lines = log.subscribe();
        let mut batch = SqsEvent::default();
        batch.records = ["t1.stage.complete", "t1.vaulted.1.complete"]
            .iter()
            .map(|id| {
                let mut record = aws_lambda_events::sqs::SqsMessage::default();
                record.message_id = Some(id.to_string());
                record.body = Some(event("Task Stage Changed", "t1", id).to_string());
                record
            })
            .collect();
        let response = log.handle_batch(batch, Instant::now()).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(
            lines.recv().await.unwrap(),
            "event: Task Stage Changed t1 stage=complete vault=pending id=t1.stage.complete"
        );
        assert!(lines.recv().await.unwrap().ends_with("id=t1.vaulted.1.complete"));
    }
}

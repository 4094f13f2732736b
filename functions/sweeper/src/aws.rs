//! The ports over AWS: the shared claim-and-send adapter ([`TableAndQueue`]: the task table
//! and the download queue) and one DynamoDB Query on the sparse `open-tasks` index.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_aws::enqueue::TableAndQueue;
use stemvault_aws::metrics::{self, Metric};
use stemvault_aws::table::{s, unavailable, write_error};
use stemvault_vault::items::{PARTITION_KEY, SORT_KEY, TASK_SK};
use stemvault_vault::{Clock, Conditional, OPEN_MARKER, OPEN_TASKS_INDEX, TaskRecord, Timestamp};

use crate::Config;
use crate::domain::{
    CloseTask, EmitMetrics, IndexEntry, ListOpenTasks, Measure, OpenTask, OpenTaskPage, ReadCursor, WriteCursor,
};
use crate::error::StoreError;
use stemvault_aws::sdk_error::sdk_error_text;

/// The IAM actions of every AWS call the function makes, its shared adapters' included:
/// the open-tasks index and each task's item collection (Query), the sweep cursor (GetItem,
/// and PutItem, which also puts the claimed file items), the task item's `queued` set,
/// released claims and a settled task's `open` taken away (UpdateItem), and the download and manifest jobs (SendMessageBatch,
/// authorised by sqs:SendMessage).
pub const AWS_ACTIONS: &[&str] =
    &["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "sqs:SendMessage"];

/// The sweep cursor's item: a partition of its own that no task id can name (`#` is not a
/// task id character, so no callback, registration or GET /tasks/{id} ever reaches it),
/// holding no `open` or `reconcile` attribute (so in no index) and no `task` item (so even
/// a reader of its collection would find no task there).
pub const CURSOR_TASK_ID: &str = "#sweeper";
/// Its sort key.
pub const CURSOR_SK: &str = "cursor";

/// Open tasks a sweep checked, when any; dimension `Function`.
pub const TASKS_SWEPT: &str = "TasksSwept";

/// Open tasks a sweep could not sweep but a later run may (a table or queue error, the task's
/// budget run out); one no retry mends (a panic, a record the table cannot read) counts in
/// `TasksBroken` alone. Emitted by every run, zero too: the `tasks-not-swept` alarm reads a
/// missing count as a sweeper that does not run.
pub const TASKS_NOT_SWEPT: &str = "TasksNotSwept";

/// How long ago the oldest open task past the grace period last received a callback, in
/// seconds (0 with none open); not emitted by a run that could not read the index.
pub const OLDEST_OPEN_TASK_SECONDS: &str = "OldestOpenTaskSeconds";

/// The CloudWatch metrics of one [`Measure`] (names fixed: alarms and the dashboard read
/// them), with dimension `Function` = `function` (the deployed function's name,
/// [`metrics::function_name`]).
pub fn metrics_of(function: &'static str, measure: &Measure) -> (Vec<(&'static str, &'static str)>, Vec<Metric>) {
    match *measure {
        Measure::Swept { checked, failed, broken, oldest_open_seconds } => {
            // What an alarm reads run by run, zero too (a zero is what brings it back to OK);
            // the rest only when not zero (TasksSwept no alarm reads; TasksBroken's fills its
            // gaps with zeros).
            let mut metrics = vec![Metric::counted(TASKS_NOT_SWEPT, failed)];
            metrics
                .extend(oldest_open_seconds.map(|seconds| Metric::seconds(OLDEST_OPEN_TASK_SECONDS, seconds as f64)));
            metrics.extend(metrics::without_zeros([
                Metric::counted(TASKS_SWEPT, checked),
                Metric::counted(metrics::TASKS_BROKEN, broken),
            ]));
            (vec![(metrics::FUNCTION, function)], metrics)
        }
    }
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(crate::LOGICAL_NAME), measure);
        metrics::emit(&dimensions, &metrics);
    }
}

/// Index entries per Query page (keys only: a page stays small).
const PAGE_SIZE: i32 = 100;

/// The task table with its `open-tasks` index, and the download queue.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    shared: TableAndQueue,
}

impl AwsPorts {
    /// Build the clients once, at start-up.
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> AwsPorts {
        AwsPorts { shared: TableAndQueue::new(sdk, &config.table_name, &config.queue_url) }
    }
}

stemvault_vault::delegate_enqueue_ports!(AwsPorts => shared);

/// One page of the `open-tasks` index: its key condition, names and values, and where it
/// starts.
#[derive(Debug, Clone, PartialEq)]
struct OpenTasksQuery {
    key_condition: &'static str,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    start: Option<HashMap<String, AttributeValue>>,
}

/// Times are compared as the stored RFC 3339 text, which sorts as time: every writer stores
/// the one fixed-width form of [`Timestamp::rfc3339`].
fn open_tasks_query(received_before: Timestamp, after: Option<&OpenTask>) -> OpenTasksQuery {
    let names = [("#open", "open"), ("#received", "last_received_at")];
    OpenTasksQuery {
        key_condition: "#open = :open AND #received < :before",
        names: names.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        values: HashMap::from([
            (":open".to_owned(), s(OPEN_MARKER)),
            (":before".to_owned(), s(&received_before.rfc3339())),
        ]),
        // An index's page key: the table's key (only task items carry `open`, so the sort key
        // is always the task item's) and the index's.
        start: after.map(|t| {
            HashMap::from([
                (PARTITION_KEY.to_owned(), s(&t.task_id)),
                (SORT_KEY.to_owned(), s(TASK_SK)),
                ("open".to_owned(), s(OPEN_MARKER)),
                ("last_received_at".to_owned(), s(&t.last_received_at.rfc3339())),
            ])
        }),
    }
}

/// An index entry (or page key) read back; its `sk` (always the task item's) is not needed.
fn open_task(item: &HashMap<String, AttributeValue>) -> Option<OpenTask> {
    Some(OpenTask {
        task_id: item.get(PARTITION_KEY)?.as_s().ok()?.clone(),
        last_received_at: item.get("last_received_at")?.as_s().ok()?.parse().ok()?,
    })
}

impl ListOpenTasks for AwsPorts {
    async fn list_open_tasks(
        &self,
        received_before: Timestamp,
        after: Option<&OpenTask>,
    ) -> Result<OpenTaskPage, StoreError> {
        let q = open_tasks_query(received_before, after);
        let table = self.shared.table();
        let out = table
            .client
            .query()
            .table_name(&table.table_name)
            .index_name(OPEN_TASKS_INDEX)
            .key_condition_expression(q.key_condition)
            .set_expression_attribute_names(Some(q.names))
            .set_expression_attribute_values(Some(q.values))
            .limit(PAGE_SIZE)
            .set_exclusive_start_key(q.start)
            .send()
            .await
            .map_err(|e| unavailable("Query (open-tasks)", sdk_error_text(&e)))?;
        page(out.items(), out.last_evaluated_key())
    }
}

/// An index page read back, and where the next page starts: after the page key's entry, or,
/// when the page key is unreadable (its `last_received_at` edited by hand), after the page's
/// last readable entry, so the next page reads what follows it again (failing instead, every
/// run would stop on the same page; the sweep counts an unreadable entry once). No readable
/// entry and an unreadable page key: an error naming its task.
fn page(
    items: &[HashMap<String, AttributeValue>],
    page_key: Option<&HashMap<String, AttributeValue>>,
) -> Result<OpenTaskPage, StoreError> {
    let task_id = |item: &HashMap<String, AttributeValue>| {
        item.get(PARTITION_KEY).and_then(|v| v.as_s().ok()).map_or("<none>", String::as_str).to_owned()
    };
    let entries: Vec<IndexEntry> = items
        .iter()
        .map(|item| open_task(item).map_or_else(|| IndexEntry::Unreadable { task_id: task_id(item) }, IndexEntry::Open))
        .collect();
    let last_open = || entries.iter().rev().find_map(IndexEntry::open).cloned();
    // No key, or an empty one (read as the end, as `stemvault_aws::table` reads a Query's).
    let next = match page_key.filter(|key| !key.is_empty()) {
        None => None,
        Some(key) => match open_task(key).or_else(last_open) {
            Some(next) => Some(next),
            None => {
                return Err(StoreError::Malformed(format!(
                    "the open-tasks page key is unreadable (task {}: no readable last_received_at)",
                    task_id(key)
                )));
            }
        },
    };
    Ok(OpenTaskPage { entries, next })
}

impl CloseTask for AwsPorts {
    async fn close_task(&self, record: &TaskRecord) -> Result<Conditional, StoreError> {
        self.shared.table().close_open(record).await
    }
}

/// The cursor item: where the next run starts (after `after`, or at the oldest entry).
fn cursor_item(after: Option<&OpenTask>, now: Timestamp) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (PARTITION_KEY.to_owned(), s(CURSOR_TASK_ID)),
        (SORT_KEY.to_owned(), s(CURSOR_SK)),
        ("written_at".to_owned(), s(&now.rfc3339())),
    ]);
    if let Some(after) = after {
        item.insert("after_task_id".to_owned(), s(&after.task_id));
        item.insert("after_received_at".to_owned(), s(&after.last_received_at.rfc3339()));
    }
    item
}

/// The cursor an item holds; an unreadable one is None (start at the oldest entry).
fn read_cursor_item(item: &HashMap<String, AttributeValue>) -> Option<OpenTask> {
    Some(OpenTask {
        task_id: item.get("after_task_id")?.as_s().ok()?.clone(),
        last_received_at: item.get("after_received_at")?.as_s().ok()?.parse().ok()?,
    })
}

impl ReadCursor for AwsPorts {
    async fn read_cursor(&self) -> Result<Option<OpenTask>, StoreError> {
        let table = self.shared.table();
        let out = table
            .client
            .get_item()
            .table_name(&table.table_name)
            .key(PARTITION_KEY, AttributeValue::S(CURSOR_TASK_ID.to_owned()))
            .key(SORT_KEY, AttributeValue::S(CURSOR_SK.to_owned()))
            .consistent_read(true)
            // Its caller waits at most BEST_EFFORT_CALL_TIMEOUT.
            .customize()
            .config_override(stemvault_aws::best_effort_dynamodb())
            .send()
            .await
            .map_err(|e| unavailable("GetItem (sweep cursor)", sdk_error_text(&e)))?;
        Ok(out.item().and_then(read_cursor_item))
    }
}

impl WriteCursor for AwsPorts {
    async fn write_cursor(&self, after: Option<&OpenTask>) -> Result<(), StoreError> {
        let table = self.shared.table();
        table
            .client
            .put_item()
            .table_name(&table.table_name)
            .set_item(Some(cursor_item(after, self.now())))
            // Its caller waits at most BEST_EFFORT_CALL_TIMEOUT.
            .customize()
            .config_override(stemvault_aws::best_effort_dynamodb())
            .send()
            .await
            .map_err(|e| write_error("PutItem (sweep cursor)", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use suno_callbacks::TaskId;

    use super::*;

    /// A quiet sweep sends what an alarm reads run by run, zeros too, and leaves out a zero no
    /// alarm needs (it would keep a series billed).
    #[test]
    fn a_quiet_sweep_leaves_out_only_the_zeros_no_alarm_needs() {
        let names = |checked, oldest_open_seconds| -> Vec<&str> {
            let swept = Measure::Swept { checked, failed: 0, broken: 0, oldest_open_seconds };
            metrics_of("f", &swept).1.iter().map(|m| m.name).collect()
        };
        assert_eq!(names(0, Some(0)), [TASKS_NOT_SWEPT, OLDEST_OPEN_TASK_SECONDS]);
        assert_eq!(names(0, None), [TASKS_NOT_SWEPT]);
        assert_eq!(names(4, Some(90)), [TASKS_NOT_SWEPT, OLDEST_OPEN_TASK_SECONDS, TASKS_SWEPT]);
    }

    /// The cursor's read, whose first attempt stalls (a connection that never answers), is
    /// made again within the bound its caller gives it, not given up with the SDK's 3 s attempt.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_cursor_read_is_tried_again_within_its_bound() {
        let (sdk, calls) = stemvault_aws::test_http::sdk_stalling_first(200, b"{}");
        let queue_url = "http://scripted.test/1/q".into();
        let config = Config { table_name: "t".into(), queue_url, grace: std::time::Duration::ZERO };
        let ports = AwsPorts::new(&config, &sdk);
        let read = tokio::time::timeout(stemvault_vault::BEST_EFFORT_CALL_TIMEOUT, ports.read_cursor()).await;
        assert_eq!(read, Ok(Ok(None)), "no cursor yet");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cursor_item_is_no_task_and_in_no_index() {
        let after = OpenTask { task_id: "t-1".into(), last_received_at: at("2025-12-31T23:00:00.000Z") };
        let item = cursor_item(Some(&after), at("2026-01-01T00:00:00.000Z"));
        assert_eq!(item["task_id"], AttributeValue::S("#sweeper".into()));
        assert_eq!(item["sk"], AttributeValue::S("cursor".into()));
        for index_key in ["open", "reconcile", "last_received_at", "reconcile_at"] {
            assert!(!item.contains_key(index_key), "{index_key}");
        }
        assert!(TaskId::parse(CURSOR_TASK_ID).is_err(), "no task id names it");
        assert_ne!(CURSOR_SK, TASK_SK, "never a task item");
        assert_eq!(read_cursor_item(&item), Some(after));
        let from_the_start = cursor_item(None, at("2026-01-01T00:00:00.000Z"));
        assert_eq!(read_cursor_item(&from_the_start), None);
        assert_eq!(from_the_start.len(), 3);
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn entry(task_id: &str, last_received_at: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PARTITION_KEY.to_owned(), s(task_id)),
            (SORT_KEY.to_owned(), s(TASK_SK)),
            ("open".to_owned(), s(OPEN_MARKER)),
            ("last_received_at".to_owned(), s(last_received_at)),
        ])
    }

    /// A page key edited into an unreadable time: the next page starts after the last readable
    /// entry (and reads the bad one again then), not an error every run would stop at.
    #[test]
    fn an_unreadable_page_key_continues_after_the_last_readable_entry() {
        let good = entry("t-1", "2026-01-01T00:00:00.000Z");
        let bad = entry("t-2", "yesterday");
        let read = page(&[good.clone(), bad.clone()], Some(&bad)).unwrap();
        let t1 = OpenTask { task_id: "t-1".into(), last_received_at: at("2026-01-01T00:00:00.000Z") };
        let unreadable = |id: &str| IndexEntry::Unreadable { task_id: id.into() };
        assert_eq!(
            (read.entries, read.next),
            (vec![IndexEntry::Open(t1.clone()), unreadable("t-2")], Some(t1.clone()))
        );
        // After the last readable entry, not before the page key's.
        let t4 = entry("t-4", "later");
        assert_eq!(page(&[good.clone(), bad.clone(), t4.clone()], Some(&t4)).unwrap().next, Some(t1.clone()));
        assert_eq!(page(std::slice::from_ref(&good), Some(&good)).unwrap().next, Some(t1));
        assert_eq!(page(std::slice::from_ref(&good), None).unwrap().next, None);
        assert_eq!(page(std::slice::from_ref(&good), Some(&HashMap::new())).unwrap().next, None, "an empty key ends");
        assert_eq!(page(&[], Some(&HashMap::new())).unwrap().entries, vec![]);
        let err = page(std::slice::from_ref(&bad), Some(&bad)).unwrap_err();
        assert!(matches!(&err, StoreError::Malformed(why) if why.contains("t-2")), "{err}");
    }

    #[test]
    fn the_query_reads_open_tasks_delivered_before_the_grace_period() {
        let q = open_tasks_query(at("2026-01-01T00:00:00.000Z"), None);
        assert_eq!(q.key_condition, "#open = :open AND #received < :before");
        assert_eq!((q.names["#open"].as_str(), q.names["#received"].as_str()), ("open", "last_received_at"));
        assert_eq!(q.values[":open"], AttributeValue::S("open".into()));
        assert_eq!(q.values[":before"], AttributeValue::S("2026-01-01T00:00:00.000Z".into()));
        assert_eq!(q.start, None);
        for placeholder in q.names.keys().chain(q.values.keys()) {
            assert!(q.key_condition.contains(placeholder.as_str()), "{placeholder} unused");
        }
    }

    #[test]
    fn the_next_page_starts_after_the_last_entry_read() {
        let last = OpenTask { task_id: "t-1".into(), last_received_at: at("2025-12-31T23:00:00.000Z") };
        let start = open_tasks_query(at("2026-01-01T00:00:00.000Z"), Some(&last)).start.unwrap();
        assert_eq!(start.len(), 4, "the table's key (task_id, sk) and the index's: {start:?}");
        assert_eq!(start["task_id"], AttributeValue::S("t-1".into()));
        assert_eq!(start["sk"], AttributeValue::S("task".into()));
        assert_eq!(start["open"], AttributeValue::S("open".into()));
        assert_eq!(start["last_received_at"], AttributeValue::S("2025-12-31T23:00:00.000Z".into()));
        assert_eq!(open_task(&start), Some(last));
    }

    #[test]
    fn an_entry_with_an_unreadable_time_is_not_read() {
        let entry = |received: &str| {
            HashMap::from([
                ("task_id".to_owned(), s("t-1")),
                ("sk".to_owned(), s("task")),
                ("open".to_owned(), s("open")),
                ("last_received_at".to_owned(), s(received)),
            ])
        };
        assert_eq!(open_task(&entry("yesterday")), None);
        let read = open_task(&entry("2025-12-31T23:00:00Z")).map(|t| t.last_received_at);
        assert_eq!(read, Some(at("2025-12-31T23:00:00.000Z")));
    }
}

//! The task table and the download queue in memory, with the same items and conditional
//! semantics as `stemvault_aws::enqueue::TableAndQueue`: for the functions' unit tests and the ingest
//! benchmark (feature `test-support`, which only dev-dependencies enable). Never in a Lambda.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use suno_callbacks::TaskId;

use serde_dynamo::{AttributeValue, Item};

use super::{EnqueueFiles, MarkQueued, ReleaseClaims};
use crate::items::{self, PutCondition, TaskWrite};
use crate::{Clock, FileJob, FileStatus, LeaseEnd, LoadTask, QueueError, SaveTask, StoreError, TaskRecord, Timestamp};

/// A task table (item collections, with DynamoDB's conditions) and a queue in memory, with a
/// switch to make the queue fail, one to make saves fail, a latency for every call, and a
/// clock that is either the system's or virtual (sleeping advances it).
#[derive(Debug, Default)]
pub struct MemoryTableAndQueue {
    /// Task id -> sort key -> item.
    tables: Mutex<HashMap<String, BTreeMap<String, Item>>>,
    queue: Mutex<Vec<(String, FileJob)>>,
    next_message_id: AtomicU64,
    enqueue_failing: AtomicBool,
    /// Names of files whose jobs the queue refuses (the others go out).
    refused_jobs: Mutex<Vec<String>>,
    save_error: Mutex<Option<StoreError>>,
    /// The next whole-record writes that fail, and with what.
    failing_saves: Mutex<(u32, Option<StoreError>)>,
    /// A record another writer stores just before the next whole-record write (a write that
    /// lands between a read and the save).
    written_before_next_save: Mutex<Option<TaskRecord>>,
    /// A record another request commits after the next save's file and callback items and
    /// before its task item write: its items added or replaced, none taken away.
    committed_before_next_task_write: Mutex<Option<TaskRecord>>,
    /// The next task item writes that fail (unavailable) after the save's file and callback
    /// items were written: an attempt that stops between its writes.
    failing_task_writes: std::sync::atomic::AtomicU32,
    /// Marking files queued fails (the table unavailable for that write).
    mark_queued_failing: AtomicBool,
    /// Reads and saves of a record never answer (a table that hangs).
    table_stalled: AtomicBool,
    /// Reading this task's record panics (a bug its items reach).
    panics_loading: Mutex<Option<String>>,
    /// The next record reads that fail, and with what.
    failing_loads: Mutex<(u32, Option<StoreError>)>,
    /// How long every call takes (real time): a slow table and queue.
    latency: Mutex<Duration>,
    /// Virtual time in Unix ms; None: the system clock.
    virtual_ms: Option<AtomicI64>,
}

/// Every item of `record`, by sort key.
fn record_items(record: &TaskRecord) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    let mut add = |item: Result<Item, StoreError>| {
        let item = item.expect("a record a test sets up is storable");
        items.insert(sort_key(&item), item);
    };
    add(items::task_item(record));
    for (name, file) in &record.files {
        add(items::file_item(&record.task_id, name, file));
    }
    for (id, callback) in &record.callbacks {
        add(items::callback_item(&record.task_id, id, callback));
    }
    items
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryTableAndQueue {
    /// On the system clock.
    pub fn new() -> MemoryTableAndQueue {
        MemoryTableAndQueue::default()
    }

    /// On a virtual clock starting at `start`; `sleep` advances it instantly.
    pub fn with_virtual_clock(start: Timestamp) -> MemoryTableAndQueue {
        MemoryTableAndQueue { virtual_ms: Some(AtomicI64::new(start.unix_ms)), ..MemoryTableAndQueue::default() }
    }

    /// Move the virtual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.virtual_ms {
            ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    pub fn set_enqueue_failing(&self, failing: bool) {
        self.enqueue_failing.store(failing, Ordering::SeqCst);
    }

    /// Refuse the jobs of the files named `names` (a batch sent partly).
    pub fn refuse_jobs_for(&self, names: &[&str]) {
        *lock(&self.refused_jobs) = names.iter().map(|n| (*n).to_owned()).collect();
    }

    /// Make every call take `latency` of real time (zero: answer at once).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// What every call does first: give other tasks a turn, as a network round trip would, so
    /// concurrent requests really interleave; and take the latency set, if any. Other
    /// in-memory ports built on this one call it too.
    pub async fn interleave(&self) {
        let latency = *lock(&self.latency);
        if latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(latency).await;
        }
    }

    /// Make marking files queued fail, or work again.
    pub fn set_mark_queued_failing(&self, failing: bool) {
        self.mark_queued_failing.store(failing, Ordering::SeqCst);
    }

    /// Make every whole-record write fail with `error` (None: writes work again).
    pub fn set_save_error(&self, error: Option<StoreError>) {
        *lock(&self.save_error) = error;
    }

    /// Make the next `count` whole-record writes fail with `error`.
    pub fn fail_saves(&self, count: u32, error: StoreError) {
        *lock(&self.failing_saves) = (count, Some(error));
    }

    /// Make the next `count` record reads fail with `error`.
    pub fn fail_loads(&self, count: u32, error: StoreError) {
        *lock(&self.failing_loads) = (count, Some(error));
    }

    /// Have another writer store `record` (as [`Self::put_record`]) just before the next
    /// whole-record write: the write then finds what it read changed.
    pub fn write_before_next_save(&self, record: TaskRecord) {
        *lock(&self.written_before_next_save) = Some(record);
    }

    /// Have another request commit `record` between the next save's file items and its task
    /// item write (its items put over the stored ones, none taken away): the task item put
    /// then finds the version changed, the save's file items already written. More lenient
    /// than DynamoDB, whose put of the other's task item is conditional on the fence it read
    /// (the save's mark would refuse it, and the other would mark again first): the outcome
    /// this save sees, its items written and its put refused, is the same.
    pub fn commit_before_next_task_write(&self, record: TaskRecord) {
        *lock(&self.committed_before_next_task_write) = Some(record);
    }

    /// Make reads and saves of a record hang, or answer again.
    pub fn set_table_stalled(&self, stalled: bool) {
        self.table_stalled.store(stalled, Ordering::SeqCst);
    }

    /// A read or save never answers while the table is stalled.
    async fn table_call(&self) {
        self.interleave().await;
        if self.table_stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    /// Make reading `task_id`'s record panic (None: no panic).
    pub fn panic_loading(&self, task_id: Option<&str>) {
        *lock(&self.panics_loading) = task_id.map(str::to_owned);
    }

    /// Make the next `count` task item writes fail after their file and callback items land.
    pub fn fail_task_writes(&self, count: u32) {
        self.failing_task_writes.store(count, Ordering::SeqCst);
    }

    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        let items: Vec<Item> = lock(&self.tables).get(task_id)?.values().cloned().collect();
        items::assemble(items).ok().flatten()
    }

    /// Every stored record, in no particular order.
    pub fn records(&self) -> Vec<TaskRecord> {
        let ids: Vec<String> = lock(&self.tables).keys().cloned().collect();
        ids.iter().filter_map(|id| self.record(id)).collect()
    }

    /// Store a record as is, every item of it (to set up a test).
    pub fn put_record(&self, record: TaskRecord) {
        let items = record_items(&record);
        lock(&self.tables).insert(record.task_id.clone(), items);
    }

    /// Every task item, with its task id, readable or not: what a secondary index projects.
    pub fn task_items(&self) -> Vec<(String, Item)> {
        let tables = lock(&self.tables);
        tables.iter().filter_map(|(id, items)| Some((id.clone(), items.get(items::TASK_SK)?.clone()))).collect()
    }

    /// Change the task item of `task_id` in place, if there is one and `change` says it applies
    /// (a conditional update). Returns whether it did.
    pub fn update_task_item(&self, task_id: &str, change: impl FnOnce(&mut Item) -> bool) -> bool {
        let mut tables = lock(&self.tables);
        let Some(item) = tables.get_mut(task_id).and_then(|items| items.get_mut(items::TASK_SK)) else { return false };
        let mut changed = item.clone();
        if !change(&mut changed) {
            return false;
        }
        *item = changed;
        true
    }

    /// Take a settled task read as `record` out of the open-tasks index (and the fence of
    /// the save that marked it), if its task item is still as read (version and
    /// `last_received_at`), as `TaskTable::close_open` does.
    pub fn close_open(&self, record: &TaskRecord) -> crate::Conditional {
        // As the expression: `version = :read AND last_received_at = :at`, and a new version.
        let at = record.last_received_at.rfc3339();
        let closed = self.update_task_item(&record.task_id, |item| {
            let as_read = number(item, "version") == Some(record.version)
                && string(item, "last_received_at") == Some(at.as_str());
            if as_read {
                item.remove("open");
                item.remove("adding");
                item.remove("adding_at");
                item.insert("version".into(), AttributeValue::N((record.version + 1).to_string()));
            }
            as_read
        });
        if closed { crate::Conditional::Applied } else { crate::Conditional::Conflict }
    }

    /// How many tasks have a task item.
    pub fn record_count(&self) -> usize {
        lock(&self.tables).values().filter(|items| items.contains_key(items::TASK_SK)).count()
    }

    /// Every item stored for a task, by sort key.
    pub fn items(&self, task_id: &str) -> BTreeMap<String, Item> {
        lock(&self.tables).get(task_id).cloned().unwrap_or_default()
    }

    /// Every message sent so far, with its id, in order.
    pub fn messages(&self) -> Vec<(String, FileJob)> {
        lock(&self.queue).clone()
    }
}

fn sort_key(item: &Item) -> String {
    match item.get(items::SORT_KEY) {
        Some(AttributeValue::S(sk)) => sk.clone(),
        _ => String::new(),
    }
}

fn number(item: &Item, attribute: &str) -> Option<u64> {
    match item.get(attribute) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn string<'a>(item: &'a Item, attribute: &str) -> Option<&'a str> {
    match item.get(attribute) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// Whether `condition` holds for the stored item (None: no item), as DynamoDB decides it,
/// at `now` (`#lease < :now`, in seconds).
fn holds(condition: &PutCondition, stored: Option<&Item>, now: Timestamp) -> bool {
    match (condition, stored) {
        (PutCondition::Absent | PutCondition::Unclaimed { .. }, None) => true,
        (PutCondition::Absent, Some(_)) => false,
        (PutCondition::Unclaimed { .. }, Some(item)) if number(item, "rev") != Some(1) => false,
        (PutCondition::Unclaimed { claimant }, Some(item)) => match string(item, "status") {
            Some("pending") => true,
            Some("enqueuing") => {
                string(item, "claim") == Some(claimant.as_str())
                    || number(item, "lease_until")
                        .and_then(|lease| i64::try_from(lease).ok())
                        .is_some_and(|lease| LeaseEnd::from_unix_seconds(lease).lapsed_at(now))
            }
            _ => false,
        },
        (PutCondition::Rev(rev), Some(item)) => number(item, "rev") == Some(*rev),
        (PutCondition::Version { version, adding }, Some(item)) => {
            let fence = adding.map(|fence| (fence.generation, fence.at));
            number(item, "version") == Some(*version)
                && fence == number(item, "adding").map(|generation| (generation, number(item, "adding_at")))
        }
        (PutCondition::Rev(_) | PutCondition::Version { .. }, None) => false,
    }
}

impl LoadTask for MemoryTableAndQueue {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.table_call().await;
        if lock(&self.panics_loading).as_deref() == Some(task_id.as_str()) {
            panic!("a bug reached by task {task_id}");
        }
        if let (count @ 1.., Some(error)) = &mut *lock(&self.failing_loads) {
            *count -= 1;
            return Err(error.clone());
        }
        let items: Vec<Item> =
            lock(&self.tables).get(task_id.as_str()).map(|t| t.values().cloned().collect()).unwrap_or_default();
        items::assemble(items)
    }
}

impl SaveTask for MemoryTableAndQueue {
    /// The puts one at a time, as the DynamoDB adapter sends them: a conflict leaves the
    /// puts before it in place.
    async fn save_task(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        self.table_call().await;
        if let Some(error) = lock(&self.save_error).clone() {
            return Err(error);
        }
        if let (count @ 1.., Some(error)) = &mut *lock(&self.failing_saves) {
            *count -= 1;
            return Err(error.clone());
        }
        let concurrent = lock(&self.written_before_next_save).take();
        if let Some(record) = concurrent {
            self.put_record(record);
        }
        let plan = items::plan_save(before, after)?;
        let now = self.now();
        let mut tables = lock(&self.tables);
        let items = tables.entry(after.task_id.clone()).or_default();
        if let Some(mark) = plan.mark_open {
            // As the expression: the version and the fence read.
            let as_read = PutCondition::Version { version: mark.version, adding: mark.read };
            let task = match items.get_mut(items::TASK_SK) {
                Some(task) if holds(&as_read, Some(&*task), now) => task,
                _ => return Err(StoreError::Conflict),
            };
            task.insert("open".to_owned(), AttributeValue::S(crate::OPEN_MARKER.to_owned()));
            task.insert("last_received_at".to_owned(), mark.last_received_at);
            task.insert("adding".to_owned(), AttributeValue::N(mark.generation.to_string()));
            task.insert("adding_at".to_owned(), AttributeValue::N(mark.at.to_string()));
        }
        // A first save's own file items, given back on a conflict as TaskTable::save does.
        let mut taken = Vec::new();
        for put in plan.files.into_iter().chain(plan.callbacks) {
            let sk = sort_key(&put.item);
            if holds(&put.condition, items.get(&sk), now) {
                if matches!(put.condition, PutCondition::Unclaimed { .. }) {
                    taken.push(sk.clone());
                }
                items.insert(sk, put.item);
            } else if !sk.starts_with(items::CALLBACK_SK_PREFIX) {
                for sk in &taken {
                    let Some(item) = items.get_mut(sk) else { continue };
                    item.insert("status".to_owned(), AttributeValue::S(crate::FileStatus::Pending.as_str().to_owned()));
                    item.remove("claim");
                    item.insert("lease_until".to_owned(), AttributeValue::N(now.unix_seconds().to_string()));
                }
                return Err(StoreError::Conflict);
            }
        }
        if let Some(other) = lock(&self.committed_before_next_task_write).take_if(|_| plan.task.is_some()) {
            items.extend(record_items(&other));
        }
        let stop = |n: u32| n.checked_sub(1);
        if plan.task.is_some()
            && self.failing_task_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, stop).is_ok()
        {
            return Err(StoreError::Unavailable("injected: the task item write failed".into()));
        }
        match plan.task {
            Some(TaskWrite::Put(put)) => {
                if !holds(&put.condition, items.get(items::TASK_SK), now) {
                    return Err(StoreError::Conflict);
                }
                items.insert(items::TASK_SK.to_owned(), put.item);
            }
            Some(TaskWrite::CountDelivery { last_received_at, watched }) => {
                let Some(item) = items.get_mut(items::TASK_SK) else { return Err(StoreError::Conflict) };
                if item.contains_key("not_found_since") || item.contains_key("reconcile") != watched {
                    return Err(StoreError::Conflict);
                }
                for field in ["deliveries", "version"] {
                    let n = number(item, field).unwrap_or(0) + 1;
                    item.insert(field.to_owned(), AttributeValue::N(n.to_string()));
                }
                item.insert("last_received_at".to_owned(), last_received_at);
            }
            None => {}
        }
        for id in plan.redelivered {
            if let Some(item) = items.get_mut(&items::callback_sk(&id)) {
                let deliveries = number(item, "deliveries").unwrap_or(0) + 1;
                item.insert("deliveries".to_owned(), AttributeValue::N(deliveries.to_string()));
            }
        }
        Ok(())
    }
}

impl EnqueueFiles for MemoryTableAndQueue {
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, QueueError>> {
        self.interleave().await;
        if self.enqueue_failing.load(Ordering::SeqCst) {
            return jobs.iter().map(|_| Err(QueueError::transient("SendMessageBatch", "queue switched off"))).collect();
        }
        let refused = lock(&self.refused_jobs).clone();
        let mut queue = lock(&self.queue);
        jobs.iter()
            .map(|job| {
                if refused.contains(&job.name) {
                    return Err(QueueError::transient("SendMessageBatch", "refused by the test"));
                }
                let id = format!("m-{}", self.next_message_id.fetch_add(1, Ordering::SeqCst));
                queue.push((id.clone(), job.clone()));
                Ok(id)
            })
            .collect()
    }
}

impl MarkQueued for MemoryTableAndQueue {
    async fn mark_queued(&self, task_id: &TaskId, names: &[String]) -> Result<(), StoreError> {
        self.interleave().await;
        if self.mark_queued_failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: marking queued failed".into()));
        }
        let mut tables = lock(&self.tables);
        let Some(task) = tables.get_mut(task_id.as_str()).and_then(|t| t.get_mut(items::TASK_SK)) else {
            return Ok(());
        };
        let version = number(task, "version").unwrap_or(0) + 1;
        task.insert("version".to_owned(), AttributeValue::N(version.to_string()));
        let queued = task.entry("queued".to_owned()).or_insert_with(|| AttributeValue::Ss(Vec::new()));
        if let AttributeValue::Ss(set) = queued {
            for name in names {
                if !set.contains(name) {
                    set.push(name.clone());
                }
            }
        }
        Ok(())
    }
}

impl ReleaseClaims for MemoryTableAndQueue {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        self.interleave().await;
        let mut tables = lock(&self.tables);
        let Some(items) = tables.get_mut(task_id.as_str()) else { return Ok(()) };
        let released_at = crate::LeaseEnd::at(self.now());
        for name in names {
            let Some(item) = items.get_mut(&items::file_sk(name)) else { continue };
            let (_, mut file) = items::read_file_item(item.clone())?;
            if file.status == FileStatus::Enqueuing && file.claim.as_deref() == Some(claimant) {
                file.status = FileStatus::Pending;
                file.claim = None;
                file.lease_until = Some(released_at);
                file.rev += 1;
                *item = items::file_item(task_id.as_str(), name, &file)?;
            }
        }
        Ok(())
    }
}

impl Clock for MemoryTableAndQueue {
    fn now(&self) -> Timestamp {
        match &self.virtual_ms {
            Some(ms) => Timestamp::from_unix_ms(ms.load(Ordering::SeqCst)),
            None => Timestamp::now(),
        }
    }

    async fn sleep(&self, duration: Duration) {
        match &self.virtual_ms {
            Some(_) => {
                self.advance(duration);
                tokio::task::yield_now().await;
            }
            None => tokio::time::sleep(duration).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: &str, rev: Option<u64>, claim: &str, lease_until: i64) -> Item {
        let mut item: HashMap<String, AttributeValue> = HashMap::from([
            ("status".to_owned(), AttributeValue::S(status.to_owned())),
            ("claim".to_owned(), AttributeValue::S(claim.to_owned())),
            ("lease_until".to_owned(), AttributeValue::N(lease_until.to_string())),
        ]);
        if let Some(rev) = rev {
            item.insert("rev".to_owned(), AttributeValue::N(rev.to_string()));
        }
        item.into()
    }

    /// As `stemvault_aws::table`'s expression: a first save takes an item nobody holds only
    /// while nobody has written it since a first save (rev 1).
    #[test]
    fn a_first_save_takes_only_items_at_their_first_revision() {
        let unclaimed = PutCondition::Unclaimed { claimant: "me".into() };
        let now = Timestamp::from_unix_ms(100_000);
        for (stored, takes) in [
            (item("pending", Some(1), "", 0), true),
            (item("enqueuing", Some(1), "me", 200), true),
            (item("enqueuing", Some(1), "other", 50), true),
            (item("enqueuing", Some(1), "other", 200), false),
            (item("pending", Some(3), "", 0), false),
            (item("enqueuing", Some(2), "me", 200), false),
            (item("pending", None, "", 0), false),
            (item("downloading", Some(1), "w", 200), false),
        ] {
            assert_eq!(holds(&unclaimed, Some(&stored), now), takes, "{stored:?}");
        }
        assert!(holds(&unclaimed, None, now));
    }

    /// As the expression: a task item put requires the version and the fence as read, so a
    /// mark made since the read (which sets a fence) refuses it.
    #[test]
    fn a_task_item_put_is_refused_by_a_mark_since_the_read() {
        let fence = |generation, at| crate::AddFence { generation, at: Some(at) };
        let task = |adding: Option<crate::AddFence>| -> Item {
            let mut item = HashMap::from([("version".to_owned(), AttributeValue::N("4".into()))]);
            if let Some(adding) = adding {
                item.insert("adding".to_owned(), AttributeValue::N(adding.generation.to_string()));
                if let Some(at) = adding.at {
                    item.insert("adding_at".to_owned(), AttributeValue::N(at.to_string()));
                }
            }
            item.into()
        };
        let version = |version, adding| PutCondition::Version { version, adding };
        // A version condition reads no lease: any time will do.
        const ZERO: Timestamp = Timestamp { unix_ms: 0 };
        let unfenced = version(4, None);
        assert!(holds(&unfenced, Some(&task(None)), ZERO));
        assert!(!holds(&unfenced, Some(&task(Some(fence(5, 100)))), ZERO), "marked since");
        assert!(holds(&version(4, Some(fence(5, 100))), Some(&task(Some(fence(5, 100)))), ZERO));
        assert!(!holds(&version(4, Some(fence(5, 100))), Some(&task(Some(fence(6, 100)))), ZERO));
        assert!(!holds(&version(4, Some(fence(5, 100))), Some(&task(Some(fence(5, 101)))), ZERO), "marked again since");
        assert!(!holds(&version(3, None), Some(&task(None)), ZERO));
        assert!(!holds(&unfenced, None, ZERO));
        // A fence written without its time (by hand) is matched as such.
        let by_hand = Some(crate::AddFence { generation: 5, at: None });
        assert!(holds(&version(4, by_hand), Some(&task(by_hand)), ZERO));
        assert!(!holds(&version(4, by_hand), Some(&task(Some(fence(5, 100)))), ZERO));
    }
}

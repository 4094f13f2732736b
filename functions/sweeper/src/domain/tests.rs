use std::time::Duration;
use tracing::Level;

use stemvault_vault::download::SettlePlan;
use stemvault_vault::enqueue::memory::MemoryTableAndQueue;
use stemvault_vault::ingest::{BodyInfo, Claimant, ingest_callback};
use stemvault_vault::{FileJob, FileStatus, LeaseEnd, TaskRecord, Timestamp, VaultState};
use suno_callbacks::{CallbackEvent, Details, Family, FileRef, Stage, TaskId};

use super::*;

const T0: i64 = 1_763_910_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(T0 + secs * 1000)
}

/// A `final` callback of `task` naming the files `names`, and its body whose digest is `digest`.
fn final_callback(task: &str, names: &[&str], digest: &str) -> (CallbackEvent, BodyInfo) {
    let event = CallbackEvent {
        task_id: TaskId::parse(task).unwrap(),
        family: Family::VocalSeparation,
        stage: Stage::Final,
        code: 200,
        message: "ok".into(),
        files: names.iter().map(|n| FileRef { name: (*n).into(), url: format!("https://h/s/{n}.mp3?sig=z") }).collect(),
        streams: vec![],
        details: Details::None,
    };
    let body = BodyInfo {
        sha256_hex: digest.into(),
        archive_key: format!("tasks/{task}/callbacks/final-{digest}.json"),
        bytes: 2,
        arrived_at: None,
    };
    (event, body)
}

/// The record a request wrote at `received` before dying: every file `enqueuing` under its
/// claim, then set to `statuses`.
fn orphaned(task: &str, received: Timestamp, statuses: &[(&str, FileStatus)]) -> TaskRecord {
    let names: Vec<&str> = statuses.iter().map(|(n, _)| *n).collect();
    let (event, body) = final_callback(task, &names, "ab");
    let dead = Claimant { id: "dead-request".into(), lease: Duration::from_secs(15) };
    let mut record = ingest_callback(None, &event, &body, &dead, received).record;
    for (name, status) in statuses {
        let file = record.files.get_mut(*name).unwrap();
        file.status = *status;
        if *status != FileStatus::Enqueuing {
            file.claim = None;
            file.lease_until = None;
        }
    }
    record
}

/// The task table and queue in memory, with the sweep cursor item.
struct MemoryPorts {
    table: MemoryTableAndQueue,
    cursor: std::sync::Mutex<Option<OpenTask>>,
    /// Every cursor write tried, in order.
    cursor_writes: std::sync::Mutex<Vec<Option<OpenTask>>>,
    /// Index pages read before every further read goes wrong, and how (None: never). The
    /// table's latency does not apply to the index.
    index_fault: std::sync::Mutex<Option<(usize, IndexFault)>>,
    /// Every cursor read and write goes wrong so.
    cursor_fault: std::sync::Mutex<Option<IndexFault>>,
    /// Every measure emitted, in order.
    measures: std::sync::Mutex<Vec<Measure>>,
    /// Entries of one time listed by task id descending (DynamoDB promises no order among
    /// them), not ascending.
    ties_reversed: std::sync::atomic::AtomicBool,
    /// Index entries that lag their task item (the index is eventually consistent): the
    /// delivery time the index still lists a task at, by task id.
    index_lags: std::sync::Mutex<std::collections::HashMap<String, Timestamp>>,
    /// Tasks whose index entry is unreadable (a `last_received_at` edited by hand), listed at
    /// their task's place.
    unreadable_entries: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How an index read goes wrong.
#[derive(Debug, Clone, Copy)]
enum IndexFault {
    Fails,
    Hangs,
}

impl MemoryPorts {
    fn with_virtual_clock(start: Timestamp) -> MemoryPorts {
        MemoryPorts {
            table: MemoryTableAndQueue::with_virtual_clock(start),
            cursor: Default::default(),
            cursor_writes: Default::default(),
            index_fault: Default::default(),
            cursor_fault: Default::default(),
            measures: Default::default(),
            ties_reversed: Default::default(),
            index_lags: Default::default(),
            unreadable_entries: Default::default(),
        }
    }
}

impl std::ops::Deref for MemoryPorts {
    type Target = MemoryTableAndQueue;
    fn deref(&self) -> &MemoryTableAndQueue {
        &self.table
    }
}

stemvault_vault::delegate_enqueue_ports!(MemoryPorts => table);

impl EmitMetrics<Measure> for MemoryPorts {
    fn emit_metrics(&self, measure: &Measure) {
        self.measures.lock().unwrap().push(*measure);
    }
}

impl MemoryPorts {
    async fn cursor_call(&self) -> Result<(), StoreError> {
        let fault = *self.cursor_fault.lock().unwrap();
        match fault {
            Some(IndexFault::Hangs) => std::future::pending().await,
            Some(IndexFault::Fails) => Err(StoreError::Unavailable("the table is throttled".into())),
            None => Ok(()),
        }
    }
}

impl ReadCursor for MemoryPorts {
    async fn read_cursor(&self) -> Result<Option<OpenTask>, StoreError> {
        self.cursor_call().await?;
        Ok(self.cursor.lock().unwrap().clone())
    }
}

impl WriteCursor for MemoryPorts {
    async fn write_cursor(&self, after: Option<&OpenTask>) -> Result<(), StoreError> {
        self.cursor_writes.lock().unwrap().push(after.cloned());
        self.cursor_call().await?;
        *self.cursor.lock().unwrap() = after.cloned();
        Ok(())
    }
}

/// The sparse `open-tasks` index: records carrying `open`, oldest delivery first, two per
/// page (so sweeps over a few tasks already page).
impl ListOpenTasks for MemoryPorts {
    async fn list_open_tasks(
        &self,
        received_before: Timestamp,
        after: Option<&OpenTask>,
    ) -> Result<OpenTaskPage, StoreError> {
        const PAGE: usize = 2;
        tokio::task::yield_now().await;
        let fault = match self.index_fault.lock().unwrap().as_mut() {
            Some((0, fault)) => Some(*fault),
            Some((left, _)) => {
                *left -= 1;
                None
            }
            None => None,
        };
        match fault {
            Some(IndexFault::Hangs) => std::future::pending::<()>().await,
            Some(IndexFault::Fails) => return Err(StoreError::Unavailable("the index is throttled".into())),
            None => {}
        }
        // As DynamoDB refuses a start key outside the key condition's range.
        if after.is_some_and(|a| a.last_received_at >= received_before) {
            let refusal = "The provided starting key is outside query boundaries based on provided condition";
            return Err(StoreError::Malformed(refusal.into()));
        }
        let lags = self.index_lags.lock().unwrap().clone();
        let mut open: Vec<OpenTask> = self
            .records()
            .into_iter()
            .filter(|r| r.open.is_some())
            .map(|r| OpenTask {
                last_received_at: lags.get(&r.task_id).copied().unwrap_or(r.last_received_at),
                task_id: r.task_id,
            })
            .filter(|t| t.last_received_at < received_before)
            .collect();
        let reversed = self.ties_reversed.load(std::sync::atomic::Ordering::Relaxed);
        let order = |a: &OpenTask, b: &OpenTask| {
            let ties = if reversed { b.task_id.cmp(&a.task_id) } else { a.task_id.cmp(&b.task_id) };
            a.last_received_at.cmp(&b.last_received_at).then(ties)
        };
        open.sort_by(order);
        if let Some(after) = after {
            open.retain(|t| order(t, after).is_gt());
        }
        let more = open.len() > PAGE;
        open.truncate(PAGE);
        let unreadable = self.unreadable_entries.lock().unwrap().clone();
        // As the adapter reads a page key that is unreadable: after the last readable entry.
        let readable = |t: &&OpenTask| !unreadable.contains(&t.task_id);
        let next = match open.iter().rev().find(readable) {
            Some(last) if more => Some(last.clone()),
            None if more => return Err(StoreError::Malformed("the open-tasks page key is unreadable".into())),
            _ => None,
        };
        let entries = open
            .into_iter()
            .map(|t| match unreadable.contains(&t.task_id) {
                true => IndexEntry::Unreadable { task_id: t.task_id },
                false => IndexEntry::Open(t),
            })
            .collect();
        Ok(OpenTaskPage { entries, next })
    }
}

/// As DynamoDB applies the update `aws.rs` builds: `open` removed when the task item is still
/// at the version and delivery time read.
impl CloseTask for MemoryPorts {
    async fn close_task(&self, record: &TaskRecord) -> Result<Conditional, StoreError> {
        Ok(self.table.close_open(record))
    }
}

fn sent(ports: &MemoryPorts) -> Vec<(String, String)> {
    let mut jobs: Vec<(String, String)> = ports.messages().into_iter().map(|(_, j)| (j.task_id, j.name)).collect();
    jobs.sort();
    jobs
}

fn statuses(ports: &MemoryPorts, task: &str) -> Vec<(String, FileStatus)> {
    ports.record(task).unwrap().files.into_iter().map(|(n, f)| (n, f.status)).collect()
}

const OLD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const FRESH: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test]
async fn a_sweep_that_finds_no_open_task_is_idle() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert!(report.is_idle(), "{report:?}");
    // Delivered within the grace period: still nothing to check.
    ports.put_record(orphaned(FRESH, at(0), &[("p", FileStatus::Pending)]));
    assert!(sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap().is_idle());
}

#[tokio::test]
async fn old_pending_and_lapsed_enqueuing_files_are_sent_and_nothing_else() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    use FileStatus::*;
    ports.put_record(orphaned(
        OLD,
        at(0),
        &[("p", Pending), ("e", Enqueuing), ("q", Queued), ("d", Downloading), ("s", Stored), ("f", Failed)],
    ));
    ports.advance(Duration::from_secs(250));
    // Delivered 30 s ago: its request may still be sending.
    ports.put_record(orphaned(FRESH, at(220), &[("p", Pending), ("e", Enqueuing)]));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();

    assert_eq!(sent(&ports), [(OLD.into(), "e".into()), (OLD.into(), "p".into())]);
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 2, 0));
    assert!(!report.stopped_early && !report.is_idle());
    assert_eq!(
        *ports.measures.lock().unwrap(),
        [Measure::Swept { checked: 1, failed: 0, broken: 0, oldest_open_seconds: Some(age_of(&ports, at(0))) }],
        "one count per run"
    );
    let old = ports.record(OLD).unwrap();
    let items = ports.items(OLD);
    for name in ["p", "e"] {
        // Claimed (one put of the file item, which keeps saying so), then named in the task
        // item's `queued` set (one update for both), which makes it read as queued.
        let f = &old.files[name];
        assert_eq!((f.status, f.claim.as_deref(), f.rev), (Queued, Some("sweeper-1"), 1), "{name}");
        let item = items[&stemvault_vault::items::file_sk(name)].clone();
        let (_, as_stored) = stemvault_vault::items::read_file_item(item).unwrap();
        assert_eq!(as_stored.status, Enqueuing, "{name}");
    }
    assert_eq!(report.manifests_requested, 0);
    let untouched = [("d", Downloading), ("f", Failed), ("q", Queued), ("s", Stored)];
    for (name, status) in untouched {
        assert_eq!(old.files[name].status, status, "{name}");
    }
    assert_eq!(statuses(&ports, FRESH), [("e".to_owned(), Enqueuing), ("p".to_owned(), Pending)]);

    // A second run finds nothing left to send.
    let again = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((again.tasks_checked, again.files_requeued), (1, 0));
    assert_eq!(ports.messages().len(), 2);

    // Once past the grace period, the fresh task's orphans are sent too.
    ports.advance(Duration::from_secs(120));
    let later = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!(later.files_requeued, 2);
    assert_eq!(statuses(&ports, FRESH), [("e".to_owned(), Queued), ("p".to_owned(), Queued)]);
}

/// Another writer claims a file between the sweep's read and its save (a redelivered message
/// began copying it): the save conflicts, the sweep reads the task again and sends only what
/// is still stranded, not the file being copied.
#[tokio::test]
async fn a_file_claimed_by_another_writer_between_read_and_save_is_not_sent() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p", FileStatus::Pending), ("e", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(250));
    let mut claimed = ports.record(OLD).unwrap();
    let p = claimed.files.get_mut("p").unwrap();
    (p.status, p.claim, p.rev) = (FileStatus::Downloading, Some("worker-9".into()), p.rev + 1);
    p.lease_until = Some(LeaseEnd::at(at(250 + 900)));
    ports.write_before_next_save(claimed);

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!(sent(&ports), [(OLD.into(), "e".into())]);
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 1, 0));
    let p = &ports.record(OLD).unwrap().files["p"];
    assert_eq!((p.status, p.claim.as_deref()), (FileStatus::Downloading, Some("worker-9")));
}

/// A task whose every save conflicts is given up after the settings' attempts, as a failure
/// a later run retries (not a broken task), with nothing sent.
#[tokio::test]
async fn a_task_whose_saves_keep_conflicting_is_left_to_a_later_run() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(250));
    let settings = Settings::default();
    ports.fail_saves(settings.max_save_attempts, StoreError::Conflict);

    let report = sweep(&ports, &settings, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.tasks_failed, report.tasks_broken), (1, 1, 0));
    assert!(ports.messages().is_empty());
    assert_eq!(statuses(&ports, OLD), [("p".to_owned(), FileStatus::Pending)]);
    // The next run, the table quiet again, sends it.
    let again = sweep(&ports, &settings, "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((again.files_requeued, again.tasks_failed), (1, 0));
}

#[tokio::test]
async fn a_file_still_queued_or_downloading_when_its_message_cannot_be_on_the_queue_is_sent_again() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    use FileStatus::*;
    let mut record = orphaned(OLD, at(0), &[("q", Queued), ("d", Downloading), ("redelivered", Downloading)]);
    for (name, lease_until) in [("q", 15), ("d", 900), ("redelivered", 86_400)] {
        record.files.get_mut(name).unwrap().lease_until = Some(LeaseEnd::at(at(lease_until)));
    }
    ports.put_record(record);
    let stop_at = at(100 * 86_400);

    // Within the queue's retention of the last lease, a message may still come back.
    ports.advance(stemvault_vault::download::DOWNLOAD_QUEUE_RETENTION);
    let report = sweep(&ports, &Settings::default(), "sweeper-1", stop_at).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 0));
    assert!(ports.messages().is_empty());

    ports.advance(Duration::from_secs(901));
    let report = sweep(&ports, &Settings::default(), "sweeper-2", stop_at).await.unwrap();
    assert_eq!(sent(&ports), [(OLD.into(), "d".into()), (OLD.into(), "q".into())]);
    assert_eq!(report.files_requeued, 2);
    let old = ports.record(OLD).unwrap();
    for name in ["d", "q"] {
        assert_eq!((old.files[name].status, old.files[name].claim.as_deref()), (Queued, Some("sweeper-2")), "{name}");
    }
    assert_eq!(old.files["redelivered"].status, Downloading);
}

/// The re-send of a stranded file whose task item write fails: the file's item says the
/// sweeper's claim, the task item's old `queued` set still names it; it reads as uncommitted,
/// not as queued, so the next sweep takes it once that claim lapses (not 4 days later).
#[tokio::test]
async fn a_stranded_file_whose_task_item_write_failed_is_taken_by_the_next_sweep() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("q", FileStatus::Queued)]);
    record.files.get_mut("q").unwrap().lease_until = Some(LeaseEnd::at(at(15)));
    ports.put_record(record);
    let stop_at = at(100 * 86_400);
    ports.advance(stemvault_vault::download::DOWNLOAD_QUEUE_RETENTION + Duration::from_secs(60));

    ports.fail_task_writes(1);
    let failed = sweep(&ports, &Settings::default(), "sweeper-1", stop_at).await.unwrap();
    assert_eq!((failed.files_requeued, failed.tasks_failed), (0, 1), "{failed:?}");
    assert!(ports.messages().is_empty());
    assert_eq!(ports.record(OLD).unwrap().files["q"].status, FileStatus::Enqueuing, "not read as queued");

    ports.advance(Duration::from_secs(60));
    let healed = sweep(&ports, &Settings::default(), "sweeper-2", stop_at).await.unwrap();
    assert_eq!(healed.files_requeued, 1, "{healed:?}");
    assert_eq!(sent(&ports), [(OLD.into(), "q".into())]);
}

#[tokio::test]
async fn an_unexpired_enqueue_claim_is_left_to_its_holder() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("e", FileStatus::Enqueuing)]);
    record.files.get_mut("e").unwrap().lease_until = Some(LeaseEnd::at(at(1_000)));
    ports.put_record(record);
    ports.advance(Duration::from_secs(300));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 0));
    assert!(ports.messages().is_empty());
    assert_eq!(ports.record(OLD).unwrap().files["e"].claim.as_deref(), Some("dead-request"));
}

/// A callback that reopens a settled task (a new file over stored ones) whose request
/// stopped after its file items, before its task item: the save marked the task open first,
/// so the sweeper finds it once the grace period is over, commits the file and sends it.
#[tokio::test]
async fn a_file_of_a_reopen_that_stopped_before_its_task_item_is_sent() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut settled = orphaned(OLD, at(0), &[("s", FileStatus::Stored)]);
    settled.vault = VaultState::Complete;
    settled.manifest_key = Some(format!("tasks/{OLD}/manifest.json"));
    settled.open = None; // as the settle write leaves it
    ports.put_record(settled.clone());
    ports.advance(Duration::from_secs(3_600));

    let (event, body) = final_callback(OLD, &["n"], "cd");
    let stopped = Claimant { id: "stopped-request".into(), lease: Duration::from_secs(15) };
    let reopened = ingest_callback(Some(&settled), &event, &body, &stopped, ports.now()).record;
    ports.fail_task_writes(1);
    assert!(ports.save_task(Some(&settled), &reopened).await.is_err());
    let left = ports.record(OLD).unwrap();
    assert_eq!((left.vault, left.open.is_some()), (VaultState::Complete, true), "the task item: settled, marked open");
    assert_eq!(left.files["n"].status, FileStatus::Enqueuing);

    // Within the grace period of the stopped request: left to it.
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(100_000)).await.unwrap();
    assert_eq!(report.tasks_checked, 0, "{report:?}");
    ports.advance(Duration::from_secs(300));
    let report = sweep(&ports, &Settings::default(), "sweeper-2", at(100_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 1), "{report:?}");
    assert_eq!(sent(&ports), [(OLD.into(), "n".into())]);
    let swept = ports.record(OLD).unwrap();
    assert_eq!((swept.vault, swept.files["n"].status), (VaultState::Pending, FileStatus::Queued));
}

/// The same stopped reopen, its file then copied before anything committed it (a message of
/// it redriven from the dead-letter queue): the sweeper commits the file, so that the
/// manifest job it sends writes a manifest of it and settles the task, rather than finding
/// the task item settled, doing nothing, and being asked again at every run.
#[tokio::test]
async fn a_file_of_a_stopped_reopen_settled_since_is_committed_before_its_manifest_job() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("s", FileStatus::Stored), ("n", FileStatus::Stored)]);
    (record.vault, record.manifest_key) = (VaultState::Complete, Some(format!("tasks/{OLD}/manifest.json")));
    let generation = record.generation;
    record.files.get_mut("n").unwrap().generation = Some(generation + 1);
    assert!(record.is_settled() && record.open.is_some() && record.has_uncommitted_files());
    ports.put_record(record.clone());
    ports.advance(Duration::from_secs(300));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.manifests_requested, report.tasks_failed), (1, 1, 0), "{report:?}");
    assert_eq!(ports.messages().len(), 1);
    let committed = ports.record(OLD).unwrap();
    assert_eq!(committed.generation, generation + 1, "the file committed");
    assert_eq!((committed.vault, committed.manifest_key.as_deref()), (VaultState::Complete, None), "its manifest due");
    assert!(committed.open.is_some() && !committed.has_uncommitted_files());
    // What the manifest job's downloader then decides: a manifest of the file set with it.
    let task = TaskId::parse(OLD).unwrap();
    match stemvault_vault::download::settle_plan(&committed, &task, ports.now()) {
        stemvault_vault::download::SettlePlan::Settle(plan) => assert_eq!(plan.generation, generation + 1),
        other => panic!("the task is not settled anew: {other:?}"),
    }
}

/// A save that marked an unsettled task to add files and stopped before any file item: its
/// fence would keep every settle off, so the sweeper takes it away (one task item put, over
/// the fence read) and sends the manifest job that settles the task.
#[tokio::test]
async fn the_fence_of_a_save_that_stopped_before_its_files_is_taken_away_and_the_task_settled() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("s", FileStatus::Stored)]);
    (record.adding, record.adding_at) = (Some(record.generation + 1), Some(at(0).unix_ms as u64));
    assert!(record.open.is_some() && !record.has_uncommitted_files());
    ports.put_record(record.clone());
    let task = TaskId::parse(OLD).unwrap();
    let fenced = ports.record(OLD).unwrap();
    assert_eq!(fenced.adding, record.adding);
    assert_eq!(stemvault_vault::download::settle_plan(&fenced, &task, ports.now()), SettlePlan::Open);
    ports.advance(Duration::from_secs(300));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.manifests_requested, report.tasks_failed), (1, 1, 0), "{report:?}");
    let cleared = ports.record(OLD).unwrap();
    assert_eq!((cleared.add_fence(), cleared.adding_at), (None, None));
    assert_eq!((cleared.version, cleared.generation), (fenced.version + 1, fenced.generation));
    assert!(matches!(stemvault_vault::download::settle_plan(&cleared, &task, ports.now()), SettlePlan::Settle(_)));
}

/// The mark is conditional on the version read: over a task another writer changed since,
/// the save is refused before it writes any file item (it reads again and merges anew).
#[tokio::test]
async fn a_reopen_over_a_stale_read_is_refused_at_its_mark() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut settled = orphaned(OLD, at(0), &[("s", FileStatus::Stored)]);
    (settled.vault, settled.manifest_key) = (VaultState::Complete, Some(format!("tasks/{OLD}/manifest.json")));
    settled.open = None; // as the settle write leaves it
    ports.put_record(TaskRecord { version: settled.version + 1, ..settled.clone() });
    let (event, body) = final_callback(OLD, &["n"], "cd");
    let request = Claimant { id: "request".into(), lease: Duration::from_secs(15) };
    let reopened = ingest_callback(Some(&settled), &event, &body, &request, ports.now()).record;
    assert_eq!(ports.save_task(Some(&settled), &reopened).await, Err(StoreError::Conflict));
    let items = ports.items(OLD);
    assert!(!items.contains_key("file#n"), "no file item written");
    assert!(!items["task"].contains_key("open"), "nor the mark");
}

/// A mark made after the sweeper read the task (a retried callback about to write files)
/// moves its `last_received_at`: the close is refused, and the task stays in the index.
#[tokio::test]
async fn a_close_is_refused_once_the_task_was_marked_again() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("s", FileStatus::Stored)]);
    (record.vault, record.manifest_key) = (VaultState::Complete, Some(format!("tasks/{OLD}/manifest.json")));
    let marked = TaskRecord { last_received_at: at(500), ..record.clone() };
    ports.put_record(marked.clone());
    assert_eq!(ports.close_task(&record).await, Ok(Conditional::Conflict));
    assert_eq!(ports.record(OLD).unwrap().open.as_deref(), Some("open"));
    assert_eq!(ports.close_task(&marked).await, Ok(Conditional::Applied));
    assert_eq!(ports.record(OLD).unwrap().open, None);
}

#[tokio::test]
async fn a_settled_task_the_index_lists_is_not_swept_and_leaves_the_index() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let mut record = orphaned(OLD, at(0), &[("p", FileStatus::Pending)]);
    // Settled, yet `open` (as an attempt that marked it and stopped before any file leaves
    // it) with a file open at the task's own generation: the record's settled state, not the
    // index nor that file, decides.
    record.vault = stemvault_vault::VaultState::Complete;
    record.manifest_key = Some(format!("tasks/{OLD}/manifest.json"));
    let record_version = record.version;
    ports.put_record(record);
    ports.advance(Duration::from_secs(300));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 0));
    assert!(ports.messages().is_empty());
    // Its `open` (as a save that marked it open and stopped leaves it) is taken away.
    assert_eq!(ports.record(OLD).unwrap().open, None);
    assert_eq!(ports.record(OLD).unwrap().version, record_version + 1, "only `open`, in a new version");
    let report = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!(report.tasks_checked, 0, "{report:?}");
}

/// A registration of an older release marked its task open: the sweeper takes it out of the
/// index (leaving the task to the reconciler), not checking it again every lap.
#[tokio::test]
async fn a_registered_task_an_older_release_marked_open_leaves_the_index() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let registration = stemvault_vault::register::Registration { family: Family::Music, client_ref: None };
    let mut record = registration.record(&TaskId::parse(OLD).unwrap(), at(0), Duration::from_secs(600));
    assert_eq!(record.open, None, "this release does not mark it");
    record.open = Some(stemvault_vault::OPEN_MARKER.to_owned());
    ports.put_record(record);
    ports.advance(Duration::from_secs(300));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 0));
    let swept = ports.record(OLD).unwrap();
    assert_eq!((swept.open, swept.stage, swept.reconcile.as_deref()), (None, Stage::Submitted, Some("due")));
    let report = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!(report.tasks_checked, 0, "{report:?}");
}

/// A save of a registered task's first result marks it (open, fenced) before its file items;
/// one that stopped after writing them leaves the mark, which the sweeper takes away past its
/// grace period (fence and all), leaving the files to the reconciler's next poll, which
/// adopts them: none is sent, and the task is out of the index.
#[tokio::test]
async fn a_registered_task_a_stopped_first_result_marked_leaves_the_index() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let registration = stemvault_vault::register::Registration { family: Family::Music, client_ref: None };
    let mut record = registration.record(&TaskId::parse(OLD).unwrap(), at(0), Duration::from_secs(600));
    let fence = record.generation + 1;
    (record.open, record.adding, record.adding_at) =
        (Some(stemvault_vault::OPEN_MARKER.to_owned()), Some(fence), Some(at(0).unix_ms as u64));
    let mut uncommitted = orphaned(OLD, at(0), &[("n", FileStatus::Pending)]).files;
    uncommitted.get_mut("n").unwrap().generation = Some(fence);
    record.files = uncommitted;
    assert!(record.has_uncommitted_files());
    ports.put_record(record);
    sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert!(ports.record(OLD).unwrap().open.is_some(), "within its grace period: left alone");
    ports.advance(Duration::from_secs(300));
    let report = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 0, 0), "{report:?}");
    assert!(ports.messages().is_empty());
    let swept = ports.record(OLD).unwrap();
    assert_eq!((swept.open.as_deref(), swept.adding, swept.stage), (None, None, Stage::Submitted));
    assert_eq!(swept.reconcile.as_deref(), Some("due"), "still watched");
    assert!(swept.has_uncommitted_files(), "left for the poll to adopt");
    let report = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!(report.tasks_checked, 0, "{report:?}");
}

/// The index may still list a task at an older delivery than its item now says (eventually
/// consistent): a task delivered to again within the grace period is left to that delivery's
/// request, which may still be sending its files.
#[tokio::test]
async fn a_task_the_index_lists_late_is_left_alone_inside_the_grace_period() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(300));
    ports.put_record(orphaned(OLD, at(290), &[("p", FileStatus::Pending)]));
    ports.index_lags.lock().unwrap().insert(OLD.into(), at(0));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 0), "{report:?}");
    assert!(sent(&ports).is_empty());
}

/// An index entry that cannot be read (its time edited by hand) is a task never swept: counted
/// as broken, so `tasks-broken` says so (skipped silently, it would be in no count at all).
#[tokio::test]
async fn an_unreadable_index_entry_counts_as_a_broken_task() {
    let ports = pending_orphans(2);
    ports.unreadable_entries.lock().unwrap().insert(task_id(1));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.tasks_failed, report.tasks_broken), (1, 1, 1), "{report:?}");
    let measures = ports.measures.lock().unwrap().clone();
    assert!(matches!(measures[..], [Measure::Swept { checked: 1, failed: 0, broken: 1, .. }]), "{measures:?}");
}

/// An unreadable entry is counted once a run, where the run reaches it: not again by the page
/// that reads it after an unreadable page key, nor by a lap's second read of the cursor's
/// page, and not when the run stops before it.
#[tokio::test]
async fn an_unreadable_index_entry_is_counted_once_where_the_run_reaches_it() {
    let captured = stemvault_aws::log_capture::capture_logs();
    // Pages of two: [0, 1] with 1 unreadable as the page key, then [1, 2] after 0.
    let ports = pending_orphans(3);
    ports.unreadable_entries.lock().unwrap().insert(task_id(1));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.tasks_broken, report.stopped_early), (2, 1, false), "{report:?}");
    let logs = captured.text();
    let skipped = captured.lines_with("skipped an unreadable open-tasks entry");
    assert!(skipped.len() == 1 && skipped[0].is(Level::ERROR, &[&task_id(1)]), "{logs}");

    // Stopped at the first entry: 1 is not reached, then counted by the run that resumes.
    let one = Settings { max_tasks: 1, ..Settings::default() };
    let first = sweep(&ports, &one, "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((first.tasks_checked, first.tasks_broken, first.stopped_early), (1, 0, true), "{first:?}");
    // After 0: 1 (unreadable) and 2, then around: 0 and 1 again (the page up to the cursor's
    // time is read again), which this run already counted.
    let rest = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!((rest.tasks_checked, rest.tasks_broken, rest.wrapped), (2, 1, true), "{rest:?}");

    // A run whose last check is its lap's last entry ends the lap, though the entry after it
    // is one it counted already: that stops nothing (else the run ends early, its cursor kept).
    let first = sweep(&ports, &one, "sweeper-4", at(10_000)).await.unwrap();
    assert_eq!((first.tasks_checked, first.stopped_early), (1, true), "{first:?}");
    let two = Settings { max_tasks: 2, ..Settings::default() };
    let lap = sweep(&ports, &two, "sweeper-5", at(10_000)).await.unwrap();
    assert_eq!((lap.tasks_checked, lap.tasks_broken, lap.wrapped, lap.stopped_early), (2, 1, true, false), "{lap:?}");
}

/// A cursor left past the index's range (the grace period lengthened since it was written)
/// is not a start key DynamoDB takes: the run starts at the oldest entry instead.
#[tokio::test]
async fn a_cursor_past_the_range_starts_the_run_at_the_oldest_entry() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(300));
    *ports.cursor.lock().unwrap() = Some(OpenTask { task_id: FRESH.into(), last_received_at: at(250) });
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued), (1, 1), "{report:?}");
}

/// DynamoDB promises no order among index entries of one time: a run that wraps checks every
/// entry of the cursor's time again, rather than stop at one it takes for past the cursor.
#[tokio::test]
async fn entries_of_the_cursors_time_are_not_skipped_after_wrapping() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.ties_reversed.store(true, std::sync::atomic::Ordering::Relaxed);
    for i in 0..3 {
        ports.put_record(orphaned(&task_id(i), at(0), &[("p", FileStatus::Pending)]));
    }
    ports.advance(Duration::from_secs(300));
    let bounded = Settings { max_tasks: 2, ..Settings::default() };
    let first = sweep(&ports, &bounded, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((first.tasks_checked, first.stopped_early), (2, true));
    assert_eq!(ports.cursor.lock().unwrap().clone().map(|c| c.task_id), Some(task_id(1)));
    // After the cursor: task 0; then from the start: 2 and 1 (and 0) are of the cursor's time.
    let next = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((next.tasks_checked, next.stopped_early), (4, false), "{next:?}");
}

/// `n` tasks with one pending file each, delivered a second apart from `at(0)`, and the clock
/// 300 s on (past the grace period).
fn pending_orphans(n: usize) -> MemoryPorts {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    for i in 0..n {
        ports.put_record(orphaned(&task_id(i), at(i as i64), &[("p", FileStatus::Pending)]));
    }
    ports.advance(Duration::from_secs(300));
    ports
}

/// Whole seconds from `since` to the ports' clock now.
fn age_of(ports: &MemoryPorts, since: Timestamp) -> u64 {
    u64::try_from((ports.now().unix_ms - since.unix_ms) / 1000).unwrap()
}

fn task_id(i: usize) -> String {
    format!("{i:032x}")
}

#[tokio::test]
async fn every_page_is_swept_within_the_task_and_time_bounds() {
    let ports = pending_orphans(5);

    let bounded = Settings { max_tasks: 3, ..Settings::default() };
    let report = sweep(&ports, &bounded, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued, report.stopped_early), (3, 3, true));
    // Oldest delivery first.
    let first: Vec<String> = sent(&ports).into_iter().map(|(t, _)| t).collect();
    assert_eq!(first, [task_id(0), task_id(1), task_id(2)]);

    let out_of_time = sweep(&ports, &Settings::default(), "sweeper-2", at(300)).await.unwrap();
    assert_eq!((out_of_time.tasks_checked, out_of_time.stopped_early), (0, true));
    // It read no page from the index's start (it started after the cursor, and stopped at
    // once): the oldest open task is read for its age alone.
    let counted = ports.measures.lock().unwrap().last().copied();
    let oldest_open_seconds = Some(age_of(&ports, at(0)));
    assert_eq!(counted, Some(Measure::Swept { checked: 0, failed: 0, broken: 0, oldest_open_seconds }));

    let rest = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!((rest.tasks_checked, rest.files_requeued, rest.stopped_early), (5, 2, false));
    assert_eq!(ports.messages().len(), 5);
}

/// A run that cannot read the oldest open task (the index failing) counts no age: a missing
/// datapoint, not a 0 that would read as no task open.
#[tokio::test]
async fn an_oldest_open_task_that_cannot_be_read_counts_no_age() {
    let ports = pending_orphans(3);
    *ports.cursor.lock().unwrap() = Some(OpenTask { task_id: task_id(0), last_received_at: at(0) });
    *ports.index_fault.lock().unwrap() = Some((0, IndexFault::Fails));
    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(300)).await.unwrap();
    assert_eq!((report.tasks_checked, report.stopped_early), (0, true));
    let counted = ports.measures.lock().unwrap().last().copied();
    assert_eq!(counted, Some(Measure::Swept { checked: 0, failed: 0, broken: 0, oldest_open_seconds: None }));
}

/// A task whose sweep panics (a bug its items reach) fails alone: the tasks after it are
/// swept in the same run, and the next run does not meet it first (the cursor moved past it).
#[tokio::test]
async fn a_task_that_panics_fails_alone_and_the_run_goes_on() {
    let ports = pending_orphans(3);
    ports.panic_loading(Some(&task_id(0)));
    let bounded = Settings { max_tasks: 2, ..Settings::default() };
    let report = sweep(&ports, &bounded, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.tasks_failed, report.files_requeued), (2, 1, 1), "{report:?}");
    assert_eq!(
        *ports.measures.lock().unwrap(),
        [Measure::Swept { checked: 2, failed: 0, broken: 1, oldest_open_seconds: Some(age_of(&ports, at(0))) }],
        "alarmed on as broken alone: met on every lap, it would hold tasks-not-swept in ALARM"
    );
    let swept: Vec<String> = sent(&ports).into_iter().map(|(t, _)| t).collect();
    assert_eq!(swept, [task_id(1)]);
    let cursor = ports.cursor.lock().unwrap().clone().expect("written");
    assert_eq!(cursor.task_id, task_id(1), "the next run starts after the tasks checked");
    let next = sweep(&ports, &bounded, "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!(sent(&ports).last().map(|(t, _)| t.clone()), Some(task_id(2)), "{next:?}");
}

/// A task whose table or queue calls hang (throttling, say) is given up after TASK_BUDGET
/// and the run goes on to the next; the run ends and writes its cursor, instead of running
/// into its Lambda timeout, which writes none.
#[tokio::test(start_paused = true)]
async fn a_task_that_hangs_is_left_after_its_budget_and_the_cursor_still_written() {
    let ports = pending_orphans(3);
    ports.set_latency(Duration::from_secs(3600));
    let bounded = Settings { max_tasks: 2, ..Settings::default() };
    let started = tokio::time::Instant::now();
    let report = sweep(&ports, &bounded, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.tasks_failed, report.stopped_early), (2, 2, true), "{report:?}");
    assert!(ports.messages().is_empty());
    // Two tasks at their budget each (the cursor's calls at their best-effort bound).
    assert!(
        started.elapsed() < 2 * TASK_BUDGET + 2 * stemvault_vault::BEST_EFFORT_CALL_TIMEOUT + Duration::from_secs(1)
    );
    let cursor = ports.cursor.lock().unwrap().clone().expect("written");
    assert_eq!(cursor.task_id, task_id(1), "resumes after the last task checked");
}

/// An index page that never comes is given up after TASK_BUDGET like a task: the run writes
/// its cursor after the entries checked instead of running into its Lambda timeout.
#[tokio::test(start_paused = true)]
async fn an_index_page_that_hangs_is_given_up_and_the_cursor_still_written() {
    let ports = pending_orphans(3);
    *ports.index_fault.lock().unwrap() = Some((1, IndexFault::Hangs));
    let started = tokio::time::Instant::now();
    let err = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("no answer"), "{err}");
    assert!(started.elapsed() <= TASK_BUDGET + Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(sent(&ports).len(), 2, "the first page was swept");
    let cursor = ports.cursor.lock().unwrap().clone().expect("written");
    assert_eq!(cursor.task_id, task_id(1));
}

/// A cursor that cannot be read or written (failing, or never answering) costs the run no
/// task: it starts at the oldest open task, sweeps within its bounds, and ends in time, the
/// next run starting where this one did.
#[tokio::test(start_paused = true)]
async fn a_cursor_that_cannot_be_read_or_written_only_costs_where_the_run_starts() {
    for fault in [IndexFault::Fails, IndexFault::Hangs] {
        let ports = pending_orphans(3);
        *ports.cursor.lock().unwrap() = Some(OpenTask { task_id: task_id(1), last_received_at: at(1) });
        *ports.cursor_fault.lock().unwrap() = Some(fault);
        let bounded = Settings { max_tasks: 2, ..Settings::default() };
        let started = tokio::time::Instant::now();
        let report = sweep(&ports, &bounded, "sweeper-1", at(10_000)).await.unwrap();
        assert_eq!((report.tasks_checked, report.stopped_early), (2, true), "{fault:?}: {report:?}");
        let first: Vec<String> = sent(&ports).into_iter().map(|(t, _)| t).collect();
        assert_eq!(first, [task_id(0), task_id(1)], "{fault:?}: from the oldest");
        let tried = ports.cursor_writes.lock().unwrap().clone();
        assert_eq!(
            tried,
            [Some(OpenTask { task_id: task_id(1), last_received_at: at(1) })],
            "{fault:?}: tried, in vain"
        );
        assert!(started.elapsed() <= 2 * stemvault_vault::BEST_EFFORT_CALL_TIMEOUT + Duration::from_secs(1));
    }
}

/// An index that cannot be read past a page still leaves the cursor after the entries checked.
#[tokio::test]
async fn an_index_read_failing_mid_run_still_moves_the_cursor() {
    let ports = pending_orphans(3);
    *ports.index_fault.lock().unwrap() = Some((1, IndexFault::Fails));
    let err = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(sent(&ports).len(), 2, "the first page was swept");
    let cursor = ports.cursor.lock().unwrap().clone().expect("written");
    assert_eq!(cursor.task_id, task_id(1));
}

#[tokio::test]
async fn files_that_could_not_be_sent_go_back_to_pending_for_the_next_run() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(300));
    ports.set_enqueue_failing(true);

    let failed = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((failed.tasks_checked, failed.files_requeued, failed.tasks_failed), (1, 0, 1));
    let p = &ports.record(OLD).unwrap().files["p"];
    assert_eq!((p.status, p.claim.as_deref()), (FileStatus::Pending, None));
    assert_eq!(p.lease_until, Some(LeaseEnd::at(at(300))), "when its claim ended");

    ports.set_enqueue_failing(false);
    let healed = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((healed.files_requeued, healed.tasks_failed), (1, 0));
    assert_eq!(sent(&ports), [(OLD.into(), "p".into())]);
}

/// A batch sent only partly: the file that went out is queued, counted and logged; the other
/// is pending again and the task counted failed (the next run sends it).
#[tokio::test]
async fn a_batch_sent_partly_counts_and_logs_what_went_out() {
    let captured = stemvault_aws::log_capture::capture_logs();
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("p1", FileStatus::Pending), ("p2", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(300));
    ports.refuse_jobs_for(&["p2"]);

    let partly = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((partly.files_requeued, partly.tasks_failed), (1, 1));
    let record = ports.record(OLD).unwrap();
    assert_eq!((record.files["p1"].status, record.files["p2"].status), (FileStatus::Queued, FileStatus::Pending));
    assert_eq!(sent(&ports), [(OLD.into(), "p1".into())]);
    let logs = captured.text();
    let requeued: Vec<&str> = logs.lines().filter(|l| l.contains("re-enqueued an orphaned file")).collect();
    assert!(requeued.len() == 1 && requeued[0].contains("\"p1\""), "{logs}");
}

/// A downloader stopped between the manifest and the settle write: the vault is pending
/// though every file is stored or failed, and no message will come for it.
#[tokio::test]
async fn an_open_task_whose_files_are_all_settled_gets_one_manifest_job_per_run() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    use FileStatus::*;
    let stuck = orphaned(OLD, at(0), &[("s", Stored), ("f", Failed)]);
    assert_eq!((stuck.vault, stuck.open.as_deref()), (VaultState::Pending, Some("open")));
    ports.put_record(stuck.clone());
    // One file still downloading: its downloader settles the task.
    ports.put_record(orphaned(FRESH, at(0), &[("s", Stored), ("d", Downloading)]));
    ports.advance(Duration::from_secs(300));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.files_requeued, report.manifests_requested), (2, 0, 1));
    assert_eq!(report.tasks_failed, 0);
    let jobs: Vec<FileJob> = ports.messages().into_iter().map(|(_, j)| j).collect();
    let task = TaskId::parse(OLD).unwrap();
    let expected = FileJob {
        task_id: OLD.into(),
        name: stemvault_vault::download::MANIFEST_JOB_NAME.into(),
        url: String::new(),
        key: suno_callbacks::s3_key::manifest_key(&task),
    };
    assert_eq!(jobs, std::slice::from_ref(&expected));
    assert_eq!(manifest_job_of(&task), expected);
    // The same shape as the job ingest sends for a settled task without files.
    let mut lyrics = stuck.clone();
    (lyrics.files, lyrics.vault) = (Default::default(), VaultState::Complete);
    assert_eq!(stemvault_vault::download::manifest_job(&lyrics), Some(expected.clone()));
    // The sweeper writes nothing: the downloader settles it.
    assert_eq!(ports.record(OLD).unwrap(), stuck);
    assert_eq!(statuses(&ports, FRESH), [("d".to_owned(), Downloading), ("s".to_owned(), Stored)]);

    // Still unsettled at the next run (the job not yet taken): asked again, harmlessly.
    let again = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!(again.manifests_requested, 1);
    assert_eq!(ports.messages().len(), 2);

    // Settled meanwhile (no `open`): out of the index, nothing sent.
    let mut settled = stuck;
    (settled.vault, settled.manifest_key) = (VaultState::Partial, Some(expected.key.clone()));
    settled.open = None; // as the settle write leaves it
    ports.put_record(settled);
    let done = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!((done.tasks_checked, done.manifests_requested), (1, 0));
    assert_eq!(ports.messages().len(), 2);
}

/// A task ingest settled as it recorded it (no files; or a new stage over settled files)
/// stays in the index until its manifest is recorded: a manifest job lost for good (dead-
/// lettered) is sent again by the sweeper.
#[tokio::test]
async fn a_task_settled_by_ingest_without_its_manifest_gets_a_manifest_job() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    let lyrics = orphaned(OLD, at(0), &[]);
    assert_eq!((lyrics.vault, lyrics.manifest_key.as_deref()), (VaultState::Complete, None));
    assert_eq!(lyrics.open.as_deref(), Some("open"));
    ports.put_record(lyrics);
    ports.advance(Duration::from_secs(300));

    let report = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((report.tasks_checked, report.manifests_requested), (1, 1));
    let jobs: Vec<FileJob> = ports.messages().into_iter().map(|(_, j)| j).collect();
    assert_eq!(jobs, [manifest_job_of(&TaskId::parse(OLD).unwrap())]);
}

#[tokio::test]
async fn a_manifest_job_the_queue_refuses_is_asked_for_again_next_run() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    ports.put_record(orphaned(OLD, at(0), &[("s", FileStatus::Stored)]));
    ports.advance(Duration::from_secs(300));
    ports.set_enqueue_failing(true);

    let failed = sweep(&ports, &Settings::default(), "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((failed.tasks_checked, failed.manifests_requested, failed.tasks_failed), (1, 0, 1));

    ports.set_enqueue_failing(false);
    let healed = sweep(&ports, &Settings::default(), "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((healed.manifests_requested, healed.tasks_failed), (1, 0));
    assert_eq!(sent(&ports), [(OLD.into(), "manifest".into())]);
}

/// Issue 11: more tasks stuck for good than a run takes (a file whose message dead-lettered,
/// `queued` forever) used to hide every newer orphan, each run starting again at the oldest
/// entry.
#[tokio::test]
async fn more_stuck_tasks_than_a_run_takes_never_hide_a_newer_orphan() {
    let ports = MemoryPorts::with_virtual_clock(at(0));
    const STUCK: usize = 250;
    for i in 0..STUCK {
        ports.put_record(orphaned(&task_id(i), at(i as i64), &[("q", FileStatus::Queued)]));
    }
    let orphan = task_id(STUCK);
    ports.put_record(orphaned(&orphan, at(STUCK as i64 + 10), &[("p", FileStatus::Pending)]));
    ports.advance(Duration::from_secs(600));
    // A run takes MAX_TASKS_PER_RUN (the default); 200 here, as many as the in-memory index
    // pays for.
    let settings = Settings { max_tasks: 200, ..Settings::default() };

    let first = sweep(&ports, &settings, "sweeper-1", at(100_000)).await.unwrap();
    assert_eq!((first.tasks_checked, first.files_requeued, first.stopped_early, first.wrapped), (200, 0, true, false));
    assert!(ports.messages().is_empty());
    let cursor = ports.cursor.lock().unwrap().clone().unwrap();
    assert_eq!(cursor.task_id, task_id(199), "the last entry checked");

    // The next run resumes there: the orphan is reached, then the oldest entries again.
    let second = sweep(&ports, &settings, "sweeper-2", at(100_000)).await.unwrap();
    assert_eq!((second.tasks_checked, second.files_requeued, second.stopped_early), (200, 1, true));
    assert!(second.wrapped);
    assert_eq!(sent(&ports), [(orphan.clone(), "p".to_owned())]);
    assert_eq!(ports.cursor.lock().unwrap().clone().unwrap().task_id, task_id(148), "50 + the orphan + 149");
    assert_eq!(ports.cursor_writes.lock().unwrap().len(), 2, "one cursor write per run");
}

#[tokio::test]
async fn each_run_resumes_after_the_last_entry_checked_and_wraps_around_once() {
    let ports = pending_orphans(5);
    let three = Settings { max_tasks: 3, ..Settings::default() };
    let cursor = |ports: &MemoryPorts| ports.cursor.lock().unwrap().clone().map(|c| c.task_id);

    let first = sweep(&ports, &three, "sweeper-1", at(10_000)).await.unwrap();
    assert_eq!((first.tasks_checked, first.files_requeued, first.wrapped), (3, 3, false));
    assert_eq!(cursor(&ports), Some(task_id(2)));

    // 3 and 4, then around to 0.
    let second = sweep(&ports, &three, "sweeper-2", at(10_000)).await.unwrap();
    assert_eq!((second.tasks_checked, second.files_requeued, second.wrapped, second.stopped_early), (3, 2, true, true));
    assert_eq!(cursor(&ports), Some(task_id(0)));

    // A run with room for all: 1 to 4, then 0, each once; a whole lap clears the cursor.
    let whole = sweep(&ports, &Settings::default(), "sweeper-3", at(10_000)).await.unwrap();
    assert_eq!((whole.tasks_checked, whole.wrapped, whole.stopped_early), (5, true, false));
    assert_eq!(cursor(&ports), None);
    let again = sweep(&ports, &Settings::default(), "sweeper-4", at(10_000)).await.unwrap();
    assert_eq!((again.tasks_checked, again.wrapped, again.stopped_early), (5, false, false));
    assert_eq!(ports.cursor_writes.lock().unwrap().len(), 3, "no write when the cursor stays as it was");
    assert_eq!(ports.messages().len(), 5, "every orphan sent once");

    // The cursor's task settled meanwhile (out of the index): the next run starts after its
    // place all the same.
    *ports.cursor.lock().unwrap() = Some(OpenTask { task_id: task_id(2), last_received_at: at(2) });
    let mut settled = ports.record(&task_id(2)).unwrap();
    (settled.vault, settled.manifest_key) = (VaultState::Complete, Some("tasks/2/manifest.json".into()));
    settled.open = None; // as the settle write leaves it
    ports.put_record(settled);
    let after_gone = sweep(&ports, &three, "sweeper-5", at(10_000)).await.unwrap();
    assert_eq!((after_gone.tasks_checked, after_gone.wrapped), (3, true));
    assert_eq!(cursor(&ports), Some(task_id(0)), "3, 4, then 0");
}

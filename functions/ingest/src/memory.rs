//! In-memory ports with the same conditional semantics as the AWS adapters: for the unit
//! tests of the use-case and the handler, and for measuring the handler's own overhead in
//! the benchmark. Never used by the Lambda.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stemvault_vault::{FileJob, FileStatus, Now, TaskRecord};
use suno_callbacks::TaskId;

use crate::domain::{ArchiveBody, Clock, EnqueueFiles, LoadRecord, MarkQueued, ReleaseClaims, SaveRecord, SentJob};
use crate::error::StoreError;

/// A task table, a bucket and a queue in memory, with switches to make the bucket or the
/// queue fail, and a clock that is either the system's or virtual (sleeping advances it).
#[derive(Debug, Default)]
pub struct MemoryPorts {
    records: Mutex<HashMap<String, TaskRecord>>,
    bodies: Mutex<BTreeMap<String, Vec<u8>>>,
    queue: Mutex<Vec<(String, FileJob)>>,
    next_message_id: AtomicU64,
    archive_failing: AtomicBool,
    enqueue_failing: AtomicBool,
    save_error: Mutex<Option<StoreError>>,
    /// How long every call takes (real time): a slow table, bucket and queue.
    latency: Mutex<Duration>,
    /// Virtual time in Unix ms; None: the system clock.
    virtual_ms: Option<AtomicI64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryPorts {
    /// Ports on the system clock.
    pub fn new() -> MemoryPorts {
        MemoryPorts::default()
    }

    /// Ports on a virtual clock starting at `start`; `sleep` advances it instantly.
    pub fn with_virtual_clock(start: Now) -> MemoryPorts {
        MemoryPorts { virtual_ms: Some(AtomicI64::new(start.unix_ms)), ..MemoryPorts::default() }
    }

    /// Move the virtual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.virtual_ms {
            ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    pub fn set_archive_failing(&self, failing: bool) {
        self.archive_failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_enqueue_failing(&self, failing: bool) {
        self.enqueue_failing.store(failing, Ordering::SeqCst);
    }

    /// Make every call take `latency` of real time (zero: answer at once).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// Every call gives other tasks a turn, as a network round trip would, so concurrent
    /// requests really interleave; and takes the latency set, if any.
    async fn interleave(&self) {
        let latency = *lock(&self.latency);
        if latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(latency).await;
        }
    }

    /// Make every whole-record write fail with `error` (None: writes work again).
    pub fn set_save_error(&self, error: Option<StoreError>) {
        *lock(&self.save_error) = error;
    }

    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        lock(&self.records).get(task_id).cloned()
    }

    /// Store a record as is (to set up a test).
    pub fn put_record(&self, record: TaskRecord) {
        lock(&self.records).insert(record.task_id.clone(), record);
    }

    pub fn record_count(&self) -> usize {
        lock(&self.records).len()
    }

    pub fn body(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.bodies).get(key).cloned()
    }

    pub fn body_keys(&self) -> Vec<String> {
        lock(&self.bodies).keys().cloned().collect()
    }

    /// Every message sent so far, with its id, in order.
    pub fn messages(&self) -> Vec<(String, FileJob)> {
        lock(&self.queue).clone()
    }

    /// Apply `change` to one file if `condition` holds for it; bump the version once if
    /// anything changed. The conditional targeted update of the DynamoDB adapter.
    fn update_files(&self, task_id: &TaskId, names: &[&str], change: impl Fn(&str, &mut stemvault_vault::FileEntry)) {
        let mut records = lock(&self.records);
        let Some(record) = records.get_mut(task_id.as_str()) else { return };
        let before = record.files.clone();
        for name in names {
            if let Some(file) = record.files.get_mut(*name) {
                change(name, file);
            }
        }
        if record.files != before {
            record.version += 1;
        }
    }
}

impl LoadRecord for MemoryPorts {
    async fn load_record(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.interleave().await;
        Ok(self.record(task_id.as_str()))
    }
}

impl SaveRecord for MemoryPorts {
    async fn save_record(&self, record: &TaskRecord, expected_version: Option<u64>) -> Result<(), StoreError> {
        self.interleave().await;
        if let Some(error) = lock(&self.save_error).clone() {
            return Err(error);
        }
        let mut records = lock(&self.records);
        let stored_version = records.get(&record.task_id).map(|r| r.version);
        if stored_version != expected_version {
            return Err(StoreError::Conflict);
        }
        records.insert(record.task_id.clone(), record.clone());
        Ok(())
    }
}

impl ArchiveBody for MemoryPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), String> {
        self.interleave().await;
        if self.archive_failing.load(Ordering::SeqCst) {
            return Err("archive switched off".into());
        }
        lock(&self.bodies).insert(key.to_owned(), body.to_vec());
        Ok(())
    }
}

impl EnqueueFiles for MemoryPorts {
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, String>> {
        self.interleave().await;
        if self.enqueue_failing.load(Ordering::SeqCst) {
            return jobs.iter().map(|_| Err("queue switched off".to_owned())).collect();
        }
        let mut queue = lock(&self.queue);
        jobs.iter()
            .map(|job| {
                let id = format!("m-{}", self.next_message_id.fetch_add(1, Ordering::SeqCst));
                queue.push((id.clone(), job.clone()));
                Ok(id)
            })
            .collect()
    }
}

fn held_by(file: &stemvault_vault::FileEntry, claimant: &str) -> bool {
    file.status == FileStatus::Enqueuing && file.claim.as_deref() == Some(claimant)
}

impl MarkQueued for MemoryPorts {
    async fn mark_queued(
        &self,
        task_id: &TaskId,
        claimant: &str,
        sent: &[SentJob],
        queued_at: Now,
    ) -> Result<(), StoreError> {
        self.interleave().await;
        let names: Vec<&str> = sent.iter().map(|s| s.name.as_str()).collect();
        self.update_files(task_id, &names, |name, file| {
            if held_by(file, claimant) {
                file.status = FileStatus::Queued;
                file.queued_at = Some(queued_at.rfc3339());
                file.message_id = sent.iter().find(|s| s.name == name).map(|s| s.message_id.clone());
                file.claim = None;
                file.lease_until = None;
            }
        });
        Ok(())
    }
}

impl ReleaseClaims for MemoryPorts {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        self.interleave().await;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.update_files(task_id, &names, |_, file| {
            if held_by(file, claimant) {
                file.status = FileStatus::Pending;
                file.claim = None;
                file.lease_until = None;
            }
        });
        Ok(())
    }
}

impl Clock for MemoryPorts {
    fn now(&self) -> Now {
        match &self.virtual_ms {
            Some(ms) => Now::from_unix_ms(ms.load(Ordering::SeqCst)),
            None => Now::system(),
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

/// The sparse `open-tasks` index: records carrying `open`, oldest delivery first, two per
/// page (so sweeps over a few tasks already page).
impl crate::sweep::ListOpenTasks for MemoryPorts {
    async fn open_tasks(
        &self,
        received_before: &str,
        after: Option<&crate::sweep::OpenTask>,
    ) -> Result<crate::sweep::OpenTaskPage, StoreError> {
        const PAGE: usize = 2;
        self.interleave().await;
        let mut open: Vec<crate::sweep::OpenTask> = lock(&self.records)
            .values()
            .filter(|r| r.open.is_some() && r.last_received_at.as_str() < received_before)
            .map(|r| crate::sweep::OpenTask {
                task_id: r.task_id.clone(),
                last_received_at: r.last_received_at.clone(),
            })
            .collect();
        open.sort_by(|a, b| (&a.last_received_at, &a.task_id).cmp(&(&b.last_received_at, &b.task_id)));
        if let Some(after) = after {
            open.retain(|t| (&t.last_received_at, &t.task_id) > (&after.last_received_at, &after.task_id));
        }
        let next = (open.len() > PAGE).then(|| open[PAGE - 1].clone());
        open.truncate(PAGE);
        Ok(crate::sweep::OpenTaskPage { tasks: open, next })
    }
}

//! The task table and the download queue in memory, with the same conditional semantics as
//! `stemvault_aws::enqueue::TableAndQueue`: for the functions' unit tests and the ingest
//! benchmark (feature `test-support`, which only dev-dependencies enable). Never in a Lambda.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use suno_callbacks::TaskId;

use super::{EnqueueFiles, MarkQueued, ReleaseClaims, SentJob};
use crate::{Clock, FileEntry, FileJob, FileStatus, LoadTask, SaveTask, StoreError, TaskRecord, Timestamp};

/// A task table and a queue in memory, with a switch to make the queue fail, one to make
/// whole-record writes fail, a latency for every call, and a clock that is either the
/// system's or virtual (sleeping advances it).
#[derive(Debug, Default)]
pub struct MemoryTableAndQueue {
    records: Mutex<HashMap<String, TaskRecord>>,
    queue: Mutex<Vec<(String, FileJob)>>,
    next_message_id: AtomicU64,
    enqueue_failing: AtomicBool,
    save_error: Mutex<Option<StoreError>>,
    /// How long every call takes (real time): a slow table and queue.
    latency: Mutex<Duration>,
    /// Virtual time in Unix ms; None: the system clock.
    virtual_ms: Option<AtomicI64>,
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

    /// Make every whole-record write fail with `error` (None: writes work again).
    pub fn set_save_error(&self, error: Option<StoreError>) {
        *lock(&self.save_error) = error;
    }

    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        lock(&self.records).get(task_id).cloned()
    }

    /// Every stored record, in no particular order.
    pub fn records(&self) -> Vec<TaskRecord> {
        lock(&self.records).values().cloned().collect()
    }

    /// Store a record as is (to set up a test).
    pub fn put_record(&self, record: TaskRecord) {
        lock(&self.records).insert(record.task_id.clone(), record);
    }

    pub fn record_count(&self) -> usize {
        lock(&self.records).len()
    }

    /// Every message sent so far, with its id, in order.
    pub fn messages(&self) -> Vec<(String, FileJob)> {
        lock(&self.queue).clone()
    }

    /// Apply `change` to each named file; bump the version once if anything changed. The
    /// conditional targeted update of the DynamoDB adapter.
    fn update_files(&self, task_id: &TaskId, names: &[&str], change: impl Fn(&str, &mut FileEntry)) {
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

impl LoadTask for MemoryTableAndQueue {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.interleave().await;
        Ok(self.record(task_id.as_str()))
    }
}

impl SaveTask for MemoryTableAndQueue {
    async fn save_task(&self, record: &TaskRecord, expected_version: Option<u64>) -> Result<(), StoreError> {
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

impl EnqueueFiles for MemoryTableAndQueue {
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

fn held_by(file: &FileEntry, claimant: &str) -> bool {
    file.status == FileStatus::Enqueuing && file.claim.as_deref() == Some(claimant)
}

impl MarkQueued for MemoryTableAndQueue {
    async fn mark_queued(
        &self,
        task_id: &TaskId,
        claimant: &str,
        sent: &[SentJob],
        queued_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.interleave().await;
        let names: Vec<&str> = sent.iter().map(|s| s.name.as_str()).collect();
        self.update_files(task_id, &names, |name, file| {
            if held_by(file, claimant) {
                file.status = FileStatus::Queued;
                file.queued_at = Some(queued_at);
                file.message_id = sent.iter().find(|s| s.name == name).map(|s| s.message_id.clone());
                file.claim = None;
                file.lease_until = None;
            }
        });
        Ok(())
    }
}

impl ReleaseClaims for MemoryTableAndQueue {
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

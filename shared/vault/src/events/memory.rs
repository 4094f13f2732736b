//! Published events in memory, for the functions' unit tests (feature `test-support`, which
//! only dev-dependencies enable). Never in a Lambda.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{EventType, PublishError, PublishEvents, TaskEvent};

/// Every event published, in order, and a switch to make the next publishes fail.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    published: Mutex<Vec<TaskEvent>>,
    failures: AtomicU32,
    attempts: AtomicU32,
}

impl MemoryEvents {
    pub fn new() -> MemoryEvents {
        MemoryEvents::default()
    }

    /// Fail the next `n` calls (publishing nothing), as EventBridge throttling would.
    pub fn fail_next(&self, n: u32) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// Every event published so far, in order (duplicates included).
    pub fn published(&self) -> Vec<TaskEvent> {
        self.published.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The ids of the events published so far, in order, with their types.
    pub fn ids(&self) -> Vec<(EventType, String)> {
        self.published().into_iter().map(|e| (e.kind, e.detail.event_id)).collect()
    }

    /// How many times `publish_events` was called, failed calls included.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl PublishEvents for MemoryEvents {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        let failing = self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(PublishError {
                failed: events.len(),
                total: events.len(),
                reason: "ThrottlingException (injected)".into(),
            });
        }
        self.published.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(events);
        Ok(())
    }
}

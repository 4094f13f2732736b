//! In-memory ports for the unit tests of the use-case and the app, and for measuring the
//! app's own overhead in the benchmark: the shared in-memory task table and queue plus a
//! bucket. Compiled only for tests and with the `test-support` feature; never in the Lambda.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use stemvault_vault::Timestamp;
use stemvault_vault::enqueue::memory::MemoryTableAndQueue;

use crate::domain::ArchiveBody;

/// A task table, a bucket and a queue in memory. Everything but the bucket is the shared
/// [`MemoryTableAndQueue`] (reached through `Deref`: records, messages, the clock and the
/// failure switches).
#[derive(Debug, Default)]
pub struct MemoryPorts {
    shared: MemoryTableAndQueue,
    bodies: Mutex<BTreeMap<String, Vec<u8>>>,
    archive_failing: AtomicBool,
}

impl MemoryPorts {
    /// Ports on the system clock.
    pub fn new() -> MemoryPorts {
        MemoryPorts::default()
    }

    /// Ports on a virtual clock starting at `start`; `sleep` advances it instantly.
    pub fn with_virtual_clock(start: Timestamp) -> MemoryPorts {
        MemoryPorts { shared: MemoryTableAndQueue::with_virtual_clock(start), ..MemoryPorts::default() }
    }

    pub fn set_archive_failing(&self, failing: bool) {
        self.archive_failing.store(failing, Ordering::SeqCst);
    }

    pub fn body(&self, key: &str) -> Option<Vec<u8>> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    pub fn body_keys(&self) -> Vec<String> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }
}

impl std::ops::Deref for MemoryPorts {
    type Target = MemoryTableAndQueue;

    fn deref(&self) -> &MemoryTableAndQueue {
        &self.shared
    }
}

stemvault_vault::delegate_enqueue_ports!(MemoryPorts => shared);

impl ArchiveBody for MemoryPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), String> {
        self.shared.interleave().await;
        if self.archive_failing.load(Ordering::SeqCst) {
            return Err("archive switched off".into());
        }
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).insert(key.to_owned(), body.to_vec());
        Ok(())
    }
}

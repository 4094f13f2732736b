//! In-memory ports for the unit tests of the use-case and the app, and for measuring the
//! app's own overhead in the benchmark: the shared in-memory task table and queue plus a
//! bucket, the callback secret and the event bus. Compiled only for tests and with the `test-support`
//! feature; never in the Lambda.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use stemvault_aws::secrets::{SecretError, SecretText};
use stemvault_vault::enqueue::memory::MemoryTableAndQueue;
use stemvault_vault::events::memory::MemoryEvents;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};
use stemvault_vault::{StorageError, Timestamp};

use crate::credentials::{ReadPreviousSecret, ReadSecret};
use crate::domain::{ArchiveBody, EmitMetrics, Measure, ParkBody};
use crate::secret::CallbackSecret;

/// A task table, a bucket, a queue and a secret in memory. Everything but the bucket and the
/// secret is the shared [`MemoryTableAndQueue`] (reached through `Deref`: records, messages,
/// the clock and the failure switches).
#[derive(Debug, Default)]
pub struct MemoryPorts {
    shared: MemoryTableAndQueue,
    bodies: Mutex<BTreeMap<String, Vec<u8>>>,
    archive_failing: AtomicBool,
    /// Archive writes under this prefix alone are refused.
    archive_refused_under: Mutex<Option<String>>,
    /// Archive and park writes never answer (an S3 that hangs).
    archive_stalled: AtomicBool,
    /// Archive writes panic (a bug in the handling).
    archive_panicking: AtomicBool,
    /// Park writes alone never answer.
    park_stalled: AtomicBool,
    /// Park writes alone are refused.
    park_failing: AtomicBool,
    /// The callback secret's text; `None` reads as a missing secret.
    secret: Mutex<Option<SecretText>>,
    /// The text it had before the last change (Secrets Manager's `AWSPREVIOUS`); `None`
    /// until it changed once.
    previous_secret: Mutex<Option<SecretText>>,
    secret_failing: AtomicBool,
    /// Reads of the secret never answer.
    secret_hanging: AtomicBool,
    secret_reads: AtomicUsize,
    /// The event bus: every event published, and a switch to fail publishes.
    pub events: MemoryEvents,
    /// Every measure emitted, in order.
    measures: Mutex<Vec<Measure>>,
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

    /// Ports holding `secret` as the callback secret.
    pub fn with_secret(self, secret: &CallbackSecret) -> MemoryPorts {
        self.set_secret_text(&secret.to_json());
        self
    }

    /// Rotate the callback secret.
    pub fn set_secret(&self, secret: &CallbackSecret) {
        self.set_secret_text(&secret.to_json());
    }

    /// Any text as the callback secret (an unusable one, in tests). The text it had becomes
    /// the previous one, as `put-secret-value` makes it.
    pub fn set_secret_text(&self, text: &str) {
        let before = self.secret.lock().unwrap_or_else(PoisonError::into_inner).replace(SecretText::new(text));
        if before.is_some() {
            *self.previous_secret.lock().unwrap_or_else(PoisonError::into_inner) = before;
        }
    }

    pub fn set_secret_failing(&self, failing: bool) {
        self.secret_failing.store(failing, Ordering::SeqCst);
    }

    /// Make every read of the secret hang.
    pub fn hang_secret_reads(&self) {
        self.secret_hanging.store(true, Ordering::SeqCst);
    }

    /// How many times the secret was read.
    pub fn secret_reads(&self) -> usize {
        self.secret_reads.load(Ordering::SeqCst)
    }

    pub fn set_archive_stalled(&self, stalled: bool) {
        self.archive_stalled.store(stalled, Ordering::SeqCst);
    }

    pub fn set_park_stalled(&self, stalled: bool) {
        self.park_stalled.store(stalled, Ordering::SeqCst);
    }

    pub fn set_park_failing(&self, failing: bool) {
        self.park_failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_archive_failing(&self, failing: bool) {
        self.archive_failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_archive_panicking(&self, panicking: bool) {
        self.archive_panicking.store(panicking, Ordering::SeqCst);
    }

    pub fn refuse_archive_under(&self, prefix: Option<&str>) {
        *self.archive_refused_under.lock().unwrap_or_else(PoisonError::into_inner) = prefix.map(str::to_owned);
    }

    pub fn body(&self, key: &str) -> Option<Vec<u8>> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    /// Every measure emitted so far, in order.
    pub fn measures(&self) -> Vec<Measure> {
        self.measures.lock().unwrap_or_else(PoisonError::into_inner).clone()
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

impl MemoryPorts {
    /// What the bucket's switches make of a write: it hangs, fails, or goes ahead.
    async fn bucket_write(&self) -> Result<(), StorageError> {
        self.shared.interleave().await;
        if self.archive_stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.archive_failing.load(Ordering::SeqCst) {
            return Err(StorageError::transient("PutObject", "archive switched off"));
        }
        Ok(())
    }
}

impl ArchiveBody for MemoryPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.bucket_write().await?;
        assert!(!self.archive_panicking.load(Ordering::SeqCst), "archive switched to panic");
        let refused = self.archive_refused_under.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.as_deref().is_some_and(|prefix| key.starts_with(prefix)) {
            let message = format!("archive refused under {}", refused.as_deref().unwrap_or_default());
            return Err(StorageError { operation: "PutObject", message, permanent: true });
        }
        drop(refused);
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).insert(key.to_owned(), body.to_vec());
        Ok(())
    }
}

/// The bucket's switches hold for parking too; a parked copy is never replaced.
impl ParkBody for MemoryPorts {
    async fn park_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        if self.park_stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.park_failing.load(Ordering::SeqCst) {
            return Err(StorageError::transient("PutObject (park)", "injected: the park write was refused"));
        }
        self.bucket_write().await?;
        self.bodies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert_with(|| body.to_vec());
        Ok(())
    }
}

impl PublishEvents for MemoryPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.shared.interleave().await;
        self.events.publish_events(events).await
    }
}

impl MemoryPorts {
    /// A read of the secret's `version` (`missing` when it has none), through the switches.
    async fn read_version(
        &self,
        version: &Mutex<Option<SecretText>>,
        missing: &str,
    ) -> Result<SecretText, SecretError> {
        self.secret_reads.fetch_add(1, Ordering::SeqCst);
        self.shared.interleave().await;
        if self.secret_hanging.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.secret_failing.load(Ordering::SeqCst) {
            return Err(SecretError::Unavailable("secret switched off".into()));
        }
        let text = version.lock().unwrap_or_else(PoisonError::into_inner).clone();
        text.ok_or_else(|| SecretError::Unavailable(missing.into()))
    }
}

impl ReadSecret for MemoryPorts {
    async fn read_secret(&self) -> Result<SecretText, SecretError> {
        self.read_version(&self.secret, "no callback secret in memory").await
    }
}

impl ReadPreviousSecret for MemoryPorts {
    async fn read_previous_secret(&self) -> Result<SecretText, SecretError> {
        self.read_version(&self.previous_secret, "no previous version of the callback secret").await
    }
}

impl EmitMetrics<Measure> for MemoryPorts {
    fn emit_metrics(&self, measure: &Measure) {
        self.measures.lock().unwrap_or_else(PoisonError::into_inner).push(*measure);
    }
}

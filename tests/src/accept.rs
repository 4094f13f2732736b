//! The accept use-case's ports over this test environment (the task table, the download
//! queue, the vault bucket), for delivering a callback as ingest does without its HTTP side.

use stemvault_aws::archive::BodyArchive;
use stemvault_aws::enqueue::TableAndQueue;
use stemvault_aws::events::EventBus;
use stemvault_vault::StorageError;
use stemvault_vault::accept::ArchiveBody;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};

use crate::TestEnv;

/// [`stemvault_vault::accept::Ports`] over the emulator.
pub struct AcceptPorts {
    shared: TableAndQueue,
    archive: BodyArchive,
    events: EventBus,
}

stemvault_vault::delegate_enqueue_ports!(AcceptPorts => shared);

impl ArchiveBody for AcceptPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.archive.archive_body(key, body).await
    }
}

impl PublishEvents for AcceptPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.events.publish_events(events).await
    }
}

impl TestEnv {
    /// The accept use-case's ports over this environment.
    pub fn accept_ports(&self) -> AcceptPorts {
        AcceptPorts {
            shared: TableAndQueue::new(&self.config, &self.resources.table_name, &self.resources.queue_url),
            archive: BodyArchive::new(self.s3.clone(), &self.resources.bucket_name),
            events: EventBus::new(&self.config, &self.resources.event_bus_name),
        }
    }
}

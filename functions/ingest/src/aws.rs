//! The ports over AWS: the shared claim-and-send adapter ([`TableAndQueue`]: the task table
//! and the download queue), the vault bucket, where callback bodies are archived and parked
//! ([`BodyArchive`]), the callback secret in Secrets Manager, and the event bus ([`EventBus`]).

use stemvault_aws::archive::BodyArchive;
use stemvault_aws::enqueue::TableAndQueue;
use stemvault_aws::events::EventBus;
use stemvault_aws::secrets::{SecretError, SecretReader, SecretText};
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};

use crate::Config;
use crate::credentials::ReadSecret;
use crate::domain::{ArchiveBody, ParkBody};

/// The IAM actions of every AWS call the function makes, its shared adapters' included:
/// the task record (Query, PutItem) and the `queued` set and claim releases (UpdateItem), the
/// body archive and the parked callbacks (PutObject), the download jobs (SendMessageBatch, authorised by sqs:SendMessage), the
/// callback secret ([`SecretReader`]: GetSecretValue) and the task events (PutEvents).
pub const AWS_ACTIONS: &[&str] = &[
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "s3:PutObject",
    "sqs:SendMessage",
    "secretsmanager:GetSecretValue",
    "events:PutEvents",
];

/// The task table, the vault bucket, the download queue, the callback secret and the event
/// bus.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    shared: TableAndQueue,
    archive: BodyArchive,
    secret: SecretReader,
    events: EventBus,
}

impl AwsPorts {
    /// Build the clients once, at start-up.
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> AwsPorts {
        AwsPorts {
            shared: TableAndQueue::new(sdk, &config.table_name, &config.queue_url),
            archive: BodyArchive::new(stemvault_aws::s3_client(sdk), &config.bucket_name),
            secret: SecretReader::new(sdk, &config.callback_secret_arn),
            events: EventBus::new(sdk, &config.event_bus_name),
        }
    }
}

stemvault_vault::delegate_enqueue_ports!(AwsPorts => shared);

impl ArchiveBody for AwsPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), String> {
        self.archive.archive_body(key, body).await
    }
}

impl ParkBody for AwsPorts {
    async fn park_body(&self, key: &str, body: &[u8]) -> Result<(), String> {
        self.archive.park(key, body).await
    }
}

impl PublishEvents for AwsPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.events.publish_events(events).await
    }
}

impl ReadSecret for AwsPorts {
    async fn read_secret(&self) -> Result<SecretText, SecretError> {
        self.secret.read().await
    }
}

//! The ports over AWS: the shared claim-and-send adapter ([`TableAndQueue`]: the task table
//! and the download queue), the vault bucket, where callback bodies are archived and parked
//! ([`BodyArchive`]), the callback secret in Secrets Manager, and the event bus ([`EventBus`]);
//! and the function's metrics ([`metrics_of`], CloudWatch's embedded metric format).

use stemvault_aws::archive::BodyArchive;
use stemvault_aws::enqueue::TableAndQueue;
use stemvault_aws::events::EventBus;
use stemvault_aws::metrics::{self, Metric};
use stemvault_aws::secrets::{SecretError, SecretReader, SecretText};
use stemvault_vault::StorageError;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};

use crate::Config;
use crate::credentials::{ReadPreviousSecret, ReadSecret};
use crate::domain::{ArchiveBody, EmitMetrics, Measure, PARK_TIMEOUT, ParkBody};

// A first park attempt that stalls is given up in time for a second, within the domain's
// PARK_TIMEOUT.
const _: () = assert!(
    2 * stemvault_aws::archive::PARK_ATTEMPT_TIMEOUT.as_millis()
        + stemvault_aws::archive::PARK_FIRST_RETRY_WITHIN.as_millis()
        < PARK_TIMEOUT.as_millis()
);

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

/// Callbacks recorded and answered 200 (duplicates included; one parked and answered 200
/// counts in `CallbacksParked` instead); dimension `Function`.
pub const CALLBACKS_ACCEPTED: &str = "CallbacksAccepted";
/// Callbacks refused, nothing written but a stale callback's task registered for polling
/// (counted as `timestamp_too_old`); dimensions `Function` and `Reason` (the answer's
/// reason code): answered 4xx (`signature_mismatch`, `invalid_token`, `body_too_large`,
/// `invalid_json`, ...), or 503 when a retry may pass (`secret_unreadable`;
/// `callback_too_large_to_record` when it could not be parked either).
pub const CALLBACKS_REFUSED: &str = "CallbacksRefused";
/// Valid callbacks answered 5xx (the provider retries); dimensions `Function` and `Reason`
/// (the error code: `task_record_unavailable`, `enqueue_failed`, `timeout`, ...). Also a
/// callback refused as stale whose task could not be registered for polling
/// (`task_record_unavailable`).
pub const CALLBACKS_FAILED: &str = "CallbacksFailed";
/// Valid callbacks not recorded now but parked for the reconciler to replay, answered 200
/// ([`crate::domain::ingest_or_park`]); dimensions `Function` and `Reason` (why it was not
/// recorded: `task_record_unavailable`, `timeout`, ...; `callback_too_large_to_record` and
/// `task_record_rejected` for one the replay moves to its archive key).
pub const CALLBACKS_PARKED: &str = "CallbacksParked";
/// Tasks registered for polling from a callback refused as stale but signed by a key
/// ([`crate::domain::register_for_polling`]): a provider retry not signed again, or a replay
/// of a captured signature; dimension `Function`.
pub const STALE_CALLBACKS_REGISTERED: &str = "StaleCallbacksRegistered";
/// Callbacks refused for missing or malformed signature headers (`missing_timestamp`,
/// `missing_signature`, `malformed_timestamp`, `malformed_signature`) or for their path token
/// (`missing_token`, `invalid_token`) whose body names a task
/// ([`crate::domain::Measure::Unverifiable`]; they are counted in [`CALLBACKS_REFUSED`] too):
/// the `callbacks-unauthorized` alarm's, where the provider does not sign as the keys expect
/// or calls back to another token; dimension `Function`.
pub const CALLBACKS_UNVERIFIABLE: &str = "CallbacksUnverifiable";
/// Verified callbacks the parser refused, kept whole but not recorded at
/// `tasks/<task_id>/callbacks/unparsable-<sha256>.json` (by `App::keep_unparsable`): each needs
/// an operator (the `unparsable-callbacks-kept` alarm); dimension `Function`.
pub const UNPARSABLE_CALLBACKS_KEPT: &str = "UnparsableCallbacksKept";
/// Re-reads of the callback secret that brought nothing usable, the checks in force kept
/// ([`crate::credentials`]); dimension `Function`.
pub const SECRET_REREADS_FAILED: &str = stemvault_aws::secrets::REREADS_FAILED;

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
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.archive.archive_body(key, body).await
    }
}

impl ParkBody for AwsPorts {
    async fn park_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
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

impl ReadPreviousSecret for AwsPorts {
    async fn read_previous_secret(&self) -> Result<SecretText, SecretError> {
        self.secret.read_previous().await
    }
}

/// The CloudWatch metrics of one [`Measure`] (names fixed: alarms and the dashboard read them),
/// with dimension `Function` = `function` (the deployed function's name,
/// [`metrics::function_name`]), and `Reason` beside it for [`CALLBACKS_PARKED`],
/// [`CALLBACKS_REFUSED`] and [`CALLBACKS_FAILED`].
pub fn metrics_of(function: &'static str, measure: &Measure) -> (Vec<(&'static str, &'static str)>, Vec<Metric>) {
    let function = (metrics::FUNCTION, function);
    let (metric, reason) = match *measure {
        Measure::Accepted => (CALLBACKS_ACCEPTED, None),
        Measure::Parked { reason } => (CALLBACKS_PARKED, Some(reason)),
        Measure::Refused { reason } => (CALLBACKS_REFUSED, Some(reason)),
        Measure::Failed { reason } => (CALLBACKS_FAILED, Some(reason)),
        Measure::StaleRegistered => (STALE_CALLBACKS_REGISTERED, None),
        Measure::Unverifiable => (CALLBACKS_UNVERIFIABLE, None),
        Measure::UnparsableKept => (UNPARSABLE_CALLBACKS_KEPT, None),
        Measure::SecretRereadFailed => (SECRET_REREADS_FAILED, None),
    };
    let dimensions = match reason {
        Some(reason) => vec![function, (metrics::REASON, reason)],
        None => vec![function],
    };
    (dimensions, vec![Metric::count(metric)])
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(crate::LOGICAL_NAME), measure);
        metrics::emit(&dimensions, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One count per measure, under `Function`, and by `Reason` where the measure has one.
    #[test]
    fn each_measure_is_one_count_by_function_and_its_reason() {
        let cases = [
            (Measure::Accepted, CALLBACKS_ACCEPTED, None),
            (Measure::Parked { reason: "timeout" }, CALLBACKS_PARKED, Some("timeout")),
            (Measure::Refused { reason: "invalid_token" }, CALLBACKS_REFUSED, Some("invalid_token")),
            (Measure::Failed { reason: "enqueue_failed" }, CALLBACKS_FAILED, Some("enqueue_failed")),
            (Measure::StaleRegistered, STALE_CALLBACKS_REGISTERED, None),
            (Measure::Unverifiable, "CallbacksUnverifiable", None),
            (Measure::UnparsableKept, UNPARSABLE_CALLBACKS_KEPT, None),
            (Measure::SecretRereadFailed, "SecretRereadsFailed", None),
        ];
        for (measure, name, reason) in cases {
            let (dimensions, metrics) = metrics_of("ingest-fn", &measure);
            let mut expected = vec![(metrics::FUNCTION, "ingest-fn")];
            expected.extend(reason.map(|r| ("Reason", r)));
            assert_eq!(dimensions, expected, "{measure:?}");
            let counted: Vec<(&str, f64)> = metrics.iter().map(|m| (m.name, m.value)).collect();
            assert_eq!(counted, [(name, 1.0)], "{measure:?}");
        }
    }
}

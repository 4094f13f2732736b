//! Create the table, bucket, queue and dead-letter queue, and the event bus, with the settings
//! `template.yaml` declares; subscribe a queue to the bus. Used by the local runner and the
//! integration tests, never by a Lambda.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType, SseSpecification,
};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use stemvault_vault::download::{DOWNLOAD_QUEUE_RETENTION, MAX_RECEIVE_COUNT};
use stemvault_vault::items::{PARTITION_KEY, SORT_KEY};

use crate::sdk_error::error_chain;

/// Visibility timeout of the download queue: 6 × the download function's 900 s timeout,
/// as AWS recommends for an SQS event source (kept equal to template.yaml).
pub const DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS: u32 = 5400;
/// Dead-letter retention: 14 days, the longest SQS allows.
pub const DLQ_RETENTION_SECONDS: u32 = 1_209_600;
/// Both queues are encrypted at rest with SQS-managed keys (SSE-SQS; kept equal to
/// template.yaml's `SqsManagedSseEnabled`).
pub const SQS_MANAGED_SSE: bool = true;
/// Incomplete multipart uploads are aborted after this many days (kept equal to template.yaml).
pub const ABORT_INCOMPLETE_MULTIPART_DAYS: i32 = 1;
/// Overwritten or deleted object versions are kept this many days (kept equal to template.yaml).
pub const NONCURRENT_VERSION_DAYS: i32 = 30;
/// Days a replayed parked callback's noncurrent version is kept (`ForgetReplayedParkedCallbacks`):
/// a week, so that one deleted by hand before its replay (it may be the only copy of an
/// accepted callback) can still be undeleted after a weekend.
pub const PARKED_NONCURRENT_VERSION_DAYS: i32 = 7;

/// Names and URLs of everything provisioned.
#[derive(Debug, Clone)]
pub struct Resources {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    /// The event bus the functions publish to (`EVENT_BUS_NAME`).
    pub event_bus_name: String,
}

fn describe<E: std::error::Error + 'static>(what: &str, e: E) -> String {
    format!("{what}: {}", error_chain(&e))
}

/// `config` without the attempt timeout, for provisioning and the local event subscription:
/// nothing there is in a hurry, and a create whose first attempt the emulator applied late
/// would be retried and fail as already existing.
fn unhurried(config: &aws_config::SdkConfig) -> aws_config::SdkConfig {
    config.to_builder().timeout_config(crate::timeouts_without_attempt_limit()).build()
}

/// Create (or reuse) all resources under the given base name.
pub async fn provision(config: &aws_config::SdkConfig, base: &str) -> Result<Resources, String> {
    let config = &unhurried(config);
    let table_name = format!("{base}-tasks");
    let bucket_name = format!("{base}-vault");
    create_table(&aws_sdk_dynamodb::Client::new(config), &table_name).await?;
    create_bucket(&crate::s3_client(config), &bucket_name).await?;
    let (queue_url, queue_arn, dlq_url) = create_queue_with_dlq(
        &aws_sdk_sqs::Client::new(config),
        &format!("{base}-downloads"),
        &QueueSettings::DOWNLOADS,
    )
    .await?;
    let event_bus_name = format!("{base}-events");
    create_event_bus(&aws_sdk_eventbridge::Client::new(config), &event_bus_name).await?;
    Ok(Resources { table_name, bucket_name, queue_url, queue_arn, dlq_url, event_bus_name })
}

/// The event bus (the template's `EventBus`): its ARN.
pub async fn create_event_bus(client: &aws_sdk_eventbridge::Client, name: &str) -> Result<String, String> {
    if let Ok(existing) = client.describe_event_bus().name(name).send().await {
        return existing.arn.ok_or_else(|| format!("event bus {name} has no ARN"));
    }
    let created = client.create_event_bus().name(name).send().await.map_err(|e| describe("create event bus", e))?;
    created.event_bus_arn.ok_or_else(|| format!("create event bus {name}: no ARN"))
}

/// The event pattern of every rule on stemvault's events (the template's `NotifyRule`
/// and the subscriptions the README shows): source `stemvault`.
pub fn event_pattern() -> String {
    serde_json::json!({ "source": [stemvault_vault::events::EVENT_SOURCE] }).to_string()
}

/// An SQS queue subscribed to every stemvault event on `bus`: the rule `rule` (source
/// `stemvault`) targeting the queue, whose policy lets EventBridge send to it from that
/// rule only, as the template's notify queue does. Idempotent.
pub async fn subscribe_queue(
    config: &aws_config::SdkConfig,
    bus: &str,
    rule: &str,
    queue_url: &str,
    queue_arn: &str,
) -> Result<(), String> {
    let config = &unhurried(config);
    let events = aws_sdk_eventbridge::Client::new(config);
    let rule_arn = events
        .put_rule()
        .name(rule)
        .event_bus_name(bus)
        .event_pattern(event_pattern())
        .send()
        .await
        .map_err(|e| describe("put rule", e))?
        .rule_arn
        .ok_or_else(|| format!("put rule {rule}: no ARN"))?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } },
        }],
    });
    aws_sdk_sqs::Client::new(config)
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| describe("queue policy", e))?;
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("queue")
        .arn(queue_arn)
        .build()
        .map_err(|e| describe("rule target", e))?;
    let put = events
        .put_targets()
        .rule(rule)
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| describe("put targets", e))?;
    if put.failed_entry_count > 0 {
        return Err(format!("put targets {rule}: {:?}", put.failed_entries()));
    }
    Ok(())
}

/// Undo [`subscribe_queue`]: remove the rule's target and the rule (the queue stays).
pub async fn unsubscribe_queue(config: &aws_config::SdkConfig, bus: &str, rule: &str) -> Result<(), String> {
    let events = aws_sdk_eventbridge::Client::new(&unhurried(config));
    events
        .remove_targets()
        .rule(rule)
        .event_bus_name(bus)
        .ids("queue")
        .send()
        .await
        .map_err(|e| describe("remove targets", e))?;
    events.delete_rule().name(rule).event_bus_name(bus).send().await.map_err(|e| describe("delete rule", e))?;
    Ok(())
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| describe("table attribute", e))
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(|e| describe("table key", e))
}

/// The task table: an item collection per task (partition key `task_id`, sort key `sk`, both
/// S; see `stemvault_vault::items`), on demand, with the sparse `open-tasks` index (partition
/// `open`, sort `last_received_at`, keys only) the sweeper queries and the sparse
/// `reconcile-due` index (partition `reconcile`, sort `reconcile_at`, keys only) the
/// reconciler queries.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), String> {
    let exists = client.describe_table().table_name(name).send().await.is_ok();
    if exists {
        return Ok(());
    }
    let open_tasks = GlobalSecondaryIndex::builder()
        .index_name(stemvault_vault::OPEN_TASKS_INDEX)
        .key_schema(key("open", KeyType::Hash)?)
        .key_schema(key("last_received_at", KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .map_err(|e| describe("open-tasks index", e))?;
    let reconcile_due = GlobalSecondaryIndex::builder()
        .index_name(stemvault_vault::RECONCILE_DUE_INDEX)
        .key_schema(key("reconcile", KeyType::Hash)?)
        .key_schema(key("reconcile_at", KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .map_err(|e| describe("reconcile-due index", e))?;
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(PARTITION_KEY)?)
        .attribute_definitions(string_attribute(SORT_KEY)?)
        .attribute_definitions(string_attribute("open")?)
        .attribute_definitions(string_attribute("last_received_at")?)
        .attribute_definitions(string_attribute("reconcile")?)
        .attribute_definitions(string_attribute("reconcile_at")?)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .global_secondary_indexes(open_tasks)
        .global_secondary_indexes(reconcile_due)
        .sse_specification(SseSpecification::builder().enabled(true).build())
        .deletion_protection_enabled(true)
        .send()
        .await
        .map_err(|e| describe("create table", e))?;
    client
        .update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .map_err(|e| describe("point-in-time recovery", e))?,
        )
        .send()
        .await
        .map_err(|e| describe("enable point-in-time recovery", e))?;
    Ok(())
}

/// The vault bucket: encrypted, public access blocked, versioned, with the template's
/// lifecycle rules (abort incomplete multipart uploads, expire old versions, forget replayed
/// parked callbacks).
pub async fn create_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<(), String> {
    if client.head_bucket().bucket(name).send().await.is_ok() {
        return Ok(());
    }
    client.create_bucket().bucket(name).send().await.map_err(|e| describe("create bucket", e))?;
    let sse_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| describe("bucket encryption", e))?;
    let sse = ServerSideEncryptionConfiguration::builder()
        .rules(ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(sse_default).build())
        .build()
        .map_err(|e| describe("bucket encryption", e))?;
    client
        .put_bucket_encryption()
        .bucket(name)
        .server_side_encryption_configuration(sse)
        .send()
        .await
        .map_err(|e| describe("bucket encryption", e))?;
    let block_all = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .block_public_policy(true)
        .ignore_public_acls(true)
        .restrict_public_buckets(true)
        .build();
    client
        .put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(block_all)
        .send()
        .await
        .map_err(|e| describe("public access block", e))?;
    client
        .put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .map_err(|e| describe("bucket versioning", e))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(lifecycle().map_err(|e| describe("bucket lifecycle", e))?)
        .send()
        .await
        .map_err(|e| describe("bucket lifecycle", e))?;
    Ok(())
}

fn lifecycle() -> Result<BucketLifecycleConfiguration, aws_sdk_s3::error::BuildError> {
    let everything = || LifecycleRuleFilter::builder().prefix("").build();
    let abort = LifecycleRule::builder()
        .id("AbortIncompleteMultipartUploads")
        .status(ExpirationStatus::Enabled)
        .filter(everything())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(ABORT_INCOMPLETE_MULTIPART_DAYS).build(),
        )
        .build()?;
    let expire_old_versions = LifecycleRule::builder()
        .id("ExpireNoncurrentVersions")
        .status(ExpirationStatus::Enabled)
        .filter(everything())
        .noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder().noncurrent_days(NONCURRENT_VERSION_DAYS).build(),
        )
        .expiration(LifecycleExpiration::builder().expired_object_delete_marker(true).build())
        .build()?;
    let forget_replayed_parked = LifecycleRule::builder()
        .id("ForgetReplayedParkedCallbacks")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(suno_callbacks::s3_key::PARKED_PREFIX).build())
        .noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder().noncurrent_days(PARKED_NONCURRENT_VERSION_DAYS).build(),
        )
        .expiration(LifecycleExpiration::builder().expired_object_delete_marker(true).build())
        .build()?;
    BucketLifecycleConfiguration::builder()
        .rules(abort)
        .rules(expire_old_versions)
        .rules(forget_replayed_parked)
        .build()
}

/// Whether `endpoint` is a local emulator's (plain HTTP on loopback): what provisioning by the
/// local runner and the tests insists on, so that they never create resources in real AWS.
pub fn is_local_endpoint(endpoint: &str) -> bool {
    // No user-info either: `http://127.0.0.1:1@example.com` is example.com.
    url::Url::parse(endpoint).is_ok_and(|url| {
        url.scheme() == "http"
            && url.username().is_empty()
            && url.password().is_none()
            && crate::http::is_loopback(url.host())
    })
}

/// How a queue with a dead-letter queue is made: its template.yaml settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub visibility_timeout_seconds: u32,
    pub retention_seconds: u64,
    pub max_receive_count: u32,
}

impl QueueSettings {
    /// The download queue's (`DownloadQueue`).
    pub const DOWNLOADS: QueueSettings = QueueSettings {
        visibility_timeout_seconds: DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS,
        retention_seconds: DOWNLOAD_QUEUE_RETENTION.as_secs(),
        max_receive_count: MAX_RECEIVE_COUNT,
    };
}

/// A queue made with `settings` and its dead-letter queue, both encrypted with SQS-managed
/// keys; returns (queue url, queue arn, dlq url).
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    name: &str,
    settings: &QueueSettings,
) -> Result<(String, String, String), String> {
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION_SECONDS.to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, SQS_MANAGED_SSE.to_string())
        .send()
        .await
        .map_err(|e| describe("create dead-letter queue", e))?
        .queue_url
        .ok_or("create dead-letter queue: no url")?;
    let dlq_arn = queue_arn(client, &dlq_url).await?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count.to_string() });
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, settings.visibility_timeout_seconds.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, settings.retention_seconds.to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, SQS_MANAGED_SSE.to_string())
        .send()
        .await
        .map_err(|e| describe("create queue", e))?
        .queue_url
        .ok_or("create queue: no url")?;
    let arn = queue_arn(client, &queue_url).await?;
    Ok((queue_url, arn, dlq_url))
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> Result<String, String> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| describe("queue attributes", e))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| format!("queue {url} has no ARN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_on_loopback_is_a_local_endpoint() {
        for local in ["http://127.0.0.1:5000", "http://localhost:5000/", "http://127.0.0.1", "http://[::1]:5000"] {
            assert!(is_local_endpoint(local), "{local}");
        }
        for other in [
            "",
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://127.0.0.1.example.com",
            "https://127.0.0.1",
            "http://127.0.0.1:1@example.com",
        ] {
            assert!(!is_local_endpoint(other), "{other}");
        }
    }
}

//! The emulator resources are created with the settings template.yaml declares.

use aws_sdk_dynamodb::types::{BillingMode, KeyType, PointInTimeRecoveryStatus, ScalarAttributeType};
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_sqs::types::QueueAttributeName;
use stemvault_aws::provision::{
    ABORT_INCOMPLETE_MULTIPART_DAYS, DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS, NONCURRENT_VERSION_DAYS,
};
use stemvault_tests::TestEnv;
use stemvault_vault::download::MAX_RECEIVE_COUNT;

#[tokio::test]
async fn table_bucket_and_queues_match_the_template() {
    let env = TestEnv::new().await;

    let table = env.dynamo.describe_table().table_name(&env.resources.table_name).send().await.unwrap();
    let table = table.table.unwrap();
    // An item collection per task: the task item, one per file, one per callback body.
    let keys: Vec<(&str, &KeyType)> = table.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
    assert_eq!(keys, [("task_id", &KeyType::Hash), ("sk", &KeyType::Range)]);
    let mut attributes: Vec<(&str, &ScalarAttributeType)> =
        table.attribute_definitions().iter().map(|a| (a.attribute_name(), a.attribute_type())).collect();
    attributes.sort_by_key(|(name, _)| *name);
    let s = &ScalarAttributeType::S;
    assert_eq!(
        attributes,
        [("last_received_at", s), ("open", s), ("reconcile", s), ("reconcile_at", s), ("sk", s), ("task_id", s)]
    );
    let indexes = table.global_secondary_indexes();
    assert_eq!(indexes.len(), 2);
    let open_tasks = indexes.iter().find(|i| i.index_name() == Some(stemvault_vault::OPEN_TASKS_INDEX)).unwrap();
    let reconcile_due = indexes.iter().find(|i| i.index_name() == Some(stemvault_vault::RECONCILE_DUE_INDEX)).unwrap();
    let due_keys: Vec<(&str, &KeyType)> =
        reconcile_due.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
    assert_eq!(due_keys, [("reconcile", &KeyType::Hash), ("reconcile_at", &KeyType::Range)]);
    let index_keys: Vec<(&str, &KeyType)> =
        open_tasks.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
    assert_eq!(index_keys, [("open", &KeyType::Hash), ("last_received_at", &KeyType::Range)]);
    assert_eq!(
        open_tasks.projection().and_then(|p| p.projection_type()),
        Some(&aws_sdk_dynamodb::types::ProjectionType::KeysOnly)
    );
    assert_eq!(table.billing_mode_summary().and_then(|b| b.billing_mode()), Some(&BillingMode::PayPerRequest));
    assert_eq!(table.deletion_protection_enabled(), Some(true), "a DeleteTable by hand is refused");

    let backups = env.dynamo.describe_continuous_backups().table_name(&env.resources.table_name).send().await.unwrap();
    let pitr = backups.continuous_backups_description.unwrap().point_in_time_recovery_description.unwrap();
    assert_eq!(pitr.point_in_time_recovery_status(), Some(&PointInTimeRecoveryStatus::Enabled));

    let bucket = &env.resources.bucket_name;
    // Versioning, seen by its effect (moto's GetBucketVersioning answer has a root element
    // the Rust SDK does not accept): an overwrite keeps the old version.
    for body in ["one", "two"] {
        env.s3
            .put_object()
            .bucket(bucket)
            .key("tasks/v/probe")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let versions = env.s3.list_object_versions().bucket(bucket).prefix("tasks/v/probe").send().await.unwrap();
    assert_eq!(versions.versions().len(), 2);
    let encryption = env.s3.get_bucket_encryption().bucket(bucket).send().await.unwrap();
    let sse = encryption.server_side_encryption_configuration.unwrap();
    let rule = &sse.rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default().map(|d| d.sse_algorithm()),
        Some(&ServerSideEncryption::Aes256)
    );
    let block = env.s3.get_public_access_block().bucket(bucket).send().await.unwrap();
    let block = block.public_access_block_configuration.unwrap();
    assert_eq!(
        (
            block.block_public_acls(),
            block.block_public_policy(),
            block.ignore_public_acls(),
            block.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let lifecycle = env.s3.get_bucket_lifecycle_configuration().bucket(bucket).send().await.unwrap();
    let abort = lifecycle.rules().iter().find_map(|r| r.abort_incomplete_multipart_upload()).unwrap();
    assert_eq!(abort.days_after_initiation(), Some(ABORT_INCOMPLETE_MULTIPART_DAYS));
    let old_versions = lifecycle.rules().iter().find(|r| r.id() == Some("ExpireNoncurrentVersions")).unwrap();
    let noncurrent = old_versions.noncurrent_version_expiration().unwrap();
    assert_eq!(noncurrent.noncurrent_days(), Some(NONCURRENT_VERSION_DAYS));
    let markers = old_versions.expiration().and_then(|e| e.expired_object_delete_marker());
    assert_eq!(markers, Some(true), "a deleted object's lone marker goes");
    let parked = lifecycle.rules().iter().find(|r| r.id() == Some("ForgetReplayedParkedCallbacks")).unwrap();
    assert_eq!(parked.filter().and_then(|f| f.prefix()), Some(suno_callbacks::s3_key::PARKED_PREFIX));
    let days = parked.noncurrent_version_expiration().and_then(|n| n.noncurrent_days());
    assert_eq!(days, Some(stemvault_aws::provision::PARKED_NONCURRENT_VERSION_DAYS));
    assert_eq!(parked.expiration().and_then(|e| e.expired_object_delete_marker()), Some(true));

    let attrs = env
        .sqs
        .get_queue_attributes()
        .queue_url(&env.resources.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS.to_string());
    let redrive: serde_json::Value = serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), MAX_RECEIVE_COUNT.to_string());
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with("-downloads-dlq"));
}

#[tokio::test]
async fn provisioning_twice_reuses_resources() {
    let env = TestEnv::new().await;
    let base = env.resources.table_name.trim_end_matches("-tasks").to_owned();
    let again = stemvault_aws::provision::provision(&env.config, &base).await.unwrap();
    assert_eq!(again.queue_url, env.resources.queue_url);
    assert_eq!(again.bucket_name, env.resources.bucket_name);
}

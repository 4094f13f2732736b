//! The emulator resources are created with the settings template.yaml declares.

use aws_sdk_dynamodb::types::{BillingMode, KeyType};
use aws_sdk_sqs::types::QueueAttributeName;
use stemvault_aws::provision::{MAX_RECEIVE_COUNT, QUEUE_VISIBILITY_TIMEOUT_SECONDS};
use stemvault_tests::TestEnv;

#[tokio::test]
async fn table_bucket_and_queues_match_the_template() {
    let env = TestEnv::new().await;

    let table = env.dynamo.describe_table().table_name(&env.resources.table_name).send().await.unwrap();
    let table = table.table.unwrap();
    let keys = table.key_schema();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].attribute_name(), "task_id");
    assert_eq!(keys[0].key_type(), &KeyType::Hash);
    assert_eq!(table.billing_mode_summary().and_then(|b| b.billing_mode()), Some(&BillingMode::PayPerRequest));

    env.s3.head_bucket().bucket(&env.resources.bucket_name).send().await.unwrap();

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
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], QUEUE_VISIBILITY_TIMEOUT_SECONDS.to_string());
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

//! The functions' resource variables, and the reconciler over a test environment's resources:
//! its configuration, and a replay of what ingest parked.

use stemvault_aws::FromEnv;

use crate::TestEnv;

impl TestEnv {
    /// The variables naming this environment's table, bucket, download queue and event bus,
    /// as the functions read them.
    pub fn resource_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TABLE_NAME", self.resources.table_name.clone()),
            ("BUCKET_NAME", self.resources.bucket_name.clone()),
            ("QUEUE_URL", self.resources.queue_url.clone()),
            ("EVENT_BUS_NAME", self.resources.event_bus_name.clone()),
        ]
    }

    /// The reconciler's configuration over this environment: without a provider key (it
    /// replays parked callbacks only) unless `extra` names one; a variable in `extra` overrides
    /// the environment's.
    pub fn reconciler_config(&self, extra: &[(&str, String)]) -> stemvault_reconciler::Config {
        let mut vars = self.resource_vars();
        // The first found is read.
        vars.splice(0..0, extra.iter().cloned());
        stemvault_reconciler::Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .expect("a valid reconciler configuration")
    }

    /// The reconciler as deployed without a provider key: it replays parked callbacks only.
    pub async fn reconciler_without_provider_key(&self) -> stemvault_reconciler::App {
        stemvault_reconciler::App::new(self.reconciler_config(&[]), &self.config).await.expect("the reconciler starts")
    }

    /// An answer that parked its callback (a loaded machine ran its recording out of the
    /// answer time; parking is the designed answer then) has the reconciler replay it, as it
    /// would.
    pub async fn replay_if_parked(&self, answer: &serde_json::Value) {
        if answer["status"] == "parked" {
            let reconciler = self.reconciler_without_provider_key().await;
            let outcome = reconciler.run_within("replay", std::time::Duration::from_secs(60)).await.expect("a run");
            assert_eq!(outcome.replayed.callbacks_replayed, 1, "{outcome:?}");
        }
    }

    /// Move the task's next poll into the past, as waiting would.
    pub async fn make_due(&self, task_id: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let past = stemvault_vault::Timestamp::now().minus(std::time::Duration::from_secs(1)).rfc3339();
        self.dynamo
            .update_item()
            .table_name(&self.resources.table_name)
            .key("task_id", AttributeValue::S(task_id.to_owned()))
            .key("sk", AttributeValue::S("task".into()))
            .update_expression("SET reconcile_at = :past")
            .condition_expression("attribute_exists(reconcile)")
            .expression_attribute_values(":past", AttributeValue::S(past))
            .send()
            .await
            .expect("the task is watched");
    }
}

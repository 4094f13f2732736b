use lambda_runtime::{LambdaEvent, service_fn};
use stemvault_ingest::sweep::app::SweeperApp;
use stemvault_ingest::sweep::config::SweeperConfig;
use stemvault_vault::Now;

/// Stop taking new tasks this long before the invocation's deadline.
const DEADLINE_MARGIN_MS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stemvault_aws::logging::init();
    let config = stemvault_aws::config_or_exit("sweeper", SweeperConfig::from_env());
    let sdk = stemvault_aws::sdk_config().await;
    let app = SweeperApp::new(config, &sdk);
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let deadline = i64::try_from(event.context.deadline).unwrap_or(i64::MAX);
        let stop_at = Now::from_unix_ms(deadline.saturating_sub(DEADLINE_MARGIN_MS));
        let report = app.run(&event.context.request_id, stop_at).await.map_err(lambda_runtime::Error::from)?;
        Ok::<_, lambda_runtime::Error>(serde_json::json!({
            "tasks_checked": report.tasks_checked,
            "files_requeued": report.files_requeued,
            "tasks_failed": report.tasks_failed,
            "stopped_early": report.stopped_early,
        }))
    }))
    .await
}

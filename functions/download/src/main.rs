use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use stemvault_download::{App, Config, LOGICAL_NAME};

// One thread, as in ingest: Lambda gives this function (512 MB) a fraction of one vCPU, so a
// second thread adds only cross-thread wake-ups (measured for ingest and download: `make bench`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>(LOGICAL_NAME).await;
    let app = &stemvault_aws::config_or_exit(LOGICAL_NAME, App::new(config, &sdk).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(app.handle(event).await)
    }))
    .await
}

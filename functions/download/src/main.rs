use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use stemvault_download::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stemvault_aws::logging::init();
    let config = stemvault_aws::config_or_exit("download", Config::from_env());
    let sdk = stemvault_aws::sdk_config().await;
    let app = App::new(config, &sdk);
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(app.handle(event).await)
    }))
    .await
}

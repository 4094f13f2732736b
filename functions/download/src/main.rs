use std::time::Instant;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use stemvault_download::app::deadline_instant;
use stemvault_download::{App, Config};
use stemvault_vault::Now;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stemvault_aws::logging::init();
    let config = stemvault_aws::config_or_exit("download", Config::from_env());
    let sdk = stemvault_aws::sdk_config().await;
    let app = App::new(config, &sdk);
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline_instant(event.context.deadline, Now::system(), Instant::now());
        Ok::<_, lambda_runtime::Error>(app.handle_batch(event.payload, deadline).await)
    }))
    .await
}

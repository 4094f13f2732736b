use lambda_runtime::service_fn;
use stemvault_reconciler::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>("reconciler").await;
    let app = &stemvault_aws::config_or_exit("reconciler", App::new(config, &sdk).await);
    lambda_runtime::run(service_fn(move |event| async move { app.handle(event).await })).await
}

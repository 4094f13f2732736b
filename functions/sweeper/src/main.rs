use lambda_runtime::service_fn;
use stemvault_sweeper::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stemvault_aws::logging::init();
    let config = stemvault_aws::config_or_exit("sweeper", Config::from_env());
    let sdk = stemvault_aws::sdk_config().await;
    let app = App::new(config, &sdk);
    let app = &app;
    lambda_runtime::run(service_fn(move |event| async move { app.handle(event).await })).await
}

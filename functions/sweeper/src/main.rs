use lambda_runtime::service_fn;
use stemvault_sweeper::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>("sweeper").await;
    let app = &App::new(config, &sdk);
    lambda_runtime::run(service_fn(move |event| async move { app.handle(event).await })).await
}

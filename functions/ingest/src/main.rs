use lambda_http::service_fn;
use stemvault_ingest::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    stemvault_aws::logging::init();
    let config = stemvault_aws::config_or_exit("ingest", Config::from_env());
    let sdk = stemvault_aws::sdk_config().await;
    let app = App::new(config, &sdk);
    let app = &app;
    lambda_http::run(service_fn(move |req| async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }))
        .await
}

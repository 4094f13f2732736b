use lambda_http::service_fn;
use stemvault_ingest::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>("ingest").await;
    let app = &stemvault_aws::config_or_exit("ingest", App::new(config, &sdk).await);
    lambda_http::run(service_fn(move |req| async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }))
        .await
}

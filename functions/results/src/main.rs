use lambda_http::service_fn;
use stemvault_results::{App, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>("results").await;
    let app = &App::new(config, &sdk);
    lambda_http::run(service_fn(move |req| async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }))
        .await
}

use lambda_http::service_fn;
use stemvault_results::{App, Config, LOGICAL_NAME};

// One thread, as in ingest: Lambda gives this function (256 MB) a fraction of one vCPU, so a
// second thread adds only cross-thread wake-ups (measured for ingest and download: `make bench`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>(LOGICAL_NAME).await;
    let app = &App::new(config, &sdk);
    stemvault_aws::http_event::run(service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(app.handle(req).await)
    }))
    .await
}

use lambda_runtime::service_fn;
use stemvault_sweeper::{App, Config, LOGICAL_NAME};

// One thread, as in ingest: Lambda gives this function (256 MB) a fraction of one vCPU, so a
// second thread adds only cross-thread wake-ups (measured for ingest and download: `make bench`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>(LOGICAL_NAME).await;
    let app = &App::new(config, &sdk);
    lambda_runtime::run(service_fn(move |event| async move { app.handle(event).await })).await
}

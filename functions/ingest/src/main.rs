use lambda_http::service_fn;
use stemvault_ingest::{App, Config, LOGICAL_NAME};

// One thread: Lambda gives this function (256 MB) a fraction of one vCPU, and on the
// multi-threaded runtime every response the SDK awaited crossed threads (the handler runs on
// the main thread, the I/O driver on a worker): futex wake-ups and context switches were
// about a third of the CPU a callback cost (perf, `make bench`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, sdk) = stemvault_aws::start::<Config>(LOGICAL_NAME).await;
    let app = &App::new(config, &sdk).await;
    stemvault_aws::http_event::run(service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(app.handle(req).await)
    }))
    .await
}

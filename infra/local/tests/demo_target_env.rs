//! `make demo` against a running `make run` reaches the run's emulator whatever the caller's
//! shell exports: the endpoint the run described is client configuration, which wins over
//! `AWS_ENDPOINT_URL` and the per-service `AWS_ENDPOINT_URL_S3` and the like (they would win
//! over an endpoint taken from the environment). Its own test binary: it sets process
//! environment. Run under `infra/local/emulator.sh` (make test does).

use stemvault_local::client_auth::ClientAuth;
use stemvault_local::demo::DemoTarget;
use stemvault_local::run_info::RunInfo;

#[tokio::test]
async fn the_demo_target_reaches_the_runs_emulator_whatever_the_caller_exports() {
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("run under infra/local/emulator.sh");
    let nowhere = "http://127.0.0.1:9";
    // SAFETY: this binary's only test, before any thread of its own reads the environment.
    unsafe {
        for service in ["S3", "SQS"] {
            std::env::set_var(format!("AWS_ENDPOINT_URL_{service}"), nowhere);
        }
        std::env::set_var("AWS_ENDPOINT_URL", nowhere);
    }
    let info = RunInfo {
        pid: 0,
        port: 9,
        base_url: nowhere.into(),
        file_server_origin: nowhere.into(),
        auth: ClientAuth::default(),
        aws_endpoint_url: Some(emulator),
        aws_region: Some("us-east-1".into()),
        table_name: "unused".into(),
        bucket_name: "unused".into(),
        queue_url: String::new(),
        fake_provider: None,
        event_bus_name: None,
    };
    let target = DemoTarget::from_run_info(&info).await;
    target.s3.list_buckets().send().await.expect("S3 at the run's emulator");
    aws_sdk_sqs::Client::new(&target.sdk).list_queues().send().await.expect("SQS at the run's emulator");
}

//! Shared harness of the end-to-end tests: a fresh set of AWS resources in the local
//! emulator for each test, and the documented callback fixtures.
//!
//! Run through `make test` (or `infra/local/emulator.sh cargo test -p stemvault-tests`),
//! which starts the emulator and points the SDK's standard `AWS_ENDPOINT_URL` at it.

use std::path::PathBuf;

pub mod accept;
pub mod download;
pub mod fake_provider;
pub mod file_server;
pub mod ingest;
pub mod reconciler;
pub mod results;

pub use stemvault_aws::provision::Resources;

/// What Lambda hands a function for one invocation: `payload`, and a context of `request_id`
/// whose deadline (Unix milliseconds, as the Runtime API gives it) is `deadline_in` from now.
pub fn lambda_event<T>(payload: T, request_id: &str, deadline_in: std::time::Duration) -> lambda_http::LambdaEvent<T> {
    let mut context = lambda_http::Context::default();
    context.request_id = request_id.to_owned();
    context.deadline = u64::try_from(stemvault_vault::Timestamp::now().plus(deadline_in).unix_ms).unwrap_or_default();
    lambda_http::LambdaEvent::new(payload, context)
}

/// A scheduled invocation as Lambda hands it to a function: an EventBridge "Scheduled Event"
/// scheduled `scheduled_ago` before now (None: without a time), and a context of `request_id`
/// whose deadline is `deadline_in` from now.
pub fn scheduled_invocation(
    request_id: &str,
    deadline_in: std::time::Duration,
    scheduled_ago: Option<std::time::Duration>,
) -> lambda_http::LambdaEvent<serde_json::Value> {
    let mut event = serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    if let Some(ago) = scheduled_ago {
        event["time"] = serde_json::json!(stemvault_vault::Timestamp::now().minus(ago).rfc3339());
    }
    lambda_event(event, request_id, deadline_in)
}

/// The notify queue as template.yaml makes it (`NotifyQueue`, with its dead-letter queue).
pub const NOTIFY_QUEUE: stemvault_aws::provision::QueueSettings = stemvault_aws::provision::QueueSettings {
    visibility_timeout_seconds: stemvault_notify::domain::QUEUE_VISIBILITY_TIMEOUT_SECONDS,
    retention_seconds: stemvault_notify::domain::QUEUE_RETENTION.as_secs(),
    max_receive_count: stemvault_notify::domain::MAX_RECEIVE_COUNT,
};

/// One test's own table, bucket, queue and dead-letter queue in the emulator.
pub struct TestEnv {
    pub config: aws_config::SdkConfig,
    pub resources: Resources,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    /// For long polls: no attempt timeout ([`stemvault_aws::long_polling_sqs_client`]).
    pub sqs: aws_sdk_sqs::Client,
}

impl TestEnv {
    /// Provision fresh resources. Panics (failing the test) when no emulator is configured,
    /// so a run without one cannot silently pass against real AWS.
    pub async fn new() -> TestEnv {
        let config = emulator_sdk_config().await;
        let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let resources =
            stemvault_aws::provision::provision(&config, &base).await.expect("provision emulator resources");
        TestEnv {
            dynamo: aws_sdk_dynamodb::Client::new(&config),
            s3: stemvault_aws::s3_client(&config),
            sqs: stemvault_aws::long_polling_sqs_client(&config),
            config,
            resources,
        }
    }

    /// Receive (and delete) up to `max` messages currently on the download queue.
    pub async fn drain_queue(&self, max: usize) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        while all.len() < max {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.resources.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive");
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            for m in &batch {
                if let Some(handle) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.resources.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete");
                }
            }
            all.extend(batch);
        }
        all
    }

    /// The task record as stored (its item collection, one strongly consistent Query), or
    /// None when it has no task item.
    pub async fn record(&self, task_id: &str) -> Option<stemvault_vault::TaskRecord> {
        let table = stemvault_aws::TaskTable::new(self.dynamo.clone(), &self.resources.table_name);
        table.load(task_id).await.expect("read task record")
    }

    /// The bytes of an object in the vault bucket, or None when absent. Any other failure
    /// fails the test: a test asserting an object is absent must not pass on an emulator error.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let sent = self.s3.get_object().bucket(&self.resources.bucket_name).key(key).send().await;
        let out = match sent {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return None,
            Err(e) => panic!("reading {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
        };
        Some(out.body.collect().await.expect("read object").into_bytes().to_vec())
    }

    /// HeadObject of a key in the vault bucket, its checksums included; a key not there fails
    /// the test.
    pub async fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        let sent = self
            .s3
            .head_object()
            .bucket(&self.resources.bucket_name)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await;
        sent.unwrap_or_else(|e| panic!("HeadObject {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
    }

    /// Every key in the vault bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.resources.bucket_name)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects");
        out.contents.unwrap_or_default().into_iter().filter_map(|o| o.key).collect()
    }
}

/// The SDK's configuration, once [`assert_emulator`] holds and the configuration loaded
/// (profile files included) points at the emulator too: a profile's
/// `ignore_configured_endpoint_urls` would otherwise send the clients to a real account.
pub async fn emulator_sdk_config() -> aws_config::SdkConfig {
    assert_emulator();
    let config = stemvault_aws::sdk_config().await;
    let endpoint = config.endpoint_url().unwrap_or_default();
    assert!(
        stemvault_aws::provision::is_local_endpoint(endpoint),
        "the SDK's configuration does not point at the emulator (endpoint {endpoint:?}): run via `make test`, or one test with `make deps` then `infra/local/emulator.sh cargo test -p <crate> <name>`"
    );
    config
}

/// Panics unless the SDK can reach only the local emulator: AWS_ENDPOINT_URL on loopback, and
/// nothing that would send a client elsewhere (a per-service endpoint, a profile, endpoints
/// ignored), so a test run by hand cannot create resources in a real account.
pub fn assert_emulator() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        stemvault_aws::provision::is_local_endpoint(&endpoint),
        "AWS_ENDPOINT_URL must point at the local emulator (run via `make test`, or one test with `make deps` then `infra/local/emulator.sh cargo test -p <crate> <name>`), got {endpoint:?}"
    );
    let elsewhere: Vec<String> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| {
            name.starts_with("AWS_ENDPOINT_URL_")
                || ["AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"]
                    .contains(&name.as_str())
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "{elsewhere:?} could send a client past the emulator: run via `make test`, or one test with `make deps` then `infra/local/emulator.sh cargo test -p <crate> <name>`"
    );
}

/// The repository the tests run in, read when they run: `env!("CARGO_MANIFEST_DIR")` would be
/// the clone the test binary was built from, and a build directory may be shared between clones
/// (cargo reuses a binary another clone built from the same sources).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("..")
}

/// Every ```json block of README.md that parses as JSON, in the README's order (a block
/// that is no JSON, such as one with `…` for a value, is left out).
pub fn readme_json_examples() -> Vec<serde_json::Value> {
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).expect("README.md");
    readme
        .split("```json\n")
        .skip(1)
        .filter_map(|block| serde_json::from_str(block.split_once("```")?.0).ok())
        .collect()
}

/// The documented callback fixtures, copied into the repository's `fixtures/callbacks/`.
pub fn fixtures_dir() -> PathBuf {
    repo_dir().join("fixtures/callbacks")
}

/// One documented fixture's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()))
}

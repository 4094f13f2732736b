//! AWS adapters shared by the stemvault functions. Every client reaches AWS, or a local
//! emulator, through the SDK's standard configuration (`AWS_ENDPOINT_URL` and friends).

pub mod archive;
pub mod clock;
pub mod deadline;
pub mod enqueue;
pub mod env;
pub mod events;
pub mod http;
pub mod http_event;
#[cfg(any(test, feature = "test-support"))]
pub mod log_capture;
pub mod logging;
pub mod metrics;
pub mod parked;
pub mod provider;
#[cfg(feature = "provision")]
pub mod provision;
pub mod response;
pub mod route;
pub mod s3_error;
pub mod sdk_error;
pub mod secrets;
pub mod sqs_batch;
pub mod sqs_text;
pub mod table;
#[cfg(any(test, feature = "test-support"))]
pub mod test_http;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

pub use clock::SystemClock;
pub use env::{ConfigError, Env, FromEnv, reconcile_after};
pub use table::{TaskTable, Update};

/// Start a function: logging, its configuration (or exit with the reason), and the SDK
/// configuration, once per instance.
pub async fn start<C: FromEnv>(function: &str) -> (C, aws_config::SdkConfig) {
    logging::init();
    let config = config_or_exit(function, C::from_env());
    (config, sdk_config().await)
}

/// A function's configuration, or exit with a clear message: a Lambda that cannot be
/// configured must not start (the message shows in its init logs: in Lambda one JSON ERROR
/// line, found by level like any other).
pub fn config_or_exit<T, E: std::fmt::Display>(function: &str, config: Result<T, E>) -> T {
    config.unwrap_or_else(|e| {
        // Already done by `start` in every function (a second call keeps the first).
        logging::init();
        tracing::error!(function, error = %e, "configuration error: the function does not start");
        std::process::exit(2)
    })
}

/// The SDK behaviour the functions are tuned and tested against (retries on, a 3.1 s
/// connect timeout): pinned, as the SDK advises code that tunes its behaviour, so that an SDK
/// upgrade changes no default (its HTTP client, its retries) unseen. Move it with a reason.
pub fn behavior_version() -> aws_config::BehaviorVersion {
    aws_config::BehaviorVersion::v2026_01_12()
}

/// Load the SDK configuration once, at start-up, with [`timeouts`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(behavior_version()).timeout_config(timeouts()).load().await
}

/// How long one attempt of an AWS request may take before the SDK gives it up and tries
/// again (standard retries: three attempts). Without it a request whose connection stalls
/// waits for the function's own deadline: ingest's answer (9 s), a download batch's 15
/// minutes. Every request the functions make is small and answers in milliseconds but the
/// uploads of a file's body, which get a longer bound or none (`download`'s S3 adapter says why).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The most requests of one kind an operation has under way at once (a save's file puts, its
/// callback puts, a send's batches): a task's usual dozen go out together, and a body bringing
/// thousands of files does not open thousands of connections (Lambda allows 1,024
/// descriptors) or hold thousands of requests in memory.
pub const MAX_REQUESTS_AT_ONCE: usize = 32;

/// How long a connection may take to open: the SDK's default, stated because an override of
/// the timeouts replaces them all.
pub const SDK_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The SDK's timeouts: [`SDK_CONNECT_TIMEOUT`], and [`ATTEMPT_TIMEOUT`] per attempt.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(SDK_CONNECT_TIMEOUT).operation_attempt_timeout(ATTEMPT_TIMEOUT).build()
}

/// For a request that must be tried again within a short bound (a park, a secret's read):
/// `attempt` for its connection and each attempt, and the SDK's standard retries with a first
/// backoff of at most [`QUICK_FIRST_RETRY`] (the standard one waits up to a second).
pub fn quick_attempts(attempt: Duration) -> (TimeoutConfig, aws_config::retry::RetryConfig) {
    let timeouts = TimeoutConfig::builder().connect_timeout(attempt).operation_attempt_timeout(attempt).build();
    (timeouts, aws_config::retry::RetryConfig::standard().with_initial_backoff(QUICK_FIRST_RETRY))
}

/// How long one attempt of a best-effort request may take (its connection too): three fit in
/// [`stemvault_vault::BEST_EFFORT_CALL_TIMEOUT`], with the retries' pauses, where the SDK's
/// one 3 s attempt would use the whole bound up on a stalled connection (one a thawed
/// instance kept, say) and never be tried again.
pub const BEST_EFFORT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(900);

/// [`quick_attempts`] of [`BEST_EFFORT_ATTEMPT_TIMEOUT`], for a request its caller waits for
/// at most [`stemvault_vault::BEST_EFFORT_CALL_TIMEOUT`].
pub fn best_effort_attempts() -> (TimeoutConfig, aws_config::retry::RetryConfig) {
    quick_attempts(BEST_EFFORT_ATTEMPT_TIMEOUT)
}

/// An SQS request's [`best_effort_attempts`], as its configuration override.
pub fn best_effort_sqs() -> aws_sdk_sqs::config::Builder {
    let (timeouts, retries) = best_effort_attempts();
    aws_sdk_sqs::config::Builder::default().timeout_config(timeouts).retry_config(retries)
}

/// A DynamoDB request's [`best_effort_attempts`], as its configuration override.
pub fn best_effort_dynamodb() -> aws_sdk_dynamodb::config::Builder {
    let (timeouts, retries) = best_effort_attempts();
    aws_sdk_dynamodb::config::Builder::default().timeout_config(timeouts).retry_config(retries)
}

/// An S3 request's [`best_effort_attempts`], as its configuration override.
pub fn best_effort_s3() -> aws_sdk_s3::config::Builder {
    let (timeouts, retries) = best_effort_attempts();
    aws_sdk_s3::config::Builder::default().timeout_config(timeouts).retry_config(retries)
}

/// The most [`quick_attempts`] waits before the first retry (jittered).
pub const QUICK_FIRST_RETRY: Duration = Duration::from_millis(100);

/// [`timeouts`] without the attempt timeout, for a request that may take as long as it
/// takes (a client's or an operation's override: the SDK takes nothing from the timeouts it
/// overrides, so the connect timeout is set again here).
pub fn timeouts_without_attempt_limit() -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(SDK_CONNECT_TIMEOUT).disable_operation_attempt_timeout().build()
}

/// Whether an `AWS_S3_FORCE_PATH_STYLE` value asks for path-style addressing.
fn path_style(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

/// An SQS client for long polls (the local runner's queue consumers, the tests'; the
/// functions receive nothing, Lambda does): no attempt timeout. A long poll answers after up
/// to its wait, and a receive given up after SQS answered would hide its messages for their
/// visibility timeout.
#[cfg(feature = "provision")]
pub fn long_polling_sqs_client(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let sqs = aws_sdk_sqs::config::Builder::from(config).timeout_config(timeouts_without_attempt_limit()).build();
    aws_sdk_sqs::Client::from_conf(sqs)
}

/// An S3 client; path-style addressing when `AWS_S3_FORCE_PATH_STYLE` is `true` in any case
/// (S3-compatible endpoints and emulators that have no virtual-host DNS).
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let force_path_style = std::env::var("AWS_S3_FORCE_PATH_STYLE").is_ok_and(|v| path_style(&v));
    let s3_config = aws_sdk_s3::config::Builder::from(config).force_path_style(force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

#[cfg(test)]
mod tests {
    /// `TRUE` or ` true ` asks for path style as `true` does (it silently did not).
    #[test]
    fn path_style_is_true_in_any_case() {
        for value in ["true", "TRUE", " True "] {
            assert!(super::path_style(value), "{value}");
        }
        for value in ["false", "", "1", "yes"] {
            assert!(!super::path_style(value), "{value}");
        }
    }
}

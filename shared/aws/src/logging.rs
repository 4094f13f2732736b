//! Tracing setup: JSON lines in Lambda (CloudWatch), readable lines elsewhere.

/// Install the global subscriber. Level from `RUST_LOG`, else `LOG_LEVEL`, else `info`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = if in_lambda || std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        // Lambda adds its own timestamp; the span list carries task_id and file name.
        builder.json().with_current_span(true).with_span_list(false).without_time().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, local runner) keeps the first subscriber.
    let _ = result;
}

//! A scheduled function, locally: what its EventBridge schedule and Lambda do for it.

use std::future::Future;
use std::time::Duration;

use crate::shutdown::StopSignal;

/// Run `handle`, the function's Lambda entry, `interval` after the previous run ends until
/// stopped, each time with the scheduled event and the deadline its `timeout` gives, as
/// Lambda would. A stop ends a run under way too, as a timeout would (its claims lapse): a
/// run may take most of a minute. `what` names a failed run in the log.
pub async fn every<F, Fut, T>(what: &str, interval: Duration, timeout: Duration, mut stop: StopSignal, handle: F)
where
    F: Fn(lambda_http::LambdaEvent<serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<T, lambda_http::Error>>,
{
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let invocation = stemvault_tests::scheduled_invocation(&run_id, timeout, Some(Duration::ZERO));
        tokio::select! {
            _ = stop.stopped() => return,
            ran = handle(invocation) => if let Err(e) = ran {
                tracing::warn!(error = %e, "{what} failed; the next run retries");
            }
        }
    }
}

//! A retry's backoff on an SQS queue: the message's next delivery is delayed by keeping it
//! invisible (ChangeMessageVisibility). Shared by the SQS-triggered functions (download,
//! notify).

use std::future::Future;
use std::time::Duration;

use crate::time::best_effort;

/// Delay a received message's next delivery.
pub trait DelayMessage {
    /// Keep the message invisible for `delay` from now.
    fn delay_message(&self, receipt_handle: &str, delay: Duration) -> impl Future<Output = Result<(), String>> + Send;
}

/// Keep the message `receipt_handle` away for `delay`, best effort: failing, or no answer from
/// SQS within [`BEST_EFFORT_CALL_TIMEOUT`](crate::BEST_EFFORT_CALL_TIMEOUT), only means its
/// next delivery comes once the queue's visibility timeout is over (logged).
pub async fn delay_next_delivery<P: DelayMessage>(ports: &P, receipt_handle: &str, delay: Duration) {
    match best_effort(ports.delay_message(receipt_handle, delay)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::warn!(error = %e, "could not delay the message's next delivery"),
        None => tracing::warn!("no answer from SQS delaying the message's next delivery; left as it is"),
    }
}

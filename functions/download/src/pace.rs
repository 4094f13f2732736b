//! The least a source must send: a host that trickles bytes (one every 29 s stays under the
//! read-idle timeout) would otherwise hold a receive until the invocation's deadline, every
//! receive, and a download slot with it. The floor is far below any real host's rate, so only
//! such a trickle meets it.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::FetchError;

/// The window a source's bytes are counted over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The least a source must send per [`RATE_WINDOW`]: 16 KiB a minute (273 bytes a second).
pub const MIN_BYTES_PER_WINDOW: u64 = 16 * 1024;

/// `chunks`, ended with a [`FetchError::Timeout`] (retryable: the next receive tries again)
/// at the first chunk that closes a window of fewer than [`MIN_BYTES_PER_WINDOW`]. A source
/// that sends nothing at all meets the read-idle timeout instead.
pub fn paced<S>(chunks: S) -> impl Stream<Item = Result<Bytes, FetchError>>
where
    S: Stream<Item = Result<Bytes, FetchError>>,
{
    let mut window_start = tokio::time::Instant::now();
    let mut in_window: u64 = 0;
    chunks.map(move |chunk| {
        let chunk = chunk?;
        in_window = in_window.saturating_add(chunk.len() as u64);
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(window_start);
        if elapsed >= RATE_WINDOW {
            if in_window < MIN_BYTES_PER_WINDOW {
                return Err(FetchError::Timeout(format!(
                    "the source sent {in_window} bytes in {} s, under {MIN_BYTES_PER_WINDOW} a minute",
                    elapsed.as_secs()
                )));
            }
            (window_start, in_window) = (now, 0);
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` chunks of `size` bytes, one every `every` (in the test's paused time).
    fn every(n: usize, size: usize, every: Duration) -> impl Stream<Item = Result<Bytes, FetchError>> {
        futures::stream::unfold(0, move |sent| async move {
            if sent == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![0u8; size])), sent + 1))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_trickling_under_the_floor_is_cut_once_a_window_closes() {
        let started = tokio::time::Instant::now();
        let chunks: Vec<_> = Box::pin(paced(every(10, 1, Duration::from_secs(28)))).collect().await;
        let cut = chunks.iter().position(Result::is_err).expect("cut");
        assert_eq!(cut, 2, "the chunk at 84 s closes the first window, 3 bytes in it");
        assert!(matches!(&chunks[cut], Err(FetchError::Timeout(why)) if why.contains("3 bytes in 84 s")), "{chunks:?}");
        assert!(started.elapsed() >= Duration::from_secs(84));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_real_source_passes() {
        // 20 KiB every 30 s for 5 minutes: 40 KiB a minute, a tenth of a modem's rate.
        let chunks: Vec<_> = Box::pin(paced(every(10, 20 * 1024, Duration::from_secs(30)))).collect().await;
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(Result::is_ok), "{chunks:?}");
    }
}

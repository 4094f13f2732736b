//! The least a source must send: a host that trickles bytes (one every 29 s stays under the
//! read-idle timeout) would otherwise hold a receive until the invocation's deadline, every
//! receive, and a download slot with it. The floor is far below any real host's rate, so only
//! such a trickle meets it. Only the time spent waiting on the source counts: while the
//! upload holds the stream back (a part going to S3), a fast source is not made to look slow.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::Instant;

use crate::error::FetchError;

/// How long the source is waited on before its bytes are counted.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The least a source must send per [`RATE_WINDOW`] of waiting on it: 16 KiB (273 bytes a
/// second).
pub const MIN_BYTES_PER_WINDOW: u64 = 16 * 1024;

/// `chunks`, ended with a [`FetchError::Timeout`] (retryable: the next receive tries again)
/// at the first chunk that closes a window of waiting on it that brought fewer than
/// [`MIN_BYTES_PER_WINDOW`]. A source that sends nothing at all meets the read-idle timeout.
pub fn paced<S>(chunks: S) -> Paced<S>
where
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin,
{
    Paced { chunks, waiting_since: None, waited: Duration::ZERO, in_window: 0, cut: false }
}

/// See [`paced`].
pub struct Paced<S> {
    chunks: S,
    /// Since when the source has been asked for the next chunk, while it has not come.
    waiting_since: Option<Instant>,
    /// Time spent waiting on the source in this window.
    waited: Duration,
    /// Bytes it brought in this window.
    in_window: u64,
    cut: bool,
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin,
{
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        let since = *this.waiting_since.get_or_insert(now);
        let Poll::Ready(next) = Pin::new(&mut this.chunks).poll_next(cx) else { return Poll::Pending };
        this.waiting_since = None;
        this.waited += now.duration_since(since);
        let Some(Ok(chunk)) = next else { return Poll::Ready(next) };
        this.in_window = this.in_window.saturating_add(chunk.len() as u64);
        if this.waited >= RATE_WINDOW {
            if this.in_window < MIN_BYTES_PER_WINDOW {
                this.cut = true;
                return Poll::Ready(Some(Err(FetchError::Timeout(format!(
                    "the source sent {} bytes in {} s of waiting on it, under {MIN_BYTES_PER_WINDOW} a minute",
                    this.in_window,
                    this.waited.as_secs()
                )))));
            }
            (this.waited, this.in_window) = (Duration::ZERO, 0);
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// `n` chunks of `size` bytes, one every `every` (in the test's paused time).
    fn every(n: usize, size: usize, every: Duration) -> Pin<Box<dyn Stream<Item = Result<Bytes, FetchError>> + Send>> {
        Box::pin(futures::stream::unfold(0, move |sent| async move {
            if sent == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![0u8; size])), sent + 1))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_trickling_under_the_floor_is_cut_once_a_window_closes() {
        let started = Instant::now();
        let chunks: Vec<_> = paced(every(10, 1, Duration::from_secs(28))).collect().await;
        assert_eq!(chunks.len(), 3, "cut, and ended: {chunks:?}");
        let why = "the source sent 3 bytes in 84 s of waiting on it";
        assert!(matches!(&chunks[2], Err(FetchError::Timeout(e)) if e.starts_with(why)), "{chunks:?}");
        assert!(started.elapsed() >= Duration::from_secs(84));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_real_source_passes() {
        // 20 KiB every 30 s for 5 minutes: 40 KiB a minute, a tenth of a modem's rate.
        let chunks: Vec<_> = paced(every(10, 20 * 1024, Duration::from_secs(30))).collect().await;
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(Result::is_ok), "{chunks:?}");
    }

    /// Each window is judged on its own: a source that sent plenty, then trickles, is cut
    /// once a window of the trickle closes (counted together, its first megabyte would carry
    /// the trickle to the invocation's deadline).
    #[tokio::test(start_paused = true)]
    async fn a_source_that_slows_to_a_trickle_is_cut() {
        let fast_then_trickling =
            every(1, 1 << 20, Duration::from_secs(60)).chain(every(10, 1, Duration::from_secs(28)));
        let chunks: Vec<_> = paced(fast_then_trickling).collect().await;
        assert_eq!(chunks.len(), 4, "the megabyte, two bytes, then cut: {chunks:?}");
        assert!(matches!(&chunks[3], Err(FetchError::Timeout(_))), "{chunks:?}");
    }

    /// Time the reader holds the stream back (a part's upload to a slow S3) is not the
    /// source's: small chunks ready at once, each read two minutes apart, pass.
    #[tokio::test(start_paused = true)]
    async fn a_reader_holding_the_stream_back_does_not_make_the_source_slow() {
        let ready = futures::stream::iter((0..5).map(|_| Ok(Bytes::from_static(b"x"))));
        let mut source = paced(ready);
        let mut read = 0;
        while let Some(chunk) = source.next().await {
            assert!(chunk.is_ok(), "{chunk:?}");
            read += 1;
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        assert_eq!(read, 5, "every chunk, and no error after them");
    }
}

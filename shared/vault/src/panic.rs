//! A panic (a bug) kept to the unit of work it broke: one message of a batch, one task of a
//! scheduled run, one HTTP request (answered with [`PANICKED`]). The others go on, and the run
//! still ends in order (its cursor written, its failed task put behind), rather than meeting
//! the same panic first in every run.
//!
//! A caught panic carries no text: the panic hook has logged it already, where it happened
//! (in Lambda as one JSON line, cut and with links shown without their query,
//! `stemvault_aws::logging`), and its own words may hold what that line hides (a signed URL
//! in a `reqwest::Error`'s Debug, a string sliced at a bad index).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// The reason code of a request whose handling panicked: its answer's `error`, and its
/// metric's `Reason`.
pub const PANICKED: &str = "panicked";

/// A unit of work panicked; the panic hook's line says where and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("panicked (the panic's own line says where)")]
pub struct Panicked;

/// What `work` returns, or that it panicked.
pub async fn catch_panic<F: Future>(work: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|_| Panicked)
}

/// How a unit of work run by [`guarded`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    Done(T),
    /// It panicked (a bug).
    Panicked,
    /// It was still running at its deadline, and was dropped there.
    OutOfTime,
}

impl<T, E> Guarded<Result<T, E>> {
    /// The work's own result, or the caller's error for a panic or the deadline.
    pub fn into_result(self, panicked: E, out_of_time: E) -> Result<T, E> {
        match self {
            Guarded::Done(done) => done,
            Guarded::Panicked => Err(panicked),
            Guarded::OutOfTime => Err(out_of_time),
        }
    }
}

/// `work`, kept to the unit it breaks ([`catch_panic`]) and to its deadline `until`: the
/// budget every message of a batch and every task of a scheduled run is given. The work is
/// boxed: a message's copy is a large future, and each layer wrapped around it in place
/// (this one, the timeout, the panic guard) would hold it again on a thread's stack.
pub async fn guarded<F: Future>(until: tokio::time::Instant, work: F) -> Guarded<F::Output> {
    match tokio::time::timeout_at(until, catch_panic(Box::pin(work))).await {
        Ok(Ok(done)) => Guarded::Done(done),
        Ok(Err(Panicked)) => Guarded::Panicked,
        Err(_) => Guarded::OutOfTime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught_without_its_words() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let signed = "https://cdn.example/a.mp3?X-Amz-Signature=secret";
        let caught = catch_panic(async { panic!("{signed}") }).await;
        assert_eq!(caught, Err::<(), _>(Panicked));
        assert!(!caught.unwrap_err().to_string().contains("Signature"));
        assert_eq!(catch_panic(async { std::panic::panic_any(9) }).await, Err::<(), _>(Panicked));
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_work_is_done_panicked_or_out_of_time() {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(guarded(until, async { 7 }).await, Guarded::Done(7));
        assert_eq!(guarded(until, async { panic!("bug") }).await, Guarded::<()>::Panicked);
        let slow = guarded(until, tokio::time::sleep(std::time::Duration::from_secs(6))).await;
        assert_eq!(slow, Guarded::OutOfTime);
        let as_result = |g: Guarded<Result<u8, String>>| g.into_result("panicked".into(), "late".into());
        assert_eq!(as_result(Guarded::Done(Ok(1))), Ok(1));
        assert_eq!(as_result(Guarded::Done(Err("own".into()))), Err("own".into()));
        assert_eq!(as_result(Guarded::Panicked), Err("panicked".into()));
        assert_eq!(as_result(Guarded::OutOfTime), Err("late".into()));
    }
}

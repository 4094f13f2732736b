//! A panic (a bug) kept to the unit of work it broke: one message of a batch, one task of a
//! scheduled run. The others go on, and the run still ends in order (its cursor written, its
//! failed task put behind), rather than meeting the same panic first in every run.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// What `work` returns, or the message of its panic.
pub async fn catch_panic<F: Future>(work: F) -> Result<F::Output, String> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|panic| panic_text(panic.as_ref()))
}

/// How a unit of work run by [`guarded`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    Done(T),
    /// It panicked (a bug), with this message.
    Panicked(String),
    /// It was still running at its deadline, and was dropped there.
    OutOfTime,
}

impl<T, E> Guarded<Result<T, E>> {
    /// The work's own result, or the caller's error for a panic or the deadline.
    pub fn into_result(self, panicked: impl FnOnce(String) -> E, out_of_time: impl FnOnce() -> E) -> Result<T, E> {
        match self {
            Guarded::Done(done) => done,
            Guarded::Panicked(panic) => Err(panicked(panic)),
            Guarded::OutOfTime => Err(out_of_time()),
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
        Ok(Err(panic)) => Guarded::Panicked(panic),
        Err(_) => Guarded::OutOfTime,
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        assert_eq!(catch_panic(async { panic!("poisoned message") }).await, Err::<(), _>("poisoned message".into()));
        let id = 9;
        assert_eq!(catch_panic(async { panic!("message {id}") }).await, Err::<(), _>("message 9".into()));
        let anything = catch_panic(async { std::panic::panic_any(id) }).await;
        assert_eq!(anything, Err::<(), _>("a panic without a message".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_work_is_done_panicked_or_out_of_time() {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(guarded(until, async { 7 }).await, Guarded::Done(7));
        assert_eq!(guarded(until, async { panic!("bug") }).await, Guarded::<()>::Panicked("bug".into()));
        let slow = guarded(until, tokio::time::sleep(std::time::Duration::from_secs(6))).await;
        assert_eq!(slow, Guarded::OutOfTime);
        let as_result = |g: Guarded<Result<u8, String>>| g.into_result(|p| format!("panicked: {p}"), || "late".into());
        assert_eq!(as_result(Guarded::Done(Ok(1))), Ok(1));
        assert_eq!(as_result(Guarded::Done(Err("own".into()))), Err("own".into()));
        assert_eq!(as_result(Guarded::Panicked("bug".into())), Err("panicked: bug".into()));
        assert_eq!(as_result(Guarded::OutOfTime), Err("late".into()));
    }
}

//! One stop signal shared by the server, the pollers and the file server.

use tokio::sync::watch;

/// Trigger side: `stop()` once, every [`StopSignal`] wakes.
#[derive(Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

/// Wait side, cheap to clone.
#[derive(Debug, Clone)]
pub struct StopSignal {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown { sender: watch::Sender::new(false) }
    }

    pub fn signal(&self) -> StopSignal {
        StopSignal { receiver: self.sender.subscribe() }
    }

    pub fn stop(&self) {
        self.sender.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl StopSignal {
    pub fn is_stopped(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once stop was requested (or the trigger side is gone).
    pub async fn stopped(&mut self) {
        let _ = self.receiver.wait_for(|stopped| *stopped).await;
    }
}

/// Resolves on Ctrl-C (SIGINT), SIGTERM, SIGHUP (the terminal `make run` ran in was closed)
/// or SIGQUIT (Ctrl-\\, which would otherwise end the runner without a word, leaving its
/// run.json). A signal whose handler cannot be installed is left out, not the others with it.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        async fn on(kind: SignalKind) {
            match signal(kind) {
                Ok(mut received) => {
                    received.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = on(SignalKind::interrupt()) => {}
            _ = on(SignalKind::terminate()) => {}
            _ = on(SignalKind::hangup()) => {}
            _ = on(SignalKind::quit()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once the process that started this one is gone (this one handed to another
/// parent): `make run`'s script killed outright (SIGKILL, which runs no trap), say, so the
/// runner stops too rather than hold its ports until someone finds it.
pub async fn orphaned() {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test process's parent (cargo) lives on: nothing to stop for.
    #[tokio::test]
    async fn a_living_parent_is_not_gone() {
        let waited = tokio::time::timeout(std::time::Duration::from_millis(2500), orphaned()).await;
        assert!(waited.is_err(), "resolved while the parent lives");
    }

    #[tokio::test]
    async fn every_signal_wakes_on_stop() {
        let shutdown = Shutdown::new();
        let (mut a, mut b) = (shutdown.signal(), shutdown.signal());
        assert!(!a.is_stopped());
        let waiter = tokio::spawn(async move { a.stopped().await });
        shutdown.stop();
        waiter.await.unwrap();
        b.stopped().await;
        assert!(b.is_stopped());
    }
}

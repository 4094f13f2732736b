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

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP too: the terminal `make run` ran in was closed.
        match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(mut term), Ok(mut hangup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hangup.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! Shutdown: the signals that start it and the watch every part of the manager waits on.

use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;

use super::ShutdownHandle;

/// Starts a graceful shutdown on the first SIGTERM or SIGINT, and shuts down at once (events in
/// flight handed back) on the second: an operator who presses Ctrl-C twice, or a supervisor
/// that signals again, wants the process gone, not waiting out the shutdown timeout.
pub(super) fn listen_for_signals(handle: ShutdownHandle) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            }
            handle.shutdown();
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal received; handing every event back and exiting");
            handle.shutdown_now();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received; shutting down");
            handle.shutdown();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("second Ctrl-C received; handing every event back and exiting");
            handle.shutdown_now();
        }
    });
    Ok(())
}

/// The manager's view of its shutdown signal.
pub(crate) struct Shutdown(pub(super) watch::Receiver<bool>);

impl Shutdown {
    /// Completes once shutdown is requested (at once if it already was).
    pub(super) async fn requested(&mut self) {
        // An error means every handle is gone, and the manager holds one: treat as shutdown.
        let _ = self.0.wait_for(|requested| *requested).await;
    }

    /// Sleeps for `duration`; returns `true` if shutdown was requested meanwhile.
    pub(super) async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.requested() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }
}

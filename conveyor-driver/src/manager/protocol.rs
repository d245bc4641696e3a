//! The protocol's own thread. Pulling, acks, in-progress acks, log publishing, the NATS
//! connection itself and the health listener run on a single-threaded Tokio runtime of their
//! own; reconciles run on the runtime that called [`run`](super::DriverManager::run).
//!
//! CI tools block their threads (`std::process::Command::output`, `std::thread::sleep`, sync
//! HTTP clients). Were the protocol on the same runtime, reconciles blocking every worker
//! thread would stop the heartbeats, JetStream would redeliver the events while they still run,
//! and the same build would run twice at once.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::Error;

use super::ShutdownHandle;

/// Runs `work` to completion on a new thread with its own runtime and returns its output.
/// `work` gets a handle to the caller's runtime, where reconciles are to run.
///
/// Dropping the returned future shuts the manager down at once (`shutdown`), so that a caller
/// giving up on `run` does not leave a consumer running unseen.
pub(super) async fn on_own_thread<F, Fut>(shutdown: ShutdownHandle, work: F) -> Result<(), Error>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>>,
{
    let user = Handle::current();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::ProtocolThread)?;
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("conveyor-protocol".into())
        .spawn(move || {
            // The receiver is gone only if the caller dropped `run`: nobody is left to tell.
            let _ = done.send(runtime.block_on(work(user)));
        })
        .map_err(Error::ProtocolThread)?;
    let mut stop = StopOnDrop(Some(shutdown));
    let outcome = result.await;
    stop.0 = None;
    // The sender is dropped without a send only if the thread panicked, which it reports.
    outcome.unwrap_or_else(|_| Err(Error::ProtocolThread(std::io::Error::other("panicked"))))
}

/// Shuts the manager down at once when the future awaiting it is dropped.
struct StopOnDrop(Option<ShutdownHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(shutdown) = self.0.take() {
            shutdown.shutdown_now();
        }
    }
}

/// A task that is aborted when this handle is dropped: a reconcile on the user's runtime ends
/// with the event that started it (handed back at shutdown), and a helper task with the
/// manager.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task's output.
    pub(crate) async fn join(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

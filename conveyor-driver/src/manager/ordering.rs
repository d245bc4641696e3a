//! Keeps events for the same resource one at a time and in arrival order, while events for
//! other resources run concurrently.
//!
//! The dispatcher calls [`Ordering::enter`] in arrival order; each event's [`Turn`] waits for
//! the previous event of its resource to finish. The map only holds resources with an event in
//! flight, so it does not grow with the number of resources ever seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default, Clone)]
pub(super) struct Ordering {
    tails: Arc<Mutex<HashMap<String, Tail>>>,
    /// Source of tickets, never reused, so a finished event cannot remove a later tail.
    tickets: Arc<AtomicU64>,
}

/// The last event queued for a resource: its ticket, and a receiver that completes when it ends.
struct Tail {
    ticket: u64,
    done: oneshot::Receiver<()>,
}

/// An event's place in its resource's queue.
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    guard: TurnGuard,
}

/// Signals the next event of the resource when dropped, however the event ends.
pub(super) struct TurnGuard {
    key: String,
    ticket: u64,
    _done: oneshot::Sender<()>,
    tails: Arc<Mutex<HashMap<String, Tail>>>,
}

impl Ordering {
    /// Queues an event for `key`; must be called in arrival order.
    pub(super) fn enter(&self, key: String) -> Turn {
        let (done_tx, done_rx) = oneshot::channel();
        let ticket = self.tickets.fetch_add(1, AtomicOrdering::Relaxed);
        let mut tails = self
            .tails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tail = Tail {
            ticket,
            done: done_rx,
        };
        let previous = tails
            .insert(key.clone(), tail)
            .map(|previous| previous.done);
        Turn {
            previous,
            guard: TurnGuard {
                key,
                ticket,
                _done: done_tx,
                tails: Arc::clone(&self.tails),
            },
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tails.lock().map(|tails| tails.len()).unwrap_or(0)
    }
}

impl Turn {
    /// Waits until every earlier event of the resource has finished.
    pub(super) async fn wait(self) -> TurnGuard {
        if let Some(previous) = self.previous {
            // An error only means the previous event's guard was dropped: it has finished.
            let _ = previous.await;
        }
        self.guard
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let mut tails = self
            .tails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tails
            .get(&self.key)
            .is_some_and(|tail| tail.ticket == self.ticket)
        {
            tails.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_runs_in_order_other_keys_do_not_wait() {
        let ordering = Ordering::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let first = ordering.enter("build/a".into());
        let second = ordering.enter("build/a".into());
        let other = ordering.enter("build/b".into());

        let spawn = |turn: Turn, name: &'static str, sleep: u64| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let _guard = turn.wait().await;
                log.lock().unwrap().push(format!("{name} start"));
                tokio::time::sleep(Duration::from_millis(sleep)).await;
                log.lock().unwrap().push(format!("{name} end"));
            })
        };
        // Spawned in reverse so that a scheduler-order implementation would fail.
        let handles = [
            spawn(second, "second", 0),
            spawn(other, "other", 0),
            spawn(first, "first", 50),
        ];
        for handle in handles {
            handle.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let pos = |entry: &str| log.iter().position(|e| e == entry).unwrap();
        assert!(pos("first end") < pos("second start"), "{log:?}");
        assert!(
            pos("other end") < pos("first end"),
            "other resource waited: {log:?}"
        );
        assert_eq!(ordering.len(), 0, "finished resources must leave the map");
    }

    #[tokio::test]
    async fn a_dropped_turn_releases_the_next() {
        let ordering = Ordering::default();
        let first = ordering.enter("k".into());
        let second = ordering.enter("k".into());
        drop(first);
        let guard = tokio::time::timeout(Duration::from_secs(5), second.wait())
            .await
            .unwrap();
        drop(guard);
        assert_eq!(ordering.len(), 0);
    }
}

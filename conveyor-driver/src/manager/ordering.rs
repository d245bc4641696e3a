//! Keeps events for the same resource one at a time and in arrival order, while events for
//! other resources run concurrently.
//!
//! The dispatcher calls [`Ordering::enter`] in arrival order; each event's [`Turn`] waits for
//! the previous event of its resource to finish. The map only holds resources with an event in
//! flight, so it does not grow with the number of resources ever seen.
//!
//! An event waiting for its turn holds no pull slot, so one busy resource cannot fill the
//! instance and starve the others: the slot of the event running now is handed on to the
//! next event of its resource when it ends ([`TurnGuard::hold`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// What an ending event hands to the next event of its resource: its pull slot.
type Slot = Option<OwnedSemaphorePermit>;

#[derive(Default, Clone)]
pub(super) struct Ordering {
    tails: Arc<Mutex<HashMap<String, Tail>>>,
    /// Source of tickets, never reused, so a finished event cannot remove a later tail.
    tickets: Arc<AtomicU64>,
}

/// The last event queued for a resource: its ticket, and a receiver that completes when it ends.
struct Tail {
    ticket: u64,
    done: oneshot::Receiver<Slot>,
}

/// An event's place in its resource's queue.
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<Slot>>,
    guard: TurnGuard,
}

/// Signals the next event of the resource when dropped, however the event ends, handing it
/// the slot this event holds.
pub(super) struct TurnGuard {
    key: String,
    ticket: u64,
    done: Option<oneshot::Sender<Slot>>,
    slot: Slot,
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
                done: Some(done_tx),
                slot: None,
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
    /// Whether an earlier event of the resource is still in flight.
    pub(super) fn must_wait(&self) -> bool {
        self.previous.is_some()
    }

    /// Waits until every earlier event of the resource has finished; returns the guard and
    /// the slot the previous event handed on, if any.
    pub(super) async fn wait(self) -> (TurnGuard, Slot) {
        let handed = match self.previous {
            // An error only means the previous event's guard went without a send: it has
            // finished.
            Some(previous) => previous.await.ok().flatten(),
            None => None,
        };
        (self.guard, handed)
    }
}

impl TurnGuard {
    /// Keeps `slot` until this event ends, then hands it to the resource's next event (or
    /// back to the pool when there is none).
    pub(super) fn hold(&mut self, slot: Slot) {
        self.slot = slot;
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
        // Under the lock, so that an event entering now either finds the tail (and will get
        // the slot) or not (and the slot goes back to the pool).
        if let Some(done) = self.done.take() {
            // No receiver: no next event; the slot is dropped back to its pool.
            let _ = done.send(self.slot.take());
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
                let _guard = turn.wait().await.0;
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

    #[tokio::test]
    async fn the_slot_passes_to_the_next_event_of_the_resource_or_back_to_the_pool() {
        let pool = Arc::new(tokio::sync::Semaphore::new(2));
        let ordering = Ordering::default();
        let first = ordering.enter("k".into());
        let second = ordering.enter("k".into());
        assert!(!first.must_wait());
        assert!(second.must_wait());
        let (mut guard, handed) = first.wait().await;
        assert!(handed.is_none());
        guard.hold(Some(Arc::clone(&pool).acquire_owned().await.unwrap()));
        assert_eq!(pool.available_permits(), 1);
        drop(guard);
        assert_eq!(pool.available_permits(), 1, "handed on, not returned");
        let (mut guard, handed) = second.wait().await;
        assert!(
            handed.is_some(),
            "the second event got the first one's slot"
        );
        guard.hold(handed);
        drop(guard);
        assert_eq!(
            pool.available_permits(),
            2,
            "no next event: back to the pool"
        );
    }
}

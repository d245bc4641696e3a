//! The consuming loop: pulls as many events as there are free slots (plus the prefetch),
//! dispatches them in arrival order and, on shutdown, finishes or hands back what is in flight.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::driver::Driver;
use crate::error::Error;
use crate::wire::Received;

use super::ordering::Ordering;
use super::process::{settle, Shared, Task};
use super::pull::{self, Pulled, Puller};
use super::setup;
use super::signals::Shutdown;

/// The consuming loop: pulls as many events as there are free slots (plus the prefetch) and
/// dispatches them.
pub(super) struct Runner<D> {
    shared: Arc<Shared<D>>,
    ordering: Ordering,
    tasks: JoinSet<()>,
    abort: watch::Receiver<bool>,
    /// Set once shutdown has closed the pull subscription: events that have not started
    /// (prefetched, or waiting for their resource's turn) are then handed back. Not before:
    /// a nak that reaches the server while our pull request is still open would deliver the
    /// event straight back to this instance, which no longer reads it.
    stopping: watch::Sender<bool>,
}

impl<D: Driver> Runner<D> {
    pub(super) fn new(shared: Arc<Shared<D>>, abort: watch::Receiver<bool>) -> Self {
        Self {
            shared,
            ordering: Ordering::default(),
            tasks: JoinSet::new(),
            abort,
            stopping: watch::Sender::new(false),
        }
    }

    /// Requests an event for every free slot, dispatches events as they come, and keeps the
    /// slots of requested events reserved until they arrive or their request ends.
    pub(super) async fn consume(
        &mut self,
        consumer: PullConsumer,
        consumer_config: async_nats::jetstream::consumer::pull::Config,
        shutdown: &mut Shutdown,
    ) -> Result<(), Error> {
        let concurrency = self.shared.pipeline.config().concurrency;
        let pace = &self.shared.pace;
        let slots = Arc::new(Semaphore::new(concurrency + pace.cap()));
        // The slots beyond `concurrency` that are not to be asked for now.
        let mut withheld = Withheld::new(Arc::clone(&slots), pace.cap());
        // Free slots not asked for yet: see `worth_requesting`.
        let mut unrequested: Option<OwnedSemaphorePermit> = None;
        let Some(mut puller) = self.subscribe(consumer, shutdown).await else {
            return Ok(());
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.requested() => {
                    self.hand_back(puller).await;
                    // The server has seen the unsubscribe once it answers a ping.
                    if let Err(err) = self.shared.client.flush().await {
                        tracing::debug!(error = %err, "flush before handing back failed");
                    }
                    self.stopping.send_replace(true);
                    return Ok(());
                }
                pulled = puller.next() => match pulled {
                    Pulled::Event(message, Some(permit)) => self.dispatch(message, permit),
                    // Beyond what was requested: hand it to whoever has a free slot.
                    Pulled::Event(message, None) => self.nak_now(message),
                    Pulled::Gone(reason) => {
                        tracing::warn!(%reason, "pulling events failed; binding the consumer again");
                        self.hand_back(puller).await;
                        match self.rebind(&consumer_config, shutdown).await {
                            Some(bound) => puller = bound,
                            None => return Ok(()),
                        }
                    }
                },
                permit = Arc::clone(&slots).acquire_owned() => {
                    let Ok(mut permits) = permit else {
                        return Ok(()); // the semaphore is never closed
                    };
                    // Let tasks that finish at the same moment free their slots too, so
                    // that one request asks for all of them.
                    tokio::task::yield_now().await;
                    let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
                    if let Ok(more) = Arc::clone(&slots).try_acquire_many_owned(free) {
                        permits.merge(more);
                    }
                    if let Some(earlier) = unrequested.take() {
                        permits.merge(earlier);
                    }
                    let ahead = self.shared.pace.ahead();
                    let Some(permits) = withheld.adjust(permits, ahead) else {
                        continue;
                    };
                    if !worth_requesting(permits.num_permits(), concurrency, ahead) {
                        unrequested = Some(permits);
                        continue;
                    }
                    let expires = match ahead {
                        1.. if self.shared.pace.adaptive() => pull::AHEAD_EXPIRES,
                        _ => Duration::MAX,
                    };
                    if let Err(err) = puller.request(permits, expires).await {
                        tracing::warn!(error = %err, "pull request not sent");
                        if shutdown.sleep(Duration::from_secs(1)).await {
                            return Ok(());
                        }
                    }
                }
            }
            while let Some(result) = self.tasks.try_join_next() {
                report_task(result);
            }
        }
    }

    /// Closes the pull subscription and hands back the events that arrived on it but were not
    /// dispatched, so that another instance takes them at once.
    async fn hand_back(&mut self, puller: Puller) {
        for message in puller.close().await {
            self.nak_now(message);
        }
    }

    /// Naks `message` without delay, for whichever instance has a free slot.
    fn nak_now(&mut self, message: jetstream::Message) {
        if let Ok(info) = message.info() {
            tracing::debug!(subject = %message.subject, delivered = info.delivered, sequence = info.stream_sequence, "event handed back");
        }
        self.tasks
            .spawn(async move { settle(&message, AckKind::Nak(None)).await });
    }

    /// Binds the consumer again after a second's pause, and subscribes anew. `None` if
    /// shutdown was requested meanwhile.
    async fn rebind(
        &mut self,
        consumer_config: &async_nats::jetstream::consumer::pull::Config,
        shutdown: &mut Shutdown,
    ) -> Option<Puller> {
        loop {
            if shutdown.sleep(Duration::from_secs(1)).await {
                return None;
            }
            let config = self.shared.pipeline.config();
            match setup::bind_consumer(&self.shared.js, consumer_config.clone(), config, shutdown)
                .await
            {
                Ok(Some(consumer)) => return self.subscribe(consumer, shutdown).await,
                Ok(None) => return None,
                Err(err) => tracing::warn!(error = %err, "binding the consumer failed"),
            }
        }
    }

    /// Opens the pull subscription, retrying while the connection cannot take it. `None` if
    /// shutdown was requested meanwhile.
    async fn subscribe(&self, consumer: PullConsumer, shutdown: &mut Shutdown) -> Option<Puller> {
        loop {
            match Puller::new(&self.shared.js, &self.shared.client, &consumer).await {
                Ok(puller) => return Some(puller),
                Err(err) => tracing::warn!(error = %err, "subscribing for events failed"),
            }
            if shutdown.sleep(Duration::from_secs(1)).await {
                return None;
            }
        }
    }

    /// Parses an event in arrival order and starts its task.
    fn dispatch(&mut self, message: jetstream::Message, permit: OwnedSemaphorePermit) {
        if let Ok(info) = message.info() {
            tracing::debug!(subject = %message.subject, delivered = info.delivered, sequence = info.stream_sequence, "event received");
        }
        let received = match Received::parse(&message.payload) {
            Ok(received) => received,
            Err(reason) => {
                self.shared.metrics.poisoned();
                tracing::warn!(
                    subject = %message.subject,
                    reason = %reason,
                    "poison message terminated: it can never be processed"
                );
                self.tasks
                    .spawn(settle_with_permit(message, AckKind::Term, permit));
                return;
            }
        };
        let event = &received.message.event;
        if !self.shared.pipeline.handles(event) {
            tracing::debug!(event = %event, run_id = %received.message.run_id, "event not handled by this driver; skipped");
            self.tasks
                .spawn(settle_with_permit(message, AckKind::Ack, permit));
            return;
        }
        let resource = &received.message.payload;
        let turn = self
            .ordering
            .enter(format!("{}/{}", resource.resource, resource.name));
        // An event that must wait for its resource's turn gives its slot back at once, so
        // that other resources keep flowing; it gets the slot of the event before it.
        let slot = (!turn.must_wait()).then_some(permit);
        let task = Task {
            shared: Arc::clone(&self.shared),
            message,
            received,
            turn,
            slot,
            abort: self.abort.clone(),
            stopping: self.stopping.subscribe(),
        };
        self.tasks.spawn(task.run());
    }

    /// Waits for in-flight events up to the shutdown timeout (or until `now`), then hands the
    /// rest back.
    pub(super) async fn finish(
        mut self,
        abort: watch::Sender<bool>,
        mut now: watch::Receiver<bool>,
    ) {
        let timeout = self.shared.pipeline.config().shutdown_timeout;
        // Set already unless consuming ended on another path (shutdown while rebinding).
        self.stopping.send_replace(true);
        while let Some(result) = self.tasks.try_join_next() {
            report_task(result);
        }
        if !self.tasks.is_empty() {
            tracing::info!(
                in_flight = self.tasks.len(),
                ?timeout,
                "waiting for in-flight events"
            );
        }
        let reason = tokio::select! {
            () = join_all(&mut self.tasks) => return,
            () = tokio::time::sleep(timeout) => "shutdown timeout reached",
            // An error means the manager is gone: hand back as well.
            _ = now.wait_for(|now| *now) => "asked to shut down at once",
        };
        tracing::warn!(
            in_flight = self.tasks.len(),
            "{reason}; handing unfinished events back to JetStream"
        );
        abort.send_replace(true);
        if tokio::time::timeout(ABORT_GRACE, join_all(&mut self.tasks))
            .await
            .is_err()
        {
            self.tasks.shutdown().await;
        }
    }
}

/// How long handed-back events get to send their naks before their tasks are dropped (the
/// event then comes back after `ack_wait`). Short, so that a second signal exits in about 2 s
/// and the default shutdown fits Kubernetes' 30 s grace period.
const ABORT_GRACE: Duration = Duration::from_millis(1500);

/// The pull slots beyond `concurrency` held back from requests while the pace allows fewer
/// events ahead than the most there can be.
struct Withheld {
    held: Option<OwnedSemaphorePermit>,
    /// The pull slots beyond `concurrency`.
    cap: usize,
}

impl Withheld {
    /// Withholds every slot beyond `concurrency` to begin with.
    fn new(slots: Arc<Semaphore>, cap: usize) -> Self {
        let held = u32::try_from(cap)
            .ok()
            .and_then(|cap| slots.try_acquire_many_owned(cap).ok());
        Self { held, cap }
    }

    /// Withholds `cap - ahead` slots, taking them from the freshly acquired `permits` or
    /// giving back what is withheld beyond that; returns what is left to request.
    fn adjust(
        &mut self,
        mut permits: OwnedSemaphorePermit,
        ahead: usize,
    ) -> Option<OwnedSemaphorePermit> {
        let target = self.cap.saturating_sub(ahead);
        let held = self
            .held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if held > target {
            // Back to the semaphore: the next acquire requests them.
            drop(
                self.held
                    .as_mut()
                    .and_then(|held| held.split(held.num_permits() - target)),
            );
            return Some(permits);
        }
        let owed = target - held;
        if owed >= permits.num_permits() {
            self.hold(permits);
            return None;
        }
        if let Some(owed) = permits.split(owed) {
            self.hold(owed);
        }
        Some(permits)
    }

    fn hold(&mut self, permits: OwnedSemaphorePermit) {
        match &mut self.held {
            Some(held) => held.merge(permits),
            None => self.held = Some(permits),
        }
    }
}

/// Whether `free` slots are to be asked for now, with `ahead` events taken ahead of
/// `concurrency`. While events are taken ahead, a freed slot of that margin waits for others
/// to free: one request for many events costs the server less than one request per finished
/// event, and the events in hand still cover every reconcile slot. Without events ahead, every
/// free slot is asked for at once.
fn worth_requesting(free: usize, concurrency: usize, ahead: usize) -> bool {
    let in_hand = (concurrency + ahead).saturating_sub(free);
    free >= (ahead / 2).max(1) || in_hand < concurrency
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.join_next().await {
        report_task(result);
    }
}

fn report_task(result: Result<(), tokio::task::JoinError>) {
    if let Err(err) = result {
        if !err.is_cancelled() {
            tracing::error!(error = %err, "event task failed");
        }
    }
}

async fn settle_with_permit(
    message: jetstream::Message,
    kind: AckKind,
    _permit: OwnedSemaphorePermit,
) {
    settle(&message, kind).await;
}

/// How often the consumer's state is read from the server.
const CONSUMER_POLL: Duration = Duration::from_secs(5);

/// Keeps `conveyor_driver_consumer_pending` and the heartbeat period up to date: another
/// instance (or an operator) may change the consumer's `ack_wait`, and heartbeats must follow
/// the server's value, not this instance's setting.
pub(super) async fn poll_consumer<D>(mut consumer: PullConsumer, shared: Arc<Shared<D>>) {
    loop {
        match consumer.info().await {
            Ok(info) => {
                shared.metrics.set_pending(info.num_pending);
                shared.ack_wait.set(info.config.ack_wait);
            }
            Err(err) => tracing::debug!(error = %err, "consumer info not available"),
        }
        tokio::time::sleep(CONSUMER_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::worth_requesting;

    #[test]
    fn without_events_ahead_every_free_slot_is_asked_for() {
        assert!(worth_requesting(1, 1, 0));
        assert!(worth_requesting(1, 64, 0));
    }

    #[test]
    fn slots_of_the_ahead_margin_wait_for_half_of_it() {
        // Concurrency 1 with 40 ahead: 41 slots, one freed at a time.
        assert!(!worth_requesting(1, 1, 40));
        assert!(!worth_requesting(19, 1, 40));
        assert!(worth_requesting(20, 1, 40));
        // Concurrency 64 with 64 ahead.
        assert!(!worth_requesting(31, 64, 64));
        assert!(worth_requesting(32, 64, 64));
    }

    #[test]
    fn a_slot_is_asked_for_at_once_when_the_events_in_hand_no_longer_cover_the_concurrency() {
        // 4 ahead, so up to 2 slots may wait, but only while 8 events are still in hand.
        assert!(!worth_requesting(1, 8, 4));
        assert!(worth_requesting(5, 8, 4));
        assert!(worth_requesting(1, 8, 1));
    }
}

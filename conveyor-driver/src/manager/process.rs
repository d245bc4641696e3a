//! The Try-Catch-Ack loop for one event: wait for the resource's turn, reconcile (catching
//! panics), flush the run log, publish the result and wait for its PubAck, then settle the
//! message. In-progress acknowledgements keep the event ours while this runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tokio::sync::watch;
use tracing::Instrument;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::driver::Driver;
use crate::metrics::Metrics;
use crate::pipeline::{Incoming, Outcome, Pipeline, Run, Sink};
use crate::wire::{subjects, Received, ResultEnvelope};

use super::ordering::Turn;

/// What every event task shares.
pub(super) struct Shared<D> {
    pub(super) pipeline: Pipeline<D>,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) metrics: Arc<Metrics>,
    /// One permit per reconcile that may run at once; events prefetched beyond it wait here.
    pub(super) running: tokio::sync::Semaphore,
    /// The API client handed to every event, when an API URL is configured.
    #[cfg(feature = "client")]
    pub(super) api: Option<Client>,
}

/// One event in flight.
pub(super) struct Task<D> {
    pub(super) shared: Arc<Shared<D>>,
    pub(super) message: jetstream::Message,
    pub(super) received: Received,
    pub(super) turn: Turn,
    pub(super) abort: watch::Receiver<bool>,
    pub(super) stopping: watch::Receiver<bool>,
}

impl<D: Driver> Task<D> {
    pub(super) async fn run(self) {
        let Task {
            shared,
            message,
            received,
            turn,
            mut abort,
            stopping,
        } = self;
        let attempt = message
            .info()
            .map(|info| u64::try_from(info.delivered).unwrap_or(1))
            .unwrap_or(1);
        if attempt > 1 {
            shared.metrics.redelivered();
        }
        let incoming = Incoming::received(received, attempt);
        #[cfg(feature = "client")]
        let incoming = incoming.with_client(shared.api.as_ref());
        let sink = Sink::Publish {
            client: &shared.client,
            js: &shared.js,
            metrics: &shared.metrics,
        };
        let run = shared.pipeline.start(incoming, sink);
        let span = run.span.clone();
        let work = handle(&shared, run, attempt, turn, stopping).instrument(span);
        tokio::pin!(work);
        let period = shared.pipeline.config().ack_wait / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let kind = loop {
            tokio::select! {
                biased;
                kind = &mut work => break kind,
                _ = aborted(&mut abort) => break AckKind::Nak(None),
                _ = progress.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %err, "in-progress acknowledgement not sent");
                    }
                }
            }
        };
        settle(message, kind).await;
    }
}

/// Completes once the shutdown timeout has passed and unfinished events are to be handed back.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    // An error means the manager is gone: hand the event back as well.
    let _ = abort.wait_for(|aborted| *aborted).await;
}

/// Runs the event to the point where its acknowledgement is known.
async fn handle<D: Driver>(
    shared: &Shared<D>,
    run: Run,
    attempt: u64,
    turn: Turn,
    mut stopping: watch::Receiver<bool>,
) -> AckKind {
    let waiting = shared.metrics.waiting();
    let _turn = tokio::select! {
        biased;
        turn = turn.wait() => turn,
        // Waiting for an earlier event of its resource: after SIGTERM nothing new starts.
        _ = stopping.wait_for(|stopping| *stopping) => return AckKind::Nak(None),
    };
    let _running = tokio::select! {
        biased;
        permit = shared.running.acquire() => permit,
        // A prefetched event that has not started: another instance can take it now.
        _ = stopping.wait_for(|stopping| *stopping) => return AckKind::Nak(None),
    };
    drop(waiting);
    let _in_flight = shared.metrics.in_flight();
    let logger = run.logger.clone();
    let started = std::time::Instant::now();
    let (outcome, counted) = shared.pipeline.reconcile(run).await;
    shared.metrics.reconciled(counted, started.elapsed());
    logger.flush().await;
    let envelope = match outcome {
        Outcome::Publish(envelope) => envelope,
        Outcome::Retry { delay, .. } => return AckKind::Nak(Some(delay)),
        Outcome::Skipped => return AckKind::Ack, // filtered at dispatch already
    };
    let success = envelope.driverresult.success;
    match publish(&shared.js, &envelope).await {
        Ok(()) => {
            tracing::info!(success, "result published");
            AckKind::Ack
        }
        Err(err) => {
            shared.metrics.result_publish_failed();
            let delay = shared.pipeline.config().backoff(attempt);
            tracing::warn!(error = %err, retry_in = ?delay, "result not published; the event will come back");
            AckKind::Nak(Some(delay))
        }
    }
}

/// How often a result publish is tried before the event is naked. A short outage should not
/// cost a whole new reconcile, a long one should not hold the event here.
const PUBLISH_TRIES: u32 = 3;

/// Publishes the envelope and waits for JetStream to store it, trying a few times.
async fn publish(js: &jetstream::Context, envelope: &ResultEnvelope) -> Result<(), PublishError> {
    let body = bytes::Bytes::from(serde_json::to_vec(envelope)?);
    let mut delay = Duration::from_millis(200);
    for _ in 1..PUBLISH_TRIES {
        match publish_once(js, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) => tracing::debug!(error = %err, retry_in = ?delay, "result publish failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    publish_once(js, body).await
}

type PublishError = Box<dyn std::error::Error + Send + Sync>;

async fn publish_once(js: &jetstream::Context, body: bytes::Bytes) -> Result<(), PublishError> {
    js.publish(subjects::RESULT, body).await?.await?;
    Ok(())
}

/// Sends `kind` for `message`; a failure is only reported, as JetStream redelivers anyway.
pub(super) async fn settle(message: jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %err, "acknowledgement not sent");
    }
}

//! The Try-Catch-Ack loop for one event: wait for the resource's turn, reconcile (catching
//! panics), flush the run log, publish the result and wait for its PubAck, then settle the
//! message. In-progress acknowledgements keep the event ours while this runs.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::client::Client;
use crate::config::Config;
use crate::driver::{Driver, Event};
use crate::logger::{Logger, RunContext};
use crate::metrics::{Counted, Metrics};
use crate::wire::{
    subjects, DriverMessage, DriverResult, DriverResultEvent, Received, ResultEnvelope,
};

use super::ordering::Turn;
use super::settle;

/// What every event task shares.
pub(super) struct Shared<D> {
    pub(super) driver: Arc<D>,
    pub(super) name: String,
    pub(super) config: Config,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) metrics: Arc<Metrics>,
    /// One permit per reconcile that may run at once; events prefetched beyond it wait here.
    pub(super) running: tokio::sync::Semaphore,
    /// The API client handed to every event, when an API URL is configured.
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

/// What reconciling decided for the event, before the result is published.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Publish this result, then ack.
    Publish(DriverResult),
    /// Transient failure with deliveries left: nak with this delay.
    Retry {
        /// When the event comes back.
        delay: Duration,
        /// The error, as reconcile returned it.
        message: String,
    },
}

/// The event handed to `reconcile` for `message` on delivery `attempt`, carrying the API
/// client when one is configured.
pub(crate) fn event(message: DriverMessage, attempt: u64, client: Option<&Client>) -> Event {
    let event = Event::new(message.event, message.id, message.run_id, message.payload)
        .with_attempt(attempt);
    match client {
        Some(client) => event.with_client(client.clone()),
        None => event,
    }
}

/// Who a run's log lines belong to, from the message being handled.
pub(crate) fn run_context(driver: &str, message: &DriverMessage) -> RunContext {
    RunContext {
        run_id: message.run_id.clone(),
        driver: driver.to_owned(),
        pipeline: message.payload.pipeline.clone().filter(|p| !p.is_empty()),
        event: message.event.clone(),
        resource: format!("{}/{}", message.payload.resource, message.payload.name),
    }
}

/// The span a reconcile runs in, here and in the test kit: it names the driver, run, event,
/// resource and message, and carries the run's logger for the tracing bridge.
pub(crate) fn reconcile_span(
    message: &DriverMessage,
    attempt: u64,
    logger: &Logger,
) -> tracing::Span {
    crate::bridge::with_run_logger(logger, || {
        tracing::info_span!(
            "reconcile",
            driver = %logger.driver(),
            run_id = %message.run_id,
            event = %message.event,
            resource = %format_args!("{}/{}", message.payload.resource, message.payload.name),
            resource_type = %message.payload.resource,
            resource_name = %message.payload.name,
            message_id = %message.id,
            attempt,
        )
    })
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
        let context = run_context(&shared.name, &received.message);
        let logger = Logger::publishing(
            context,
            shared.client.clone(),
            shared.js.clone(),
            Arc::clone(&shared.metrics),
        );
        let span = reconcile_span(&received.message, attempt, &logger);
        let work = handle(&shared, received, attempt, turn, stopping, logger).instrument(span);
        tokio::pin!(work);
        let period = shared.config.ack_wait / 3;
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
    received: Received,
    attempt: u64,
    turn: Turn,
    mut stopping: watch::Receiver<bool>,
    logger: Logger,
) -> AckKind {
    let waiting = shared.metrics.waiting();
    let _turn = turn.wait().await;
    let _running = tokio::select! {
        biased;
        permit = shared.running.acquire() => permit,
        // A prefetched event that has not started: another instance can take it now.
        _ = stopping.wait_for(|stopping| *stopping) => return AckKind::Nak(None),
    };
    drop(waiting);
    let _in_flight = shared.metrics.in_flight();
    let Received {
        message,
        raw_resource,
    } = received;
    let run_id = message.run_id.clone();
    let event = event(message, attempt, shared.api.as_ref());
    let started = std::time::Instant::now();
    let (outcome, counted) = reconcile(&*shared.driver, &shared.config, event, &logger).await;
    shared.metrics.reconciled(counted, started.elapsed());
    logger.flush().await;
    let result = match outcome {
        Outcome::Retry { delay, .. } => return AckKind::Nak(Some(delay)),
        Outcome::Publish(result) => result,
    };
    let success = result.success;
    let envelope = ResultEnvelope::new(
        run_id,
        raw_resource,
        DriverResultEvent::new(result, &shared.name),
    );
    match publish(&shared.js, &envelope).await {
        Ok(()) => {
            tracing::info!(success, "result published");
            AckKind::Ack
        }
        Err(err) => {
            shared.metrics.result_publish_failed();
            let delay = shared.config.backoff(attempt);
            tracing::warn!(error = %err, retry_in = ?delay, "result not published; the event will come back");
            AckKind::Nak(Some(delay))
        }
    }
}

/// Calls the driver, turning panics and errors into an [`Outcome`]; the runtime and the test
/// kit share it, so both decide alike. Also says how the reconcile is counted in the metrics.
pub(crate) async fn reconcile<D: Driver>(
    driver: &D,
    config: &Config,
    event: Event,
    logger: &Logger,
) -> (Outcome, Counted) {
    let attempt = event.attempt;
    let max = u64::from(config.max_deliver);
    if attempt > max {
        // Earlier deliveries never settled (e.g. the instance died each time): stop here.
        let message =
            format!("gave up: event delivered {attempt} times, more than max_deliver ({max})");
        logger.log(message.clone());
        return (
            Outcome::Publish(DriverResult::failure(message)),
            Counted::Failure,
        );
    }
    let run = AssertUnwindSafe(driver.reconcile(event, logger.clone())).catch_unwind();
    match run.await {
        Ok(Ok(result)) => {
            let counted = if result.success {
                Counted::Success
            } else {
                Counted::Failure
            };
            (Outcome::Publish(result), counted)
        }
        Ok(Err(error)) if error.is_transient() && attempt < max => {
            let delay = error
                .retry_delay()
                .unwrap_or_else(|| config.backoff(attempt));
            logger.log(format!(
                "attempt {attempt} of {max} failed: {error}; retrying in {delay:?}"
            ));
            let message = error.message().to_owned();
            (Outcome::Retry { delay, message }, Counted::Retry)
        }
        Ok(Err(error)) if error.is_transient() => {
            let message = format!("{error} (gave up after {attempt} attempts)");
            (
                Outcome::Publish(DriverResult::failure(message)),
                Counted::Failure,
            )
        }
        Ok(Err(error)) => (
            Outcome::Publish(DriverResult::failure(error.message())),
            Counted::Failure,
        ),
        Err(panic) => {
            let message = format!("reconcile panicked: {}", panic_message(panic.as_ref()));
            tracing::error!("{message}");
            (
                Outcome::Publish(DriverResult::failure(message)),
                Counted::Panic,
            )
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

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "(panic payload is not a string)"
    }
}

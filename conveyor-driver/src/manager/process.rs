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

use crate::config::Config;
use crate::driver::{Driver, Event};
use crate::logger::{Logger, RunContext};
use crate::wire::{subjects, DriverResult, DriverResultEvent, Received, ResultEnvelope};

use super::ordering::Turn;
use super::settle;

/// What every event task shares.
pub(super) struct Shared<D> {
    pub(super) driver: Arc<D>,
    pub(super) name: String,
    pub(super) config: Config,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
}

/// One event in flight.
pub(super) struct Task<D> {
    pub(super) shared: Arc<Shared<D>>,
    pub(super) message: jetstream::Message,
    pub(super) received: Received,
    pub(super) turn: Turn,
    pub(super) abort: watch::Receiver<bool>,
}

/// What reconciling decided for the event, before the result is published.
enum Outcome {
    /// Publish this result, then ack.
    Publish(DriverResult),
    /// Transient failure with deliveries left: nak with this delay.
    Retry(Duration),
}

impl<D: Driver> Task<D> {
    pub(super) async fn run(self) {
        let Task {
            shared,
            message,
            received,
            turn,
            mut abort,
        } = self;
        let attempt = message
            .info()
            .map(|info| u64::try_from(info.delivered).unwrap_or(1))
            .unwrap_or(1);
        let span = tracing::info_span!(
            "reconcile",
            driver = %shared.name,
            run_id = %received.message.run_id,
            event = %received.message.event,
            resource = %format_args!("{}/{}", received.message.payload.resource, received.message.payload.name),
            message_id = %received.message.id,
            attempt,
        );
        let work = handle(&shared, received, attempt, turn).instrument(span);
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
) -> AckKind {
    let _turn = turn.wait().await;
    let Received {
        message,
        raw_resource,
    } = received;
    let context = RunContext {
        run_id: message.run_id.clone(),
        driver: shared.name.clone(),
        pipeline: message.payload.pipeline.clone().filter(|p| !p.is_empty()),
        event: message.event.clone(),
        resource: format!("{}/{}", message.payload.resource, message.payload.name),
    };
    let logger = Logger::publishing(context, shared.client.clone(), shared.js.clone());
    let run_id = message.run_id.clone();
    let event = Event {
        name: message.event,
        message_id: message.id,
        run_id: message.run_id,
        resource: message.payload,
        attempt,
    };
    let outcome = reconcile(shared, event, &logger).await;
    logger.flush().await;
    let result = match outcome {
        Outcome::Retry(delay) => return AckKind::Nak(Some(delay)),
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
            let delay = shared.config.backoff(attempt);
            tracing::warn!(error = %err, retry_in = ?delay, "result not published; the event will come back");
            AckKind::Nak(Some(delay))
        }
    }
}

/// Calls the driver, turning panics and errors into an [`Outcome`].
async fn reconcile<D: Driver>(shared: &Shared<D>, event: Event, logger: &Logger) -> Outcome {
    let attempt = event.attempt;
    let max = u64::from(shared.config.max_deliver);
    if attempt > max {
        // Earlier deliveries never settled (e.g. the instance died each time): stop here.
        let message =
            format!("gave up: event delivered {attempt} times, more than max_deliver ({max})");
        logger.log(message.clone());
        return Outcome::Publish(DriverResult::failure(message));
    }
    let run = AssertUnwindSafe(shared.driver.reconcile(event, logger.clone())).catch_unwind();
    match run.await {
        Ok(Ok(result)) => Outcome::Publish(result),
        Ok(Err(error)) if error.is_transient() && attempt < max => {
            let delay = error
                .retry_delay()
                .unwrap_or_else(|| shared.config.backoff(attempt));
            logger.log(format!(
                "attempt {attempt} of {max} failed: {error}; retrying in {delay:?}"
            ));
            Outcome::Retry(delay)
        }
        Ok(Err(error)) if error.is_transient() => {
            let message = format!("{error} (gave up after {attempt} attempts)");
            Outcome::Publish(DriverResult::failure(message))
        }
        Ok(Err(error)) => Outcome::Publish(DriverResult::failure(error.message())),
        Err(panic) => {
            let message = format!("reconcile panicked: {}", panic_message(panic.as_ref()));
            tracing::error!("{message}");
            Outcome::Publish(DriverResult::failure(message))
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

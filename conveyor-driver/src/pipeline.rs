//! One event, from the received message to its outcome, result envelope and log lines.
//!
//! This is the only code that decides what an event becomes: the Driver Manager, the test kit
//! and `invoke` all run events through a [`Pipeline`], so a panic, a transient error, the last
//! allowed delivery or an event the driver does not handle come out the same in each. What
//! surrounds it differs: the manager waits for the resource's turn and a slot, keeps the event
//! alive and publishes; the test kit and `invoke` capture the log lines instead.

use std::any::Any;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::value::RawValue;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::config::Config;
use crate::driver::{Driver, Event};
use crate::logger::{Capture, LogPublishing, Logger, RunContext};
use crate::metrics::Counted;
use crate::otel;
use crate::state::SharedState;
use crate::wire::{DriverMessage, DriverResult, DriverResultEvent, Received, ResultEnvelope};

/// A driver with what decides the fate of its events: its name, the events it handles and the
/// retry settings.
pub(crate) struct Pipeline<D> {
    driver: D,
    name: String,
    events: Option<HashSet<String>>,
    config: Config,
    /// What the driver's `State<T>` parameters get, handed to every event.
    state: Option<SharedState>,
}

/// An event as the pipeline takes it: the [`Event`] handed to `reconcile`, and the resource
/// exactly as received, echoed in the result envelope.
pub(crate) struct Incoming {
    pub(crate) event: Event,
    pub(crate) raw_resource: Box<RawValue>,
    /// The trace the event continues, from its NATS message (see [`crate::otel`]).
    delivery: otel::Delivery,
}

impl Incoming {
    /// A message from the `messages` stream on delivery `attempt`.
    pub(crate) fn received(received: Received, attempt: u64) -> Self {
        let Received {
            message,
            raw_resource,
        } = received;
        let DriverMessage {
            event,
            payload,
            id,
            run_id,
        } = message;
        Self {
            event: Event::new(event, id, run_id, payload).with_attempt(attempt),
            raw_resource,
            delivery: Default::default(),
        }
    }

    /// Takes the trace context and subject of the NATS `message` the event came in.
    pub(crate) fn traced(mut self, message: &async_nats::Message) -> Self {
        self.delivery = otel::Delivery::of(message);
        self
    }

    /// Hands the event the API client, when one is configured.
    #[cfg(feature = "client")]
    pub(crate) fn with_client(mut self, client: Option<&Client>) -> Self {
        if let Some(client) = client {
            self.event = self.event.with_client(client.clone());
        }
        self
    }

    /// An event made in code (the test kit): its resource is echoed as it serializes.
    pub(crate) fn made(event: Event) -> Self {
        let raw_resource = serde_json::value::to_raw_value(&event.resource)
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self {
            event,
            raw_resource,
            delivery: Default::default(),
        }
    }
}

/// Where the manager publishes a run's log lines.
pub(crate) struct Publish<'a> {
    pub(crate) client: &'a async_nats::Client,
    pub(crate) js: &'a async_nats::jetstream::Context,
    pub(crate) metrics: &'a Arc<crate::metrics::Metrics>,
    /// The instance's bound on log lines in hand.
    pub(crate) log_buffer: &'a Arc<crate::logger::LogBuffer>,
}

/// An event being run: its logger and the span its work runs in.
pub(crate) struct Run {
    incoming: Incoming,
    pub(crate) logger: Logger,
    pub(crate) span: tracing::Span,
}

/// What the runtime does with an event.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Publish this envelope, then ack.
    Publish(ResultEnvelope),
    /// A transient failure with deliveries left: nak with this delay.
    Retry {
        /// When the event comes back.
        delay: Duration,
        /// The error, as reconcile returned it.
        message: String,
    },
    /// The driver does not handle this event: ack, no result.
    Skipped,
}

impl<D: Driver> Pipeline<D> {
    /// The pipeline of `driver` with `config`'s retry settings.
    pub(crate) fn new(driver: D, config: Config) -> Self {
        let name = driver.name();
        let events = driver.events().map(|events| events.into_iter().collect());
        Self {
            driver,
            name,
            events,
            config,
            state: None,
        }
    }
}

impl<D> Pipeline<D> {
    pub(crate) fn driver(&self) -> &D {
        &self.driver
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    pub(crate) fn state(&self) -> Option<&SharedState> {
        self.state.as_ref()
    }

    pub(crate) fn set_state(&mut self, state: Option<SharedState>) {
        self.state = state;
    }

    /// The events the driver handles, sorted; `None` means all.
    pub(crate) fn events(&self) -> Option<Vec<String>> {
        self.events.as_ref().map(|events| {
            let mut events: Vec<String> = events.iter().cloned().collect();
            events.sort();
            events
        })
    }

    /// Whether the driver handles events named `event`; others are acked without a result.
    pub(crate) fn handles(&self, event: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(event))
    }
}

impl<D: Driver> Pipeline<D> {
    /// Gives the event a logger keeping its lines in `capture` (the test kit, `invoke`), and
    /// its span. The span must be made under the subscriber that is to see the run's `tracing`
    /// events.
    pub(crate) fn start(&self, incoming: Incoming, capture: Arc<Capture>) -> Run {
        self.begin(incoming, |context| {
            (Logger::capturing(context, capture), ())
        })
        .0
    }

    /// Gives the event a logger publishing its lines to NATS (the manager), and its span; the
    /// caller drives the returned publisher beside the work.
    pub(crate) fn start_publishing(
        &self,
        incoming: Incoming,
        to: Publish<'_>,
    ) -> (Run, LogPublishing) {
        self.begin(incoming, |context| {
            Logger::publishing(
                context,
                to.client.clone(),
                to.js.clone(),
                Arc::clone(to.metrics),
                Arc::clone(to.log_buffer),
            )
        })
    }

    /// The run of `incoming`, with the logger `logger` makes for its context and what comes
    /// with that logger.
    fn begin<T>(
        &self,
        mut incoming: Incoming,
        logger: impl FnOnce(RunContext) -> (Logger, T),
    ) -> (Run, T) {
        incoming.event.set_state(self.state.clone());
        let context = run_context(&self.name, &incoming.event);
        let trace = context.trace.clone();
        let (logger, with) = logger(context);
        let span = reconcile_span(&incoming.event, &logger);
        let delivery = std::mem::take(&mut incoming.delivery);
        otel::start_span(
            &span,
            delivery,
            &incoming.event.message_id,
            &self.name,
            &trace,
        );
        let run = Run {
            incoming,
            logger,
            span,
        };
        (run, with)
    }

    /// Reconciles the event (catching panics) and says what becomes of it, with how it counts
    /// in the metrics. Events the driver does not handle are skipped without calling it.
    pub(crate) async fn reconcile(&self, run: Run) -> (Outcome, Counted) {
        let Run {
            incoming,
            logger,
            span,
        } = run;
        if !self.handles(&incoming.event.name) {
            return (Outcome::Skipped, Counted::Success);
        }
        let run_id = incoming.event.run_id.clone();
        let (decided, counted) = {
            use tracing::Instrument;
            self.decide(incoming.event, &logger)
                .instrument(span.clone())
                .await
        };
        otel::record_outcome(&span, counted, decided.error());
        let outcome = match decided {
            Decided::Publish(result) => {
                Outcome::Publish(self.envelope(run_id, incoming.raw_resource, result))
            }
            Decided::Retry { delay, message } => Outcome::Retry { delay, message },
        };
        (outcome, counted)
    }

    /// The result envelope of a run, as it is published to `pipelines.driver.result`.
    fn envelope(
        &self,
        run_id: String,
        raw_resource: Box<RawValue>,
        result: DriverResult,
    ) -> ResultEnvelope {
        ResultEnvelope::new(
            run_id,
            raw_resource,
            DriverResultEvent::new(result, &self.name),
        )
    }

    /// The envelope replacing `envelope`, of `size` bytes on the wire, which exceeds the
    /// server's `limit`: a failed result saying so, without data. It is published on the same
    /// attempt: redelivering the event would run the work again only to produce the same
    /// result.
    pub(crate) fn too_large(
        &self,
        envelope: ResultEnvelope,
        size: usize,
        limit: usize,
    ) -> ResultEnvelope {
        let message =
            format!("result of {size} bytes exceeds the server's max_payload of {limit} bytes");
        self.envelope(
            envelope.run_id,
            envelope.resource,
            DriverResult::failure(message),
        )
    }

    /// `envelope` with its resource cut down to what the pipeline engine needs to place a
    /// failed result (`id`, `name`, `resource`, `pipeline`; empty `metadata`, no `spec`): for
    /// a resource so large that even a too-large failure does not fit with it. A failed
    /// result does not advance the pipeline, so no later step sees the cut resource.
    pub(crate) fn bare(&self, envelope: ResultEnvelope) -> ResultEnvelope {
        let resource = bare_resource(&envelope.resource);
        self.envelope(envelope.run_id, resource, envelope.driverresult.into())
    }

    /// Calls the driver, turning the last allowed delivery, panics and errors into a result or
    /// a retry.
    async fn decide(&self, event: Event, logger: &Logger) -> (Decided, Counted) {
        let attempt = event.attempt;
        let max = u64::from(self.config.max_deliver);
        if attempt > max {
            // Earlier deliveries never settled (e.g. the instance died each time): stop here.
            let message =
                format!("gave up: event delivered {attempt} times, more than max_deliver ({max})");
            logger.log(message.clone());
            return (Decided::failure(message), Counted::Failure);
        }
        let run = AssertUnwindSafe(self.driver.reconcile(event, logger.clone())).catch_unwind();
        let deadline = self.config.deadline(self.driver.timeout());
        let Some(run) = within(deadline, run).await else {
            // Dropping the reconcile's future ended it, and with it the child processes it
            // started with `kill_on_drop`. Retrying would only hang again.
            let limit = humantime::format_duration(deadline.unwrap_or_default());
            let message = format!("reconcile timed out after {limit}");
            logger.log(message.clone());
            return (Decided::failure(message), Counted::Failure);
        };
        match run {
            Ok(Ok(result)) => {
                let counted = if result.success {
                    Counted::Success
                } else {
                    Counted::Failure
                };
                (Decided::Publish(result), counted)
            }
            Ok(Err(error)) if error.is_transient() && attempt < max => {
                let delay = error
                    .retry_delay()
                    .unwrap_or_else(|| self.config.backoff(attempt));
                logger.log(format!(
                    "attempt {attempt} of {max} failed: {error}; retrying in {delay:?}"
                ));
                let message = error.message().to_owned();
                (Decided::Retry { delay, message }, Counted::Retry)
            }
            Ok(Err(error)) if error.is_transient() => {
                let message = format!("{error} (gave up after {attempt} attempts)");
                (Decided::failure(message), Counted::Failure)
            }
            Ok(Err(error)) => (Decided::failure(error.message()), Counted::Failure),
            Err(panic) => {
                let message = format!("reconcile panicked: {}", panic_message(panic.as_ref()));
                tracing::error!("{message}");
                (Decided::failure(message), Counted::Panic)
            }
        }
    }
}

/// `work`'s output, or `None` when `deadline` passed first (no deadline: it runs to the end).
async fn within<T>(
    deadline: Option<Duration>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// What reconciling decided, before the envelope is made.
enum Decided {
    Publish(DriverResult),
    Retry { delay: Duration, message: String },
}

impl Decided {
    fn failure(message: impl Into<String>) -> Self {
        Self::Publish(DriverResult::failure(message))
    }

    /// The error message of a failed result or a retry.
    fn error(&self) -> Option<&str> {
        match self {
            Self::Publish(result) if result.success => None,
            Self::Publish(result) => Some(&result.message),
            Self::Retry { message, .. } => Some(message),
        }
    }
}

/// The identity fields of `resource`, with empty `metadata` and a null `spec`.
fn bare_resource(resource: &RawValue) -> Box<RawValue> {
    let full: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(resource.get()).unwrap_or_default();
    let mut bare: serde_json::Map<String, serde_json::Value> =
        ["id", "name", "resource", "pipeline"]
            .into_iter()
            .filter_map(|key| Some((key.to_owned(), full.get(key)?.clone())))
            .collect();
    bare.insert(
        "metadata".to_owned(),
        serde_json::Value::Object(Default::default()),
    );
    bare.insert("spec".to_owned(), serde_json::Value::Null);
    serde_json::value::to_raw_value(&bare).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Who a run's log lines belong to.
fn run_context(driver: &str, event: &Event) -> RunContext {
    RunContext {
        run_id: event.run_id.clone(),
        driver: driver.to_owned(),
        pipeline: event.resource.pipeline.clone().filter(|p| !p.is_empty()),
        event: event.name.clone(),
        resource: format!("{}/{}", event.resource.resource, event.resource.name),
        message_id: event.message_id.clone(),
        attempt: event.attempt,
        trace: Default::default(),
    }
}

/// The span a run's work goes on in: it names the driver, run, event, resource and message,
/// and carries the run's logger for the tracing bridge. `otel.kind` stays empty (and out of
/// the local output) unless OpenTelemetry records it.
fn reconcile_span(event: &Event, logger: &Logger) -> tracing::Span {
    crate::bridge::with_run_logger(logger, || {
        tracing::info_span!(
            "reconcile",
            driver = %logger.driver(),
            run_id = %event.run_id,
            event = %event.name,
            resource = %format_args!("{}/{}", event.resource.resource, event.resource.name),
            resource_type = %event.resource.resource,
            resource_name = %event.resource.name,
            message_id = %event.message_id,
            attempt = event.attempt,
            otel.kind = tracing::field::Empty,
        )
    })
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "(panic payload is not a string)"
    }
}

//! The Try-Catch-Ack loop for one event: wait for the resource's turn, reconcile (catching
//! panics), publish the result behind the run's log lines and wait for its PubAck and theirs,
//! then settle the message. In-progress acknowledgements keep the event ours while this runs.
//!
//! All of it runs on the protocol thread except the reconcile itself, which runs on the
//! user's runtime: a reconcile blocking its thread delays only itself, never the heartbeats.
//!
//! A result must fit the server's `max_payload`: one that does not is replaced, on the same
//! attempt, by a failed result saying so, since redelivering the event would only run the
//! work again. Each publish carries the run's result `Nats-Msg-Id`, so JetStream stores one
//! result however often it is published (retries, redeliveries).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use futures_util::FutureExt;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::Instrument;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::driver::Driver;
use crate::logger::{LogBuffer, LogPublishing};
use crate::metrics::{Counted, Metrics};
use crate::pipeline::{Incoming, Outcome, Pipeline, Publish, Run};
use crate::sizing::{self, Headers};
use crate::wire::{subjects, Received, ResultEnvelope};

use super::ordering::Turn;
use super::pace::{self, Pace};
use super::protocol::AbortOnDrop;

/// What every event task shares.
pub(super) struct Shared<D> {
    pub(super) pipeline: Pipeline<D>,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) metrics: Arc<Metrics>,
    /// One permit per reconcile that may run at once; events prefetched beyond it wait here.
    pub(super) running: tokio::sync::Semaphore,
    /// How long those permits are held, which sets how many events are taken ahead.
    pub(super) pace: Pace,
    /// The runtime reconciles run on: the one that called `run`.
    pub(super) user: tokio::runtime::Handle,
    /// The consumer's `ack_wait` as the server has it, which sets the heartbeat period.
    pub(super) ack_wait: AckWait,
    /// The bound on log lines in hand, over all runs.
    pub(super) log_buffer: Arc<LogBuffer>,
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
    /// The event's pull slot; `None` while it waits for its resource's turn (the slot of the
    /// event before it is handed on to it).
    pub(super) slot: Option<OwnedSemaphorePermit>,
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
            slot,
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
        let msg_id = sizing::result_msg_id(
            &received.message.run_id,
            shared.pipeline.name(),
            &received.message.id,
        );
        let incoming = Incoming::received(received, attempt).traced(&message);
        #[cfg(feature = "client")]
        let incoming = incoming.with_client(shared.api.as_ref());
        let to = Publish {
            client: &shared.client,
            js: &shared.js,
            metrics: &shared.metrics,
            log_buffer: &shared.log_buffer,
        };
        let (run, publishing) = shared.pipeline.start_publishing(incoming, to);
        let mut publishing = Some(publishing);
        let span = run.span.clone();
        let place = (turn, slot);
        // In a block of its own, so that the future's state does not stay beside the
        // settling's: the spawned task is as large as its largest state.
        let kind = {
            let work = handle(&shared, run, (attempt, &msg_id), place, stopping).instrument(span);
            tokio::pin!(work);
            loop {
                // Read each time: the server's `ack_wait` can change while the event runs.
                let beat = tokio::time::sleep(shared.ack_wait.heartbeat());
                tokio::select! {
                    biased;
                    kind = &mut work => break kind,
                    () = publish_logs(&mut publishing) => {}
                    _ = aborted(&mut abort) => break AckKind::Nak(None),
                    () = beat => {
                        if let Err(err) = message.ack_with(AckKind::Progress).await {
                            tracing::debug!(error = %err, "in-progress acknowledgement not sent");
                        }
                    }
                }
            }
        };
        settle(&message, kind).await;
        // The run's lines are flushed; only a clone of its logger kept past the run can
        // still log.
        if let Some(mut rest) = publishing {
            if (&mut rest).now_or_never().is_none() {
                tokio::spawn(rest);
            }
        }
    }
}

/// Drives the run's log publisher until it ends; then, or without one, never completes.
async fn publish_logs(publishing: &mut Option<LogPublishing>) {
    match publishing {
        Some(publisher) => {
            publisher.await;
            *publishing = None;
        }
        None => std::future::pending().await,
    }
}

/// Completes once the shutdown timeout has passed and unfinished events are to be handed back.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    // An error means the manager is gone: hand the event back as well.
    let _ = abort.wait_for(|aborted| *aborted).await;
}

/// Runs the event to the point where its acknowledgement is known. `delivery` is the
/// delivery attempt and the result's `Nats-Msg-Id`; `place` its resource's turn and its pull
/// slot, if it has one yet.
async fn handle<D: Driver>(
    shared: &Arc<Shared<D>>,
    run: Run,
    delivery: (u64, &str),
    (turn, slot): (Turn, Option<OwnedSemaphorePermit>),
    mut stopping: watch::Receiver<bool>,
) -> AckKind {
    let waiting = shared.metrics.waiting();
    let (mut turn, handed) = tokio::select! {
        biased;
        turn = turn.wait() => turn,
        // Waiting for an earlier event of its resource: after SIGTERM nothing new starts.
        _ = stopping.wait_for(|stopping| *stopping) => return AckKind::Nak(None),
    };
    // Passed on to the resource's next event when this one ends.
    turn.hold(slot.or(handed));
    let _running = tokio::select! {
        biased;
        permit = shared.running.acquire() => Running(permit, &shared.pace, Some(shared.pace.taken())),
        // A prefetched event that has not started: another instance can take it now.
        _ = stopping.wait_for(|stopping| *stopping) => return AckKind::Nak(None),
    };
    drop(waiting);
    let _in_flight = shared.metrics.in_flight();
    let logger = run.logger.clone();
    let started = Instant::now();
    let Some((outcome, counted)) = reconcile(shared, run).await else {
        return AckKind::Nak(Some(shared.pipeline.config().backoff(delivery.0)));
    };
    shared.metrics.reconciled(counted, started.elapsed());
    // The lines go out ahead of the result; their acknowledgements come back while the
    // result's is awaited, so waiting for them first would only add a round trip.
    logger.sent().await;
    let kind = match outcome {
        Outcome::Publish(envelope) => deliver(shared, envelope, delivery).await,
        Outcome::Retry { delay, .. } => AckKind::Nak(Some(delay)),
        Outcome::Skipped => AckKind::Ack, // filtered at dispatch already
    };
    // Settled only once the lines are stored too (or failed for good): what the instance
    // holds of a run is gone when the event is.
    logger.flush().await;
    kind
}

/// A reconcile slot, timed for the [`Pace`] until it is released.
struct Running<'a, P>(P, &'a Pace, Option<pace::Slot>);

impl<P> Drop for Running<'_, P> {
    fn drop(&mut self) {
        if let Some(slot) = self.2.take() {
            self.1.released(slot);
        }
    }
}

/// Reconciles on the user's runtime. `None` if the reconcile's task ended without an outcome
/// (the runtime shutting down under it; panics in the driver are caught inside).
async fn reconcile<D: Driver>(shared: &Arc<Shared<D>>, run: Run) -> Option<(Outcome, Counted)> {
    let on_user = Arc::clone(shared);
    let mut task = AbortOnDrop(
        shared
            .user
            .spawn(async move { on_user.pipeline.reconcile(run).await }),
    );
    match task.join().await {
        Ok(done) => Some(done),
        Err(err) => {
            tracing::error!(error = %err, "reconcile ended without an outcome; the event will come back");
            None
        }
    }
}

/// The consumer's `ack_wait` as last read from the server.
pub(super) struct AckWait(AtomicU64);

impl AckWait {
    pub(super) fn new(ack_wait: Duration) -> Self {
        let this = Self(AtomicU64::new(0));
        this.set(ack_wait);
        this
    }

    pub(super) fn set(&self, ack_wait: Duration) {
        let millis = u64::try_from(ack_wait.as_millis()).unwrap_or(u64::MAX);
        self.0.store(millis, Ordering::Relaxed);
    }

    /// A third of `ack_wait`: two heartbeats can be lost before JetStream redelivers.
    pub(super) fn heartbeat(&self) -> Duration {
        let millis = self.0.load(Ordering::Relaxed).max(3);
        Duration::from_millis(millis) / 3
    }
}

/// Publishes the result (or what replaces it when it is too large) and says how to settle.
async fn deliver<D: Driver>(
    shared: &Arc<Shared<D>>,
    envelope: ResultEnvelope,
    (attempt, msg_id): (u64, &str),
) -> AckKind {
    let headers = Headers::new()
        .msg_id(msg_id)
        .trace(&crate::otel::TraceHeaders::current());
    let limit = sizing::max_payload(&shared.client);
    let (body, success) = match fit(&shared.pipeline, envelope, headers.wire_len(), limit) {
        Ok(fitted) => fitted,
        Err(err) => {
            tracing::error!(error = %err, "result not published; the event is terminated");
            return AckKind::Term;
        }
    };
    match publish(&shared.js, body, headers.into_map()).await {
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

/// The body to publish for `envelope` within `limit` bytes, `headers` bytes of it taken by
/// the headers, and whether it is a success. A result too large becomes a too-large failure;
/// if even that does not fit, the same failure with the resource cut to its identity. Only a
/// resource whose identity alone is too large is an error: nothing about it can be published.
fn fit<D: Driver>(
    pipeline: &Pipeline<D>,
    envelope: ResultEnvelope,
    headers: usize,
    limit: usize,
) -> Result<(bytes::Bytes, bool), PublishError> {
    let body = serde_json::to_vec(&envelope)?;
    let size = body.len() + headers;
    if size <= limit {
        return Ok((body.into(), envelope.driverresult.success));
    }
    let replaced = pipeline.too_large(envelope, size, limit);
    tracing::warn!(
        size,
        limit,
        "result too large for the server; publishing a failed result instead"
    );
    let body = serde_json::to_vec(&replaced)?;
    if body.len() + headers <= limit {
        return Ok((body.into(), false));
    }
    let body = serde_json::to_vec(&pipeline.bare(replaced))?;
    if body.len() + headers <= limit {
        tracing::warn!(
            "the resource is too large as well; the failed result carries only its identity"
        );
        return Ok((body.into(), false));
    }
    Err(PublishError::Unfit {
        size: body.len() + headers,
        limit,
    })
}

/// How often a result publish is tried before the event is naked. A short outage should not
/// cost a whole new reconcile, a long one should not hold the event here.
const PUBLISH_TRIES: u32 = 3;

/// Publishes the body and waits for JetStream to store it, trying a few times. An error that
/// a retry cannot fix is returned at once.
async fn publish(
    js: &jetstream::Context,
    body: bytes::Bytes,
    headers: HeaderMap,
) -> Result<(), PublishError> {
    let mut delay = Duration::from_millis(200);
    for _ in 1..PUBLISH_TRIES {
        match publish_once(js, body.clone(), headers.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) if err.is_permanent() => return Err(err),
            Err(err) => tracing::debug!(error = %err, retry_in = ?delay, "result publish failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    publish_once(js, body, headers).await
}

async fn publish_once(
    js: &jetstream::Context,
    body: bytes::Bytes,
    headers: HeaderMap,
) -> Result<(), PublishError> {
    js.publish_with_headers(subjects::RESULT, headers, body)
        .await?
        .await?;
    Ok(())
}

/// Why a result was not published.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("result not encodable: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("even a bare failed result takes {size} bytes, more than the server's max_payload of {limit} bytes")]
    Unfit { size: usize, limit: usize },
    #[error(transparent)]
    Nats(#[from] jetstream::context::PublishError),
}

impl PublishError {
    /// Whether retrying cannot help: the message is refused for what it is (too large, a
    /// 4xx-style JetStream API error), not for the state of the connection. Transport errors
    /// and timeouts are not permanent.
    fn is_permanent(&self) -> bool {
        use jetstream::context::PublishErrorKind as Kind;
        let Self::Nats(err) = self else {
            return true;
        };
        match err.kind() {
            Kind::MaxPayloadExceeded | Kind::WrongLastMessageId | Kind::WrongLastSequence => true,
            Kind::Other => std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<jetstream::Error>())
                .is_some_and(|api| (400..500).contains(&api.code())),
            _ => false,
        }
    }
}

/// Sends `kind` for `message`; a failure is only reported, as JetStream redelivers anyway.
pub(super) async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %err, "acknowledgement not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetstream::context::{PublishError as Nats, PublishErrorKind as Kind};

    fn api_error(code: usize) -> PublishError {
        let answer = serde_json::json!({"code": code, "err_code": 10054, "description": "no"});
        let error: jetstream::Error = serde_json::from_value(answer).unwrap();
        PublishError::Nats(Nats::with_source(Kind::Other, error))
    }

    #[test]
    fn only_errors_a_retry_cannot_fix_are_permanent() {
        assert!(PublishError::Nats(Nats::new(Kind::MaxPayloadExceeded)).is_permanent());
        assert!(api_error(400).is_permanent());
        assert!(!api_error(503).is_permanent());
        let transport = [
            Kind::TimedOut,
            Kind::BrokenPipe,
            Kind::StreamNotFound,
            Kind::MaxAckPending,
        ];
        for kind in transport {
            assert!(
                !PublishError::Nats(Nats::new(kind)).is_permanent(),
                "{kind:?}"
            );
        }
    }
}

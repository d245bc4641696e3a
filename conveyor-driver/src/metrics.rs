//! Prometheus metrics and health endpoints of a running driver (off unless
//! [`Config::metrics_addr`](crate::Config::metrics_addr) is set).
//!
//! Every counter is an atomic created once at start-up, so counting costs no allocation per
//! event. The HTTP listener serves:
//!
//! - `GET /metrics`: the metrics in the Prometheus text format;
//! - `GET /healthz`: `200` while the process runs;
//! - `GET /readyz`: `200` once connected to NATS with the consumer bound, `503` otherwise.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `conveyor_driver_reconciles_total{outcome}` | counter | finished reconciles by outcome: `success`, `failure`, `retry`, `panic` |
//! | `conveyor_driver_reconcile_duration_seconds` | histogram | time spent in `reconcile` |
//! | `conveyor_driver_in_flight` | gauge | events holding one of the `concurrency` slots (reconciling or publishing their result); prefetched events waiting for a slot are not counted |
//! | `conveyor_driver_waiting` | gauge | events received and not started: prefetched ones waiting for a slot, and ones waiting for an earlier event of the same resource |
//! | `conveyor_driver_redeliveries_total` | counter | events received with an attempt above 1 |
//! | `conveyor_driver_poison_messages_total` | counter | messages terminated as unprocessable |
//! | `conveyor_driver_log_publish_failures_total` | counter | log lines not published or not persisted |
//! | `conveyor_driver_log_lines_dropped_total` | counter | log lines dropped because the log buffer (`CONVEYOR_LOG_BUFFER`) was full |
//! | `conveyor_driver_result_publish_failures_total` | counter | results not published (event naked) |
//! | `conveyor_driver_consumer_pending` | gauge | `num_pending` of the consumer, polled |

// Without the `metrics` feature the counters are kept (each costs an atomic add) but nothing
// serves them, so some are never read.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

#[cfg(feature = "metrics")]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a reconcile ended, as counted by `conveyor_driver_reconciles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Success,
    Failure,
    Retry,
    Panic,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The runtime's counters and readiness; shared by every event task.
pub(crate) struct Metrics {
    registry: Registry,
    success: Counter,
    failure: Counter,
    retry: Counter,
    panic: Counter,
    duration: Histogram,
    in_flight: Gauge,
    waiting: Gauge,
    redeliveries: Counter,
    poison: Counter,
    log_publish_failures: Counter,
    log_lines_dropped: Counter,
    result_publish_failures: Counter,
    consumer_pending: Gauge,
    connected: AtomicBool,
    bound: AtomicBool,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("conveyor_driver");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let outcome = |name| {
            reconciles
                .get_or_create(&OutcomeLabel { outcome: name })
                .clone()
        };
        let (success, failure, retry, panic) = (
            outcome("success"),
            outcome("failure"),
            outcome("retry"),
            outcome("panic"),
        );
        registry.register("reconciles", "Finished reconciles by outcome", reconciles);
        let duration = Histogram::new(exponential_buckets(0.005, 4.0, 10));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in reconcile",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Events holding a concurrency slot (reconciling or publishing their result)",
            in_flight.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "waiting",
            "Events received and not started (waiting for a slot or for their resource's turn)",
            waiting.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "redeliveries",
            "Events received again (attempt above 1)",
            redeliveries.clone(),
        );
        let poison = Counter::default();
        registry.register(
            "poison_messages",
            "Messages terminated as unprocessable",
            poison.clone(),
        );
        let log_publish_failures = Counter::default();
        registry.register(
            "log_publish_failures",
            "Log lines not published or not persisted",
            log_publish_failures.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log buffer was full",
            log_lines_dropped.clone(),
        );
        let result_publish_failures = Counter::default();
        registry.register(
            "result_publish_failures",
            "Results that could not be published",
            result_publish_failures.clone(),
        );
        let consumer_pending = Gauge::default();
        registry.register(
            "consumer_pending",
            "Events pending on the consumer (num_pending, polled)",
            consumer_pending.clone(),
        );
        Arc::new(Self {
            registry,
            success,
            failure,
            retry,
            panic,
            duration,
            in_flight,
            waiting,
            redeliveries,
            poison,
            log_publish_failures,
            log_lines_dropped,
            result_publish_failures,
            consumer_pending,
            connected: AtomicBool::new(false),
            bound: AtomicBool::new(false),
        })
    }

    pub(crate) fn reconciled(&self, counted: Counted, took: Duration) {
        match counted {
            Counted::Success => &self.success,
            Counted::Failure => &self.failure,
            Counted::Retry => &self.retry,
            Counted::Panic => &self.panic,
        }
        .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts an event holding a concurrency slot until the guard is dropped.
    pub(crate) fn in_flight(&self) -> Counting {
        Counting::new(&self.in_flight)
    }

    /// Counts a received event that has not started until the guard is dropped.
    pub(crate) fn waiting(&self) -> Counting {
        Counting::new(&self.waiting)
    }

    pub(crate) fn redelivered(&self) {
        self.redeliveries.inc();
    }

    pub(crate) fn poisoned(&self) {
        self.poison.inc();
    }

    pub(crate) fn log_publish_failed(&self) {
        self.log_publish_failures.inc();
    }

    pub(crate) fn log_line_dropped(&self) {
        self.log_lines_dropped.inc();
    }

    pub(crate) fn result_publish_failed(&self) {
        self.result_publish_failures.inc();
    }

    pub(crate) fn set_pending(&self, pending: u64) {
        self.consumer_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(crate) fn set_bound(&self, bound: bool) {
        self.bound.store(bound, Ordering::Relaxed);
    }

    #[cfg(any(feature = "metrics", test))]
    fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.bound.load(Ordering::Relaxed)
    }

    #[cfg(any(feature = "metrics", test))]
    fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One unit of a gauge, given back when dropped, however the event ends.
pub(crate) struct Counting(Gauge);

impl Counting {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds `addr` and serves the endpoints on the current Tokio runtime until the returned task
/// is aborted.
#[cfg(feature = "metrics")]
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics and health endpoints");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(error = %err, "metrics connection not accepted");
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&metrics, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %err, "metrics connection ended with an error");
                }
            });
        }
    }))
}

#[cfg(feature = "metrics")]
type Body = http_body_util::Full<bytes::Bytes>;

#[cfg(feature = "metrics")]
fn respond<B>(metrics: &Metrics, request: &hyper::Request<B>) -> hyper::Response<Body> {
    use hyper::StatusCode;
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&hyper::Method::GET, "/readyz") if metrics.ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        (&hyper::Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: not connected or consumer not bound\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Body::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_encoded() {
        let metrics = Metrics::new();
        metrics.reconciled(Counted::Success, Duration::from_millis(3));
        metrics.reconciled(Counted::Panic, Duration::from_millis(3));
        metrics.poisoned();
        {
            let _a = metrics.in_flight();
            let _b = metrics.in_flight();
            let _c = metrics.waiting();
            let text = metrics.encode();
            assert!(text.contains("conveyor_driver_in_flight 2\n"), "{text}");
            assert!(text.contains("conveyor_driver_waiting 1\n"), "{text}");
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"conveyor_driver_reconciles_total{outcome="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_reconciles_total{outcome="panic"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_reconciles_total{outcome="retry"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("conveyor_driver_poison_messages_total 1"),
            "{text}"
        );
        assert!(text.contains("conveyor_driver_in_flight 0"), "{text}");
        assert!(text.contains("conveyor_driver_waiting 0"), "{text}");
        assert!(
            text.contains("conveyor_driver_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(!metrics.ready());
        metrics.set_connected(true);
        metrics.set_bound(true);
        assert!(metrics.ready());
    }
}

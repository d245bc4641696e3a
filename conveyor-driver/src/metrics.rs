//! Prometheus metrics and health endpoints of a running driver (off unless
//! [`Config::metrics_addr`](crate::Config::metrics_addr) is set).
//!
//! Every counter is an atomic created once at start-up, so counting costs no allocation per
//! event. Every metric has the label `driver` (the drivers of one binary share the listener).
//! The HTTP listener serves:
//!
//! - `GET /metrics`: the metrics in the Prometheus text format;
//! - `GET /healthz`: `200` while the process runs;
//! - `GET /readyz`: `200` once connected to NATS with the consumer of every driver bound, `503`
//!   otherwise.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `conveyor_driver_reconciles_total{driver,outcome}` | counter | finished reconciles by outcome: `success`, `failure`, `retry`, `panic` |
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
mod server;
#[cfg(feature = "metrics")]
pub(crate) use server::serve;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
struct OutcomeLabels {
    driver: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabel {
    driver: String,
}

type Histograms = Family<DriverLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 10))
}

/// The metric families, each labelled `driver`, and the readiness of the process: one per
/// process, shared by the drivers it runs.
struct Registered {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histograms,
    in_flight: Family<DriverLabel, Gauge>,
    waiting: Family<DriverLabel, Gauge>,
    redeliveries: Family<DriverLabel, Counter>,
    poison: Family<DriverLabel, Counter>,
    log_publish_failures: Family<DriverLabel, Counter>,
    log_lines_dropped: Family<DriverLabel, Counter>,
    result_publish_failures: Family<DriverLabel, Counter>,
    consumer_pending: Family<DriverLabel, Gauge>,
    connected: AtomicBool,
    /// Drivers that count, and how many of them have their consumer bound.
    drivers: AtomicUsize,
    bound: AtomicUsize,
}

impl Registered {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("conveyor_driver");
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Finished reconciles by outcome",
            reconciles.clone(),
        );
        let duration = Histograms::new_with_constructor(duration_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in reconcile",
            duration.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<DriverLabel, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<DriverLabel, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        Self {
            reconciles,
            duration,
            in_flight: gauge(
                &mut registry,
                "in_flight",
                "Events holding a concurrency slot (reconciling or publishing their result)",
            ),
            waiting: gauge(
                &mut registry,
                "waiting",
                "Events received and not started (waiting for a slot or for their resource's turn)",
            ),
            redeliveries: counter(
                &mut registry,
                "redeliveries",
                "Events received again (attempt above 1)",
            ),
            poison: counter(
                &mut registry,
                "poison_messages",
                "Messages terminated as unprocessable",
            ),
            log_publish_failures: counter(
                &mut registry,
                "log_publish_failures",
                "Log lines not published or not persisted",
            ),
            log_lines_dropped: counter(
                &mut registry,
                "log_lines_dropped",
                "Log lines dropped because the log buffer was full",
            ),
            result_publish_failures: counter(
                &mut registry,
                "result_publish_failures",
                "Results that could not be published",
            ),
            consumer_pending: gauge(
                &mut registry,
                "consumer_pending",
                "Events pending on the consumer (num_pending, polled)",
            ),
            registry,
            connected: AtomicBool::new(false),
            drivers: AtomicUsize::new(0),
            bound: AtomicUsize::new(0),
        }
    }
}

/// The counters of one driver (label `driver`) and the readiness of the process; shared by
/// every event task of that driver.
pub(crate) struct Metrics {
    registered: Arc<Registered>,
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
    bound: AtomicBool,
}

impl Metrics {
    /// The metrics of `driver`, in a registry of its own.
    pub(crate) fn new(driver: &str) -> Arc<Self> {
        Self::registered(Arc::new(Registered::new()), driver)
    }

    /// The metrics of `driver`, in the registry of `self` (several drivers in one process).
    pub(crate) fn another(&self, driver: &str) -> Arc<Self> {
        Self::registered(Arc::clone(&self.registered), driver)
    }

    fn registered(registered: Arc<Registered>, driver: &str) -> Arc<Self> {
        let label = DriverLabel {
            driver: driver.to_owned(),
        };
        let outcome = |outcome| {
            registered
                .reconciles
                .get_or_create(&OutcomeLabels {
                    driver: driver.to_owned(),
                    outcome,
                })
                .clone()
        };
        let counter = |family: &Family<DriverLabel, Counter>| family.get_or_create(&label).clone();
        let gauge = |family: &Family<DriverLabel, Gauge>| family.get_or_create(&label).clone();
        registered.drivers.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            success: outcome("success"),
            failure: outcome("failure"),
            retry: outcome("retry"),
            panic: outcome("panic"),
            duration: registered.duration.get_or_create(&label).clone(),
            in_flight: gauge(&registered.in_flight),
            waiting: gauge(&registered.waiting),
            redeliveries: counter(&registered.redeliveries),
            poison: counter(&registered.poison),
            log_publish_failures: counter(&registered.log_publish_failures),
            log_lines_dropped: counter(&registered.log_lines_dropped),
            result_publish_failures: counter(&registered.result_publish_failures),
            consumer_pending: gauge(&registered.consumer_pending),
            bound: AtomicBool::new(false),
            registered: Arc::clone(&registered),
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

    /// The connection is shared by the drivers of a process.
    pub(crate) fn set_connected(&self, connected: bool) {
        self.registered
            .connected
            .store(connected, Ordering::Relaxed);
    }

    pub(crate) fn set_bound(&self, bound: bool) {
        if self.bound.swap(bound, Ordering::Relaxed) != bound {
            if bound {
                self.registered.bound.fetch_add(1, Ordering::Relaxed);
            } else {
                self.registered.bound.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Connected, with the consumer of every driver of the process bound.
    #[cfg(any(feature = "metrics", test))]
    fn ready(&self) -> bool {
        let registered = &self.registered;
        registered.connected.load(Ordering::Relaxed)
            && registered.bound.load(Ordering::Relaxed)
                == registered.drivers.load(Ordering::Relaxed)
    }

    /// Every driver's metrics.
    #[cfg(any(feature = "metrics", test))]
    fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registered.registry);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_encoded() {
        let metrics = Metrics::new("builder");
        metrics.reconciled(Counted::Success, Duration::from_millis(3));
        metrics.reconciled(Counted::Panic, Duration::from_millis(3));
        metrics.poisoned();
        {
            let _a = metrics.in_flight();
            let _b = metrics.in_flight();
            let _c = metrics.waiting();
            let text = metrics.encode();
            assert!(
                text.contains("conveyor_driver_in_flight{driver=\"builder\"} 2\n"),
                "{text}"
            );
            assert!(
                text.contains("conveyor_driver_waiting{driver=\"builder\"} 1\n"),
                "{text}"
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"conveyor_driver_reconciles_total{driver="builder",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conveyor_driver_reconciles_total{driver="builder",outcome="panic"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conveyor_driver_reconciles_total{driver="builder",outcome="retry"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_poison_messages_total{driver="builder"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_in_flight{driver="builder"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_waiting{driver="builder"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conveyor_driver_reconcile_duration_seconds_count{driver="builder"} 2"#
            ),
            "{text}"
        );
        assert!(!metrics.ready());
        metrics.set_connected(true);
        metrics.set_bound(true);
        assert!(metrics.ready());
    }

    #[test]
    fn the_drivers_of_one_process_share_the_registry_and_readiness() {
        let build = Metrics::new("build");
        let test = build.another("test");
        build.poisoned();
        test.reconciled(Counted::Failure, Duration::from_millis(1));
        let text = test.encode();
        assert_eq!(text, build.encode());
        assert!(
            text.contains(r#"conveyor_driver_poison_messages_total{driver="build"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_poison_messages_total{driver="test"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conveyor_driver_reconciles_total{driver="test",outcome="failure"} 1"#),
            "{text}"
        );
        // Each metric is declared once.
        assert_eq!(
            text.matches("# TYPE conveyor_driver_poison_messages counter")
                .count(),
            1
        );
        build.set_connected(true);
        build.set_bound(true);
        assert!(!build.ready(), "the consumer of `test` is not bound yet");
        test.set_bound(true);
        test.set_bound(true);
        assert!(build.ready() && test.ready());
        test.set_bound(false);
        assert!(!build.ready());
    }
}

//! A test kit for drivers: reconcile a synthetic event in-process, without NATS, and look at
//! the result and the log lines exactly as the runtime would publish them.
//!
//! The kit goes through the same code as the runtime: a panic becomes the same failed result, a
//! transient error is reported as a retry (the runtime would nak the event with that delay), a
//! spec that does not deserialize gives the same failed result, events the driver does not
//! handle are skipped without a result, and `tracing` events inside the reconcile become log
//! lines (the [tracing bridge](crate::bridge), here for every target at INFO and above).
//!
//! A complete unit test of a `#[driver]` driver:
//!
//! ```
//! use conveyor_driver::prelude::*;
//! use conveyor_driver::testing::{EventBuilder, Harness};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct BuildSpec { image: String }
//!
//! #[driver(name = "builder", resources = ["build"], main = false)]
//! async fn build(Spec(spec): Spec<BuildSpec>, log: Logger) -> Result<String, String> {
//!     log.log_with_labels(format!("pulling {}", spec.image), [("step", "pull")]);
//!     tracing::info!(image = %spec.image, "image pulled");
//!     if spec.image.is_empty() {
//!         return Err("no image".into());
//!     }
//!     Ok(spec.image)
//! }
//!
//! # fn main() {
//! // #[test]
//! // fn builds_the_image() {
//! let run = Harness::new(BuilderDriver).run_blocking(
//!     EventBuilder::new("build").name("app").spec(serde_json::json!({"image": "rust:1"})),
//! );
//! run.assert_success()
//!     .assert_logged("pulling rust:1")
//!     .assert_logged("image pulled image=rust:1");
//! assert_eq!(run.result().unwrap().data, "rust:1");
//! assert_eq!(run.lines()[0].label("step"), Some("pull"));
//! assert_eq!(run.envelope().unwrap()["driverresult"]["driver"], "builder");
//!
//! // A spec of the wrong shape fails the way the runtime fails it.
//! Harness::new(BuilderDriver)
//!     .run_blocking(EventBuilder::new("build").spec(serde_json::json!({"image": 7})))
//!     .assert_failure_contains("spec.image");
//! // }
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::bridge::RunLogLayer;
#[cfg(feature = "client")]
use crate::client::Client;
use crate::config::Config;
use crate::driver::{Driver, Event};
use crate::logger::Capture;
use crate::metrics::Counted;
use crate::pipeline::{Incoming, Outcome, Pipeline};
use crate::state::SharedState;
use crate::wire::DriverResult;

pub use crate::logger::LogLine;
pub use builders::{EventBuilder, ResourceBuilder};

mod builders;

/// Creates the Conveyor streams that are missing, as the Conveyor server creates them: for
/// tests and local development against a bare `nats-server -js`. In production the server
/// owns them ([`Config::create_streams`] does the same at start-up).
pub async fn create_streams(js: &async_nats::jetstream::Context) -> Result<(), crate::Error> {
    crate::manager::setup::create_streams(js).await
}

/// What the runtime would do with the event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TestOutcome {
    /// Publish this result, then ack the event.
    Published {
        /// The result.
        result: DriverResult,
        /// Whether it comes from a panic in `reconcile`.
        panicked: bool,
    },
    /// A transient error with deliveries left: the event would be naked and come back after
    /// `delay`.
    Retry {
        /// When the event would come back.
        delay: Duration,
        /// The error.
        message: String,
    },
    /// The driver does not handle this event (see [`Driver::events`]): acked, no result.
    Skipped,
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Published { result, .. } if result.success => {
                write!(f, "succeeded: {}", result.message)
            }
            Self::Published { result, .. } => write!(f, "failed: {}", result.message),
            Self::Retry { delay, message } => {
                write!(f, "would retry after {delay:?}: {message}")
            }
            Self::Skipped => f.write_str("skipped: the driver does not handle this event"),
        }
    }
}

/// Runs a driver on synthetic events, the way the runtime would, with a [`Config`] for the
/// retry settings (`max_deliver`, `retry_backoff`).
///
/// ```
/// # use conveyor_driver::prelude::*;
/// # use conveyor_driver::testing::{EventBuilder, Harness};
/// # struct Flaky;
/// # impl Driver for Flaky {
/// #     fn name(&self) -> String { "flaky".into() }
/// #     fn resources(&self) -> Vec<String> { vec!["job".into()] }
/// #     async fn reconcile(&self, _: Event, _: Logger) -> ReconcileResult {
/// #         Err(ReconcileError::transient("registry down"))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let harness = Harness::new(Flaky);
/// let run = harness.run(EventBuilder::new("job")).await;
/// assert_eq!(run.assert_retry(), std::time::Duration::from_secs(1));
/// assert!(run.outcome().to_string().starts_with("would retry after"));
/// // On the last allowed delivery the run fails instead.
/// harness.run(EventBuilder::new("job").attempt(5)).await
///     .assert_failure_contains("gave up after 5 attempts");
/// # }
/// ```
pub struct Harness<D> {
    pipeline: Pipeline<D>,
    bridge: Option<RunLogLayer>,
    #[cfg(feature = "client")]
    client: Option<Client>,
}

impl<D: fmt::Debug> fmt::Debug for Harness<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("driver", self.pipeline.driver())
            .field("config", self.pipeline.config())
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Harness<D> {
    /// A harness with the default [`Config`] and the tracing bridge on for every target at
    /// INFO and above.
    pub fn new(driver: D) -> Self {
        Self {
            pipeline: Pipeline::new(driver, Config::default()),
            bridge: Some(RunLogLayer::all()),
            #[cfg(feature = "client")]
            client: None,
        }
    }

    /// Hands `client` to every event that does not carry one, as the runtime does with the
    /// client of [`Config::api_url`] (point it at a stand-in of the Conveyor API).
    #[cfg(feature = "client")]
    #[must_use]
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Gives the driver its state, what its `State<T>` parameters get (the harness does not
    /// run the start-up hook: give it a value made for the test).
    ///
    /// ```
    /// use conveyor_driver::prelude::*;
    /// use conveyor_driver::testing::{EventBuilder, Harness};
    ///
    /// struct Registry { url: String }
    ///
    /// async fn connect(_: &Config) -> Result<Registry, std::io::Error> {
    ///     Ok(Registry { url: "https://registry.internal".into() })
    /// }
    ///
    /// #[driver(name = "pusher", resources = ["image"], state = connect, main = false)]
    /// async fn push(registry: State<Registry>, log: Logger) {
    ///     log.log(format!("pushing to {}", registry.url));
    /// }
    ///
    /// let harness = Harness::new(PusherDriver).state(Registry { url: "http://127.0.0.1:1".into() });
    /// harness.run_blocking(EventBuilder::new("image")).assert_logged("pushing to http://127.0.0.1:1");
    /// // Without one, the run fails saying so.
    /// Harness::new(PusherDriver)
    ///     .run_blocking(EventBuilder::new("image"))
    ///     .assert_failure_contains("give it with `Harness::state`");
    /// ```
    #[must_use]
    pub fn state<T: Send + Sync + 'static>(mut self, state: T) -> Self {
        self.pipeline.set_state(Some(SharedState::new(state)));
        self
    }

    /// Uses `config`'s retry settings.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.pipeline.set_config(config);
        self
    }

    /// Replaces the tracing bridge (`None`: `tracing` events are not captured as lines).
    #[must_use]
    pub fn bridge(mut self, bridge: Option<RunLogLayer>) -> Self {
        self.bridge = bridge;
        self
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        self.pipeline.driver()
    }

    /// Reconciles `event` and reports what the runtime would publish.
    pub async fn run(&self, event: impl Into<Event>) -> TestRun {
        #[allow(unused_mut)] // without the `client` feature
        let mut event = event.into();
        #[cfg(feature = "client")]
        if event.client().is_none() {
            if let Some(client) = &self.client {
                event = event.with_client(client.clone());
            }
        }
        capture(
            &self.pipeline,
            Incoming::made(event),
            self.bridge.clone(),
            None,
        )
        .await
    }

    /// [`run`](Self::run) on a new single-threaded Tokio runtime, for a plain `#[test]`.
    ///
    /// # Panics
    ///
    /// When called from within an async runtime (use [`run`](Self::run) there), or if the
    /// runtime cannot be built.
    pub fn run_blocking(&self, event: impl Into<Event>) -> TestRun {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            // Documented under "Panics": a test without a runtime cannot run at all.
            .expect("a Tokio runtime for the test");
        runtime.block_on(self.run(event))
    }
}

/// Runs `incoming` through the pipeline without NATS, capturing its log lines (each also
/// shown to `on_line` as it is logged). `bridge` installs a scoped subscriber with the tracing
/// bridge for this run. The test kit and `invoke` both use it.
async fn capture<D: Driver>(
    pipeline: &Pipeline<D>,
    incoming: Incoming,
    bridge: Option<RunLogLayer>,
    on_line: Option<crate::logger::OnLine>,
) -> TestRun {
    let capture = Capture::new(on_line);
    // The run's logger writes into its own handle on the capture; this one reads it after.
    let lines = std::sync::Arc::clone(&capture);
    let (outcome, counted) = match bridge {
        Some(bridge) => {
            use tracing::instrument::WithSubscriber;
            use tracing_subscriber::layer::SubscriberExt;
            let dispatch =
                tracing::Dispatch::new(tracing_subscriber::registry().with(bridge.filtered()));
            // The span must be made under the subscriber that is to see its events.
            let run =
                tracing::dispatcher::with_default(&dispatch, || pipeline.start(incoming, lines));
            pipeline.reconcile(run).with_subscriber(dispatch).await
        }
        None => pipeline.reconcile(pipeline.start(incoming, lines)).await,
    };
    let (outcome, envelope) = match outcome {
        Outcome::Publish(envelope) => {
            let result = DriverResult::from(envelope.driverresult.clone());
            let panicked = counted == Counted::Panic;
            let envelope = serde_json::to_value(&envelope).ok();
            (TestOutcome::Published { result, panicked }, envelope)
        }
        Outcome::Retry { delay, message } => (TestOutcome::Retry { delay, message }, None),
        Outcome::Skipped => (TestOutcome::Skipped, None),
    };
    TestRun {
        outcome,
        lines: capture.lines(),
        envelope,
    }
}

/// What reconciling one event produced: the outcome, the log lines and the result envelope,
/// as the runtime would publish them. The `assert_*` methods panic with a message showing the
/// outcome and the log; they return `&Self` so they chain.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRun {
    outcome: TestOutcome,
    lines: Vec<LogLine>,
    envelope: Option<Value>,
}

impl TestRun {
    /// What the runtime would do.
    pub fn outcome(&self) -> &TestOutcome {
        &self.outcome
    }

    /// The result the runtime would publish, if it would publish one.
    pub fn result(&self) -> Option<&DriverResult> {
        match &self.outcome {
            TestOutcome::Published { result, .. } => Some(result),
            _ => None,
        }
    }

    /// The result envelope exactly as it would be published to `pipelines.driver.result`.
    pub fn envelope(&self) -> Option<&Value> {
        self.envelope.as_ref()
    }

    /// The run's log lines, in order, as they would be published to `logs.<run_id>`.
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    /// The messages of the log lines.
    pub fn messages(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|line| line.entry.message.as_str())
            .collect()
    }

    /// Whether `reconcile` panicked (the result is then a failure).
    pub fn panicked(&self) -> bool {
        matches!(self.outcome, TestOutcome::Published { panicked: true, .. })
    }

    fn logged(&self, text: &str) -> bool {
        self.lines
            .iter()
            .any(|line| line.entry.message.contains(text))
    }

    /// The test kit's assertions fail the way `assert!` does: by panicking with the outcome
    /// and the log, in the test that called them.
    fn fail(&self, expected: &str) -> ! {
        panic!(
            "expected {expected}, but the run {}\nlog:\n  {}",
            self.outcome,
            self.messages().join("\n  ")
        )
    }

    /// Asserts a successful result.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        match self.result() {
            Some(result) if result.success => self,
            _ => self.fail("a successful result"),
        }
    }

    /// Asserts a failed result (a panic included).
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        match self.result() {
            Some(result) if !result.success => self,
            _ => self.fail("a failed result"),
        }
    }

    /// Asserts a failed result whose message contains `text`.
    #[track_caller]
    pub fn assert_failure_contains(&self, text: &str) -> &Self {
        match self.result() {
            Some(result) if !result.success && result.message.contains(text) => self,
            _ => self.fail(&format!("a failed result containing {text:?}")),
        }
    }

    /// Asserts that the event would be retried; returns the delay.
    #[track_caller]
    pub fn assert_retry(&self) -> Duration {
        match &self.outcome {
            TestOutcome::Retry { delay, .. } => *delay,
            _ => self.fail("a retry"),
        }
    }

    /// Asserts that a log line contains `text`.
    #[track_caller]
    pub fn assert_logged(&self, text: &str) -> &Self {
        if self.logged(text) {
            self
        } else {
            self.fail(&format!("a log line containing {text:?}"))
        }
    }

    /// Asserts that no log line contains `text`.
    #[track_caller]
    pub fn assert_not_logged(&self, text: &str) -> &Self {
        if self.logged(text) {
            self.fail(&format!("no log line containing {text:?}"))
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Logger, ReconcileError, ReconcileResult};

    /// Behaves as the spec says: `panic`, `fail`, `transient`, `trace` (a tracing event).
    struct Scripted;

    impl Driver for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn resources(&self) -> Vec<String> {
            vec!["job".into()]
        }
        fn events(&self) -> Option<Vec<String>> {
            Some(vec!["create".into(), "update".into()])
        }
        async fn reconcile(&self, event: Event, log: Logger) -> ReconcileResult {
            let spec = &event.resource.spec;
            log.log_with_labels("working", [("step", "one")]);
            if spec["trace"] == true {
                tracing::info!(target: "scripted_driver", n = 3, "from tracing");
                tracing::debug!(target: "scripted_driver", "too fine to bridge");
                tracing::info!(target: "conveyor_driver::internal", "runtime line");
            }
            if spec["panic"] == true {
                panic!("boom");
            }
            if spec["fail"] == true {
                return Err(ReconcileError::new("it failed"));
            }
            if spec["transient"] == true {
                return Err(ReconcileError::transient("later").retry_after(Duration::from_secs(7)));
            }
            if spec["api"] == true {
                let api = event.client().map(|client| client.base_url().to_string());
                return Ok(DriverResult::success("api").with_data(Value::from(api)));
            }
            Ok(DriverResult::success("done").with_data(spec.clone()))
        }
    }

    fn run(event: EventBuilder) -> TestRun {
        Harness::new(Scripted).run_blocking(event)
    }

    #[test]
    fn success_gives_the_envelope_and_wire_lines() {
        let run = run(EventBuilder::new("job")
            .name("a")
            .pipeline("p")
            .spec(serde_json::json!({"x": 1})));
        run.assert_success()
            .assert_logged("working")
            .assert_not_logged("nothing");
        let envelope = run.envelope().unwrap();
        assert_eq!(envelope["event"], "driver.result");
        assert_eq!(envelope["resource"]["name"], "a");
        assert_eq!(envelope["driverresult"]["data"]["x"], 1);
        assert_eq!(envelope["driverresult"]["driver"], "scripted");
        let line = &run.lines()[0];
        let json = line.json();
        assert_eq!(json["runid"], envelope["run_id"]);
        assert_eq!(json["pipeline"], "p");
        assert_eq!(json["driver"], "scripted");
        assert_eq!(
            line.headers(),
            [("Conveyor-Label-step".to_owned(), "one".to_owned())]
        );
        assert!(!run.panicked());
    }

    #[test]
    fn the_harness_hands_its_client_to_events_without_one() {
        let client = |url: &str| Client::builder().base_url(url).build().unwrap();
        let api_event = || EventBuilder::new("job").spec(serde_json::json!({"api": true}));
        let data = |run: &TestRun| run.envelope().unwrap()["driverresult"]["data"].clone();
        assert_eq!(data(&run(api_event())), Value::Null);
        let harness = Harness::new(Scripted).client(client("http://127.0.0.1:1/"));
        let run = harness.run_blocking(api_event());
        assert_eq!(data(&run), "http://127.0.0.1:1/");
        // An event's own client wins.
        let event = api_event()
            .build()
            .with_client(client("http://127.0.0.1:2/"));
        assert_eq!(data(&harness.run_blocking(event)), "http://127.0.0.1:2/");
    }

    #[test]
    fn panics_and_errors_fail_like_the_runtime() {
        let run = run(EventBuilder::new("job").spec(serde_json::json!({"panic": true})));
        run.assert_failure_contains("reconcile panicked: boom");
        assert!(run.panicked());
        run.assert_failure();
        self::run(EventBuilder::new("job").spec(serde_json::json!({"fail": true})))
            .assert_failure_contains("it failed");
    }

    #[test]
    fn transient_errors_retry_until_the_last_delivery() {
        let spec = serde_json::json!({"transient": true});
        let run = run(EventBuilder::new("job").spec(spec.clone()));
        assert_eq!(run.assert_retry(), Duration::from_secs(7));
        assert!(run.result().is_none() && run.envelope().is_none());
        assert!(
            run.outcome()
                .to_string()
                .starts_with("would retry after 7s"),
            "{}",
            run.outcome()
        );
        run.assert_logged("attempt 1 of 5 failed");
        self::run(EventBuilder::new("job").spec(spec).attempt(5))
            .assert_failure_contains("gave up after 5 attempts");
    }

    #[test]
    fn unhandled_events_are_skipped() {
        let run = run(EventBuilder::new("job").event("delete"));
        assert_eq!(run.outcome(), &TestOutcome::Skipped);
        assert!(run.lines().is_empty());
    }

    #[test]
    fn tracing_events_become_lines_but_not_the_runtimes() {
        let run = run(EventBuilder::new("job").spec(serde_json::json!({"trace": true})));
        run.assert_success()
            .assert_logged("from tracing n=3")
            .assert_not_logged("too fine")
            .assert_not_logged("runtime line");
        let bridged = run
            .lines()
            .iter()
            .find(|l| l.entry.message.contains("from tracing"))
            .unwrap();
        assert_eq!(bridged.label("level"), Some("INFO"));
        assert_eq!(bridged.label("target"), Some("scripted_driver"));
        // Logged exactly once (the bridge does not see the Logger's own mirror line).
        assert_eq!(
            run.messages().iter().filter(|m| **m == "working").count(),
            1
        );
    }

    #[test]
    #[should_panic(expected = "expected a successful result, but the run failed: it failed")]
    fn assertions_explain_themselves() {
        run(EventBuilder::new("job").spec(serde_json::json!({"fail": true}))).assert_success();
    }
}

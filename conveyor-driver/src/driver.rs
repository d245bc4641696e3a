//! The [`Driver`] trait a driver implements (by hand or through `#[driver]`), the [`Event`] it
//! receives and the [`ReconcileError`] it may return.

use std::fmt;
use std::future::Future;
use std::time::Duration;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::logger::Logger;
use crate::state::{SharedState, StateHook};
use crate::wire::{DriverResult, Resource};

/// What [`Driver::reconcile`] returns: a result to publish, or an error.
///
/// `Ok` results are published as they are, successful or not; see [`ReconcileError`] for how
/// errors are handled.
pub type ReconcileResult = Result<DriverResult, ReconcileError>;

/// A Conveyor CI driver: the resources it listens to and the work it does per event.
///
/// ```
/// use conveyor_driver::{Driver, Event, Logger, ReconcileResult, DriverResult};
///
/// struct Builder;
///
/// impl Driver for Builder {
///     fn name(&self) -> String { "builder".into() }
///     fn resources(&self) -> Vec<String> { vec!["build".into()] }
///
///     async fn reconcile(&self, event: Event, log: Logger) -> ReconcileResult {
///         log.log(format!("building {}", event.resource.name));
///         Ok(DriverResult::success("built"))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Conveyor CI driver",
    label = "not a driver",
    note = "a driver is the type `#[driver]` generates from a function (`#[driver(name = \"build\", …)]` gives `BuildDriver`), or a type implementing `conveyor_driver::Driver`"
)]
pub trait Driver: Send + Sync + 'static {
    /// The driver's name: durable consumer name, `driver` field of logs and results. A single
    /// NATS subject token.
    fn name(&self) -> String;

    /// The resource types the driver reconciles; each a single NATS subject token.
    fn resources(&self) -> Vec<String>;

    /// The events the driver handles (e.g. `create`, `update`); `None`, the default, means
    /// all. Other events are acknowledged and skipped without a result.
    fn events(&self) -> Option<Vec<String>> {
        None
    }

    /// The JSON schema of the resource `spec` this driver expects, if it can tell; shown by
    /// the `describe` command of the driver binary. `None`, the default, means unknown.
    ///
    /// `#[driver]` implements it for a function taking `Spec<T>` (or `Option<Spec<T>>`) when
    /// `T` implements `schemars::JsonSchema` and the `schemars` feature of this crate is on.
    /// By hand:
    ///
    /// ```
    /// # use conveyor_driver::prelude::*;
    /// struct Builder;
    /// impl Driver for Builder {
    ///     fn name(&self) -> String { "builder".into() }
    ///     fn resources(&self) -> Vec<String> { vec!["build".into()] }
    ///     fn spec_schema(&self) -> Option<serde_json::Value> {
    ///         Some(serde_json::json!({"type": "object", "required": ["image"],
    ///                                 "properties": {"image": {"type": "string"}}}))
    ///     }
    ///     async fn reconcile(&self, _: Event, _: Logger) -> ReconcileResult {
    ///         Ok(DriverResult::success("built"))
    ///     }
    /// }
    /// ```
    fn spec_schema(&self) -> Option<serde_json::Value> {
        None
    }

    /// How long one reconcile of this driver may take, unless the configuration says otherwise
    /// ([`Config::reconcile_timeout`](crate::Config::reconcile_timeout)); `None`, the default,
    /// leaves it to the configuration's default (6 h). `#[driver(timeout = "30m")]` sets it.
    fn timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// The start-up hook building the state that `State<T>` parameters share; `None`, the
    /// default, means the driver has no state. `#[driver(state = connect)]` implements it.
    ///
    /// The runtime runs it once, after reading the configuration and before binding the
    /// consumer, unless a state was given ([`DriverManager::with_state`](crate::DriverManager::with_state));
    /// an error stops the driver. A hand-written driver keeps what it shares in its own fields
    /// instead.
    fn state_hook(&self) -> Option<StateHook> {
        None
    }

    /// Does the work for one event.
    ///
    /// A panic here is caught and published as a failed result; it never stops the process.
    fn reconcile(&self, event: Event, log: Logger) -> impl Future<Output = ReconcileResult> + Send;
}

/// One event to reconcile: what happened, to which resource, in which run; and the Conveyor
/// API client, when one is configured.
///
/// Two events are equal when their data are; the client and the driver state they carry are
/// not compared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// Event name, e.g. `create`, `update`, `delete`, `process`.
    pub name: String,
    /// The message identifier set by the server.
    pub message_id: String,
    /// The run this event belongs to (a UUID).
    pub run_id: String,
    /// The resource to reconcile.
    pub resource: Resource,
    /// Which delivery of this event this is, starting at 1; above 1 after a retry or after an
    /// instance died while handling it.
    pub attempt: u64,
    /// The API client of [`Config::api_url`](crate::Config::api_url).
    #[cfg(feature = "client")]
    client: Option<Client>,
    /// The driver's state, for its `State<T>` parameters.
    state: Option<SharedState>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            name,
            message_id,
            run_id,
            resource,
            attempt,
            #[cfg(feature = "client")]
                client: _,
            state: _,
        } = self;
        *name == other.name
            && *message_id == other.message_id
            && *run_id == other.run_id
            && *resource == other.resource
            && *attempt == other.attempt
    }
}

impl Event {
    /// An event on its first delivery.
    pub fn new(
        name: impl Into<String>,
        message_id: impl Into<String>,
        run_id: impl Into<String>,
        resource: Resource,
    ) -> Self {
        Self {
            name: name.into(),
            message_id: message_id.into(),
            run_id: run_id.into(),
            resource,
            attempt: 1,
            #[cfg(feature = "client")]
            client: None,
            state: None,
        }
    }

    /// The driver's state, when it has one.
    pub(crate) fn state(&self) -> Option<&SharedState> {
        self.state.as_ref()
    }

    /// Hands the event the driver's state.
    pub(crate) fn set_state(&mut self, state: Option<SharedState>) {
        self.state = state;
    }

    /// The Conveyor API client, when the driver is configured with an API URL
    /// ([`Config::api_url`](crate::Config::api_url), `--api-url`, `CONVEYOR_API_URL`). A
    /// `#[driver]` function gets it by taking a [`Client`] parameter.
    ///
    /// ```no_run
    /// # use conveyor_driver::{Event, Logger, ReconcileError, DriverResult};
    /// async fn reconcile(event: Event, log: Logger) -> Result<DriverResult, ReconcileError> {
    ///     let Some(api) = event.client() else {
    ///         return Err(ReconcileError::new("no Conveyor API configured"));
    ///     };
    ///     let versions = api.list_resources(&event.resource.resource).await?;
    ///     log.log(format!("{} resources of this type", versions.len()));
    ///     Ok(DriverResult::success("counted"))
    /// }
    /// ```
    #[cfg(feature = "client")]
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Sets the API client (the runtime does this; tests may too).
    #[cfg(feature = "client")]
    #[must_use]
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Sets the delivery attempt.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u64) -> Self {
        self.attempt = attempt;
        self
    }
}

/// Why a reconcile did not produce a result: permanent (a failed result is published at once)
/// or transient (the event is retried later with a growing delay, and a failed result is
/// published only once the last allowed delivery also fails).
///
/// Any `std::error::Error` converts into a permanent one, so `?` works in `reconcile`; mark it
/// transient with [`ResultExt::transient`] or [`ReconcileError::into_transient`]. Like
/// `anyhow::Error`, it deliberately does not implement `std::error::Error` itself.
///
/// ```
/// use conveyor_driver::{ReconcileError, ResultExt};
/// use std::time::Duration;
///
/// fn fetch() -> Result<String, std::io::Error> {
///     Err(std::io::Error::other("registry unreachable"))
/// }
///
/// fn step() -> Result<String, ReconcileError> {
///     let manifest = fetch().transient()?;
///     if manifest.is_empty() {
///         return Err(ReconcileError::transient("manifest not ready").retry_after(Duration::from_secs(5)));
///     }
///     Ok(manifest)
/// }
/// assert!(step().unwrap_err().is_transient());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileError {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl ReconcileError {
    /// A permanent error: the run fails with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            retry_after: None,
        }
    }

    /// A transient error: the event is retried later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(message).into_transient()
    }

    /// Marks this error transient.
    #[must_use]
    pub fn into_transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Marks this error transient and asks for the next attempt after `delay` instead of the
    /// runtime's backoff.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.transient = true;
        self.retry_after = Some(delay);
        self
    }

    /// Whether the event should be retried.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The delay asked for with [`retry_after`](Self::retry_after).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, including the chain of sources of the error it was made from.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ReconcileError {
    fn from(error: E) -> Self {
        Self::new(crate::error::chain(&error))
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Marks the error of a `Result` as transient.
pub trait ResultExt<T> {
    /// Converts the error into a transient [`ReconcileError`], so the event is retried.
    fn transient(self) -> Result<T, ReconcileError>;
}

impl<T, E: Into<ReconcileError>> ResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, ReconcileError> {
        self.map_err(|error| error.into().into_transient())
    }
}

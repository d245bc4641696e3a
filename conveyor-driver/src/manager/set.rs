//! Several drivers in one process (a clone, a build and a test step shipped as one binary and
//! one deployment): one NATS connection, one metrics listener, one shutdown; each driver with
//! its own durable consumer, its own `concurrency` slots and its own `driver` metrics label.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::watch;

use crate::cli::CliError;
use crate::config::Config;
use crate::driver::Driver;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::state::{SharedState, StateHook};

use super::signals::{self, Shutdown};
use super::{drain, DriverManager, ShutdownHandle};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Several drivers run by one process. `conveyor_driver::main!(BuildDriver, TestDriver)` makes
/// a `main` running one; a hand-written `main` runs it with [`run`](Self::run).
///
/// Every driver gets its own durable consumer, `concurrency` slots of its own and the label
/// `driver="<name>"` on its metrics; they share the connection, the metrics listener, the
/// shutdown, and the state of one type (the first hook building it runs, once). A driver whose
/// consumer cannot be bound is reported by name while the others go on; `run` then returns
/// the error of every driver that failed.
///
/// ```no_run
/// use conveyor_driver::prelude::*;
///
/// #[driver(name = "build", resources = ["app"], main = false)]
/// async fn build(log: Logger) { log.log("building"); }
///
/// #[driver(name = "test", resources = ["app"], main = false)]
/// async fn test(log: Logger) { log.log("testing"); }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     DriverSet::new().with(BuildDriver).with(TestDriver).run(Config::from_env()?).await?;
///     Ok(())
/// }
/// ```
pub struct DriverSet {
    drivers: Vec<Box<dyn Unconfigured>>,
    shutdown: ShutdownHandle,
}

impl Default for DriverSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DriverSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverSet")
            .field("drivers", &self.names())
            .finish_non_exhaustive()
    }
}

impl DriverSet {
    /// No drivers yet.
    pub fn new() -> Self {
        Self {
            drivers: Vec::new(),
            shutdown: ShutdownHandle::new(),
        }
    }

    /// Adds `driver`.
    #[must_use]
    pub fn with<D: Driver>(mut self, driver: D) -> Self {
        self.drivers.push(Box::new(Some(driver)));
        self
    }

    /// The drivers' names, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.drivers.iter().map(|driver| driver.name()).collect()
    }

    /// The resource types of every driver, without repeats.
    pub fn resources(&self) -> Vec<String> {
        let mut resources: Vec<String> = Vec::new();
        for resource in self.drivers.iter().flat_map(|driver| driver.resources()) {
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        resources
    }

    /// A handle that shuts the set down from elsewhere (tests, embedding programs).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Runs every driver's start-up hook, connects once, binds every driver's consumer and
    /// processes events until a shutdown signal or [`ShutdownHandle::shutdown`]; then finishes
    /// in-flight events. A driver whose consumer cannot be bound is logged by name at once and
    /// the others go on; once they are done, the error names every driver that failed.
    ///
    /// As with [`DriverManager::run`], the NATS protocol runs on a thread of its own and the
    /// reconciles on the calling runtime.
    pub async fn run(self, config: Config) -> Result<(), Error> {
        let shutdown = self.shutdown.clone();
        super::protocol::on_own_thread(shutdown, move |user| self.run_here(config, user)).await
    }

    /// The body of [`run`](Self::run), on the protocol thread.
    async fn run_here(self, config: Config, user: tokio::runtime::Handle) -> Result<(), Error> {
        let mut members = configure(self.drivers, &config)?;
        if config.handle_signals {
            signals::listen_for_signals(self.shutdown.clone())?;
        }
        let mut shutdown = Shutdown(self.shutdown.graceful.subscribe());
        let metrics = share_metrics(&mut members);
        if !share_states(&mut members, &config, &mut shutdown, &user).await? {
            return Ok(());
        }
        #[cfg(feature = "metrics")]
        let _server = super::serve_metrics(&config, &metrics).await?;
        let Some(client) = connect(&members, &config, &metrics, &mut shutdown).await? else {
            return Ok(());
        };
        let served = members.into_iter().map(|member| {
            let name = member.name();
            let shutdown = Shutdown(self.shutdown.graceful.subscribe());
            let now = self.shutdown.now.subscribe();
            let serving = member.serve(client.clone(), user.clone(), shutdown, now);
            async move {
                let served = serving.await;
                if let Err(err) = &served {
                    let error = crate::error::chain(err);
                    tracing::error!(driver = %name, %error, "driver stopped; the others go on");
                }
                (name, served)
            }
        });
        let outcomes = join_all(served).await;
        drain(client).await;
        failures(outcomes)
    }

    /// Connects once and creates or updates every driver's consumer, then returns; the error
    /// names every driver whose consumer could not be bound.
    pub async fn register(self, config: Config) -> Result<(), Error> {
        let members = configure(self.drivers, &config)?;
        let metrics = Metrics::new("register");
        let mut shutdown = Shutdown(self.shutdown.graceful.subscribe());
        let Some(client) = connect(&members, &config, &metrics, &mut shutdown).await? else {
            return Ok(());
        };
        let registered = members.iter().map(|member| {
            let client = client.clone();
            let shutdown = Shutdown(self.shutdown.graceful.subscribe());
            async move { (member.name(), member.register(client, shutdown).await) }
        });
        let outcomes = join_all(registered).await;
        drain(client).await;
        failures(outcomes)
    }

    /// `describe` of every driver, in order.
    pub(crate) fn describe(self, config: &Config) -> Result<Vec<Value>, Error> {
        let members = configure(self.drivers, config)?;
        Ok(members.iter().map(|member| member.describe()).collect())
    }

    /// `invoke` of the driver named `driver`, or of the only one.
    pub(crate) fn invoke(
        self,
        driver: Option<&str>,
        config: Config,
        input: &Path,
    ) -> Result<(), CliError> {
        let names = self.names();
        let chosen = match (driver, self.drivers.len()) {
            (Some(driver), _) => names.iter().position(|name| name == driver),
            (None, 1) => Some(0),
            (None, _) => None,
        };
        let Some(index) = chosen else {
            return Err(CliError::Input(format!(
                "choose the driver with --driver, one of: {}",
                names.join(", ")
            )));
        };
        let mut drivers = self.drivers;
        drivers.swap_remove(index).invoke(config, input)
    }
}

/// The managers of `drivers`; the error names every driver that is not valid.
fn configure(
    drivers: Vec<Box<dyn Unconfigured>>,
    config: &Config,
) -> Result<Vec<Box<dyn Member>>, Error> {
    if drivers.is_empty() {
        return Err(Error::NoDrivers);
    }
    let (members, errors): (Vec<_>, Vec<_>) = drivers
        .into_iter()
        .map(|driver| {
            let name = driver.name();
            driver.configure(config.clone()).map_err(|err| (name, err))
        })
        .partition(Result::is_ok);
    if !errors.is_empty() {
        return Err(Error::Drivers(
            errors.into_iter().filter_map(Result::err).collect(),
        ));
    }
    Ok(members.into_iter().filter_map(Result::ok).collect())
}

/// Puts every member's metrics in the first one's registry; the first one's metrics.
fn share_metrics(members: &mut [Box<dyn Member>]) -> Arc<Metrics> {
    let first = members[0].metrics();
    for member in members.iter_mut().skip(1) {
        member.set_metrics(first.another(member.name_ref()));
    }
    first
}

/// Runs each member's start-up hook, once per state type; `false` if shutdown came first.
async fn share_states(
    members: &mut [Box<dyn Member>],
    config: &Config,
    shutdown: &mut Shutdown,
    user: &tokio::runtime::Handle,
) -> Result<bool, Error> {
    let mut built: Vec<SharedState> = Vec::new();
    for member in members.iter_mut() {
        let Some(hook) = member.state_hook() else {
            continue;
        };
        let state = match built.iter().find(|state| hook.builds(state)) {
            Some(state) => state.clone(),
            None => {
                let run = hook.run(member.name_ref(), config, user);
                let state = tokio::select! {
                    _ = shutdown.requested() => return Ok(false),
                    state = run => state?,
                };
                built.push(state.clone());
                state
            }
        };
        member.set_state(state);
    }
    Ok(true)
}

/// The one connection of every driver of the set, named after all of them; `None` if shutdown
/// came first.
async fn connect(
    members: &[Box<dyn Member>],
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<Option<async_nats::Client>, Error> {
    let names: Vec<String> = members.iter().map(|member| member.name()).collect();
    super::connect::connect(config, &names.join(","), metrics, shutdown).await
}

/// `Ok` when every driver ended well, else the error of each that did not.
fn failures(outcomes: Vec<(String, Result<(), Error>)>) -> Result<(), Error> {
    let failed: Vec<(String, Error)> = outcomes
        .into_iter()
        .filter_map(|(name, outcome)| outcome.err().map(|err| (name, err)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Drivers(failed))
    }
}

/// A driver waiting for its configuration.
trait Unconfigured: Send {
    fn name(&self) -> String;
    fn resources(&self) -> Vec<String>;
    fn configure(self: Box<Self>, config: Config) -> Result<Box<dyn Member>, Error>;
    fn invoke(self: Box<Self>, config: Config, input: &Path) -> Result<(), CliError>;
}

impl<D: Driver> Unconfigured for Option<D> {
    fn name(&self) -> String {
        self.as_ref().map(Driver::name).unwrap_or_default()
    }

    fn resources(&self) -> Vec<String> {
        self.as_ref().map(Driver::resources).unwrap_or_default()
    }

    fn configure(self: Box<Self>, config: Config) -> Result<Box<dyn Member>, Error> {
        let driver = self.ok_or(Error::NoDrivers)?;
        Ok(Box::new(DriverManager::new(driver, config)?))
    }

    fn invoke(self: Box<Self>, config: Config, input: &Path) -> Result<(), CliError> {
        match *self {
            Some(driver) => crate::cli::invoke_driver(driver, config, input),
            None => Err(CliError::Input("no driver".to_owned())),
        }
    }
}

/// A configured driver of the set: a [`DriverManager`] of any driver type.
trait Member: Send {
    fn name(&self) -> String {
        self.name_ref().to_owned()
    }
    fn name_ref(&self) -> &str;
    fn describe(&self) -> Value;
    fn metrics(&self) -> Arc<Metrics>;
    fn set_metrics(&mut self, metrics: Arc<Metrics>);
    fn state_hook(&self) -> Option<StateHook>;
    fn set_state(&mut self, state: SharedState);
    fn serve(
        self: Box<Self>,
        client: async_nats::Client,
        user: tokio::runtime::Handle,
        shutdown: Shutdown,
        now: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<(), Error>>;
    fn register(
        &self,
        client: async_nats::Client,
        shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<(), Error>>;
}

impl<D: Driver> Member for DriverManager<D> {
    fn name_ref(&self) -> &str {
        DriverManager::name(self)
    }

    fn describe(&self) -> Value {
        crate::cli::describe_document(self)
    }

    fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    fn state_hook(&self) -> Option<StateHook> {
        self.driver().state_hook()
    }

    fn set_state(&mut self, state: SharedState) {
        self.pipeline.set_state(Some(state));
    }

    fn serve(
        self: Box<Self>,
        client: async_nats::Client,
        user: tokio::runtime::Handle,
        mut shutdown: Shutdown,
        now: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move { (*self).serve(client, user, &mut shutdown, now).await })
    }

    fn register(
        &self,
        client: async_nats::Client,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let Some(bound) = self.bind_on(client, &mut shutdown).await? {
                let subjects = &bound.consumer_config.filter_subjects;
                tracing::info!(driver = %self.name_ref(), ?subjects, "consumer registered");
            }
            Ok(())
        })
    }
}

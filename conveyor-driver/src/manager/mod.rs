//! The Driver Manager: connects to NATS, binds the driver's consumer and runs the
//! Try-Catch-Ack loop until shut down.
//!
//! `connect` reaches the server, `setup` binds the consumer, `runner` pulls and dispatches,
//! `process` runs one event around the [pipeline](crate::pipeline), `signals` starts the
//! shutdown.

mod connect;
mod ordering;
mod pace;
mod process;
pub(crate) mod protocol;
mod pull;
mod runner;
mod set;
pub(crate) mod setup;
mod signals;

use std::sync::Arc;

use async_nats::jetstream::{self, consumer::PullConsumer};
use tokio::sync::{watch, Semaphore};

#[cfg(feature = "client")]
use crate::client::Client;
use crate::config::Config;
use crate::driver::Driver;
use crate::error::Error;
use crate::logger::LogBuffer;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::state::{self, SharedState};
use crate::wire::subjects;

use protocol::AbortOnDrop;
use runner::Runner;
use signals::Shutdown;

pub use set::DriverSet;

/// Runs a [`Driver`]: consumes its events from JetStream and reconciles them.
///
/// ```no_run
/// # use conveyor_driver::{Config, Driver, DriverManager, DriverResult, Event, Logger, ReconcileResult};
/// # struct Builder;
/// # impl Driver for Builder {
/// #     fn name(&self) -> String { "builder".into() }
/// #     fn resources(&self) -> Vec<String> { vec!["build".into()] }
/// #     async fn reconcile(&self, _: Event, _: Logger) -> ReconcileResult { Ok(DriverResult::success("ok")) }
/// # }
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = DriverManager::new(Builder, Config::from_env()?)?;
/// manager.run().await?; // until SIGTERM or SIGINT
/// # Ok(())
/// # }
/// ```
pub struct DriverManager<D> {
    pipeline: Pipeline<D>,
    resources: Vec<String>,
    shutdown: ShutdownHandle,
    metrics: Arc<Metrics>,
    /// Built once from [`Config::api_url`], shared by every event.
    #[cfg(feature = "client")]
    api: Option<Client>,
}

/// What `run` and `register` have once the consumer is bound.
struct Bound {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    consumer_config: jetstream::consumer::pull::Config,
}

/// Asks a running [`DriverManager`] to shut down, as SIGTERM (gracefully) and a second SIGTERM
/// or SIGINT (at once) do. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    graceful: watch::Sender<bool>,
    now: watch::Sender<bool>,
}

impl ShutdownHandle {
    fn new() -> Self {
        Self {
            graceful: watch::Sender::new(false),
            now: watch::Sender::new(false),
        }
    }

    /// Starts a graceful shutdown: stop pulling, hand back events that have not started,
    /// finish in-flight events (up to the shutdown timeout), drain, return.
    pub fn shutdown(&self) {
        self.graceful.send_replace(true);
    }

    /// Shuts down at once: as [`shutdown`](Self::shutdown), but events still in flight are
    /// handed back to JetStream (nak without delay) for another instance, without waiting.
    pub fn shutdown_now(&self) {
        self.graceful.send_replace(true);
        self.now.send_replace(true);
    }
}

impl<D: Driver> DriverManager<D> {
    /// Checks the driver's names and the configuration, and builds the API client when
    /// [`Config::api_url`] is set (reading its certificate and key); nothing connects until
    /// [`run`](Self::run).
    pub fn new(driver: D, config: Config) -> Result<Self, Error> {
        config.validate()?;
        let name = driver.name();
        check_token("driver name", &name)?;
        let resources = driver.resources();
        if resources.is_empty() {
            return Err(Error::NoResources(name));
        }
        for resource in &resources {
            check_token("resource", resource)?;
        }
        for event in driver.events().into_iter().flatten() {
            check_token("event", &event)?;
        }
        #[cfg(feature = "client")]
        let api = Client::for_reconciles(&config).map_err(Error::ApiClient)?;
        Ok(Self {
            pipeline: Pipeline::new(driver, config),
            resources,
            shutdown: ShutdownHandle::new(),
            metrics: Metrics::new(&name),
            #[cfg(feature = "client")]
            api,
        })
    }

    /// Gives the driver its state, the value its `State<T>` parameters share, instead of
    /// running its start-up hook (`#[driver(state = …)]`): for a `main` that builds it itself,
    /// or shares one value between managers. [`run`](Self::run) fails at once when `state` is
    /// not the type the driver takes.
    ///
    /// ```no_run
    /// use conveyor_driver::prelude::*;
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
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let registry = Registry { url: std::env::var("REGISTRY_URL")? };
    ///     DriverManager::new(PusherDriver, Config::from_env()?)?
    ///         .with_state(registry)
    ///         .run()
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    #[must_use]
    pub fn with_state<T: Send + Sync + 'static>(mut self, state: T) -> Self {
        self.pipeline.set_state(Some(SharedState::new(state)));
        self
    }

    /// Runs the driver's start-up hook, unless it was given a state; `false` if shutdown came
    /// first.
    async fn start(
        &mut self,
        shutdown: &mut Shutdown,
        user: &tokio::runtime::Handle,
    ) -> Result<bool, Error> {
        let hook = self.driver().state_hook();
        let given = self.pipeline.state().cloned();
        let settle = state::settle(self.name(), hook, given, self.config(), user);
        let state = tokio::select! {
            _ = shutdown.requested() => return Ok(false),
            state = settle => state?,
        };
        self.pipeline.set_state(state);
        Ok(true)
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        self.pipeline.driver()
    }

    /// The driver's name.
    pub fn name(&self) -> &str {
        self.pipeline.name()
    }

    /// The resource types the driver reconciles.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The events the driver handles; `None` means all.
    pub fn events(&self) -> Option<Vec<String>> {
        self.pipeline.events()
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &Config {
        self.pipeline.config()
    }

    /// The consumer configuration [`run`](Self::run) and [`register`](Self::register) create
    /// or update.
    pub(crate) fn consumer_config(&self) -> jetstream::consumer::pull::Config {
        setup::consumer_config(self.name(), &self.resources, self.config())
    }

    /// Connects, waits for the `messages` stream, creates or updates the driver's durable
    /// consumer and returns, without consuming anything: for deployment pipelines and init
    /// containers. The `messages` stream has interest retention, so an event published while
    /// no consumer exists is discarded; registering before the server starts sending closes
    /// that window.
    ///
    /// ```no_run
    /// # use conveyor_driver::{Config, Driver, DriverManager, DriverResult, Event, Logger, ReconcileResult};
    /// # struct Builder;
    /// # impl Driver for Builder {
    /// #     fn name(&self) -> String { "builder".into() }
    /// #     fn resources(&self) -> Vec<String> { vec!["build".into()] }
    /// #     async fn reconcile(&self, _: Event, _: Logger) -> ReconcileResult { Ok(DriverResult::success("ok")) }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// DriverManager::new(Builder, Config::from_env()?)?.register().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register(&self) -> Result<(), Error> {
        let mut shutdown = self.watch_shutdown()?;
        if let Some(bound) = self.bind(&mut shutdown).await? {
            let subjects = &bound.consumer_config.filter_subjects;
            tracing::info!(driver = %self.name(), ?subjects, "consumer registered");
            drain(bound.client).await;
        }
        Ok(())
    }

    /// The prologue of [`run`](Self::run) and [`register`](Self::register): connects, waits
    /// for the `messages` stream and binds the consumer. `None` if shutdown came first.
    async fn bind(&self, shutdown: &mut Shutdown) -> Result<Option<Bound>, Error> {
        match self.connect(shutdown).await? {
            Some(client) => self.bind_on(client, shutdown).await,
            None => Ok(None),
        }
    }

    /// Connects to NATS; `None` if shutdown came first.
    async fn connect(&self, shutdown: &mut Shutdown) -> Result<Option<async_nats::Client>, Error> {
        connect::connect(self.config(), self.name(), &self.metrics, shutdown).await
    }

    /// Waits for the `messages` stream and binds the consumer on `client`. `None` if shutdown
    /// came first.
    async fn bind_on(
        &self,
        client: async_nats::Client,
        shutdown: &mut Shutdown,
    ) -> Result<Option<Bound>, Error> {
        let js = jetstream::new(client.clone());
        let consumer_config = self.consumer_config();
        match setup::bind_consumer(&js, consumer_config.clone(), self.config(), shutdown).await? {
            Some(consumer) => Ok(Some(Bound {
                client,
                js,
                consumer,
                consumer_config,
            })),
            None => Ok(None),
        }
    }

    /// The shutdown watch, with SIGTERM and SIGINT starting it unless the configuration says
    /// the program handles signals itself.
    fn watch_shutdown(&self) -> Result<Shutdown, Error> {
        if self.config().handle_signals {
            signals::listen_for_signals(self.shutdown_handle())?;
        }
        Ok(Shutdown(self.shutdown.graceful.subscribe()))
    }

    /// A handle that shuts this manager down from elsewhere (tests, embedding programs).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The filter subjects of the driver's consumer.
    pub fn filter_subjects(&self) -> Vec<String> {
        self.consumer_config().filter_subjects
    }

    /// Runs the driver's start-up hook (see [`Driver::state_hook`]), connects, binds the
    /// consumer and processes events until a shutdown signal or [`ShutdownHandle::shutdown`];
    /// then finishes in-flight events and returns `Ok`.
    ///
    /// NATS outages are waited out (unlimited reconnects), as is a missing `messages` stream.
    /// A failing start-up hook is an error at once ([`Error::Start`]).
    ///
    /// The NATS protocol runs on a thread of its own, reconciles on the calling runtime: a
    /// reconcile that blocks its thread cannot stop the heartbeats of the others. Dropping the
    /// returned future shuts the manager down at once ([`ShutdownHandle::shutdown_now`]).
    pub async fn run(self) -> Result<(), Error> {
        let shutdown = self.shutdown_handle();
        protocol::on_own_thread(shutdown, move |user| self.run_here(user)).await
    }

    /// The body of [`run`](Self::run), on the protocol thread; reconciles go to `user`.
    async fn run_here(mut self, user: tokio::runtime::Handle) -> Result<(), Error> {
        let mut shutdown = self.watch_shutdown()?;
        if !self.start(&mut shutdown, &user).await? {
            return Ok(());
        }
        #[cfg(feature = "metrics")]
        let _server = serve_metrics(self.config(), &self.metrics).await?;
        let Some(client) = self.connect(&mut shutdown).await? else {
            return Ok(());
        };
        let now = self.shutdown.now.subscribe();
        let served = self.serve(client.clone(), user, &mut shutdown, now).await;
        drain(client).await;
        served
    }

    /// Binds the consumer on `client` and processes events until shutdown, then finishes
    /// in-flight events (up to the shutdown timeout, or until `now`). Reconciles run on `user`.
    async fn serve(
        self,
        client: async_nats::Client,
        user: tokio::runtime::Handle,
        shutdown: &mut Shutdown,
        now: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let Some(bound) = self.bind_on(client, shutdown).await? else {
            return Ok(());
        };
        let config = self.config();
        self.metrics.set_bound(true);
        tracing::info!(
            driver = %self.name(),
            subjects = ?bound.consumer_config.filter_subjects,
            concurrency = config.concurrency,
            prefetch = %config.prefetch,
            "driver started"
        );
        let name = self.name().to_owned();
        let (abort_tx, abort) = watch::channel(false);
        let shared = Arc::new(process::Shared {
            running: Semaphore::new(config.concurrency),
            pace: pace::Pace::new(config),
            user,
            ack_wait: process::AckWait::new(bound.consumer.cached_info().config.ack_wait),
            log_buffer: LogBuffer::new(config.log_buffer),
            pipeline: self.pipeline,
            client: bound.client,
            js: bound.js,
            metrics: Arc::clone(&self.metrics),
            #[cfg(feature = "client")]
            api: self.api,
        });
        let _poll = AbortOnDrop(tokio::spawn(runner::poll_consumer(
            bound.consumer.clone(),
            Arc::clone(&shared),
        )));
        let mut runner = Runner::new(shared, abort);
        runner
            .consume(bound.consumer, bound.consumer_config, shutdown)
            .await?;
        runner.finish(abort_tx, now).await;
        self.metrics.set_bound(false);
        tracing::info!(driver = %name, "driver stopped");
        Ok(())
    }
}

/// The metrics listener of [`Config::metrics_addr`], when one is set; it stops when dropped.
#[cfg(feature = "metrics")]
async fn serve_metrics(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<AbortOnDrop<()>>, Error> {
    Ok(match config.metrics_addr {
        Some(addr) => Some(AbortOnDrop(
            crate::metrics::serve(addr, Arc::clone(metrics))
                .await
                .map_err(|source| Error::Metrics { addr, source })?,
        )),
        None => None,
    })
}

/// Drains the connection: what was published is flushed, then it closes. The flush comes
/// first and is awaited: `drain` only starts the closing, and a process that exits right after
/// it could lose the last acks and naks still in the connection's buffer.
async fn drain(client: async_nats::Client) {
    if let Err(err) = client.flush().await {
        tracing::warn!(error = %err, "flushing the NATS connection failed");
    }
    if let Err(err) = client.drain().await {
        tracing::warn!(error = %err, "draining the NATS connection failed");
    }
}

fn check_token(what: &'static str, value: &str) -> Result<(), Error> {
    subjects::validate_token(value).map_err(|reason| Error::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    })
}

//! The Driver Manager: connects to NATS, binds the driver's consumer and runs the
//! Try-Catch-Ack loop until shut down.

mod ordering;
pub(crate) mod process;
mod pull;
pub(crate) mod setup;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::config::Config;
use crate::driver::Driver;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::wire::{subjects, Received};

use ordering::Ordering;
use pull::{Pulled, Puller};
pub use setup::create_streams;

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
    driver: Arc<D>,
    name: String,
    resources: Vec<String>,
    events: Option<HashSet<String>>,
    config: Config,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// Built once from [`Config::api_url`], shared by every event.
    api: Option<Client>,
}

/// How often the consumer's pending count is polled for the metrics.
const PENDING_POLL: Duration = Duration::from_secs(5);

/// Asks a running [`DriverManager`] to shut down gracefully, as SIGTERM does. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop pulling, finish in-flight events, drain, return.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
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
        let events = driver.events().map(|events| events.into_iter().collect());
        let api = crate::config::api_client(&config).map_err(Error::ApiClient)?;
        Ok(Self {
            driver: Arc::new(driver),
            name,
            resources,
            events,
            config,
            shutdown: watch::Sender::new(false),
            metrics: Metrics::new(),
            api,
        })
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource types the driver reconciles.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The events the driver handles; `None` means all.
    pub fn events(&self) -> Option<Vec<String>> {
        self.events.as_ref().map(|events| {
            let mut events: Vec<String> = events.iter().cloned().collect();
            events.sort();
            events
        })
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The consumer configuration [`run`](Self::run) and [`register`](Self::register) create
    /// or update.
    pub(crate) fn consumer_config(&self) -> jetstream::consumer::pull::Config {
        setup::consumer_config(&self.name, &self.resources, &self.config)
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
        if self.config.handle_signals {
            listen_for_signals(self.shutdown_handle())?;
        }
        let mut shutdown = Shutdown(self.shutdown.subscribe());
        let Some(client) = connect(&self.config, &self.name, &self.metrics, &mut shutdown).await?
        else {
            return Ok(());
        };
        let js = jetstream::new(client.clone());
        let consumer_config = self.consumer_config();
        let bound =
            setup::bind_consumer(&js, consumer_config.clone(), &self.config, &mut shutdown).await?;
        if bound.is_some() {
            tracing::info!(driver = %self.name, subjects = ?consumer_config.filter_subjects, "consumer registered");
        }
        if let Err(err) = client.drain().await {
            tracing::warn!(error = %err, "draining the NATS connection failed");
        }
        Ok(())
    }

    /// A handle that shuts this manager down from elsewhere (tests, embedding programs).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// The filter subjects of the driver's consumer.
    pub fn filter_subjects(&self) -> Vec<String> {
        setup::consumer_config(&self.name, &self.resources, &self.config).filter_subjects
    }

    /// Connects, binds the consumer and processes events until a shutdown signal or
    /// [`ShutdownHandle::shutdown`]; then finishes in-flight events and returns `Ok`.
    ///
    /// NATS outages are waited out (unlimited reconnects), as is a missing `messages` stream.
    pub async fn run(self) -> Result<(), Error> {
        if self.config.handle_signals {
            listen_for_signals(self.shutdown_handle())?;
        }
        let mut shutdown = Shutdown(self.shutdown.subscribe());
        let server = match self.config.metrics_addr {
            Some(addr) => Some(
                crate::metrics::serve(addr, Arc::clone(&self.metrics))
                    .await
                    .map_err(|source| Error::Metrics { addr, source })?,
            ),
            None => None,
        };
        let _server = AbortOnDrop(server);
        let Some(client) = connect(&self.config, &self.name, &self.metrics, &mut shutdown).await?
        else {
            return Ok(());
        };
        let js = jetstream::new(client.clone());
        let consumer_config = self.consumer_config();
        let Some(consumer) =
            setup::bind_consumer(&js, consumer_config.clone(), &self.config, &mut shutdown).await?
        else {
            return Ok(());
        };
        self.metrics.set_bound(true);
        let _poll = AbortOnDrop(
            self.config
                .metrics_addr
                .is_some()
                .then(|| tokio::spawn(poll_pending(consumer.clone(), Arc::clone(&self.metrics)))),
        );
        tracing::info!(
            driver = %self.name,
            subjects = ?consumer_config.filter_subjects,
            concurrency = self.config.concurrency,
            prefetch = self.config.prefetch,
            "driver started"
        );
        let (abort_tx, abort) = watch::channel(false);
        let shared = Arc::new(process::Shared {
            driver: self.driver,
            name: self.name.clone(),
            config: self.config.clone(),
            client: client.clone(),
            js: js.clone(),
            metrics: Arc::clone(&self.metrics),
            running: Semaphore::new(self.config.concurrency),
            api: self.api,
        });
        let mut runner = Runner {
            shared,
            events: self.events,
            ordering: Ordering::default(),
            tasks: JoinSet::new(),
            abort,
            stopping: self.shutdown.subscribe(),
        };
        runner
            .consume(consumer, consumer_config, &mut shutdown)
            .await?;
        runner.finish(abort_tx).await;
        self.metrics.set_bound(false);
        if let Err(err) = client.drain().await {
            tracing::warn!(error = %err, "draining the NATS connection failed");
        }
        tracing::info!(driver = %self.name, "driver stopped");
        Ok(())
    }
}

fn check_token(what: &'static str, value: &str) -> Result<(), Error> {
    subjects::validate_token(value).map_err(|reason| Error::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// Connects to NATS, waiting (with logged retries) for a server that is not reachable yet.
/// A server that rejects the connection (TLS handshake, client certificate, authorization)
/// is an error at once: retrying would only hang. `None` if shutdown was requested meanwhile.
async fn connect(
    config: &Config,
    driver: &str,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<Option<async_nats::Client>, Error> {
    let url = config.nats_url.as_str();
    let addrs = crate::config::server_addrs("nats_url", url)?;
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = tokio::select! {
            _ = shutdown.requested() => return Ok(None),
            attempt = connect_options(config, driver, metrics).connect(addrs.as_slice()) => attempt,
        };
        match attempt {
            Ok(client) => {
                metrics.set_connected(true);
                return Ok(Some(client));
            }
            Err(source) if is_rejection(&source) => {
                return Err(Error::Connect {
                    url: url.to_owned(),
                    source,
                })
            }
            Err(err) => {
                tracing::warn!(url, error = %err, retry_in = ?delay, "NATS is not reachable; retrying");
                if shutdown.sleep(delay).await {
                    return Ok(None);
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn connect_options(
    config: &Config,
    driver: &str,
    metrics: &Arc<Metrics>,
) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new();
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let metrics = Arc::clone(metrics);
    options
        .name(format!("conveyor-driver {driver}"))
        .max_reconnects(None)
        .event_callback(move |event| {
            let metrics = Arc::clone(&metrics);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics.set_connected(true);
                        tracing::info!("connected to NATS")
                    }
                    async_nats::Event::Disconnected => {
                        metrics.set_connected(false);
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    async_nats::Event::Draining | async_nats::Event::Closed => {
                        tracing::debug!(%event, "NATS connection closing")
                    }
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            }
        })
}

/// Aborts the task (if any) when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Keeps `conveyor_driver_consumer_pending` up to date.
async fn poll_pending(mut consumer: PullConsumer, metrics: Arc<Metrics>) {
    loop {
        match consumer.info().await {
            Ok(info) => metrics.set_pending(info.num_pending),
            Err(err) => tracing::debug!(error = %err, "consumer info not available"),
        }
        tokio::time::sleep(PENDING_POLL).await;
    }
}

/// Whether the server refused us (TLS, certificate, authorization), as opposed to not being
/// reachable (yet).
fn is_rejection(err: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    match err.kind() {
        Kind::Tls | Kind::Authentication | Kind::AuthorizationViolation | Kind::ServerParse => true,
        Kind::Io => {
            // A failed TLS handshake or a TLS alert (e.g. "certificate required") arrives as
            // an I/O error carrying the TLS error.
            let mut source: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(err);
            while let Some(cause) = source {
                if cause.is::<async_nats::rustls::Error>() {
                    return true;
                }
                if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                    if io.kind() == std::io::ErrorKind::InvalidData {
                        return true;
                    }
                    if io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
                    {
                        return true;
                    }
                }
                source = cause.source();
            }
            false
        }
        _ => false,
    }
}

/// Triggers the shutdown on the first SIGTERM or SIGINT.
fn listen_for_signals(handle: ShutdownHandle) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            }
            handle.shutdown();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received; shutting down");
            handle.shutdown();
        }
    });
    Ok(())
}

/// The manager's view of its shutdown signal.
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Completes once shutdown is requested (at once if it already was).
    async fn requested(&mut self) {
        // An error means every handle is gone, and the manager holds one: treat as shutdown.
        let _ = self.0.wait_for(|requested| *requested).await;
    }

    /// Sleeps for `duration`; returns `true` if shutdown was requested meanwhile.
    async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.requested() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }
}

/// The consuming loop: pulls as many events as there are free slots (plus the prefetch) and
/// dispatches them.
struct Runner<D> {
    shared: Arc<process::Shared<D>>,
    events: Option<HashSet<String>>,
    ordering: Ordering,
    tasks: JoinSet<()>,
    abort: watch::Receiver<bool>,
    /// Set when shutdown starts: prefetched events not started yet are handed back.
    stopping: watch::Receiver<bool>,
}

impl<D: Driver> Runner<D> {
    /// Requests an event for every free slot, dispatches events as they come, and keeps the
    /// slots of requested events reserved until they arrive or their request ends.
    async fn consume(
        &mut self,
        consumer: PullConsumer,
        consumer_config: async_nats::jetstream::consumer::pull::Config,
        shutdown: &mut Shutdown,
    ) -> Result<(), Error> {
        let config = &self.shared.config;
        let slots = Arc::new(Semaphore::new(config.concurrency + config.prefetch));
        let Some(mut puller) = self.subscribe(consumer, shutdown).await else {
            return Ok(());
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.requested() => {
                    self.hand_back(puller).await;
                    return Ok(());
                }
                pulled = puller.next() => match pulled {
                    Pulled::Event(message, Some(permit)) => self.dispatch(message, permit),
                    // Beyond what was requested: hand it to whoever has a free slot.
                    Pulled::Event(message, None) => self.nak_now(message),
                    Pulled::Gone(reason) => {
                        tracing::warn!(%reason, "pulling events failed; binding the consumer again");
                        self.hand_back(puller).await;
                        match self.rebind(&consumer_config, shutdown).await {
                            Some(bound) => puller = bound,
                            None => return Ok(()),
                        }
                    }
                },
                permit = Arc::clone(&slots).acquire_owned() => {
                    let Ok(mut permits) = permit else {
                        return Ok(()); // the semaphore is never closed
                    };
                    // Let tasks that finish at the same moment free their slots too, so
                    // that one request asks for all of them.
                    tokio::task::yield_now().await;
                    let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
                    if let Ok(more) = Arc::clone(&slots).try_acquire_many_owned(free) {
                        permits.merge(more);
                    }
                    if let Err(err) = puller.request(permits).await {
                        tracing::warn!(error = %err, "pull request not sent");
                        if shutdown.sleep(Duration::from_secs(1)).await {
                            return Ok(());
                        }
                    }
                }
            }
            while let Some(result) = self.tasks.try_join_next() {
                report_task(result);
            }
        }
    }

    /// Closes the pull subscription and hands back the events that arrived on it but were not
    /// dispatched, so that another instance takes them at once.
    async fn hand_back(&mut self, puller: Puller) {
        for message in puller.close().await {
            self.nak_now(message);
        }
    }

    /// Naks `message` without delay, for whichever instance has a free slot.
    fn nak_now(&mut self, message: jetstream::Message) {
        if let Ok(info) = message.info() {
            tracing::debug!(subject = %message.subject, delivered = info.delivered, sequence = info.stream_sequence, "event handed back");
        }
        self.tasks.spawn(settle(message, AckKind::Nak(None)));
    }

    /// Binds the consumer again after a second's pause, and subscribes anew. `None` if
    /// shutdown was requested meanwhile.
    async fn rebind(
        &mut self,
        consumer_config: &async_nats::jetstream::consumer::pull::Config,
        shutdown: &mut Shutdown,
    ) -> Option<Puller> {
        loop {
            if shutdown.sleep(Duration::from_secs(1)).await {
                return None;
            }
            let config = &self.shared.config;
            match setup::bind_consumer(&self.shared.js, consumer_config.clone(), config, shutdown)
                .await
            {
                Ok(Some(consumer)) => return self.subscribe(consumer, shutdown).await,
                Ok(None) => return None,
                Err(err) => tracing::warn!(error = %err, "binding the consumer failed"),
            }
        }
    }

    /// Opens the pull subscription, retrying while the connection cannot take it. `None` if
    /// shutdown was requested meanwhile.
    async fn subscribe(&self, consumer: PullConsumer, shutdown: &mut Shutdown) -> Option<Puller> {
        loop {
            match Puller::new(&self.shared.js, &self.shared.client, &consumer).await {
                Ok(puller) => return Some(puller),
                Err(err) => tracing::warn!(error = %err, "subscribing for events failed"),
            }
            if shutdown.sleep(Duration::from_secs(1)).await {
                return None;
            }
        }
    }

    /// Parses an event in arrival order and starts its task.
    fn dispatch(&mut self, message: jetstream::Message, permit: OwnedSemaphorePermit) {
        if let Ok(info) = message.info() {
            tracing::debug!(subject = %message.subject, delivered = info.delivered, sequence = info.stream_sequence, "event received");
        }
        let received = match Received::parse(&message.payload) {
            Ok(received) => received,
            Err(reason) => {
                self.shared.metrics.poisoned();
                tracing::warn!(
                    subject = %message.subject,
                    reason = %reason,
                    "poison message terminated: it can never be processed"
                );
                self.tasks
                    .spawn(settle_with_permit(message, AckKind::Term, permit));
                return;
            }
        };
        let event = &received.message.event;
        if self
            .events
            .as_ref()
            .is_some_and(|events| !events.contains(event))
        {
            tracing::debug!(event = %event, run_id = %received.message.run_id, "event not handled by this driver; skipped");
            self.tasks
                .spawn(settle_with_permit(message, AckKind::Ack, permit));
            return;
        }
        let resource = &received.message.payload;
        let turn = self
            .ordering
            .enter(format!("{}/{}", resource.resource, resource.name));
        let task = process::Task {
            shared: Arc::clone(&self.shared),
            message,
            received,
            turn,
            abort: self.abort.clone(),
            stopping: self.stopping.clone(),
        };
        self.tasks.spawn(async move {
            task.run().await;
            drop(permit);
        });
    }

    /// Waits for in-flight events up to the shutdown timeout, then hands the rest back.
    async fn finish(mut self, abort: watch::Sender<bool>) {
        let timeout = self.shared.config.shutdown_timeout;
        while let Some(result) = self.tasks.try_join_next() {
            report_task(result);
        }
        if !self.tasks.is_empty() {
            tracing::info!(
                in_flight = self.tasks.len(),
                ?timeout,
                "waiting for in-flight events"
            );
        }
        if tokio::time::timeout(timeout, join_all(&mut self.tasks))
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "shutdown timeout reached; handing unfinished events back to JetStream"
            );
            abort.send_replace(true);
            if tokio::time::timeout(Duration::from_secs(5), join_all(&mut self.tasks))
                .await
                .is_err()
            {
                self.tasks.shutdown().await;
            }
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.join_next().await {
        report_task(result);
    }
}

fn report_task(result: Result<(), tokio::task::JoinError>) {
    if let Err(err) = result {
        if !err.is_cancelled() {
            tracing::error!(error = %err, "event task failed");
        }
    }
}

async fn settle_with_permit(
    message: jetstream::Message,
    kind: AckKind,
    _permit: OwnedSemaphorePermit,
) {
    settle(message, kind).await;
}

/// Sends `kind` for `message`; a failure is only reported, as JetStream redelivers anyway.
pub(crate) async fn settle(message: jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %err, "acknowledgement not sent");
    }
}

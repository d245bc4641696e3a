//! A typed client of the Conveyor CI REST API, with proof-of-possession authentication.
//!
//! Every endpoint of `conveyor-api.swagger.yaml` has a method on [`Client`]. When credentials
//! are configured, each request carries `Authorization: Bearer <JWT>`: a short-lived token
//! signed with the client certificate's key, holding the certificate chain (`x5c`) and the
//! leaf's thumbprint (`cnf.x5t#S256`). The same certificate authenticates the Driver Manager to
//! NATS with mutual TLS.
//!
//! ```no_run
//! use conveyor_driver::client::{Client, LogQuery};
//!
//! # async fn demo() -> Result<(), conveyor_driver::client::ClientError> {
//! // CONVEYOR_API_URL, and CONVEYOR_TLS_CERT / _KEY / _CA when set.
//! let client = Client::from_env()?;
//! let builds = client.list_resources("build").await?;
//! let lines = client.logs(&LogQuery::new().runid("0b6c…")).await?;
//! # Ok(()) }
//! ```
//!
//! GET, PUT and DELETE requests are retried with backoff on connection failures, timeouts and
//! `502`/`503`/`504`; POST requests never are.

mod auth;
mod body;
mod jwt;
mod sse;
pub mod types;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use http::{Method, StatusCode};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub use auth::{Credentials, CredentialsError, Token, DEFAULT_TOKEN_LIFETIME};
pub use jwt::Algorithm;
pub use types::{BroadcastMessage, LogQuery, Pipeline, ResourceCreated, ResourceDefinition, Step};

use crate::config::Config;
use crate::wire::{LogEntry, Resource};
use auth::TokenCache;

/// A live stream of log lines, as the server sends them.
pub type LogStream = BoxStream<'static, Result<LogEntry, ClientError>>;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is misconfigured (no or invalid base URL, unreadable CA, …).
    #[error("invalid API client configuration: {0}")]
    Config(String),
    /// The client certificate or key cannot be used.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The server could not be reached (refused, DNS, TLS handshake, connection reset…).
    #[error("cannot reach the Conveyor API for {method} {url}: {reason}")]
    Connect {
        /// HTTP method.
        method: Method,
        /// Request URL.
        url: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The server did not answer in time.
    #[error("{method} {url} timed out after {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: Method,
        /// Request URL.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The server answered with an error status.
    #[error("{method} {url} was rejected with {status}: {message}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Request URL.
        url: String,
        /// The status code.
        status: StatusCode,
        /// The server's message (its `error` or `message` field, or the body text).
        message: String,
    },
    /// The server's answer is not what the API describes.
    #[error("{method} {url}: the response is not {expected}: {reason}")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Request URL.
        url: String,
        /// What was expected, e.g. `a Resource`.
        expected: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The server's answer is larger than the client accepts: a response body over
    /// `CONVEYOR_API_MAX_RESPONSE_BYTES`, or a log stream event over
    /// `CONVEYOR_API_MAX_EVENT_BYTES`. Nothing more of it is read.
    #[error("{method} {url}: the {what} ({size} bytes or more) is over the limit of {limit} bytes ({setting})")]
    TooLarge {
        /// HTTP method.
        method: Method,
        /// Request URL.
        url: String,
        /// `response body` or `log stream event`.
        what: &'static str,
        /// The size announced (`Content-Length`) or read when the limit was passed.
        size: u64,
        /// The limit.
        limit: usize,
        /// The variable that sets the limit.
        setting: &'static str,
    },
    /// The request body given to the client is not what the call needs (e.g. not JSON).
    #[error("invalid request body: {0}")]
    Body(String),
}

impl ClientError {
    /// The HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            _ => false,
        }
    }
}

/// Settings of a [`Client`].
///
/// ```no_run
/// use std::time::Duration;
/// use conveyor_driver::client::ClientBuilder;
///
/// let client = ClientBuilder::from_env()?
///     .base_url("https://conveyor.example:8080")
///     .tls("client.pem", "client.key")
///     .ca("ca.pem")
///     .timeout(Duration::from_secs(10))
///     .retries(3)
///     .build()?;
/// # Ok::<(), conveyor_driver::client::ClientError>(())
/// ```
///
/// | setting | variable | default |
/// |---|---|---|
/// | [`base_url`](Self::base_url) | `CONVEYOR_API_URL` | none (required) |
/// | [`tls`](Self::tls) | `CONVEYOR_TLS_CERT`, `CONVEYOR_TLS_KEY` | none: no `Authorization` |
/// | [`ca`](Self::ca) | `CONVEYOR_TLS_CA` | system roots only |
/// | [`timeout`](Self::timeout) | | 30 s per request |
/// | [`connect_timeout`](Self::connect_timeout) | | 10 s |
/// | [`retries`](Self::retries), [`retry_backoff`](Self::retry_backoff) | | 3, 200 ms doubling |
/// | [`token_lifetime`](Self::token_lifetime) | | 2 min |
/// | [`max_response_bytes`](Self::max_response_bytes) | `CONVEYOR_API_MAX_RESPONSE_BYTES` | 32 MiB |
/// | [`max_event_bytes`](Self::max_event_bytes) | `CONVEYOR_API_MAX_EVENT_BYTES` | 1 MiB |
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    credentials: Option<Credentials>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    token_lifetime: Duration,
    max_response_bytes: usize,
    max_event_bytes: usize,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("cert", &self.cert)
            .field("key", &self.key.as_ref().map(|_| "<path set>"))
            .field("ca", &self.ca)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: None,
            cert: None,
            key: None,
            ca: None,
            credentials: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_response_bytes: Config::DEFAULT_API_MAX_RESPONSE_BYTES,
            max_event_bytes: Config::DEFAULT_API_MAX_EVENT_BYTES,
        }
    }
}

impl ClientBuilder {
    /// Defaults, nothing read from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults with `CONVEYOR_API_URL`, `CONVEYOR_TLS_CERT`, `CONVEYOR_TLS_KEY`,
    /// `CONVEYOR_TLS_CA`, `CONVEYOR_API_MAX_RESPONSE_BYTES` and `CONVEYOR_API_MAX_EVENT_BYTES`
    /// applied when set (the setters override them), read as the driver's
    /// [`Config::from_env`](crate::Config::from_env) reads them.
    pub fn from_env() -> Result<Self, ClientError> {
        const KEYS: [&str; 6] = [
            "api_url",
            "tls_cert",
            "tls_key",
            "tls_ca",
            "api_max_response_bytes",
            "api_max_event_bytes",
        ];
        let table = Config::SETTINGS.iter().filter(|s| KEYS.contains(&s.key));
        let config = crate::settings::load(table, |_| None, crate::settings::process_env)
            .map_err(|err| ClientError::Config(err.to_string()))?;
        Ok(Self::from_config(&config))
    }

    /// The API URL and TLS files of a driver's configuration.
    fn from_config(config: &Config) -> Self {
        Self {
            base_url: config.api_url.clone(),
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            ca: config.tls_ca.clone(),
            max_response_bytes: config.api_max_response_bytes,
            max_event_bytes: config.api_max_event_bytes,
            ..Self::default()
        }
    }

    /// The API's base URL, e.g. `http://localhost:8080`.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Client certificate chain (PEM, leaf first) and private key (PKCS#1, PKCS#8 or SEC1 PEM)
    /// files that sign the requests' tokens.
    #[must_use]
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Already loaded credentials (override [`tls`](Self::tls)).
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A CA certificate (PEM) trusted for an `https://` base URL, besides the system roots.
    #[must_use]
    pub fn ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Limit for one request, from sending to the end of the answer (not for log streams).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit for establishing a connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times an idempotent request (GET, PUT, DELETE) is retried after a connection
    /// failure, a timeout or a 502/503/504. POST requests are never retried.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The delay before the first retry; it doubles on each further one (at most 10 s).
    #[must_use]
    pub fn retry_backoff(mut self, base: Duration) -> Self {
        self.retry_backoff = base;
        self
    }

    /// How long a token is valid (default two minutes). A token is reused until shortly
    /// before it expires.
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// The largest response body read (default 32 MiB); a larger one is
    /// [`ClientError::TooLarge`] and is not read further.
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The largest event of a live log stream (default 1 MiB); a larger one ends the stream
    /// with [`ClientError::TooLarge`].
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Loads the credentials and builds the client.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = self.base_url.ok_or_else(|| {
            ClientError::Config(
                "no API URL: set CONVEYOR_API_URL or ClientBuilder::base_url".into(),
            )
        })?;
        let base_url = crate::settings::base_url(&base)
            .map_err(|reason| ClientError::Config(format!("invalid API URL {base:?}: {reason}")))?;
        let credentials = match (self.credentials, self.cert, self.key) {
            (Some(credentials), _, _) => Some(credentials),
            (None, Some(cert), Some(key)) => Some(Credentials::from_files(cert, key)?),
            (None, Some(_), None) => {
                return Err(ClientError::Config(
                    "a client certificate needs its key (CONVEYOR_TLS_KEY)".into(),
                ))
            }
            (None, None, Some(_)) => {
                return Err(ClientError::Config(
                    "a key needs its client certificate (CONVEYOR_TLS_CERT)".into(),
                ))
            }
            (None, None, None) => None,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("conveyor-driver/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).map_err(|source| {
                ClientError::Credentials(CredentialsError::Read {
                    what: "CA certificate",
                    path: ca.clone(),
                    source,
                })
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                ClientError::Config(format!("invalid CA certificate {}: {err}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "no certificate in CA file {}",
                    ca.display()
                )));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|err| {
            ClientError::Config(format!(
                "cannot build the HTTP client: {}",
                crate::error::chain(&err)
            ))
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                tokens: credentials.map(|c| TokenCache::new(c, self.token_lifetime)),
                timeout: self.timeout,
                retries: self.retries,
                retry_backoff: self.retry_backoff,
                max_response_bytes: self.max_response_bytes,
                max_event_bytes: self.max_event_bytes,
            }),
        })
    }
}

/// A client of the Conveyor CI REST API. Cheap to clone; clones share connections and the
/// current token.
///
/// ```no_run
/// use conveyor_driver::client::Client;
///
/// # async fn demo() -> Result<(), conveyor_driver::client::ClientError> {
/// let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
/// println!("{:?}", client.health().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    tokens: Option<TokenCache>,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    max_response_bytes: usize,
    max_event_bytes: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("auth", &self.inner.tokens)
            .field("timeout", &self.inner.timeout)
            .field("retries", &self.inner.retries)
            .finish()
    }
}

/// The body of a request.
enum Body {
    None,
    Json(Vec<u8>),
}

impl Client {
    /// A builder with defaults, nothing read from the environment.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from `CONVEYOR_API_URL` and `CONVEYOR_TLS_CERT` / `_KEY` / `_CA`.
    pub fn from_env() -> Result<Self, ClientError> {
        ClientBuilder::from_env()?.build()
    }

    /// The client every reconcile gets, when `config` has an API URL: requests signed with
    /// its TLS certificate and key, trusting its CA.
    pub(crate) fn for_reconciles(config: &Config) -> Result<Option<Self>, ClientError> {
        match config.api_url {
            Some(_) => ClientBuilder::from_config(config).build().map(Some),
            None => Ok(None),
        }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    // ---- health and drivers -------------------------------------------------------------

    /// `GET /health`: the server's health status.
    pub async fn health(&self) -> Result<Map<String, Value>, ClientError> {
        self.call(Method::GET, &["health"], &[], Body::None, "a JSON object")
            .await
    }

    /// `POST /drivers/broadcast-message`: publishes a message to drivers via NATS.
    pub async fn broadcast_message(
        &self,
        message: &BroadcastMessage,
    ) -> Result<Map<String, Value>, ClientError> {
        let body = to_json(message)?;
        self.call(
            Method::POST,
            &["drivers", "broadcast-message"],
            &[],
            body,
            "a JSON object",
        )
        .await
    }

    // ---- resources ------------------------------------------------------------------------

    /// `POST /resources`: creates a resource; the answer carries the run id it started.
    pub async fn create_resource(
        &self,
        resource: &Resource,
    ) -> Result<ResourceCreated, ClientError> {
        let body = to_json(resource)?;
        self.call(
            Method::POST,
            &["resources"],
            &[],
            body,
            "a resource-created answer",
        )
        .await
    }

    /// `POST /resources` with a resource as JSON text, sent byte for byte as given (after
    /// checking it is well-formed JSON): no field is added, dropped or rewritten.
    pub async fn create_resource_json(
        &self,
        json: impl Into<Vec<u8>>,
    ) -> Result<ResourceCreated, ClientError> {
        let json = json.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&json)
            .map_err(|err| ClientError::Body(format!("not valid JSON: {err}")))?;
        self.call(
            Method::POST,
            &["resources"],
            &[],
            Body::Json(json),
            "a resource-created answer",
        )
        .await
    }

    /// `GET /resources/{type}`: every resource of a type.
    pub async fn list_resources(&self, resource_type: &str) -> Result<Vec<Resource>, ClientError> {
        let list: Option<Vec<Resource>> = self
            .call(
                Method::GET,
                &["resources", resource_type],
                &[],
                Body::None,
                "a list of Resources",
            )
            .await?;
        Ok(list.unwrap_or_default())
    }

    /// `GET /resources/{type}/{name}`: one resource, latest version.
    pub async fn get_resource(
        &self,
        resource_type: &str,
        name: &str,
    ) -> Result<Resource, ClientError> {
        self.call(
            Method::GET,
            &["resources", resource_type, name],
            &[],
            Body::None,
            "a Resource",
        )
        .await
    }

    /// `GET /resources/{type}/{name}/{version}`: one version of a resource.
    pub async fn get_resource_version(
        &self,
        resource_type: &str,
        name: &str,
        version: &str,
    ) -> Result<Resource, ClientError> {
        let path = ["resources", resource_type, name, version];
        self.call(Method::GET, &path, &[], Body::None, "a Resource")
            .await
    }

    /// `PUT /resources/{type}/{name}`: replaces a resource; returns it as stored.
    pub async fn update_resource(
        &self,
        resource_type: &str,
        name: &str,
        resource: &Resource,
    ) -> Result<Resource, ClientError> {
        let body = to_json(resource)?;
        self.call(
            Method::PUT,
            &["resources", resource_type, name],
            &[],
            body,
            "a Resource",
        )
        .await
    }

    /// `DELETE /resources/{type}/{name}`.
    pub async fn delete_resource(
        &self,
        resource_type: &str,
        name: &str,
    ) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["resources", resource_type, name])
            .await
    }

    // ---- resource definitions ---------------------------------------------------------------

    /// `POST /resource-definitions`: registers a resource type.
    pub async fn create_resource_definition(
        &self,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        let body = to_json(definition)?;
        self.call(
            Method::POST,
            &["resource-definitions"],
            &[],
            body,
            "a ResourceDefinition",
        )
        .await
    }

    /// `POST /resource-definitions/apply`: creates or updates a resource type by name.
    pub async fn apply_resource_definition(
        &self,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        let body = to_json(definition)?;
        self.call(
            Method::POST,
            &["resource-definitions", "apply"],
            &[],
            body,
            "a ResourceDefinition",
        )
        .await
    }

    /// `GET /resource-definitions/{name}`.
    pub async fn get_resource_definition(
        &self,
        name: &str,
    ) -> Result<ResourceDefinition, ClientError> {
        self.call(
            Method::GET,
            &["resource-definitions", name],
            &[],
            Body::None,
            "a ResourceDefinition",
        )
        .await
    }

    /// `PUT /resource-definitions/{name}`.
    pub async fn update_resource_definition(
        &self,
        name: &str,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        let body = to_json(definition)?;
        self.call(
            Method::PUT,
            &["resource-definitions", name],
            &[],
            body,
            "a ResourceDefinition",
        )
        .await
    }

    /// `DELETE /resource-definitions/{name}`.
    pub async fn delete_resource_definition(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["resource-definitions", name])
            .await
    }

    // ---- pipelines --------------------------------------------------------------------------

    /// `POST /pipelines`.
    pub async fn create_pipeline(&self, pipeline: &Pipeline) -> Result<Pipeline, ClientError> {
        let body = to_json(pipeline)?;
        self.call(Method::POST, &["pipelines"], &[], body, "a Pipeline")
            .await
    }

    /// `GET /pipelines/{name}`.
    pub async fn get_pipeline(&self, name: &str) -> Result<Pipeline, ClientError> {
        self.call(
            Method::GET,
            &["pipelines", name],
            &[],
            Body::None,
            "a Pipeline",
        )
        .await
    }

    /// `PUT /pipelines/{name}`.
    pub async fn update_pipeline(
        &self,
        name: &str,
        pipeline: &Pipeline,
    ) -> Result<Pipeline, ClientError> {
        let body = to_json(pipeline)?;
        self.call(Method::PUT, &["pipelines", name], &[], body, "a Pipeline")
            .await
    }

    /// `DELETE /pipelines/{name}`.
    pub async fn delete_pipeline(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["pipelines", name]).await
    }

    // ---- logs -------------------------------------------------------------------------------

    /// `GET /logs?pipeline=&driver=&runid=`: stored log lines matching the query.
    pub async fn logs(&self, query: &LogQuery) -> Result<Vec<LogEntry>, ClientError> {
        let mut params = Vec::new();
        for (key, value) in [
            ("pipeline", &query.pipeline),
            ("driver", &query.driver),
            ("runid", &query.runid),
        ] {
            if let Some(value) = value {
                params.push((key, value.as_str()));
            }
        }
        let list: Option<Vec<LogEntry>> = self
            .call(
                Method::GET,
                &["logs"],
                &params,
                Body::None,
                "a list of log entries",
            )
            .await?;
        Ok(list.unwrap_or_default())
    }

    /// `POST /logs`: stores a log line.
    pub async fn create_log(&self, entry: &LogEntry) -> Result<(), ClientError> {
        let body = to_json(entry)?;
        self.send(Method::POST, &["logs"], &[], &body, false)
            .await
            .map(drop)
    }

    /// `GET /logs/streams/{driver}/{runid}`: the live log lines of one driver in a run
    /// (Server-Sent Events), each as soon as the server sends it.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// # async fn demo(client: conveyor_driver::client::Client) -> Result<(), conveyor_driver::client::ClientError> {
    /// let mut lines = client.stream_driver_logs("build", "0b6c…").await?;
    /// while let Some(line) = lines.next().await {
    ///     println!("{}", line?.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stream_driver_logs(
        &self,
        driver: &str,
        runid: &str,
    ) -> Result<LogStream, ClientError> {
        self.stream(&["logs", "streams", driver, runid]).await
    }

    /// `GET /logs/pipeline/{runid}`: the live log lines of a whole pipeline run (Server-Sent
    /// Events).
    pub async fn stream_pipeline_logs(&self, runid: &str) -> Result<LogStream, ClientError> {
        self.stream(&["logs", "pipeline", runid]).await
    }

    // ---- plumbing ---------------------------------------------------------------------------

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Url, ClientError> {
        let mut url = self.inner.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| ClientError::Config("the API URL cannot have a path".into()))?;
            segments.pop_if_empty();
            segments.extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends a request (retrying idempotent ones) and returns the successful response.
    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: &Body,
        streaming: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path, query)?;
        let idempotent = matches!(method, Method::GET | Method::PUT | Method::DELETE);
        let mut attempt = 0;
        loop {
            let result = self.send_once(&method, &url, body, streaming).await;
            match result {
                Err(err) if idempotent && attempt < self.inner.retries && err.is_retryable() => {
                    let delay = self
                        .inner
                        .retry_backoff
                        .saturating_mul(1 << attempt.min(16))
                        .min(Duration::from_secs(10));
                    attempt += 1;
                    tracing::debug!(%method, url = %url, error = %err, attempt, "retrying API request");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: &Body,
        streaming: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = crate::otel::traced(self.inner.http.request(method.clone(), url.clone()));
        if !streaming {
            request = request.timeout(self.inner.timeout);
        } else {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        match body {
            Body::None => {}
            Body::Json(bytes) => {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
        }
        if let Some(tokens) = &self.inner.tokens {
            let token = tokens.token()?;
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(method, url, &err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The message is only shown, so a body that cannot be read (or is over the limit) is
        // left out rather than turned into another error.
        let read = body::read(response, self.inner.max_response_bytes);
        let text = match tokio::time::timeout(self.inner.timeout, read).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        };
        Err(ClientError::Status {
            method: method.clone(),
            url: url.to_string(),
            status,
            message: server_message(&text, status),
        })
    }

    fn transport_error(&self, method: &Method, url: &Url, err: &reqwest::Error) -> ClientError {
        if err.is_timeout() {
            ClientError::Timeout {
                method: method.clone(),
                url: url.to_string(),
                timeout: self.inner.timeout,
            }
        } else {
            ClientError::Connect {
                method: method.clone(),
                url: url.to_string(),
                reason: crate::error::chain(err),
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Body,
        expected: &'static str,
    ) -> Result<T, ClientError> {
        let response = self.send(method.clone(), path, query, &body, false).await?;
        let url = response.url().clone();
        let bytes = self.read(&method, &url, response).await?;
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Decode {
            method,
            url: url.to_string(),
            expected,
            reason: err.to_string(),
        })
    }

    async fn call_empty(&self, method: Method, path: &[&str]) -> Result<(), ClientError> {
        let response = self
            .send(method.clone(), path, &[], &Body::None, false)
            .await?;
        // Drain the body so the connection can be reused; its content does not matter.
        let url = response.url().clone();
        let _ = self.read(&method, &url, response).await;
        Ok(())
    }

    /// The whole body of a successful response, at most `max_response_bytes` of it.
    async fn read(
        &self,
        method: &Method,
        url: &Url,
        response: reqwest::Response,
    ) -> Result<Vec<u8>, ClientError> {
        let limit = self.inner.max_response_bytes;
        body::read(response, limit).await.map_err(|err| match err {
            body::ReadError::TooLarge(size) => ClientError::TooLarge {
                method: method.clone(),
                url: url.to_string(),
                what: "response body",
                size,
                limit,
                setting: "CONVEYOR_API_MAX_RESPONSE_BYTES",
            },
            body::ReadError::Transport(err) => self.transport_error(method, url, &err),
        })
    }

    async fn stream(&self, path: &[&str]) -> Result<LogStream, ClientError> {
        let response = self.send(Method::GET, path, &[], &Body::None, true).await?;
        let url = response.url().to_string();
        Ok(sse::log_stream(response, url, self.inner.max_event_bytes))
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Body, ClientError> {
    serde_json::to_vec(value)
        .map(Body::Json)
        .map_err(|err| ClientError::Body(err.to_string()))
}

/// The server's error message: its `error` or `message` field, else the body text.
fn server_message(text: &str, status: StatusCode) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
        for key in ["error", "message"] {
            if let Some(Value::String(message)) = map.get(key) {
                return message.clone();
            }
        }
    }
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    let mut message: String = text.chars().take(500).collect();
    if message.len() < text.len() {
        message.push('…');
    }
    message
}

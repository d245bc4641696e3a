//! Errors that stop the Driver Manager. Errors of single events never do: they become failed
//! results, naks or terminated messages.

use crate::settings::ConfigError;
use crate::wire::subjects::TokenError;

/// Why the Driver Manager could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The driver name, a resource or an event name is not a single NATS subject token.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// `driver name`, `resource` or `event`.
        what: &'static str,
        /// The name as given.
        value: String,
        /// What is wrong with it.
        reason: TokenError,
    },
    /// The API client of [`Config::api_url`](crate::Config::api_url) could not be built (e.g.
    /// a certificate or key file that cannot be read).
    #[cfg(feature = "client")]
    #[error("cannot set up the Conveyor API client: {0}")]
    ApiClient(#[source] crate::ClientError),
    /// The driver's start-up hook failed, or it was given a state it does not take.
    #[error(transparent)]
    Start(#[from] crate::StartError),
    /// Some drivers of a [`DriverSet`](crate::DriverSet) failed; each with its error.
    #[error("{}", drivers_failed(.0))]
    Drivers(Vec<(String, Error)>),
    /// A [`DriverSet`](crate::DriverSet) without drivers.
    #[error("no drivers to run: add some with DriverSet::with")]
    NoDrivers,
    /// The driver declares no resource, so it would receive nothing.
    #[error("driver {0:?} declares no resources")]
    NoResources(String),
    /// The NATS URL or connection options were rejected (a TLS handshake, say).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The configured URL, its passwords shown as `***`.
        url: String,
        /// The client's error.
        #[source]
        source: NatsError,
    },
    /// The NATS server turned down the credentials (or a connection without any): retrying
    /// would not change its answer.
    #[error("NATS rejected {what} ({reason})")]
    Rejected {
        /// Which credential, e.g. `the token` or `the NKey of /etc/nats/user.nk`.
        what: String,
        /// The server's answer, e.g. `authorization violation`.
        reason: String,
    },
    /// A file of NATS credentials (`CONVEYOR_NATS_NKEY`, `CONVEYOR_NATS_CREDS`) cannot be
    /// read or holds none.
    #[error("cannot use the NATS {what} {}: {reason}", path.display())]
    NatsCredentials {
        /// `NKey seed file` or `credentials file`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why, never quoting the file.
        reason: String,
    },
    /// JetStream refused to create a stream or the driver's consumer (e.g. a consumer of that
    /// name exists with settings that cannot be changed).
    #[error("JetStream refused to set up {what}: {source}")]
    Setup {
        /// What was being created.
        what: String,
        /// The server's answer.
        #[source]
        source: NatsError,
    },
    /// The thread running the NATS protocol could not be started, or it panicked.
    #[error("cannot run the NATS protocol thread: {0}")]
    ProtocolThread(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
    /// The metrics listener could not bind its address.
    #[cfg(feature = "metrics")]
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address from [`Config::metrics_addr`](crate::Config::metrics_addr).
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// `driver `a`: …; driver `b`: …`, on one line.
fn drivers_failed(failed: &[(String, Error)]) -> String {
    failed
        .iter()
        .map(|(driver, error)| format!("driver `{driver}`: {}", chain(error)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error of the NATS client. Opaque, so that the client library's version is no part of
/// this crate's API; its message and sources are the client's.
#[derive(Debug)]
pub struct NatsError(Box<dyn std::error::Error + Send + Sync>);

impl NatsError {
    pub(crate) fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NatsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// `error` and its sources, joined with `": "`, the way a failed result or a fatal error shows
/// them; a source whose text the message already holds is left out, as many errors repeat
/// their source in their own message.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

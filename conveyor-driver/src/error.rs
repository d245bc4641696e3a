//! Errors that stop the Driver Manager. Errors of single events never do: they become failed
//! results, naks or terminated messages.

use crate::config::ConfigError;
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
    #[error("cannot set up the Conveyor API client: {0}")]
    ApiClient(#[source] crate::ClientError),
    /// The driver declares no resource, so it would receive nothing.
    #[error("driver {0:?} declares no resources")]
    NoResources(String),
    /// The NATS URL or connection options were rejected.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The configured URL.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// JetStream refused to create a stream or the driver's consumer (e.g. a consumer of that
    /// name exists with settings that cannot be changed).
    #[error("JetStream refused to set up {what}: {source}")]
    Setup {
        /// What was being created.
        what: String,
        /// The server's answer.
        #[source]
        source: async_nats::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
    /// The metrics listener could not bind its address.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address from [`Config::metrics_addr`](crate::Config::metrics_addr).
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

//! Driver Manager settings, from code or from `CONVEYOR_*` environment variables.

use std::path::PathBuf;
use std::time::Duration;

/// How the Driver Manager connects and consumes.
///
/// Start from [`Config::from_env`] (defaults overridden by the environment) or
/// [`Config::default`], then adjust with the setters:
///
/// ```
/// use std::time::Duration;
/// use conveyor_driver::Config;
///
/// let config = Config::default()
///     .nats_url("nats://127.0.0.1:4222")
///     .concurrency(16)
///     .shutdown_timeout(Duration::from_secs(60));
/// ```
///
/// | setting | variable | default |
/// |---|---|---|
/// | [`nats_url`](Self::nats_url) | `CONVEYOR_NATS_URL` | `nats://127.0.0.1:4222` |
/// | [`concurrency`](Self::concurrency) | `CONVEYOR_CONCURRENCY` | 4 |
/// | [`prefetch`](Self::prefetch) | `CONVEYOR_PREFETCH` | 0 |
/// | [`ack_wait`](Self::ack_wait) | `CONVEYOR_ACK_WAIT` | 30s |
/// | [`max_deliver`](Self::max_deliver) | `CONVEYOR_MAX_DELIVER` | 5 |
/// | [`max_ack_pending`](Self::max_ack_pending) | `CONVEYOR_MAX_ACK_PENDING` | 1000 |
/// | [`retry_backoff`](Self::retry_backoff) | `CONVEYOR_RETRY_BACKOFF`, `CONVEYOR_RETRY_BACKOFF_MAX` | 1s, 60s |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | `CONVEYOR_SHUTDOWN_TIMEOUT` | 30s |
/// | [`create_streams`](Self::create_streams) | `CONVEYOR_CREATE_STREAMS` | false |
/// | [`tls`](Self::tls) | `CONVEYOR_TLS_CERT`, `CONVEYOR_TLS_KEY` | none |
/// | [`tls_ca`](Self::tls_ca) | `CONVEYOR_TLS_CA` | none |
/// | [`metrics_addr`](Self::metrics_addr) | `CONVEYOR_METRICS_ADDR` | none (no metrics listener) |
/// | [`api_url`](Self::api_url) | `CONVEYOR_API_URL` | none (no API client for reconciles) |
///
/// Durations are written `500ms`, `30s`, `2m` …; a bare number means seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) nats_url: String,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: u32,
    pub(crate) max_ack_pending: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) create_streams: bool,
    pub(crate) handle_signals: bool,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    pub(crate) api_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            concurrency: 4,
            prefetch: 0,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 1000,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            create_streams: false,
            handle_signals: true,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            metrics_addr: None,
            api_url: None,
        }
    }
}

/// A setting has a value it cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting} {value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable or setter that holds the value.
    pub setting: String,
    /// The value as given.
    pub value: String,
    /// What a valid value looks like.
    pub reason: String,
}

impl Config {
    /// The defaults, overridden by every `CONVEYOR_*` variable that is set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(url) = read("CONVEYOR_NATS_URL") {
            server_addrs("CONVEYOR_NATS_URL", &url)?;
            config.nats_url = url;
        }
        if let Some(v) = read("CONVEYOR_CONCURRENCY") {
            config.concurrency = parse_number("CONVEYOR_CONCURRENCY", &v, 1)?;
        }
        if let Some(v) = read("CONVEYOR_PREFETCH") {
            config.prefetch = parse_number("CONVEYOR_PREFETCH", &v, 0)?;
        }
        if let Some(v) = read("CONVEYOR_ACK_WAIT") {
            config.ack_wait = parse_duration("CONVEYOR_ACK_WAIT", &v)?;
        }
        if let Some(v) = read("CONVEYOR_MAX_DELIVER") {
            config.max_deliver = parse_number("CONVEYOR_MAX_DELIVER", &v, 1)?;
        }
        if let Some(v) = read("CONVEYOR_MAX_ACK_PENDING") {
            config.max_ack_pending = parse_number("CONVEYOR_MAX_ACK_PENDING", &v, 1)?;
        }
        if let Some(v) = read("CONVEYOR_RETRY_BACKOFF") {
            config.retry_backoff = parse_duration("CONVEYOR_RETRY_BACKOFF", &v)?;
        }
        if let Some(v) = read("CONVEYOR_RETRY_BACKOFF_MAX") {
            config.retry_backoff_max = parse_duration("CONVEYOR_RETRY_BACKOFF_MAX", &v)?;
        }
        if let Some(v) = read("CONVEYOR_SHUTDOWN_TIMEOUT") {
            config.shutdown_timeout = parse_duration("CONVEYOR_SHUTDOWN_TIMEOUT", &v)?;
        }
        if let Some(v) = read("CONVEYOR_CREATE_STREAMS") {
            config.create_streams = parse_bool("CONVEYOR_CREATE_STREAMS", &v)?;
        }
        config.tls_cert = read("CONVEYOR_TLS_CERT").map(PathBuf::from);
        config.tls_key = read("CONVEYOR_TLS_KEY").map(PathBuf::from);
        config.tls_ca = read("CONVEYOR_TLS_CA").map(PathBuf::from);
        if let Some(v) = read("CONVEYOR_METRICS_ADDR") {
            let addr = v.trim().parse().map_err(|_| {
                invalid_value(
                    "CONVEYOR_METRICS_ADDR",
                    &v,
                    "expected an address such as 0.0.0.0:9090",
                )
            })?;
            config.metrics_addr = Some(addr);
        }
        config.api_url = read("CONVEYOR_API_URL");
        if let Some(url) = &config.api_url {
            check_api_url("CONVEYOR_API_URL", url)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// NATS server URL(s); several may be given separated by commas.
    #[must_use]
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = url.into();
        self
    }

    /// How many events one instance reconciles at once (at least 1).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How many events this instance takes from JetStream ahead of free slots, to start each
    /// one as soon as a slot frees rather than a round trip later. The default, 0, takes only
    /// as many events as there are free slots, so that several instances share the work
    /// fairly: a prefetched event waits here even when another instance is idle. Worth it for
    /// many short reconciles on one instance; prefetched events are kept alive with
    /// in-progress acks and handed back at once on shutdown.
    ///
    /// ```
    /// use conveyor_driver::Config;
    ///
    /// // Up to 64 reconciles at once, and 64 more events waiting for a slot.
    /// let config = Config::default().concurrency(64).prefetch(64);
    /// ```
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How long JetStream waits for an acknowledgement before redelivering. Long reconciles are
    /// kept alive by in-progress acknowledgements, so a short wait only means that the events
    /// of a crashed instance come back sooner.
    #[must_use]
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many deliveries an event gets (at least 1). A transient error on the last one, or a
    /// delivery beyond it (an instance crashed on each), publishes a failed result, so a run
    /// never waits forever.
    #[must_use]
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// How many delivered but unacknowledged events the consumer allows over all instances.
    #[must_use]
    pub fn max_ack_pending(mut self, max_ack_pending: u32) -> Self {
        self.max_ack_pending = max_ack_pending;
        self
    }

    /// Delay before retrying a transient failure: `base` after the first delivery, doubling on
    /// each further delivery, never above `max`.
    #[must_use]
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_backoff = base;
        self.retry_backoff_max = max;
        self
    }

    /// How long a graceful shutdown waits for in-flight reconciles before handing their events
    /// back to JetStream.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Create the Conveyor streams if they are missing. For local development and tests only:
    /// in production the Conveyor server owns them.
    #[must_use]
    pub fn create_streams(mut self, create: bool) -> Self {
        self.create_streams = create;
        self
    }

    /// Shut down gracefully on SIGTERM and SIGINT (the default). Turn off when embedding the
    /// manager in a program that handles signals itself and uses a
    /// [`ShutdownHandle`](crate::ShutdownHandle).
    #[must_use]
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// Client certificate (PEM, leaf first) and its private key, for mutual TLS to NATS.
    #[must_use]
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// CA certificate (PEM) that the NATS server's certificate must chain to.
    #[must_use]
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }

    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`, `/readyz`) over
    /// HTTP on `addr` while the driver runs; see [`crate::metrics`]. Off by default.
    ///
    /// ```
    /// # use conveyor_driver::Config;
    /// let config = Config::default().metrics_addr(([0, 0, 0, 0], 9090).into());
    /// ```
    #[must_use]
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// The Conveyor API's base URL, e.g. `http://conveyor:8080`. With it, every reconcile can
    /// call the API: the runtime builds one [`Client`](crate::Client) at start (signing its
    /// requests with the [`tls`](Self::tls) certificate and key when they are set, and trusting
    /// [`tls_ca`](Self::tls_ca) for `https://`) and hands it to each event
    /// ([`Event::client`](crate::Event::client); a `Client` parameter of a `#[driver]`
    /// function).
    ///
    /// ```
    /// # use conveyor_driver::Config;
    /// let config = Config::default().api_url("http://127.0.0.1:8080");
    /// ```
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Checks the values that code can set out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        server_addrs("nats_url", &self.nats_url)?;
        if let Some(url) = &self.api_url {
            check_api_url("api_url", url)?;
        }
        if self.concurrency == 0 {
            return Err(invalid_value("concurrency", "0", "must be at least 1"));
        }
        if self.max_deliver == 0 {
            return Err(invalid_value("max_deliver", "0", "must be at least 1"));
        }
        if self.max_ack_pending == 0 {
            return Err(invalid_value("max_ack_pending", "0", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_millis(300) {
            let value = format!("{:?}", self.ack_wait);
            return Err(invalid_value("ack_wait", &value, "must be at least 300ms"));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid_value(
                    "tls",
                    "key missing",
                    "a client certificate needs its key (CONVEYOR_TLS_KEY)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid_value(
                    "tls",
                    "certificate missing",
                    "a key needs its client certificate (CONVEYOR_TLS_CERT)",
                ))
            }
            _ => {}
        }
        if self.retry_backoff > self.retry_backoff_max {
            let value = format!("{:?}", self.retry_backoff);
            return Err(invalid_value(
                "retry_backoff",
                &value,
                "must not exceed the maximum backoff",
            ));
        }
        Ok(())
    }

    /// The nak delay after a failed `attempt` (1-based): exponential, capped.
    pub(crate) fn backoff(&self, attempt: u64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(31);
        self.retry_backoff
            .saturating_mul(1 << doublings)
            .min(self.retry_backoff_max)
    }
}

/// Parses a comma-separated list of NATS server URLs.
pub(crate) fn server_addrs(
    setting: &str,
    urls: &str,
) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|err| {
                invalid_value(setting, urls, format!("{url:?} is not a NATS URL ({err})"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(invalid_value(
            setting,
            urls,
            "expected one or more NATS URLs",
        ));
    }
    Ok(addrs)
}

fn check_api_url(setting: &str, url: &str) -> Result<(), ConfigError> {
    crate::client::parse_base_url(url)
        .map(drop)
        .map_err(|reason| invalid_value(setting, url, reason))
}

/// The API client for reconciles, when an API URL is configured: the same certificate, key
/// and CA as for NATS.
pub(crate) fn api_client(config: &Config) -> Result<Option<crate::Client>, crate::ClientError> {
    let Some(url) = &config.api_url else {
        return Ok(None);
    };
    let mut builder = crate::Client::builder().base_url(url.as_str());
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        builder = builder.tls(cert, key);
    }
    if let Some(ca) = &config.tls_ca {
        builder = builder.ca(ca);
    }
    builder.build().map(Some)
}

fn invalid_value(setting: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    setting: &str,
    value: &str,
    min: T,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(invalid_value(
            setting,
            value,
            format!("expected a whole number of at least {min}"),
        )),
    }
}

fn parse_duration(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    let value_trimmed = value.trim();
    if let Ok(seconds) = value_trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(value_trimmed).map_err(|err| {
        invalid_value(
            setting,
            value,
            format!("expected a duration such as 500ms, 30s or 2m ({err})"),
        )
    })
}

fn parse_bool(setting: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid_value(
            setting,
            value,
            "expected 1/true/yes/on or 0/false/no/off",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_keep_jetstream_ack_wait() {
        let config = env(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
    }

    #[test]
    fn reads_every_variable() {
        let config = env(&[
            ("CONVEYOR_NATS_URL", "nats://10.0.0.1:4222"),
            ("CONVEYOR_CONCURRENCY", "12"),
            ("CONVEYOR_PREFETCH", "3"),
            ("CONVEYOR_ACK_WAIT", "45s"),
            ("CONVEYOR_MAX_DELIVER", "3"),
            ("CONVEYOR_MAX_ACK_PENDING", "50"),
            ("CONVEYOR_RETRY_BACKOFF", "250ms"),
            ("CONVEYOR_RETRY_BACKOFF_MAX", "2m"),
            ("CONVEYOR_SHUTDOWN_TIMEOUT", "10"),
            ("CONVEYOR_CREATE_STREAMS", "1"),
        ])
        .unwrap();
        assert_eq!(config.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(config.concurrency, 12);
        assert_eq!(config.prefetch, 3);
        assert_eq!(config.ack_wait, Duration::from_secs(45));
        assert_eq!(config.max_deliver, 3);
        assert_eq!(config.max_ack_pending, 50);
        assert_eq!(config.retry_backoff, Duration::from_millis(250));
        assert_eq!(config.retry_backoff_max, Duration::from_secs(120));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert!(config.create_streams);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("CONVEYOR_CONCURRENCY", "0"),
            ("CONVEYOR_CONCURRENCY", "many"),
            ("CONVEYOR_ACK_WAIT", "soon"),
            ("CONVEYOR_MAX_DELIVER", "-1"),
            ("CONVEYOR_PREFETCH", "-1"),
            ("CONVEYOR_CREATE_STREAMS", "maybe"),
            ("CONVEYOR_API_URL", "nats://127.0.0.1:4222"),
            ("CONVEYOR_API_URL", "not a url"),
        ] {
            let err = env(&[(name, value)]).unwrap_err();
            assert_eq!(err.setting, name);
            assert!(
                err.to_string().contains(name) && err.to_string().contains(value),
                "{err}"
            );
        }
    }

    #[test]
    fn an_api_url_gives_reconciles_a_client() {
        assert!(api_client(&Config::default()).unwrap().is_none());
        let config = env(&[("CONVEYOR_API_URL", "http://127.0.0.1:8080/api")]).unwrap();
        let client = api_client(&config).unwrap().unwrap();
        assert_eq!(client.base_url().as_str(), "http://127.0.0.1:8080/api/");
        let err = Config::default().api_url("ftp://x").validate().unwrap_err();
        assert_eq!(err.setting, "api_url");
        // The NATS client certificate signs the API requests too: a missing file is reported.
        let config = config.tls("/nonexistent/cert.pem", "/nonexistent/key.pem");
        let err = api_client(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn several_urls_and_bad_urls() {
        let config = env(&[("CONVEYOR_NATS_URL", "nats://a:4222, nats://b:4223")]).unwrap();
        assert_eq!(server_addrs("x", &config.nats_url).unwrap().len(), 2);
        let err = env(&[("CONVEYOR_NATS_URL", "nats://a:notaport")]).unwrap_err();
        assert_eq!(err.setting, "CONVEYOR_NATS_URL");
        assert!(Config::default().nats_url(" , ").validate().is_err());
    }

    #[test]
    fn validate_names_the_setter() {
        let err = Config::default().concurrency(0).validate().unwrap_err();
        assert_eq!(err.setting, "concurrency");
        let err = Config::default()
            .ack_wait(Duration::from_millis(10))
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "ack_wait");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let config =
            Config::default().retry_backoff(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (1..=5).map(|n| config.backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(config.backoff(u64::MAX), Duration::from_millis(500));
    }
}

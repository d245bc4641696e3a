//! Driver Manager settings, from code or from `CONVEYOR_*` environment variables.

#[cfg(feature = "metrics")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "client")]
use crate::settings::http_url;
#[cfg(feature = "metrics")]
use crate::settings::socket_addr;
use crate::settings::ConfigError;
use crate::settings::{
    self, boolean, count, duration, hidden, invalid_value, nats_urls, path, redact_urls, text,
};

mod prefetch;

pub use prefetch::Prefetch;

crate::settings::declare_settings! {
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
    /// Every setting has an environment variable and a flag of the driver binary
    /// ([`cli`](crate::cli)); a flag beats its variable, which beats the default:
    ///
    /// | setting | variable | flag | default |
    /// |---|---|---|---|
    /// | `nats_url` | `CONVEYOR_NATS_URL` | `--nats-url` | nats://127.0.0.1:4222 |
    /// | `concurrency` | `CONVEYOR_CONCURRENCY` | `--concurrency` | 4 |
    /// | `prefetch` | `CONVEYOR_PREFETCH` | `--prefetch` | auto |
    /// | `prefetch_wait` | `CONVEYOR_PREFETCH_WAIT` | `--prefetch-wait` | 20ms |
    /// | `ack_wait` | `CONVEYOR_ACK_WAIT` | `--ack-wait` | 30s |
    /// | `max_deliver` | `CONVEYOR_MAX_DELIVER` | `--max-deliver` | 5 |
    /// | `max_ack_pending` | `CONVEYOR_MAX_ACK_PENDING` | `--max-ack-pending` | 1000 |
    /// | `retry_backoff` | `CONVEYOR_RETRY_BACKOFF` | `--retry-backoff` | 1s |
    /// | `retry_backoff_max` | `CONVEYOR_RETRY_BACKOFF_MAX` | `--retry-backoff-max` | 1m |
    /// | `reconcile_timeout` | `CONVEYOR_RECONCILE_TIMEOUT` | `--reconcile-timeout` | the driver's own, else 6h |
    /// | `shutdown_timeout` | `CONVEYOR_SHUTDOWN_TIMEOUT` | `--shutdown-timeout` | 20s |
    /// | `log_buffer` | `CONVEYOR_LOG_BUFFER` | `--log-buffer` | 16777216 |
    /// | `create_streams` | `CONVEYOR_CREATE_STREAMS` | `--create-streams` | false |
    /// | `tls_cert` | `CONVEYOR_TLS_CERT` | `--tls-cert` | none |
    /// | `tls_key` | `CONVEYOR_TLS_KEY` | `--tls-key` | none |
    /// | `tls_ca` | `CONVEYOR_TLS_CA` | `--tls-ca` | none |
    /// | `nats_token` | `CONVEYOR_NATS_TOKEN` | `--nats-token` | none |
    /// | `nats_user` | `CONVEYOR_NATS_USER` | `--nats-user` | none |
    /// | `nats_password` | `CONVEYOR_NATS_PASSWORD` | `--nats-password` | none |
    /// | `nats_nkey` | `CONVEYOR_NATS_NKEY` | `--nats-nkey` | none |
    /// | `nats_creds` | `CONVEYOR_NATS_CREDS` | `--nats-creds` | none |
    /// | `metrics_addr` | `CONVEYOR_METRICS_ADDR` | `--metrics-addr` | none (no metrics listener) |
    /// | `api_url` | `CONVEYOR_API_URL` | `--api-url` | none (no API client for reconciles) |
    /// | `api_max_response_bytes` | `CONVEYOR_API_MAX_RESPONSE_BYTES` | `--api-max-response-bytes` | 33554432 |
    /// | `api_max_event_bytes` | `CONVEYOR_API_MAX_EVENT_BYTES` | `--api-max-event-bytes` | 1048576 |
    ///
    /// Durations are written `500ms`, `30s`, `2m` …; a bare number means seconds.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Config {
        /// NATS server URL(s), comma separated
        nats_url: String = "nats://127.0.0.1:4222".to_owned(),
            env "CONVEYOR_NATS_URL", flag "nats-url" = "URL", parse nats_urls, redact redact_urls;
        /// How many events this instance reconciles at once
        concurrency: usize = 4,
            env "CONVEYOR_CONCURRENCY", flag "concurrency" = "N", parse count;
        /// Events this instance takes ahead of free slots: `auto` while they would start within --prefetch-wait, or a fixed number (0: none)
        prefetch: Prefetch = Prefetch::Auto,
            env "CONVEYOR_PREFETCH", flag "prefetch" = "auto|N", parse prefetch::parse;
        /// With --prefetch auto: how long an event taken ahead of a free slot may be expected to wait for one
        prefetch_wait: Duration = Duration::from_millis(20),
            env "CONVEYOR_PREFETCH_WAIT", flag "prefetch-wait" = "DURATION", parse duration;
        /// How long JetStream waits for an acknowledgement before redelivering
        ack_wait: Duration = Duration::from_secs(30),
            env "CONVEYOR_ACK_WAIT", flag "ack-wait" = "DURATION", parse duration;
        /// How many deliveries an event gets before its run fails
        max_deliver: u32 = 5,
            env "CONVEYOR_MAX_DELIVER", flag "max-deliver" = "N", parse count;
        /// How many unacknowledged events the consumer allows over all instances
        max_ack_pending: u32 = 1000,
            env "CONVEYOR_MAX_ACK_PENDING", flag "max-ack-pending" = "N", parse count;
        /// Delay before the first retry of a transient failure; doubles on each further one
        retry_backoff: Duration = Duration::from_secs(1),
            env "CONVEYOR_RETRY_BACKOFF", flag "retry-backoff" = "DURATION", parse duration;
        /// The longest delay between retries
        retry_backoff_max: Duration = Duration::from_secs(60),
            env "CONVEYOR_RETRY_BACKOFF_MAX", flag "retry-backoff-max" = "DURATION", parse duration;
        /// How long one reconcile may take before its run fails; 0 means no limit
        reconcile_timeout: Option<Duration> = None,
            env "CONVEYOR_RECONCILE_TIMEOUT", flag "reconcile-timeout" = "DURATION", parse duration,
            unset "the driver's own, else 6h";
        /// How long a shutdown waits for in-flight events before handing them back
        shutdown_timeout: Duration = Duration::from_secs(20),
            env "CONVEYOR_SHUTDOWN_TIMEOUT", flag "shutdown-timeout" = "DURATION", parse duration;
        /// Bytes of log lines an instance holds until JetStream takes them; beyond it new lines are dropped and counted
        log_buffer: usize = Config::DEFAULT_LOG_BUFFER,
            env "CONVEYOR_LOG_BUFFER", flag "log-buffer" = "BYTES", parse count;
        /// Create the Conveyor streams if missing (local development and tests only)
        create_streams: bool = false,
            env "CONVEYOR_CREATE_STREAMS", flag "create-streams", parse boolean;
        /// Shut down on SIGTERM and SIGINT
        handle_signals: bool = true;
        /// Client certificate (PEM) for mutual TLS to NATS and for signing API requests; needs --tls-key
        tls_cert: Option<PathBuf> = None,
            env "CONVEYOR_TLS_CERT", flag "tls-cert" = "PEM", parse path, unset "none";
        /// Private key (PEM) of the client certificate; needs --tls-cert
        tls_key: Option<PathBuf> = None,
            env "CONVEYOR_TLS_KEY", flag "tls-key" = "PEM", parse path, unset "none";
        /// CA certificate (PEM) the NATS server's certificate must chain to (and an https:// API's)
        tls_ca: Option<PathBuf> = None,
            env "CONVEYOR_TLS_CA", flag "tls-ca" = "PEM", parse path, unset "none";
        /// Token for NATS token authentication
        nats_token: Option<String> = None,
            env "CONVEYOR_NATS_TOKEN", flag "nats-token" = "TOKEN", parse text, unset "none",
            redact hidden;
        /// User for NATS user/password authentication; needs --nats-password
        nats_user: Option<String> = None,
            env "CONVEYOR_NATS_USER", flag "nats-user" = "USER", parse text, unset "none";
        /// Password of --nats-user
        nats_password: Option<String> = None,
            env "CONVEYOR_NATS_PASSWORD", flag "nats-password" = "PASSWORD", parse text,
            unset "none", redact hidden;
        /// NKey seed file (the user's `SU…` seed) for NATS NKey authentication
        nats_nkey: Option<PathBuf> = None,
            env "CONVEYOR_NATS_NKEY", flag "nats-nkey" = "FILE", parse path, unset "none";
        /// Credentials file (`.creds`: user JWT and NKey seed) for NATS decentralized JWT authentication
        nats_creds: Option<PathBuf> = None,
            env "CONVEYOR_NATS_CREDS", flag "nats-creds" = "FILE", parse path, unset "none";
        #[cfg(feature = "metrics")]
        /// Serve Prometheus metrics and health checks on this address, e.g. 0.0.0.0:9090
        metrics_addr: Option<SocketAddr> = None,
            env "CONVEYOR_METRICS_ADDR", flag "metrics-addr" = "ADDR", parse socket_addr,
            unset "none (no metrics listener)";
        #[cfg(feature = "client")]
        /// Conveyor API base URL, e.g. http://conveyor:8080, for an API client in reconciles
        api_url: Option<String> = None,
            env "CONVEYOR_API_URL", flag "api-url" = "URL", parse http_url,
            unset "none (no API client for reconciles)", redact redact_urls;
        #[cfg(feature = "client")]
        /// The largest API response body the client reads; a larger one is an error
        api_max_response_bytes: usize = Config::DEFAULT_API_MAX_RESPONSE_BYTES,
            env "CONVEYOR_API_MAX_RESPONSE_BYTES", flag "api-max-response-bytes" = "BYTES", parse count;
        #[cfg(feature = "client")]
        /// The largest event of an API log stream; a larger one ends the stream with an error
        api_max_event_bytes: usize = Config::DEFAULT_API_MAX_EVENT_BYTES,
            env "CONVEYOR_API_MAX_EVENT_BYTES", flag "api-max-event-bytes" = "BYTES", parse count;
    }
}

impl Config {
    /// The defaults, overridden by every `CONVEYOR_*` variable that is set; an error names
    /// the variable whose value is wrong.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(settings::process_env)
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config = settings::load(Self::SETTINGS, |_| None, lookup)?;
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

    /// How many events this instance takes from JetStream ahead of free slots, so that each
    /// starts as soon as a slot frees rather than a pull round trip later.
    ///
    /// The default, [`Prefetch::Auto`], takes events ahead only while this instance's recent
    /// reconciles say they would start within [`prefetch_wait`](Self::prefetch_wait): many short
    /// reconciles pipeline, long ones are never hoarded while another instance has a free
    /// slot. A number fixes it: `0` takes only as many events as there are free slots, `64`
    /// keeps up to 64 waiting whatever they cost. Events taken ahead are kept alive with
    /// in-progress acks and handed back at once on shutdown. Slots of the margin ahead are
    /// asked for again in batches of half of it while the events in hand cover every
    /// reconcile slot, rather than with one pull request per finished event.
    ///
    /// ```
    /// use conveyor_driver::{Config, Prefetch};
    ///
    /// // Up to 64 reconciles at once, and 64 more events waiting for a slot.
    /// let config = Config::default().concurrency(64).prefetch(64);
    /// // Back to the default.
    /// let config = config.prefetch(Prefetch::Auto);
    /// ```
    #[must_use]
    pub fn prefetch(mut self, prefetch: impl Into<Prefetch>) -> Self {
        self.prefetch = prefetch.into();
        self
    }

    /// With [`Prefetch::Auto`], how long an event taken ahead of a free slot may be expected
    /// to wait for one (default 20 ms). Longer pipelines more work on a busy instance; shorter
    /// leaves more for the other instances.
    #[must_use]
    pub fn prefetch_wait(mut self, prefetch_wait: Duration) -> Self {
        self.prefetch_wait = prefetch_wait;
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

    /// How long one reconcile may take: past it the reconcile is dropped (with the child
    /// processes it started through `tokio::process` with `kill_on_drop`), the run gets a failed
    /// result saying it timed out, and the event is acknowledged, not retried: a step that hung
    /// once would hang again. `Duration::ZERO` means no limit. Without this setting the driver's
    /// own [`Driver::timeout`](crate::Driver::timeout) counts (`#[driver(timeout = "30m")]`),
    /// else [`DEFAULT_RECONCILE_TIMEOUT`](Self::DEFAULT_RECONCILE_TIMEOUT).
    ///
    /// ```
    /// # use conveyor_driver::Config;
    /// let config = Config::default().reconcile_timeout(std::time::Duration::from_secs(30 * 60));
    /// ```
    #[must_use]
    pub fn reconcile_timeout(mut self, timeout: Duration) -> Self {
        self.reconcile_timeout = Some(timeout);
        self
    }

    /// The reconcile deadline when neither the configuration nor the driver sets one: the job
    /// limit CI users know from hosted runners.
    pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

    /// The deadline of one reconcile of a driver whose own is `driver`; `None`: no limit.
    pub(crate) fn deadline(&self, driver: Option<Duration>) -> Option<Duration> {
        let timeout = self
            .reconcile_timeout
            .or(driver)
            .unwrap_or(Self::DEFAULT_RECONCILE_TIMEOUT);
        (!timeout.is_zero()).then_some(timeout)
    }

    /// How long a graceful shutdown waits for in-flight reconciles before handing their events
    /// back to JetStream. The default, 20 s, plus the hand-back (under 2 s) and the drain fits
    /// Kubernetes' default 30 s grace period, so the hand-back happens before SIGKILL; raise
    /// `terminationGracePeriodSeconds` with it.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The default [`log_buffer`](Self::log_buffer): 16 MiB.
    pub const DEFAULT_LOG_BUFFER: usize = 16 * 1024 * 1024;

    /// How many bytes of log lines (text and labels) this instance holds until JetStream has
    /// them, over all its runs. While NATS is slow or down, lines beyond it are dropped and
    /// counted (`conveyor_driver_log_lines_dropped_total`), and each run that lost lines gets a
    /// line saying how many, where they went missing. The process then stays within a small
    /// bound however much a build prints (RELIABILITY.md has the measurement).
    #[must_use]
    pub fn log_buffer(mut self, bytes: usize) -> Self {
        self.log_buffer = bytes;
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
    #[cfg(feature = "metrics")]
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
    #[cfg(feature = "client")]
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// The default [`api_max_response_bytes`](Self::api_max_response_bytes): 32 MiB.
    #[cfg(feature = "client")]
    pub const DEFAULT_API_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

    /// The default [`api_max_event_bytes`](Self::api_max_event_bytes): 1 MiB.
    #[cfg(feature = "client")]
    pub const DEFAULT_API_MAX_EVENT_BYTES: usize = 1024 * 1024;

    /// The largest response body the API client reads (default 32 MiB): a server, or anything
    /// posing as one, cannot make a driver hold more in memory. A larger body is a
    /// [`ClientError::TooLarge`](crate::client::ClientError::TooLarge) naming both sizes.
    #[cfg(feature = "client")]
    #[must_use]
    pub fn api_max_response_bytes(mut self, bytes: usize) -> Self {
        self.api_max_response_bytes = bytes;
        self
    }

    /// The largest event of a live log stream (default 1 MiB); a larger one ends the stream
    /// with [`ClientError::TooLarge`](crate::client::ClientError::TooLarge). A stream as a whole
    /// has no limit: it may run for as long as the run does.
    #[cfg(feature = "client")]
    #[must_use]
    pub fn api_max_event_bytes(mut self, bytes: usize) -> Self {
        self.api_max_event_bytes = bytes;
        self
    }

    /// Checks the values that code can set out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        nats_urls(&self.nats_url)
            .map_err(|reason| invalid_value("nats_url", &redact_urls(&self.nats_url), reason))?;
        crate::nats_auth::validate(self)?;
        #[cfg(feature = "client")]
        if let Some(url) = &self.api_url {
            http_url(url).map_err(|reason| invalid_value("api_url", &redact_urls(url), reason))?;
        }
        #[cfg(feature = "client")]
        for (setting, bytes) in [
            ("api_max_response_bytes", self.api_max_response_bytes),
            ("api_max_event_bytes", self.api_max_event_bytes),
        ] {
            if bytes == 0 {
                return Err(invalid_value(setting, "0", "must be at least 1"));
            }
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
            ("CONVEYOR_API_MAX_RESPONSE_BYTES", "4096"),
            ("CONVEYOR_API_MAX_EVENT_BYTES", "512"),
        ])
        .unwrap();
        assert_eq!(config.api_max_response_bytes, 4096);
        assert_eq!(config.api_max_event_bytes, 512);
        let auth = |pairs: &[(&str, &str)]| env(pairs).unwrap();
        assert_eq!(
            auth(&[("CONVEYOR_NATS_TOKEN", " t0k ")])
                .nats_token
                .as_deref(),
            Some("t0k")
        );
        assert_eq!(
            auth(&[("CONVEYOR_NATS_USER", "u"), ("CONVEYOR_NATS_PASSWORD", "p")]),
            Config::default().nats_user_password("u", "p")
        );
        assert_eq!(
            auth(&[("CONVEYOR_NATS_NKEY", "/etc/nats/u.nk")]),
            Config::default().nats_nkey("/etc/nats/u.nk")
        );
        assert_eq!(
            auth(&[("CONVEYOR_NATS_CREDS", "/etc/nats/u.creds")]),
            Config::default().nats_creds("/etc/nats/u.creds")
        );
        assert_eq!(config.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(config.concurrency, 12);
        assert_eq!(config.prefetch, Prefetch::Fixed(3));
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
            ("CONVEYOR_API_MAX_RESPONSE_BYTES", "0"),
            ("CONVEYOR_API_MAX_EVENT_BYTES", "1MiB"),
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
    fn several_urls_and_bad_urls() {
        let config = env(&[("CONVEYOR_NATS_URL", "nats://a:4222, nats://b:4223")]).unwrap();
        assert_eq!(config.nats_url, "nats://a:4222, nats://b:4223");
        let err = env(&[("CONVEYOR_NATS_URL", "nats://a:notaport")]).unwrap_err();
        assert_eq!(err.setting, "CONVEYOR_NATS_URL");
        assert_eq!(
            Config::default()
                .nats_url(" , ")
                .validate()
                .unwrap_err()
                .setting,
            "nats_url"
        );
        let err = Config::default().api_url("ftp://x").validate().unwrap_err();
        assert_eq!(err.setting, "api_url");
    }

    #[test]
    fn the_docs_table_lists_every_setting_with_its_default() {
        let docs = include_str!("config.rs");
        for row in settings::markdown_rows(Config::SETTINGS).lines() {
            assert!(
                docs.contains(&format!("/// {row}")),
                "the Config docs lack the row\n{row}"
            );
        }
    }

    #[test]
    fn debug_and_errors_hold_no_secret() {
        let config = Config::default()
            .nats_url("nats://alice:s3cret@10.0.0.1:4222")
            .nats_token("s3cret")
            .nats_user_password("bob", "s3cret")
            .api_url("http://user:s3cret@conveyor:8080");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("nats://alice:***@10.0.0.1:4222"), "{debug}");
        assert!(debug.contains(r#"nats_password: "***""#), "{debug}");
        assert!(debug.contains(r#"nats_user: Some("bob")"#), "{debug}");
        for (name, value) in [
            ("CONVEYOR_NATS_URL", "nats://alice:s3cret@h:port"),
            ("CONVEYOR_API_URL", "ftp://alice:s3cret@h"),
        ] {
            let err = env(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name) && !err.contains("s3cret"), "{err}");
        }
        let err = Config::default()
            .nats_url("nats://alice:s3cret@h:port")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alice:***@") && !err.contains("s3cret"),
            "{err}"
        );
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

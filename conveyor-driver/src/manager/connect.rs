//! Connecting to NATS: waiting for a server that is not there yet, failing at once when one
//! rejects us, and keeping the connection gauge up to date.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, NatsError};
use crate::metrics::Metrics;
use crate::nats_auth::{self, Credentials};
use crate::settings::{invalid_value, redact_urls};

use super::signals::Shutdown;

/// Connects to NATS, waiting (with logged retries) for a server that is not reachable yet.
/// A server that rejects the connection (TLS handshake, client certificate, authorization)
/// is an error at once: retrying would only hang. `None` if shutdown was requested meanwhile.
pub(super) async fn connect(
    config: &Config,
    driver: &str,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<Option<async_nats::Client>, Error> {
    // Every message shows the URLs with their passwords hidden.
    let url = redact_urls(&config.nats_url);
    let addrs = nats_auth::addresses(&config.nats_url)
        .map_err(|reason| invalid_value("nats_url", &url, reason))?;
    let credentials = Credentials::load(config).await?;
    let options = credentials
        .apply(connect_options(config, driver, metrics))
        .map_err(|source| Error::Connect {
            url: url.clone(),
            source: NatsError::new(source),
        })?;
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = tokio::select! {
            _ = shutdown.requested() => return Ok(None),
            attempt = options.clone().connect(addrs.as_slice()) => attempt,
        };
        match attempt {
            Ok(client) => {
                metrics.set_connected(true);
                return Ok(Some(client));
            }
            Err(source) if is_rejection(&source) => {
                return Err(credentials.rejected(&source).unwrap_or(Error::Connect {
                    url,
                    source: NatsError::new(source),
                }))
            }
            Err(err) => {
                tracing::warn!(%url, error = %err, retry_in = ?delay, "NATS is not reachable; retrying");
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

/// Whether the server refused us (TLS, certificate, authorization, an expired JWT), as opposed
/// to not being reachable (yet).
fn is_rejection(err: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    match err.kind() {
        Kind::Tls | Kind::Authentication | Kind::AuthorizationViolation | Kind::ServerParse => true,
        Kind::Io => {
            if nats_auth::refuses_credentials(err) {
                return true;
            }
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

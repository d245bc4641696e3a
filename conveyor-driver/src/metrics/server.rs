//! The HTTP listener of the metrics and health endpoints.
//!
//! Anything that reaches the port can connect, so the listener bounds what a client can hold:
//!
//! - a request's headers must arrive within [`HEADER_READ_TIMEOUT`] (a slow-loris client that
//!   sends a byte a second is closed). hyper starts this timer whenever it waits for a request,
//!   so it is also the idle timeout of a keep-alive connection between requests;
//! - a connection lives at most [`MAX_CONNECTION_AGE`], then is closed after its current
//!   response (a client that stops reading a response cannot hold it for longer);
//! - at most [`MAX_CONNECTIONS`] are served at once; further ones wait in the kernel's accept
//!   queue until one ends, so probes are delayed, not refused;
//! - an accept error (`EMFILE`, out of file descriptors) backs off, doubling up to
//!   [`ACCEPT_BACKOFF_MAX`], instead of retrying in a busy loop;
//! - every connection task belongs to the listener's task: when the runtime drops the listener
//!   at shutdown, its connections end with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Metrics;

/// How long a client may take to send a request's headers, and to start the next request on a
/// keep-alive connection. Prometheus and kubelet send them in one packet.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest life of one connection.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// How many connections are served at once: scrapers and probes need a few.
const MAX_CONNECTIONS: usize = 64;

/// The longest pause after an accept error.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The first pause after an accept error.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Binds `addr` and serves the endpoints on the current Tokio runtime until the returned task
/// is aborted; aborting it ends its connections too.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics and health endpoints");
    Ok(tokio::spawn(accept(listener, metrics)))
}

async fn accept(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here, so that dropping this task (abort at shutdown) aborts every connection.
    let mut connections = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        while connections.try_join_next().is_some() {}
        // A slot first: beyond the cap, connections wait unaccepted.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(err) => {
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tracing::warn!(error = %err, retry_in = ?backoff, "the metrics listener cannot accept a connection");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            connection(stream, metrics).await;
            drop(slot);
        });
    }
}

/// Serves one connection with the timeouts above.
async fn connection(stream: tokio::net::TcpStream, metrics: Arc<Metrics>) {
    let service = hyper::service::service_fn(move |request| {
        let response = respond(&metrics, &request);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            // Finish the response in progress, if any, then close; a client that does not
            // read it gets the header timeout's time more.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(HEADER_READ_TIMEOUT, conn.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(err) = ended {
        tracing::debug!(error = %err, "metrics connection ended with an error");
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

fn respond<B>(metrics: &Metrics, request: &hyper::Request<B>) -> hyper::Response<Body> {
    use hyper::StatusCode;
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&hyper::Method::GET, "/readyz") if metrics.ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        (&hyper::Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: not connected or consumer not bound\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Body::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

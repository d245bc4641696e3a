//! Plain HTTP helpers for the metrics and health endpoints.

use std::time::Duration;

use crate::PATIENCE;

/// A loopback port that was free a moment ago, for a listener the test does not own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The status and body of `GET url`, or `None` when it could not be fetched.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Polls `url` until `done` holds for its status and body, and returns that body; panics after
/// [`PATIENCE`], naming `what` it waited for.
pub async fn poll(url: &str, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let wait = async {
        loop {
            if let Some((status, body)) = get(url).await {
                if done(status, &body) {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what} at {url}"))
}

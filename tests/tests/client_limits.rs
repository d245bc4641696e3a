//! The API client's limits against loopback servers that misbehave on purpose: a response body
//! over `CONVEYOR_API_MAX_RESPONSE_BYTES` (announced or endless), a log stream event over
//! `CONVEYOR_API_MAX_EVENT_BYTES`, and log streams with bare-CR line ends.

use std::time::{Duration, Instant};

use conveyor_driver::client::{Client, ClientError};
use conveyor_driver_tests::api_server::ApiServer;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A loopback HTTP server that answers every request with `head` and then whatever `body`
/// writes (it may write forever); returns its base URL.
async fn raw_server<F, Fut>(head: &'static str, body: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if stream.write_all(head.as_bytes()).await.is_ok() {
                    let _ = body(stream).await;
                }
            });
        }
    });
    url
}

const CHUNKED_JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
const EVENT_STREAM: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";

/// Writes `data` as one HTTP chunk.
async fn chunk(stream: &mut tokio::net::TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

fn client(url: &str) -> conveyor_driver::client::ClientBuilder {
    Client::builder()
        .base_url(url)
        .retries(0)
        .timeout(Duration::from_secs(20))
}

fn too_large(err: &ClientError) -> (&'static str, u64, usize, &'static str) {
    match err {
        ClientError::TooLarge {
            what,
            size,
            limit,
            setting,
            ..
        } => (*what, *size, *limit, *setting),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_it_is_read() {
    let server = ApiServer::start().await;
    let client = client(&server.url)
        .max_response_bytes(1024)
        .build()
        .unwrap();
    let big = json!({"status": "x".repeat(2000)}).to_string();
    server.script(200, &big);
    let err = client.health().await.unwrap_err();
    assert_eq!(
        too_large(&err),
        (
            "response body",
            big.len() as u64,
            1024,
            "CONVEYOR_API_MAX_RESPONSE_BYTES"
        )
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("{} bytes", big.len()))
            && text.contains("limit of 1024 bytes")
            && text.contains("CONVEYOR_API_MAX_RESPONSE_BYTES")
            && text.contains("/health"),
        "{text}"
    );
    // At the limit it is read.
    let fits = json!({"status": "y".repeat(1000)}).to_string();
    assert!(fits.len() <= 1024);
    server.script(200, &fits);
    assert_eq!(
        client.health().await.unwrap()["status"],
        "y".repeat(1000).as_str()
    );
}

#[tokio::test]
async fn an_endless_body_stops_at_the_limit() {
    let url = raw_server(CHUNKED_JSON, |mut stream| async move {
        chunk(&mut stream, b"{\"status\": \"").await?;
        loop {
            chunk(&mut stream, &[b'x'; 16 * 1024]).await?;
        }
    })
    .await;
    let client = client(&url).max_response_bytes(256 * 1024).build().unwrap();
    let started = Instant::now();
    let err = client.health().await.unwrap_err();
    let (what, size, limit, _) = too_large(&err);
    assert_eq!((what, limit), ("response body", 256 * 1024));
    assert!(
        size > 256 * 1024 && size <= 256 * 1024 + 16 * 1024 + 12,
        "read one chunk past the limit at most: {size}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_error_body_over_the_limit_leaves_the_status_error() {
    let url = raw_server(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n",
        |mut stream| async move {
            loop {
                chunk(&mut stream, &[b'e'; 16 * 1024]).await?;
            }
        },
    )
    .await;
    let client = client(&url).max_response_bytes(64 * 1024).build().unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
}

/// A log line as the server streams it.
fn line(message: &str) -> String {
    json!({"runid": "r1", "driver": "builder", "timestamp": "2026-01-01T00:00:00Z", "message": message})
        .to_string()
}

#[tokio::test]
async fn a_log_stream_event_over_the_limit_ends_the_stream_with_an_error() {
    let url = raw_server(EVENT_STREAM, |mut stream| async move {
        // Many small events: together far over the limit, each well under it.
        for i in 0..200 {
            let event = format!(": keep-alive\n\ndata: {}\n\n", line(&format!("small {i}")));
            chunk(&mut stream, event.as_bytes()).await?;
        }
        // Then one event that never ends.
        chunk(&mut stream, b"data: {\"message\": \"").await?;
        loop {
            chunk(&mut stream, &[b'x'; 4096]).await?;
        }
    })
    .await;
    let client = client(&url).max_event_bytes(8 * 1024).build().unwrap();
    let mut lines = client.stream_driver_logs("builder", "r1").await.unwrap();
    for i in 0..200 {
        let entry = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("a line in time")
            .expect("a line")
            .expect("a valid line");
        assert_eq!(entry.message, format!("small {i}"));
    }
    let err = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .expect("the cap in time")
        .expect("an error item")
        .unwrap_err();
    let (what, size, limit, setting) = too_large(&err);
    assert_eq!(
        (what, limit, setting),
        ("log stream event", 8 * 1024, "CONVEYOR_API_MAX_EVENT_BYTES")
    );
    assert_eq!(size, 8 * 1024 + 1);
    assert!(err.to_string().contains("limit of 8192 bytes"), "{err}");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("the end in time")
            .is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn bare_cr_line_ends_deliver_each_event_as_it_completes() {
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (next_tx, next_rx) = tokio::sync::watch::channel(0u32);
    let sent_tx = std::sync::Arc::new(sent_tx);
    let url = raw_server(EVENT_STREAM, move |mut stream| {
        let sent_tx = sent_tx.clone();
        let mut next_rx = next_rx.clone();
        async move {
            for i in 0..3 {
                // CR only, the event's last CR ends the chunk; then silence until asked.
                let event = format!(":c\rdata: {}\r\r", line(&format!("cr {i}")));
                chunk(&mut stream, event.as_bytes()).await?;
                let _ = sent_tx.send(());
                let _ = next_rx.wait_for(|n| *n > i).await;
            }
            std::future::pending::<std::io::Result<()>>().await
        }
    })
    .await;
    let client = client(&url).build().unwrap();
    let mut lines = client.stream_driver_logs("builder", "r1").await.unwrap();
    for i in 0..3 {
        sent_rx.recv().await.unwrap();
        let entry = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .expect("the event without waiting for another byte")
            .expect("a line")
            .expect("a valid line");
        assert_eq!(entry.message, format!("cr {i}"));
        next_tx.send_replace(i + 1);
    }
}

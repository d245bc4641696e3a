//! The metrics and health listener against hostile or broken clients: a slow-loris client,
//! idle keep-alive connections, more connections than the cap, shutdown with connections open,
//! and accept errors (out of file descriptors). The listener's limits: headers within 5 s,
//! 64 connections at once, accept errors back off up to 1 s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conveyor_driver_tests::http::{free_port, get, poll};
use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

/// A manager with the metrics listener on a free loopback port, serving `/healthz`.
async fn listening(server: &NatsServer) -> (Running, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = test_config(server).metrics_addr(addr);
    let running = run(TestDriver::new("builder", &["build"]), config);
    poll(
        &format!("http://{addr}/healthz"),
        "the listener",
        |status, _| status == 200,
    )
    .await;
    (running, addr)
}

/// Reads until the peer closes; what it sent and when it closed. Panics after `patience`.
async fn read_to_close(
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    patience: Duration,
) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(patience, until_closed)
        .await
        .expect("the listener did not close the connection");
    (received, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_is_closed_within_the_header_timeout_while_healthz_answers() {
    let server = NatsServer::start();
    let (running, addr) = listening(&server).await;
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Headers one byte a second: they would take over a minute to complete.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
        "z".repeat(60)
    );
    let writer = tokio::spawn(async move {
        for byte in request.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let others = async {
        // Meanwhile the endpoint keeps answering everyone else, promptly.
        let mut answered = 0;
        while started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(1) {
            let asked = Instant::now();
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                get(&format!("http://{addr}/healthz")),
            )
            .await;
            assert!(
                matches!(answer, Ok(Some((200, _)))),
                "healthz did not answer while a slow client was connected: {answer:?}"
            );
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        answered
    };
    let ((received, closed), answered) =
        tokio::join!(read_to_close(&mut read, Duration::from_secs(30)), others);
    writer.abort();
    let took = closed - started;
    println!(
        "slow-loris connection closed after {took:?}; healthz answered {answered} times meanwhile"
    );
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_millis(500)
            && took < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "closed after {took:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("200 OK"), "{text}");
    assert!(answered >= 8, "{answered}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = NatsServer::start();
    let (running, addr) = listening(&server).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&response).ends_with("ok\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response");
        response.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    let (rest, closed) = read_to_close(&mut stream, Duration::from_secs(30)).await;
    let idle = closed - answered;
    println!("idle keep-alive connection closed after {idle:?}");
    assert!(rest.is_empty());
    assert!(
        idle >= HEADER_READ_TIMEOUT - Duration::from_millis(500)
            && idle < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "closed after {idle:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let server = NatsServer::start();
    let (running, addr) = listening(&server).await;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let answer = get(&format!("http://{addr}/healthz")).await;
    let waited = asked.elapsed();
    println!("with {MAX_CONNECTIONS} silent connections, healthz answered after {waited:?}");
    assert_eq!(answer.map(|(status, _)| status), Some(200));
    // It waited for the silent ones to time out, not for ever.
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_secs(2)
            && waited < HEADER_READ_TIMEOUT + Duration::from_secs(5),
        "answered after {waited:?}"
    );
    drop(held);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_open_connections() {
    let server = NatsServer::start();
    let (running, addr) = listening(&server).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /hea").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    running.stop().await.unwrap();
    let (_, closed) = read_to_close(&mut stream, Duration::from_secs(30)).await;
    let took = closed - stopping;
    println!("open connection closed {took:?} after the shutdown began");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

/// The soft and hard limits of open files of process `pid`.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a open files limit");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Sets the open files limit of process `pid` to `soft:hard`.
fn set_nofile(pid: u32, limits: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limits}")])
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit --nofile={limits} failed");
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_instead_of_spinning() {
    let server = NatsServer::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let driver = DriverProcess::start_with(
        "echo",
        &[
            ("CONVEYOR_NATS_URL", &server.url()),
            ("CONVEYOR_METRICS_ADDR", &addr),
        ],
        &[],
    );
    let base = format!("http://{addr}");
    poll(&format!("{base}/healthz"), "the listener", |status, _| {
        status == 200
    })
    .await;
    // Leave the process three free file descriptors, then connect more clients than that:
    // accept fails with EMFILE while they wait.
    let pid = driver.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let (soft, hard) = nofile(pid);
    set_nofile(pid, &format!("{}:{hard}", open + 3));
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spent = cpu_ticks(pid) - before;
    let output = driver.output();
    let errors = output
        .matches("the metrics listener cannot accept a connection")
        .count();
    println!("out of file descriptors for 3 s: {spent} CPU ticks, {errors} accept warnings");
    assert!(errors >= 1, "{output}");
    // A busy loop would spend the 3 s on a core (about 300 ticks) and log without end.
    assert!(spent < 60, "{spent} ticks");
    assert!(errors < 40, "{errors} warnings");
    // With descriptors back, it serves again.
    drop(held);
    set_nofile(pid, &format!("{soft}:{hard}"));
    poll(&format!("{base}/healthz"), "recovery", |status, _| {
        status == 200
    })
    .await;
}

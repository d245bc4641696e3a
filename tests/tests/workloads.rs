//! Real CI workloads against a real nats-server, with `echo` running as a process: results
//! larger than the server's `max_payload`, log lines larger than it, results stored once
//! however often they are published (repeated messages, a server restart mid-run), reconciles
//! that block their threads, a busy resource beside idle ones, and a log flood while NATS is
//! down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::*;
use serde_json::{json, Value};

/// nats-server's default `max_payload`.
const MAX_PAYLOAD: usize = 1_048_576;

/// The Conveyor side, a tap, and `echo` with a short ack wait, so that a redelivery would
/// show within a test.
async fn echo(server: &NatsServer, concurrency: usize) -> (Conveyor, Tap, DriverProcess) {
    echo_with(server, concurrency, &[]).await
}

/// [`echo`] with more environment variables (which win over echo's defaults here).
async fn echo_with(
    server: &NatsServer,
    concurrency: usize,
    env: &[(&str, &str)],
) -> (Conveyor, Tap, DriverProcess) {
    init_tracing();
    let conveyor = Conveyor::new(server).await;
    let tap = conveyor.tap().await;
    let url = server.url();
    let concurrency = concurrency.to_string();
    let mut all = vec![
        ("CONVEYOR_NATS_URL", url.as_str()),
        ("CONVEYOR_CONCURRENCY", concurrency.as_str()),
        ("CONVEYOR_ACK_WAIT", "2s"),
    ];
    all.extend_from_slice(env);
    let driver = DriverProcess::start_with("echo", &all, &[]);
    conveyor.wait_for_consumer("echo").await;
    (conveyor, tap, driver)
}

/// Publishes a `create` event for echo resource `name` with message id `message_id`, as the
/// Go server does (payload as a string); returns the run id.
async fn create(conveyor: &Conveyor, name: &str, spec: Value, message_id: &str) -> String {
    let run_id = uuid::Uuid::new_v4().to_string();
    let message = message(&run_id, name, spec, message_id);
    conveyor
        .publish_raw("resources.echo-resource", message.into_bytes())
        .await;
    run_id
}

fn message(run_id: &str, name: &str, spec: Value, message_id: &str) -> String {
    let resource = resource("echo-resource", name, spec);
    json!({
        "event": "create",
        "payload": resource.to_string(),
        "id": message_id,
        "run_id": run_id,
    })
    .to_string()
}

/// How many times echo reconciled `run_id`: each reconcile logs one `event for` line.
fn reconciles(tap: &Tap, run_id: &str) -> usize {
    let subject = format!("logs.{run_id}");
    tap.seen
        .iter()
        .filter(|s| s.subject == subject)
        .filter(|s| s.body["message"].as_str().unwrap().contains(" event for "))
        .count()
}

/// A message as stored, with its headers.
struct Raw {
    body: Value,
    msg_id: Option<String>,
}

/// Every message stored on `subject` in `stream`, with its `Nats-Msg-Id`.
async fn stored_raw(js: &jetstream::Context, stream: &str, subject: &str) -> Vec<Raw> {
    let mut stream = js.get_stream(stream).await.expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut stored = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        if message.subject.as_str() == subject {
            stored.push(Raw {
                body: serde_json::from_slice(&message.payload).expect("JSON"),
                msg_id: message
                    .headers
                    .get(NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_owned()),
            });
        }
    }
    stored
}

async fn stored_results(js: &jetstream::Context, run_id: &str) -> Vec<Raw> {
    stored_raw(js, "pipeline-engine", "pipelines.driver.result")
        .await
        .into_iter()
        .filter(|r| r.body["run_id"] == run_id)
        .collect()
}

#[tokio::test]
async fn a_result_too_large_for_the_server_fails_on_the_same_attempt_without_rerunning() {
    let server = NatsServer::start();
    let (conveyor, mut tap, _driver) = echo(&server, 2).await;
    let published = Instant::now();
    let spec = json!({"data_bytes": 2_000_000});
    let run_id = create(&conveyor, "big-data", spec, "msg-big").await;
    tap.until_within("the failed result", Duration::from_secs(10), |seen| {
        seen.iter().any(|s| s.is_result() && s.run_id() == run_id)
    })
    .await;
    eprintln!(
        "failed result for 2 MB of data after {:?}",
        published.elapsed()
    );

    let result = tap.results(&run_id)[0].body["driverresult"].clone();
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(result["data"], Value::Null);
    let message = result["message"].as_str().unwrap();
    let size: usize = message
        .strip_prefix("result of ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message {message:?}"));
    assert!(size > 2_000_000, "{message}");
    assert_eq!(
        message,
        format!("result of {size} bytes exceeds the server's max_payload of {MAX_PAYLOAD} bytes")
    );
    // Longer than the ack wait: a redelivery would have come by now.
    tap.settle(Duration::from_secs(4)).await;
    assert_eq!(reconciles(&tap, &run_id), 1, "reconciled once");
    assert_eq!(tap.results(&run_id).len(), 1, "published once");
    let consumer = conveyor.consumer("echo").await;
    assert_eq!(consumer.num_ack_pending, 0, "acked");
    assert_eq!(consumer.num_redelivered, 0, "never redelivered");
    assert_eq!(stored_results(&conveyor.js, &run_id).await.len(), 1);
}

#[tokio::test]
async fn a_log_line_larger_than_max_payload_is_stored_in_pieces() {
    let server = NatsServer::start();
    let (conveyor, mut tap, _driver) = echo(&server, 2).await;
    let spec = json!({"log_lines": 1, "log_bytes": 3_000_000});
    let run_id = create(&conveyor, "big-line", spec, "msg-line").await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], true, "{result}");

    let lines = stored_raw(&conveyor.js, "logs-engine", &format!("logs.{run_id}")).await;
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l.body["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], "echo: create event for big-line");
    let expected = format!("echo line 0 {}", "x".repeat(3_000_000 - 12));
    assert_eq!(messages[1..].concat(), expected, "the pieces make the line");
    assert!(messages.len() >= 4, "{} lines", messages.len());
    let mut ids: Vec<&str> = lines.iter().filter_map(|l| l.msg_id.as_deref()).collect();
    assert_eq!(ids.len(), lines.len(), "every line has a Nats-Msg-Id");
    assert!(ids.iter().all(|id| id.starts_with(&run_id)), "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), lines.len(), "distinct Nats-Msg-Ids");
}

/// Lines around `max_payload`: each is stored whole when its body and headers fit, and in
/// pieces otherwise, never sent too large (which the server refuses, closing the connection).
#[tokio::test]
async fn log_lines_at_the_edge_of_max_payload_are_stored_complete() {
    let server = NatsServer::start();
    let (conveyor, mut tap, _driver) = echo(&server, 4).await;
    // Steps finer than a line's headers (its `Nats-Msg-Id` alone is over 60 bytes), so some
    // line's body fits only without them.
    let sizes: Vec<usize> = (MAX_PAYLOAD - 360..MAX_PAYLOAD).step_by(40).collect();
    let mut runs = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let spec = json!({"log_lines": 1, "log_bytes": size});
        let run_id = create(
            &conveyor,
            &format!("edge-{n}"),
            spec,
            &format!("msg-edge-{n}"),
        )
        .await;
        runs.push((run_id, *size));
    }
    for (run_id, size) in runs {
        let result = tap.result(&run_id).await["driverresult"].clone();
        assert_eq!(result["success"], true, "{size}: {result}");
        let lines = stored_raw(&conveyor.js, "logs-engine", &format!("logs.{run_id}")).await;
        let pieces: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.body["message"].as_str().unwrap())
            .collect();
        let expected = format!("echo line 0 {}", "x".repeat(size - 12));
        assert_eq!(pieces.concat(), expected, "line of {size} bytes");
    }
}

#[tokio::test]
async fn a_result_published_twice_for_the_same_message_is_stored_once() {
    let server = NatsServer::start();
    let (conveyor, mut tap, _driver) = echo(&server, 2).await;
    // The same DriverMessage twice (as a repeated server publish would store it): echo
    // reconciles both and publishes the result twice, with the same Nats-Msg-Id.
    let run_id = uuid::Uuid::new_v4().to_string();
    let body = message(&run_id, "twice", json!({"n": 1}), "msg-twice");
    for _ in 0..2 {
        conveyor
            .publish_raw("resources.echo-resource", body.clone().into_bytes())
            .await;
    }
    let tap_results = |tap: &Tap| tap.results(&run_id).len();
    let deadline = Instant::now() + PATIENCE;
    while tap_results(&tap) < 2 {
        assert!(
            Instant::now() < deadline,
            "two results were never published"
        );
        tap.settle(Duration::from_millis(100)).await;
    }
    assert_eq!(reconciles(&tap, &run_id), 2);
    let stored = stored_results(&conveyor.js, &run_id).await;
    assert_eq!(stored.len(), 1, "JetStream dropped the repeat");
    assert_eq!(
        stored[0].msg_id.as_deref(),
        Some(format!("{run_id}.echo.msg-twice").as_str())
    );
}

#[tokio::test]
async fn a_nats_server_restart_mid_run_stores_one_result_per_run() {
    let mut server = NatsServer::start();
    let (conveyor, _tap, _driver) = echo(&server, 4).await;
    let mut runs = Vec::new();
    for i in 0..12 {
        let spec = json!({"sleep_ms": 300, "log_lines": 3});
        runs.push(create(&conveyor, &format!("app-{i}"), spec, &format!("msg-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart();

    let deadline = Instant::now() + Duration::from_secs(60);
    let by_run = loop {
        let mut by_run: HashMap<String, usize> = HashMap::new();
        if let Ok(results) = tokio::time::timeout(
            Duration::from_secs(5),
            stored_raw(&conveyor.js, "pipeline-engine", "pipelines.driver.result"),
        )
        .await
        {
            for result in results {
                assert!(result.msg_id.is_some(), "a result without Nats-Msg-Id");
                let run_id = result.body["run_id"].as_str().unwrap().to_owned();
                *by_run.entry(run_id).or_default() += 1;
            }
        }
        if runs.iter().all(|r| by_run.contains_key(r)) || Instant::now() > deadline {
            break by_run;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Redeliveries after the restart would come within the ack wait: let them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let results = stored_raw(&conveyor.js, "pipeline-engine", "pipelines.driver.result").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for result in results {
        *counts
            .entry(result.body["run_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let missing: Vec<&String> = runs.iter().filter(|r| !by_run.contains_key(*r)).collect();
    assert!(missing.is_empty(), "runs without a result: {missing:?}");
    for run_id in &runs {
        assert_eq!(counts[run_id], 1, "results stored for run {run_id}");
    }
}

#[tokio::test]
async fn reconciles_blocking_every_worker_thread_are_not_redelivered() {
    let server = NatsServer::start();
    // One worker thread, four events that each block it for longer than three ack waits:
    // whatever runs on the reconciles' runtime is stopped the whole 28 s.
    let (conveyor, mut tap, _driver) =
        echo_with(&server, 4, &[("TOKIO_WORKER_THREADS", "1")]).await;
    let mut runs = Vec::new();
    for i in 0..4 {
        let spec = json!({"block_ms": 7000});
        runs.push(
            create(
                &conveyor,
                &format!("blocking-{i}"),
                spec,
                &format!("msg-{i}"),
            )
            .await,
        );
    }
    tap.until_within("four results", Duration::from_secs(60), |seen| {
        runs.iter()
            .all(|run| seen.iter().any(|s| s.is_result() && s.run_id() == run))
    })
    .await;
    tap.settle(Duration::from_secs(3)).await;
    for run in &runs {
        assert_eq!(reconciles(&tap, run), 1, "run {run} reconciled once");
        assert_eq!(tap.results(run).len(), 1, "run {run} published once");
        let result = &tap.results(run)[0].body["driverresult"];
        assert_eq!(result["success"], true, "{result}");
    }
    let consumer = conveyor.consumer("echo").await;
    assert_eq!(consumer.num_redelivered, 0, "no event was redelivered");
    assert_eq!(consumer.num_ack_pending, 0, "every event acked");
}

#[tokio::test]
async fn a_busy_resource_does_not_starve_the_others() {
    let server = NatsServer::start();
    let (conveyor, mut tap, _driver) = echo(&server, 2).await;
    // Four events for one resource first (they run one after another), then four for others.
    let mut busy = Vec::new();
    for i in 0..4 {
        let spec = json!({"sleep_ms": 1500});
        busy.push(create(&conveyor, "busy", spec, &format!("busy-{i}")).await);
    }
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(
            create(
                &conveyor,
                &format!("other-{i}"),
                json!({}),
                &format!("o-{i}"),
            )
            .await,
        );
    }
    let all: Vec<String> = busy.iter().chain(&others).cloned().collect();
    tap.until_within("every result", Duration::from_secs(30), |seen| {
        all.iter()
            .all(|run| seen.iter().any(|s| s.is_result() && s.run_id() == run))
    })
    .await;
    let position = |run: &str| {
        tap.seen
            .iter()
            .position(|s| s.is_result() && s.run_id() == run)
            .unwrap()
    };
    let order: Vec<usize> = busy.iter().map(|run| position(run)).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "one resource in order"
    );
    // The others need one free slot; the waiting busy events must not hold it.
    for run in &others {
        assert!(
            position(run) < order[1],
            "run {run} waited behind the busy resource: results at {:?}, busy at {order:?}",
            others.iter().map(|r| position(r)).collect::<Vec<_>>()
        );
    }
}

/// The documented bound on echo's memory while it logs far more than NATS takes: the log
/// buffer (16 MiB by default) plus what the process needs anyway, with room for the copies
/// the NATS client holds (RELIABILITY.md has the measurement).
const FLOOD_RSS_BOUND_KIB: u64 = 160 * 1024;

#[tokio::test]
async fn a_log_flood_during_a_nats_outage_stays_within_the_memory_bound() {
    let mut server = NatsServer::start();
    // Log lines are not mirrored to the local output (that would be 400 MB too); the ack
    // wait is longer than the outage.
    let env = [("RUST_LOG", "warn"), ("CONVEYOR_ACK_WAIT", "60s")];
    let (conveyor, mut tap, driver) = echo_with(&server, 1, &env).await;
    const LINES: u64 = 100_000;
    const BYTES: u64 = 4_000; // 400 MB in all
    let spec = json!({"log_lines": LINES, "log_bytes": BYTES});
    let run_id = create(&conveyor, "flood", spec, "msg-flood").await;
    let logs = format!("logs.{run_id}");
    tap.until("the first log line", |seen| {
        seen.iter().any(|s| s.subject == logs)
    })
    .await;
    server.stop();
    let mut peak = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        peak = peak.max(driver.peak_rss_kib().expect("echo is running"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.start_again();
    let conveyor = Conveyor::connect(&server).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let results = loop {
        peak = peak.max(driver.peak_rss_kib().unwrap_or(0));
        let results = stored_results(&conveyor.js, &run_id).await;
        if !results.is_empty() || Instant::now() > deadline {
            break results;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(results.len(), 1, "one result stored");
    assert_eq!(results[0].body["driverresult"]["success"], true);

    let lines = stored_raw(&conveyor.js, "logs-engine", &logs).await;
    let stored = lines
        .iter()
        .filter(|l| {
            l.body["message"]
                .as_str()
                .unwrap()
                .starts_with("echo line ")
        })
        .count() as u64;
    let dropped: u64 = lines
        .iter()
        .filter_map(|l| l.body["message"].as_str())
        .filter(|m| m.contains("dropped"))
        .map(|m| m.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    eprintln!(
        "log flood: {LINES} lines of {BYTES} bytes, {stored} stored, {dropped} reported dropped, peak RSS {peak} KiB"
    );
    assert!(dropped > 0, "a line says how many lines were dropped");
    assert!(stored + dropped <= LINES);
    // Lost without a report are only lines that were in the NATS client when the server
    // died (the buffer's worth at most).
    let in_flight = (16 * 1024 * 1024) / BYTES;
    assert!(
        stored + dropped + in_flight >= LINES,
        "{stored} + {dropped}"
    );
    assert!(
        peak < FLOOD_RSS_BOUND_KIB,
        "peak RSS {peak} KiB over the bound of {FLOOD_RSS_BOUND_KIB} KiB"
    );
}

#[tokio::test]
async fn heartbeats_follow_the_ack_wait_the_server_has() {
    let server = NatsServer::start();
    // echo binds the consumer with a 30 s ack wait (heartbeats every 10 s) ...
    let (conveyor, mut tap, _driver) = echo_with(&server, 2, &[("CONVEYOR_ACK_WAIT", "30s")]).await;
    // ... then another party (an instance configured differently, an operator) lowers it.
    let stream = conveyor.js.get_stream("messages").await.expect("stream");
    let mut config = conveyor.consumer("echo").await.config;
    config.ack_wait = Duration::from_secs(2);
    stream
        .create_consumer(config)
        .await
        .expect("consumer updated");
    // echo reads the consumer's state every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let run_id = create(&conveyor, "long", json!({"sleep_ms": 7000}), "msg-long").await;
    let result = tap.result(&run_id).await;
    assert_eq!(result["driverresult"]["success"], true);
    tap.settle(Duration::from_secs(3)).await;
    assert_eq!(reconciles(&tap, &run_id), 1, "reconciled once");
    let consumer = conveyor.consumer("echo").await;
    assert_eq!(consumer.num_redelivered, 0, "no redelivery");
}

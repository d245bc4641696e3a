//! Real CI workloads against a real nats-server, with `echo` running as a process: results
//! larger than the server's `max_payload`, log lines larger than it, and results stored once
//! however often they are published (repeated messages, a server restart mid-run).

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
    init_tracing();
    let conveyor = Conveyor::new(server).await;
    let tap = conveyor.tap().await;
    let driver = DriverProcess::start_with(
        "echo",
        &[
            ("CONVEYOR_NATS_URL", &server.url()),
            ("CONVEYOR_CONCURRENCY", &concurrency.to_string()),
            ("CONVEYOR_ACK_WAIT", "2s"),
        ],
        &[],
    );
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

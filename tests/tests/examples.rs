//! End-to-end tests of the example drivers (`echo`, `hello`, `shell`), run as separate
//! processes against a real `nats-server`, with the Conveyor server's side played by
//! [`Conveyor`].
//!
//! The example binaries are built by the first test that needs them, with
//! `cargo build -p conveyor-driver-examples --bins` into this test's own target directory and
//! profile, so `cargo test --workspace` needs no preparation.

use std::process::Command;

use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::{resource, Conveyor, NatsServer, Payload, Seen, Tap, PATIENCE};
use serde_json::json;

/// Log lines (persisted `logs.<run>` ones) seen for `run_id`.
fn log_lines<'a>(tap: &'a Tap, run_id: &str) -> Vec<&'a Seen> {
    tap.seen
        .iter()
        .filter(|s| s.subject == format!("logs.{run_id}"))
        .collect()
}

fn messages(lines: &[&Seen]) -> Vec<String> {
    lines
        .iter()
        .map(|s| s.body["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn echo_setup(concurrency: usize) -> (NatsServer, Conveyor, DriverProcess, Tap) {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let driver = DriverProcess::start("echo", &server, concurrency);
    conveyor.wait_for_consumer("echo").await;
    let tap = conveyor.tap().await;
    (server, conveyor, driver, tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_succeeds_with_the_spec_as_data_and_logs_the_resource() {
    let (_server, conveyor, mut driver, mut tap) = echo_setup(2).await;
    let spec = json!({"greeting": "hi", "items": [1, 2, {"deep": true}]});
    let res = resource("echo-resource", "alpha-resource", spec.clone());
    let run_id = conveyor
        .publish("resources.echo-resource", "create", &res, Payload::String)
        .await;
    let envelope = tap.result(&run_id).await;

    assert_eq!(envelope["event"], "driver.result");
    assert_eq!(envelope["resource"], res);
    let result = &envelope["driverresult"];
    assert_eq!(result["success"], true, "{envelope}");
    assert_eq!(result["driver"], "echo");
    assert_eq!(result["data"], spec);

    let lines = log_lines(&tap, &run_id);
    assert!(
        messages(&lines)
            .iter()
            .any(|m| m.contains("alpha-resource")),
        "no log line names the resource: {:?}",
        messages(&lines)
    );
    for line in &lines {
        assert_eq!(line.body["driver"], "echo");
        assert_eq!(line.body["runid"], run_id.as_str());
    }

    // Events addressed to this driver only, with the payload as an object, work too.
    let res = resource("echo-resource", "beta", json!({"n": 2}));
    let run_id = conveyor
        .publish(
            "drivers.echo.resources.echo-resource",
            "update",
            &res,
            Payload::Object,
        )
        .await;
    let envelope = tap.result(&run_id).await;
    assert_eq!(envelope["driverresult"]["data"], json!({"n": 2}));
    driver.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_failures_and_panics_become_failed_results() {
    let (_server, conveyor, mut driver, mut tap) = echo_setup(2).await;

    let failing = resource("echo-resource", "failing", json!({"fail": true}));
    let run_id = conveyor
        .publish(
            "resources.echo-resource",
            "create",
            &failing,
            Payload::String,
        )
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false);
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("asked to fail"),
        "{result}"
    );

    let panicking = resource("echo-resource", "panicking", json!({"panic": true}));
    let run_id = conveyor
        .publish(
            "resources.echo-resource",
            "create",
            &panicking,
            Payload::String,
        )
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false);
    assert!(
        result["message"].as_str().unwrap().contains("panic"),
        "{result}"
    );

    // The process survived the panic and keeps working.
    driver.assert_running();
    let fine = resource("echo-resource", "fine", json!({"ok": 1}));
    let run_id = conveyor
        .publish("resources.echo-resource", "create", &fine, Payload::String)
        .await;
    assert_eq!(tap.result(&run_id).await["driverresult"]["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_reconciles_concurrently_up_to_the_configured_limit() {
    let (_server, conveyor, _driver, mut tap) = echo_setup(3).await;
    let mut runs = Vec::new();
    for name in ["c1", "c2", "c3"] {
        let res = resource("echo-resource", name, json!({"sleep_ms": 3000}));
        runs.push(
            conveyor
                .publish("resources.echo-resource", "create", &res, Payload::String)
                .await,
        );
    }
    // All three are sleeping at once: each logged its sleep before any result came back.
    tap.until("all three runs sleeping", |seen| {
        let sleeping = runs
            .iter()
            .filter(|run| {
                seen.iter().any(|s| {
                    s.subject == format!("logs.{run}")
                        && s.body["message"]
                            .as_str()
                            .unwrap_or("")
                            .contains("sleeping")
                })
            })
            .count();
        sleeping == 3 || seen.iter().any(Seen::is_result)
    })
    .await;
    assert!(
        !tap.seen.iter().any(Seen::is_result),
        "a result came back before all three events were being reconciled"
    );
    for run in &runs {
        assert_eq!(tap.result(run).await["driverresult"]["success"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_exits_zero_after_sigterm_once_in_flight_events_are_done() {
    let (_server, conveyor, mut driver, mut tap) = echo_setup(2).await;
    let res = resource(
        "echo-resource",
        "slow",
        json!({"sleep_ms": 2000, "marker": "x"}),
    );
    let run_id = conveyor
        .publish("resources.echo-resource", "create", &res, Payload::String)
        .await;
    tap.until("the slow run to start", |seen| {
        seen.iter().any(|s| {
            s.subject == format!("logs.{run_id}")
                && s.body["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("sleeping")
        })
    })
    .await;
    driver.sigterm();
    let envelope = tap.result(&run_id).await;
    assert_eq!(envelope["driverresult"]["success"], true);
    assert_eq!(envelope["driverresult"]["data"]["marker"], "x");
    let status = driver.wait(PATIENCE);
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        driver.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_greets() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let _driver = DriverProcess::start("hello", &server, 1);
    conveyor.wait_for_consumer("hello").await;
    let mut tap = conveyor.tap().await;
    let res = resource("greeting", "world", json!({}));
    let run_id = conveyor
        .publish("resources.greeting", "create", &res, Payload::String)
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], true);
    assert_eq!(result["message"], "greeted world");
    assert_eq!(messages(&log_lines(&tap, &run_id)), ["hello, world!"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_streams_output_and_reports_the_exit_code() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let _driver = DriverProcess::start("shell", &server, 2);
    conveyor.wait_for_consumer("shell").await;
    let mut tap = conveyor.tap().await;

    let workdir = tempfile::tempdir().unwrap();
    let script = r#"echo "first $GREETING"; echo "to stderr" >&2; pwd; echo last; exit 3"#;
    let res = resource(
        "script",
        "failing-script",
        json!({"script": script, "env": {"GREETING": "hello"}, "workdir": workdir.path()}),
    );
    let run_id = conveyor
        .publish("resources.script", "create", &res, Payload::String)
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(result["data"]["exit_code"], 3);
    assert!(
        result["message"].as_str().unwrap().contains("code 3"),
        "{result}"
    );
    let lines = log_lines(&tap, &run_id);
    let text = messages(&lines);
    let workdir_path = workdir
        .path()
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for expected in ["first hello", "last", workdir_path.as_str()] {
        assert!(
            text.iter().any(|m| m == expected),
            "missing stdout line {expected:?}: {text:?}"
        );
    }
    let first = text.iter().position(|m| m == "first hello").unwrap();
    let last = text.iter().position(|m| m == "last").unwrap();
    assert!(first < last, "stdout lines out of order: {text:?}");
    let stderr_line = lines
        .iter()
        .find(|s| s.body["message"] == "to stderr")
        .unwrap_or_else(|| panic!("no stderr line: {text:?}"));
    assert_eq!(
        stderr_line
            .headers
            .get("Conveyor-Label-stream")
            .map(String::as_str),
        Some("stderr")
    );

    let res = resource("script", "good-script", json!({"script": "echo ok"}));
    let run_id = conveyor
        .publish("resources.script", "create", &res, Payload::String)
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["data"]["exit_code"], 0);

    let res = resource("script", "bad-spec", json!({"script": 7}));
    let run_id = conveyor
        .publish("resources.script", "create", &res, Payload::String)
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("ShellSpec") && message.contains("spec.script"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_kills_a_script_that_times_out() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let _driver = DriverProcess::start("shell", &server, 1);
    conveyor.wait_for_consumer("shell").await;
    let mut tap = conveyor.tap().await;
    let marker = format!("conveyor-timeout-{}", std::process::id());
    let script = format!("echo started; sh -c 'sleep 600; : {marker}' & sleep 600");
    let res = resource(
        "script",
        "slow-script",
        json!({"script": script, "timeout_secs": 1}),
    );
    let run_id = conveyor
        .publish("resources.script", "create", &res, Payload::String)
        .await;
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(result["data"]["timed_out"], true);
    assert!(messages(&log_lines(&tap, &run_id)).contains(&"started".to_owned()));
    let left = Command::new("pgrep").args(["-f", &marker]).output();
    if let Ok(left) = left {
        assert!(
            left.stdout.is_empty(),
            "script processes left running: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_reconcile_fails_at_its_deadline_and_is_not_retried() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let mut driver = DriverProcess::start_with(
        "echo",
        &[("CONVEYOR_NATS_URL", &server.url())],
        &["--reconcile-timeout", "2s", "--ack-wait", "1s"],
    );
    conveyor.wait_for_consumer("echo").await;
    let mut tap = conveyor.tap().await;
    let hung = resource("echo-resource", "hung", json!({"sleep_ms": 20_000}));
    let run_id = conveyor
        .publish("resources.echo-resource", "create", &hung, Payload::String)
        .await;
    let started = std::time::Instant::now();
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(
        result["message"], "reconcile timed out after 2s",
        "{result}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Acked, not retried: no second delivery, no second result.
    tap.settle(std::time::Duration::from_secs(3)).await;
    assert_eq!(tap.results(&run_id).len(), 1);
    let info = conveyor.consumer("echo").await;
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (0, 0),
        "{info:?}"
    );
    driver.assert_running();
}

#[test]
fn bad_flags_are_reported_with_the_flag_name() {
    let mut driver = DriverProcess::start_with("echo", &[], &["--concurrency", "0"]);
    let status = driver.wait(PATIENCE);
    assert_eq!(status.code(), Some(2), "{}", driver.output());
    assert!(
        driver.output().contains("--concurrency"),
        "{}",
        driver.output()
    );

    // A bad variable is named as the variable (no flag was given).
    let mut driver = DriverProcess::start_with("echo", &[("CONVEYOR_MAX_DELIVER", "lots")], &[]);
    let status = driver.wait(PATIENCE);
    assert!(!status.success());
    assert!(
        driver
            .output()
            .contains("invalid CONVEYOR_MAX_DELIVER \"lots\""),
        "{}",
        driver.output()
    );

    let mut driver = DriverProcess::start_with("echo", &[], &["--version"]);
    assert!(driver.wait(PATIENCE).success());
    assert!(driver.output().starts_with("echo "), "{}", driver.output());
}

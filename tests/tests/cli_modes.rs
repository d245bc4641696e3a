//! The commands of a driver binary besides `run` (`invoke`, `describe`, `register`), the
//! tracing bridge and the metrics endpoint, tested on the `echo` example as a process.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use conveyor_driver_tests::api_server::ApiServer;
use conveyor_driver_tests::http::{free_port, get, poll};
use conveyor_driver_tests::process::{command, DriverProcess};
use conveyor_driver_tests::{
    assert_schema, resource, Conveyor, NatsServer, Payload, Seen, PATIENCE,
};
use serde_json::{json, Value};

fn echo(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = command("echo")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("echo output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `echo invoke <file>` on `body`; returns the output.
fn invoke(body: &Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.json");
    std::fs::write(&path, body.to_string()).unwrap();
    echo(&["invoke", path.to_str().unwrap()], None)
}

fn message(spec: Value, string_payload: bool) -> (Value, String) {
    let res = resource("echo-resource", "inv", spec);
    let run_id = uuid::Uuid::new_v4().to_string();
    let payload = if string_payload {
        Value::String(res.to_string())
    } else {
        res
    };
    (
        json!({"event": "create", "payload": payload, "id": "m-1", "run_id": run_id}),
        run_id,
    )
}

fn parse_envelope(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON envelope ({err}):\n{stdout}\nstderr:\n{}",
            text(&out.stderr)
        )
    })
}

#[test]
fn invoke_prints_the_log_and_the_envelope_and_exits_by_outcome() {
    let spec = json!({"greeting": "hi", "trace": true});
    let (body, run_id) = message(spec.clone(), true);
    let out = invoke(&body);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let envelope = parse_envelope(&out);
    assert_schema_envelope(&envelope);
    assert_eq!(envelope["run_id"], run_id.as_str());
    assert_eq!(
        envelope["resource"],
        serde_json::from_str::<Value>(body["payload"].as_str().unwrap()).unwrap()
    );
    assert_eq!(envelope["driverresult"]["success"], true);
    assert_eq!(envelope["driverresult"]["data"], spec);
    // Log lines on stderr, as their wire JSON bodies; the bridged tracing event with labels.
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| {
            serde_json::Deserializer::from_str(l)
                .into_iter::<Value>()
                .next()?
                .ok()
        })
        .collect();
    let first = lines.iter().find(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("create event for inv"))
    });
    let first = first.unwrap_or_else(|| panic!("no log line for the event:\n{stderr}"));
    assert_schema("log", first);
    assert_eq!(first["runid"], run_id.as_str());
    assert!(stderr.contains("echo: traced resource=inv"), "{stderr}");
    assert!(
        stderr.contains(r#""Conveyor-Label-level":"INFO""#),
        "{stderr}"
    );
    assert!(!stderr.contains("too fine"), "{stderr}");

    // Payload as an object; a failing run exits 1 with the failed envelope.
    let (body, _) = message(json!({"fail": true}), false);
    let out = invoke(&body);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let envelope = parse_envelope(&out);
    assert_eq!(envelope["driverresult"]["success"], false);
    assert!(
        text(&out.stderr).contains("failed: echo asked to fail"),
        "{}",
        text(&out.stderr)
    );

    // A panic is a failed result too.
    let (body, _) = message(json!({"panic": true}), true);
    let out = invoke(&body);
    assert_eq!(out.status.code(), Some(1));
    assert!(parse_envelope(&out)["driverresult"]["message"]
        .as_str()
        .unwrap()
        .contains("panicked"));
}

fn assert_schema_envelope(envelope: &Value) {
    assert_eq!(envelope["event"], "driver.result");
    assert_schema("driver-result-event", &envelope["driverresult"]);
    assert_schema("resource", &envelope["resource"]);
}

#[test]
fn invoke_reads_a_bare_resource_from_stdin_and_rejects_bad_input() {
    let res = resource("echo-resource", "bare", json!({"n": 1}));
    let out = echo(&["invoke", "-"], Some(&res.to_string()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let envelope = parse_envelope(&out);
    assert_eq!(envelope["resource"], res);
    assert!(uuid::Uuid::parse_str(envelope["run_id"].as_str().unwrap()).is_ok());

    for (input, expected) in [
        ("{not json", "not JSON"),
        (
            r#"{"event":"create","payload":{},"id":"1","run_id":"run-7"}"#,
            "run_id",
        ),
        (r#"{"hello":"world"}"#, "neither a DriverMessage"),
    ] {
        let out = echo(&["invoke", "-"], Some(input));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {stderr}");
        assert!(
            stderr.contains("bad input") && stderr.contains(expected),
            "{input}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = echo(&["invoke", "/nonexistent/event.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn describe_prints_the_wire_contract_without_connecting() {
    let out = command("echo")
        .args(["describe", "--max-deliver", "7"])
        .env("CONVEYOR_NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    assert_eq!(doc["driver"], "echo");
    assert_eq!(
        doc["filter_subjects"],
        json!([
            "resources.echo-resource",
            "drivers.echo.resources.echo-resource"
        ])
    );
    assert_eq!(doc["events"], Value::Null);
    let consumer = &doc["consumer"]["config"];
    assert_eq!(doc["consumer"]["stream"], "messages");
    assert_eq!(consumer["durable_name"], "echo");
    assert_eq!(consumer["ack_policy"], "explicit");
    assert_eq!(doc["retry"]["max_deliver"], 7);
    assert_eq!(doc["emits"]["result"]["subject"], "pipelines.driver.result");
    for pointer in [
        "/consumes/message",
        "/consumes/resource",
        "/emits/logs/schema",
        "/emits/result/driver_result_event",
    ] {
        assert!(
            doc.pointer(pointer).is_some_and(Value::is_object),
            "{pointer} missing: {doc:#}"
        );
    }
    // A spec type without a schema (`echo` takes `serde_json::Value`) describes any value.
    assert_eq!(doc["consumes"]["spec"]["title"], "AnyValue", "{doc:#}");

    // `shell`'s spec derives `schemars::JsonSchema`: its schema is printed.
    let out = command("shell").arg("describe").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    let spec = &doc["consumes"]["spec"];
    assert_eq!(spec["title"], "ShellSpec", "{doc:#}");
    assert_eq!(spec["required"], json!(["script"]));
    assert_eq!(spec["properties"]["script"]["type"], "string");
    assert_eq!(spec["additionalProperties"], false, "deny_unknown_fields");
}

#[test]
fn a_flag_beats_a_bad_variable_and_a_bad_variable_alone_is_named() {
    // The flag wins and the bad variable it overrides is not even read.
    let out = command("echo")
        .args(["describe", "--max-deliver", "3"])
        .env("CONVEYOR_MAX_DELIVER", "abc")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    assert_eq!(doc["retry"]["max_deliver"], 3);
    // Without the flag, the variable's value counts, and a bad one is named in one line.
    let out = command("echo")
        .arg("describe")
        .env("CONVEYOR_MAX_DELIVER", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        r#"echo: error: invalid CONVEYOR_MAX_DELIVER "abc": expected a whole number of at least 1"#
    );
    // --help names each variable and default, from the one declaration.
    let out = command("echo").arg("--help").output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("[env: CONVEYOR_MAX_DELIVER] [default: 5]"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_creates_the_consumer_so_early_events_are_kept() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let out = command("echo")
        .arg("register")
        .env("CONVEYOR_NATS_URL", server.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let info = conveyor.consumer("echo").await;
    assert_eq!(info.config.durable_name.as_deref(), Some("echo"));

    // Published while no instance runs: kept thanks to the registered consumer.
    let res = resource("echo-resource", "early", json!({"early": true}));
    let run_id = conveyor
        .publish("resources.echo-resource", "create", &res, Payload::String)
        .await;
    let mut tap = conveyor.tap().await;
    let _driver = DriverProcess::start("echo", &server, 1);
    let result = tap.result(&run_id).await;
    assert_eq!(result["driverresult"]["data"], json!({"early": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_count_outcomes() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let url = server.url();
    let driver = DriverProcess::start_with(
        "echo",
        &[
            ("CONVEYOR_NATS_URL", &url),
            ("CONVEYOR_METRICS_ADDR", &addr),
        ],
        &[],
    );
    let base = format!("http://{addr}");
    poll(&format!("{base}/readyz"), "readiness", |status, _| {
        status == 200
    })
    .await;
    assert_eq!(
        get(&format!("{base}/healthz")).await.map(|r| r.0),
        Some(200)
    );
    let mut tap = conveyor.tap().await;

    let ok = conveyor
        .create("echo-resource", "ok", json!({"trace": true}))
        .await;
    let failing = conveyor
        .create("echo-resource", "bad", json!({"fail": true}))
        .await;
    conveyor
        .publish_raw("resources.echo-resource", b"{not a message".to_vec())
        .await;
    assert_eq!(tap.result(&ok).await["driverresult"]["success"], true);
    assert_eq!(tap.result(&failing).await["driverresult"]["success"], false);

    let metrics = poll(
        &format!("{base}/metrics"),
        "the poison message to be counted and the events settled",
        // The result is seen before its event is acked and leaves the in-flight gauge.
        |status, body| {
            status == 200
                && body.contains(r#"conveyor_driver_poison_messages_total{driver="echo"} 1"#)
                && body.contains(r#"conveyor_driver_in_flight{driver="echo"} 0"#)
        },
    )
    .await;
    for expected in [
        r#"conveyor_driver_reconciles_total{driver="echo",outcome="success"} 1"#,
        r#"conveyor_driver_reconciles_total{driver="echo",outcome="failure"} 1"#,
        r#"conveyor_driver_reconciles_total{driver="echo",outcome="panic"} 0"#,
        r#"conveyor_driver_reconciles_total{driver="echo",outcome="retry"} 0"#,
        r#"conveyor_driver_reconcile_duration_seconds_count{driver="echo"} 2"#,
        r#"conveyor_driver_in_flight{driver="echo"} 0"#,
        r#"conveyor_driver_waiting{driver="echo"} 0"#,
        r#"conveyor_driver_redeliveries_total{driver="echo"} 0"#,
        r#"conveyor_driver_log_publish_failures_total{driver="echo"} 0"#,
        r#"conveyor_driver_consumer_pending{driver="echo"}"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in:\n{metrics}"
        );
    }
    if std::env::var_os("SHOW_METRICS").is_some() {
        eprintln!("{metrics}");
    }

    // The tracing bridge, end to end: the traced event is a line of its run, with labels;
    // the runtime's own events are not.
    let lines: Vec<&Seen> = tap
        .seen
        .iter()
        .filter(|s| s.subject == format!("logs.{ok}"))
        .collect();
    let traced = lines
        .iter()
        .find(|s| {
            s.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("echo: traced resource=ok"))
        })
        .unwrap_or_else(|| panic!("bridged line missing: {lines:?}"));
    assert_schema("log", &traced.body);
    assert_eq!(
        traced
            .headers
            .get("Conveyor-Label-level")
            .map(String::as_str),
        Some("INFO")
    );
    assert_eq!(
        traced
            .headers
            .get("Conveyor-Label-target")
            .map(String::as_str),
        Some("echo")
    );
    for line in &lines {
        let message = line.body["message"].as_str().unwrap_or_default();
        assert!(!message.contains("too fine"), "DEBUG bridged: {message}");
        assert!(
            !message.contains("result published"),
            "runtime log bridged: {message}"
        );
        assert!(line
            .headers
            .get("Conveyor-Label-target")
            .is_none_or(|t| !t.starts_with("conveyor_driver")));
    }
    let echo_line = "echo: create event for ok";
    assert_eq!(
        lines
            .iter()
            .filter(|s| s.body["message"] == echo_line)
            .count(),
        1,
        "{lines:?}"
    );
    // The local output keeps the event (read by a background thread: give it time).
    let deadline = std::time::Instant::now() + PATIENCE;
    while !driver.output().contains("echo: traced") {
        assert!(
            std::time::Instant::now() < deadline,
            "local output lacks the event:\n{}",
            driver.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_call_the_api_of_api_url() {
    let api = ApiServer::start().await;
    let (body, _) = message(json!({"api_health": true}), false);
    let healthy = json!({"status": "healthy"});

    // `invoke`, with the flag and without it.
    let (input, api_url) = (body.to_string(), api.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        echo(&["invoke", "-", "--api-url", &api_url], Some(&input))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(parse_envelope(&out)["driverresult"]["data"], healthy);
    let input = body.to_string();
    let out = tokio::task::spawn_blocking(move || echo(&["invoke", "-"], Some(&input)))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let message = parse_envelope(&out)["driverresult"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("no Conveyor API configured"),
        "{message}"
    );
    let out = tokio::task::spawn_blocking(|| echo(&["--api-url", "nats://x:4222"], None))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--api-url"),
        "{}",
        text(&out.stderr)
    );

    // `run`, from the environment: the manager hands its client to every reconcile.
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let url = server.url();
    let _driver = DriverProcess::start_with(
        "echo",
        &[("CONVEYOR_NATS_URL", &url), ("CONVEYOR_API_URL", &api.url)],
        &[],
    );
    conveyor.wait_for_consumer("echo").await;
    let mut tap = conveyor.tap().await;
    let run_id = conveyor
        .create("echo-resource", "probe", json!({"api_health": true}))
        .await;
    assert_eq!(tap.result(&run_id).await["driverresult"]["data"], healthy);
    let health_calls = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/health")
        .count();
    assert_eq!(health_calls, 2, "one from invoke, one from run");
}

#[test]
fn register_gives_up_after_its_timeout() {
    // Nothing listens on this port: register keeps retrying until its timeout.
    let port = free_port().to_string();
    let url = format!("nats://127.0.0.1:{port}");
    let mut register = command("echo");
    register.args(["register", "--timeout", "2s", "--nats-url", &url]);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(register.output()));
    let out = finished
        .recv_timeout(PATIENCE)
        .expect("register gave up within its timeout")
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("echo: error: gave up registering the consumer after 2s"),
        "{stderr}"
    );
    let out = command("echo")
        .args(["register", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--timeout"));
}

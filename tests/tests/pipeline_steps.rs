//! A two-step pipeline end to end: the `steps` example (drivers `fetch` and `build` in one
//! binary, over one connection, sharing one workspace) against a real nats-server, with the
//! test playing the Conveyor pipeline engine: on each result it stores the step's
//! DriverResultEvent in the resource's metadata under `driverresults.<driver>`, as a JSON
//! string, and sends the next step `process` on `drivers.<driver>.resources.<type>`.

use std::time::Duration;

use async_nats::jetstream::consumer;
use conveyor_driver_tests::http::{free_port, poll};
use conveyor_driver_tests::process::{command, DriverProcess};
use conveyor_driver_tests::{Conveyor, NatsServer, Seen, Tap};
use serde_json::{json, Value};

/// Sends `event` for `resource` in run `run_id` to `driver`, as the pipeline engine does.
async fn send(conveyor: &Conveyor, driver: &str, event: &str, run_id: &str, resource: &Value) {
    let message = json!({
        "event": event,
        // The Go server sends the resource as a string.
        "payload": resource.to_string(),
        "id": uuid::Uuid::new_v4().to_string(),
        "run_id": run_id,
    });
    let subject = format!("drivers.{driver}.resources.app");
    conveyor
        .publish_raw(&subject, message.to_string().into_bytes())
        .await;
}

/// The result of `driver` in run `run_id`.
async fn result_of(tap: &mut Tap, run_id: &str, driver: &str) -> Value {
    let is_it = |seen: &Seen| {
        seen.is_result() && seen.run_id() == run_id && seen.body["driverresult"]["driver"] == driver
    };
    tap.until(&format!("the result of {driver}"), |seen| {
        seen.iter().any(is_it)
    })
    .await;
    tap.seen
        .iter()
        .find(|seen| is_it(seen))
        .unwrap()
        .body
        .clone()
}

/// The engine's step: the envelope's resource, with the step's result stored in its metadata.
fn advance(envelope: &Value) -> Value {
    let result = &envelope["driverresult"];
    let driver = result["driver"].as_str().unwrap();
    let mut resource = envelope["resource"].clone();
    resource["metadata"][format!("driverresults.{driver}")] = Value::String(result.to_string());
    resource
}

/// The log messages of `driver` in run `run_id`, as persisted on `logs.<run_id>`.
fn logged(tap: &Tap, run_id: &str, driver: &str) -> Vec<String> {
    let subject = format!("logs.{run_id}");
    tap.seen
        .iter()
        .filter(|seen| seen.subject == subject && seen.body["driver"] == driver)
        .map(|seen| seen.body["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_then_build_in_one_binary_through_the_pipeline_engine() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let workspace = tempfile::tempdir().unwrap();
    let root = workspace.path().to_str().unwrap().to_owned();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let process = DriverProcess::start_with(
        "steps",
        &[
            ("CONVEYOR_NATS_URL", &server.url()),
            ("CONVEYOR_METRICS_ADDR", &metrics_addr),
            ("STEPS_WORKSPACE", &root),
        ],
        &[],
    );
    conveyor.wait_for_consumer("fetch").await;
    conveyor.wait_for_consumer("build").await;
    let mut tap = conveyor.tap().await;

    let run_id = uuid::Uuid::new_v4().to_string();
    let resource = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": "web",
        "resource": "app",
        "pipeline": "ci",
        "metadata": {"owner": "tests"},
        "spec": {"repo": "https://git.example/web.git", "files": {"main.c": "int main() {}", "README": "web"}},
    });
    send(&conveyor, "fetch", "create", &run_id, &resource).await;
    let fetched = result_of(&mut tap, &run_id, "fetch").await;
    assert_eq!(fetched["driverresult"]["success"], true, "{fetched}");
    let checkout = fetched["driverresult"]["data"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(checkout.starts_with(&root), "{checkout}");
    assert_eq!(fetched["driverresult"]["data"]["files"], 2);

    send(&conveyor, "build", "process", &run_id, &advance(&fetched)).await;
    let built = result_of(&mut tap, &run_id, "build").await;
    let result = &built["driverresult"];
    assert_eq!(result["success"], true, "{built}");
    assert_eq!(result["data"]["bytes"], 16, "main.c and README: {built}");
    let artifact = result["data"]["artifact"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(artifact).unwrap(), "README\nmain.c");
    // The build step saw the metadata the engine stored.
    assert!(built["resource"]["metadata"]["driverresults.fetch"].is_string());

    tap.settle(Duration::from_millis(300)).await;
    let fetch_log = logged(&tap, &run_id, "fetch");
    assert_eq!(fetch_log.len(), 1, "{fetch_log:?}");
    assert!(
        fetch_log[0].starts_with(&format!(
            "fetched https://git.example/web.git into {checkout}"
        )),
        "{fetch_log:?}"
    );
    assert_eq!(
        logged(&tap, &run_id, "build"),
        [
            "compiling README".to_owned(),
            "compiling main.c".to_owned(),
            format!("built {artifact} from 2 files of {checkout} in pipeline ci"),
        ]
    );
    // Each step ran once, and only for its own event.
    assert_eq!(tap.results(&run_id).len(), 2);

    // One process, one start-up hook for the state both drivers share, labelled metrics.
    let metrics = poll(
        &format!("http://{metrics_addr}/metrics"),
        "both reconciles to be counted",
        |status, body| {
            status == 200
                && body.contains(
                    r#"conveyor_driver_reconciles_total{driver="fetch",outcome="success"} 1"#,
                )
                && body.contains(
                    r#"conveyor_driver_reconciles_total{driver="build",outcome="success"} 1"#,
                )
        },
    )
    .await;
    assert!(
        metrics.contains(r#"conveyor_driver_in_flight{driver="build"} 0"#),
        "{metrics}"
    );
    let output = process.output();
    assert_eq!(output.matches("workspace opened").count(), 1, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_step_without_the_earlier_result_fails_naming_the_key() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let workspace = tempfile::tempdir().unwrap();
    let _process = DriverProcess::start_with(
        "steps",
        &[
            ("CONVEYOR_NATS_URL", &server.url()),
            ("STEPS_WORKSPACE", workspace.path().to_str().unwrap()),
        ],
        &[],
    );
    conveyor.wait_for_consumer("build").await;
    let mut tap = conveyor.tap().await;
    let run_id = uuid::Uuid::new_v4().to_string();
    let resource = json!({
        "id": "r1", "name": "web", "resource": "app", "pipeline": "ci", "metadata": {}, "spec": {"repo": "x"},
    });
    send(&conveyor, "build", "process", &run_id, &resource).await;
    let built = result_of(&mut tap, &run_id, "build").await;
    assert_eq!(built["driverresult"]["success"], false);
    let message = built["driverresult"]["message"].as_str().unwrap();
    assert!(
        message.contains("no result of an earlier step under metadata `driverresults.fetch`"),
        "{message}"
    );
}

#[test]
fn a_failing_start_up_hook_exits_1_with_one_line_naming_it() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A workspace under a file cannot be created.
    let workspace = file.path().join("workspace");
    let output = command("steps")
        .env("CONVEYOR_NATS_URL", "nats://127.0.0.1:1")
        .env("STEPS_WORKSPACE", &workspace)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(
        lines[0],
        format!(
            "steps: error: the start-up hook `open_workspace` of driver `fetch` failed: {}: Not a directory (os error 20)",
            workspace.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_cannot_bind_is_named_and_the_other_keeps_working() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    // A `build` consumer whose deliver policy JetStream will not change.
    let stream = conveyor.js.get_stream("messages").await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("build".to_owned()),
            filter_subject: "drivers.build.resources.app".to_owned(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut process = DriverProcess::start_with(
        "steps",
        &[
            ("CONVEYOR_NATS_URL", &server.url()),
            ("STEPS_WORKSPACE", workspace.path().to_str().unwrap()),
        ],
        &[],
    );
    conveyor.wait_for_consumer("fetch").await;
    let mut tap = conveyor.tap().await;
    let run_id = uuid::Uuid::new_v4().to_string();
    let resource = json!({
        "id": "r1", "name": "web", "resource": "app", "metadata": {}, "spec": {"repo": "x"},
    });
    send(&conveyor, "fetch", "create", &run_id, &resource).await;
    let fetched = result_of(&mut tap, &run_id, "fetch").await;
    assert_eq!(fetched["driverresult"]["success"], true, "{fetched}");
    let output = process.output();
    assert!(
        output.contains("driver stopped; the others go on") && output.contains("build"),
        "{output}"
    );
    process.sigterm();
    let status = process.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let output = process.output();
    // Standard output and standard error interleave: find the error line among them.
    let errors: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("steps: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{output}");
    assert!(
        errors[0].starts_with(
            "steps: error: driver `build`: JetStream refused to set up consumer build"
        ),
        "{output}"
    );
    assert!(!errors[0].contains("driver `fetch`"), "{output}");
}

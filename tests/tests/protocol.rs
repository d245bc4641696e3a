//! What a driver says and accepts on the wire: payload forms, subjects, results, logs, poison
//! messages and the events filter, against a real nats-server.

use std::time::Duration;

use conveyor_driver_tests::*;
use futures_util::StreamExt;
use serde_json::json;

async fn setup(driver: &TestDriver) -> (NatsServer, Conveyor, Tap, Running) {
    init_tracing();
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let tap = conveyor.tap().await;
    let running = run(driver.clone(), test_config(&server));
    conveyor
        .wait_for_consumer(&conveyor_driver::Driver::name(driver))
        .await;
    (server, conveyor, tap, running)
}

#[tokio::test]
async fn both_payload_forms_give_a_schema_valid_result_envelope() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;

    for form in [Payload::String, Payload::Object] {
        let resource = resource(
            "build",
            "app",
            json!({"image": "rust:1", "big": 12345678901234567u64}),
        );
        let run_id = conveyor
            .publish("resources.build", "create", &resource, form)
            .await;
        let envelope = tap.result(&run_id).await;

        assert_eq!(envelope["event"], "driver.result", "{form:?}");
        assert_eq!(envelope["run_id"], run_id.as_str());
        assert_eq!(
            envelope["resource"], resource,
            "resource must come back as received ({form:?})"
        );
        let result = &envelope["driverresult"];
        assert_schema("driver-result-event", result);
        assert_eq!(result["success"], true);
        assert_eq!(result["driver"], "builder");
        assert_eq!(result["data"], resource["spec"]);
        assert_eq!(
            envelope.as_object().unwrap().len(),
            4,
            "no extra envelope keys: {envelope}"
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn consumes_both_subjects_and_nothing_else() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;
    let build = resource("build", "app", json!({}));

    let broadcast = conveyor
        .publish("resources.build", "create", &build, Payload::String)
        .await;
    let direct = conveyor
        .publish(
            "drivers.builder.resources.build",
            "create",
            &build,
            Payload::String,
        )
        .await;
    let other_driver = conveyor
        .publish(
            "drivers.deployer.resources.build",
            "create",
            &build,
            Payload::String,
        )
        .await;
    let other_resource = conveyor
        .publish(
            "resources.release",
            "create",
            &resource("release", "v1", json!({})),
            Payload::String,
        )
        .await;
    tap.result(&broadcast).await;
    tap.result(&direct).await;
    tap.settle(Duration::from_secs(2)).await;

    assert!(
        tap.results(&other_driver).is_empty(),
        "took another driver's event"
    );
    assert!(
        tap.results(&other_resource).is_empty(),
        "took another resource's event"
    );
    assert!(
        driver.calls_for(&other_driver).is_empty() && driver.calls_for(&other_resource).is_empty()
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn failure_error_and_panic_become_failed_results_and_the_driver_keeps_going() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;

    let cases = [
        (json!({"fail": true}), "asked to fail"),
        (json!({"error": "disk full"}), "disk full"),
        (json!({"panic": true}), "reconcile panicked: asked to panic"),
    ];
    for (spec, expected) in cases {
        let run_id = conveyor
            .publish(
                "resources.build",
                "create",
                &resource("build", "app", spec.clone()),
                Payload::String,
            )
            .await;
        let result = tap.result(&run_id).await["driverresult"].clone();
        assert_schema("driver-result-event", &result);
        assert_eq!(result["success"], false, "{spec}");
        assert!(
            result["message"].as_str().unwrap().contains(expected),
            "{spec}: {result}"
        );
    }
    let after = conveyor.create("build", "app", json!({})).await;
    assert_eq!(tap.result(&after).await["driverresult"]["success"], true);
    tap.settle(Duration::from_secs(3)).await;
    assert_eq!(
        tap.result_count(),
        4,
        "each event gets exactly one result, none redelivered"
    );
    assert!(tap.seen.iter().filter(|s| s.is_result()).count() == 4);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_line_logged_by_a_clone_of_the_logger_after_the_result_is_still_published() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;

    let run_id = conveyor
        .create("build", "app", json!({"late_line_ms": 300}))
        .await;
    tap.result(&run_id).await;
    tap.settle(Duration::from_millis(1500)).await;

    let logs = stored(&conveyor.js, "logs-engine", &format!("logs.{run_id}")).await;
    let results = stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result").await;
    assert_eq!(logs.len(), 2, "the start line and the late one");
    assert_eq!(logs[1].body["message"], "a line after the result");
    assert!(logs[1].stored_at > results[0].stored_at);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn logs_are_schema_valid_labelled_and_all_published_before_the_result() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;

    let run_id = conveyor.create("build", "app", json!({"lines": 50})).await;
    tap.result(&run_id).await;
    tap.settle(Duration::from_millis(500)).await;

    let of_run: Vec<&Seen> = tap.seen.iter().filter(|s| s.run_id() == run_id).collect();
    let persisted: Vec<&&Seen> = of_run
        .iter()
        .filter(|s| s.subject == format!("logs.{run_id}"))
        .collect();
    let live: Vec<&&Seen> = of_run
        .iter()
        .filter(|s| s.subject == format!("live.logs.{run_id}.builder"))
        .collect();
    assert_eq!(persisted.len(), 51, "one start line and 50 more");
    assert_eq!(live.len(), 51);
    // A subscriber sees every line, persisted and live, before the result.
    let result_at = of_run
        .iter()
        .position(|s| s.subject == "pipelines.driver.result")
        .unwrap();
    assert_eq!(
        result_at,
        of_run.len() - 1,
        "a log line came after the result"
    );
    // And JetStream stored each line once.
    let logs = stored(&conveyor.js, "logs-engine", &format!("logs.{run_id}")).await;
    let results = stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result").await;
    assert_eq!(logs.len(), 51);
    assert_eq!(results.len(), 1);
    for line in persisted.iter().chain(&live) {
        assert_schema("log", &line.body);
        assert_eq!(line.body["runid"], run_id.as_str());
        assert_eq!(line.body["driver"], "builder");
        assert_eq!(line.body["pipeline"], "pipe-1");
    }
    let first = &persisted[0];
    assert!(first.body["message"]
        .as_str()
        .unwrap()
        .contains("reconciling app"));
    assert_eq!(
        first.headers.get("Conveyor-Label-step").map(String::as_str),
        Some("start")
    );
    assert_eq!(
        live[0]
            .headers
            .get("Conveyor-Label-step")
            .map(String::as_str),
        Some("start")
    );
    let messages: Vec<&str> = persisted[1..]
        .iter()
        .map(|s| s.body["message"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    assert_eq!(messages, expected, "lines keep their order");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_resource_without_pipeline_logs_without_the_key() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;
    let mut resource = resource("build", "app", json!({}));
    resource.as_object_mut().unwrap().remove("pipeline");
    let run_id = conveyor
        .publish("resources.build", "create", &resource, Payload::Object)
        .await;
    let subject = format!("logs.{run_id}");
    tap.until("a log line", |seen| {
        seen.iter().any(|s| s.subject == subject)
    })
    .await;
    let line = tap.seen.iter().find(|s| s.subject == subject).unwrap();
    assert_schema("log", &line.body);
    assert!(line.body.get("pipeline").is_none(), "{}", line.body);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn poison_messages_are_terminated_and_the_driver_keeps_working() {
    let driver = TestDriver::new("builder", &["build"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;
    let good = resource("build", "app", json!({}));
    let poison: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        json!({"event": "create", "payload": good, "id": "1"}).to_string().into_bytes(),
        json!({"event": "create", "payload": good, "id": "2", "run_id": "not-a-uuid"}).to_string().into_bytes(),
        json!({"event": "create", "payload": {"hello": 1}, "id": "3", "run_id": uuid::Uuid::new_v4()})
            .to_string()
            .into_bytes(),
        json!({"event": "create", "payload": "{not json", "id": "4", "run_id": uuid::Uuid::new_v4()})
            .to_string()
            .into_bytes(),
        json!({"event": "create", "payload": 42, "id": "5", "run_id": uuid::Uuid::new_v4()})
            .to_string()
            .into_bytes(),
    ];
    for body in poison {
        conveyor.publish_raw("resources.build", body).await;
    }
    let run_id = conveyor
        .publish("resources.build", "create", &good, Payload::String)
        .await;
    tap.result(&run_id).await;
    // Longer than ack_wait (2 s): a poison message left unacknowledged would be redelivered.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let info = conveyor.consumer("builder").await;
    assert_eq!(
        info.num_ack_pending, 0,
        "poison messages must be settled: {info:?}"
    );
    assert_eq!(
        info.num_redelivered, 0,
        "poison messages must not be redelivered: {info:?}"
    );
    assert_eq!(info.num_pending, 0);
    assert_eq!(
        driver.calls().len(),
        1,
        "only the valid event reaches reconcile"
    );
    assert_eq!(tap.result_count(), 1);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn events_outside_the_filter_are_acked_without_a_result() {
    let driver = TestDriver::new("builder", &["build"]).with_events(&["create"]);
    let (_server, conveyor, mut tap, running) = setup(&driver).await;
    let build = resource("build", "app", json!({}));
    let skipped = conveyor
        .publish("resources.build", "delete", &build, Payload::String)
        .await;
    let handled = conveyor
        .publish("resources.build", "create", &build, Payload::String)
        .await;
    tap.result(&handled).await;
    tap.settle(Duration::from_secs(3)).await;

    assert!(tap.results(&skipped).is_empty());
    assert!(driver.calls_for(&skipped).is_empty());
    let info = conveyor.consumer("builder").await;
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (0, 0),
        "{info:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_consumer_is_configured_as_the_protocol_says() {
    let driver = TestDriver::new("builder", &["build", "release"]);
    let (_server, conveyor, _tap, running) = setup(&driver).await;
    let info = conveyor.consumer("builder").await;
    let config = info.config;
    assert_eq!(config.durable_name.as_deref(), Some("builder"));
    let mut subjects = config.filter_subjects.clone();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "drivers.builder.resources.build",
            "drivers.builder.resources.release",
            "resources.build",
            "resources.release"
        ]
    );
    assert_eq!(
        config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    assert_eq!(
        config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::All
    );
    assert_eq!(config.ack_wait, Duration::from_secs(2));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_consumer_already_configured_is_bound_without_creating_it_again() {
    let driver = TestDriver::new("builder", &["build"]);
    let (server, conveyor, _tap, running) = setup(&driver).await;
    // Every consumer create or update request, as the JetStream API receives it.
    let mut creates = conveyor
        .client
        .subscribe("$JS.API.CONSUMER.CREATE.>")
        .await
        .unwrap();
    conveyor.client.flush().await.unwrap();
    let register = |config: conveyor_driver::Config| {
        let manager = conveyor_driver::DriverManager::new(driver.clone(), config).unwrap();
        async move { manager.register().await.unwrap() }
    };

    register(test_config(&server)).await;
    let asked = tokio::time::timeout(Duration::from_millis(500), creates.next()).await;
    assert!(
        asked.is_err(),
        "the consumer was asked for again: {asked:?}"
    );

    register(test_config(&server).ack_wait(Duration::from_secs(3))).await;
    let asked = tokio::time::timeout(PATIENCE, creates.next()).await;
    assert!(asked.is_ok(), "a changed setting updates the consumer");
    let info = conveyor.consumer("builder").await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(3));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_names_are_rejected_before_connecting() {
    for (name, resources) in [
        ("", vec!["build"]),
        ("a.b", vec!["build"]),
        ("ok", vec!["x y"]),
        ("ok", vec!["*"]),
    ] {
        let driver = TestDriver::new(name, &resources);
        let err = conveyor_driver::DriverManager::new(driver, conveyor_driver::Config::default())
            .err()
            .unwrap_or_else(|| panic!("{name:?} {resources:?} accepted"));
        assert!(
            matches!(err, conveyor_driver::Error::InvalidName { .. }),
            "{err}"
        );
    }
    let none = TestDriver::new("ok", &[]);
    assert!(conveyor_driver::DriverManager::new(none, conveyor_driver::Config::default()).is_err());
}

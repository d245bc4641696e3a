//! How events are delivered and settled: retries, concurrency, ordering, several instances,
//! crashes, shutdown, server restarts and late streams, against a real nats-server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use conveyor_driver::Config;
use conveyor_driver_tests::http::{free_port, get};
use conveyor_driver_tests::*;
use serde_json::{json, Value};

/// A `builder` test driver running with `config`, its consumer bound.
async fn builder(conveyor: &Conveyor, config: Config) -> (TestDriver, Running) {
    let driver = TestDriver::new("builder", &["build"]);
    let running = run(driver.clone(), config);
    conveyor.wait_for_consumer("builder").await;
    (driver, running)
}

/// Publishes a `create` event for builds `app-0` … `app-{count-1}`, each with `spec`, as
/// the Conveyor server does; returns their run ids.
async fn create_builds(conveyor: &Conveyor, count: usize, spec: serde_json::Value) -> Vec<String> {
    let mut runs = Vec::new();
    for i in 0..count {
        let build = resource("build", &format!("app-{i}"), spec.clone());
        runs.push(
            conveyor
                .publish("resources.build", "create", &build, Payload::String)
                .await,
        );
    }
    runs
}

async fn start(server: &NatsServer) -> (Conveyor, Tap) {
    init_tracing();
    let conveyor = Conveyor::new(server).await;
    let tap = conveyor.tap().await;
    (conveyor, tap)
}

#[tokio::test]
async fn transient_errors_are_retried_with_growing_delay_then_fail_on_the_last_delivery() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let driver = TestDriver::new("builder", &["build"]);
    let config = test_config(&server)
        .max_deliver(4)
        .retry_backoff(Duration::from_millis(300), Duration::from_secs(10));
    let running = run(driver.clone(), config);
    conveyor.wait_for_consumer("builder").await;

    let recovers = conveyor
        .create("build", "a", json!({"transient_until": 3}))
        .await;
    let never = conveyor
        .create("build", "b", json!({"transient_until": 99}))
        .await;
    let recovered = tap.result(&recovers).await["driverresult"].clone();
    let gave_up = tap.result(&never).await["driverresult"].clone();

    assert_eq!(recovered["success"], true, "{recovered}");
    let attempts: Vec<u64> = driver
        .calls_for(&recovers)
        .iter()
        .map(|c| c.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    assert_eq!(gave_up["success"], false);
    assert!(
        gave_up["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{gave_up}"
    );
    let calls = driver.calls_for(&never);
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // Backoff 300 ms, 600 ms, 1.2 s: each gap at least its delay, and growing.
    let gaps: Vec<Duration> = calls
        .windows(2)
        .map(|w| w[1].started - w[0].ended.unwrap())
        .collect();
    for (gap, min_ms) in gaps.iter().zip([300, 600, 1200]) {
        assert!(*gap >= Duration::from_millis(min_ms), "gaps {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "delays must grow: {gaps:?}");
    // Each retry is announced in the run log.
    tap.settle(Duration::from_millis(300)).await;
    let retry_lines = tap
        .seen
        .iter()
        .filter(|s| s.subject == format!("logs.{never}"))
        .filter(|s| s.body["message"].as_str().unwrap().contains("retrying in"))
        .count();
    assert_eq!(retry_lines, 3);
    assert_eq!(tap.results(&never).len(), 1);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn retry_after_overrides_the_backoff() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let driver = TestDriver::new("builder", &["build"]);
    let config =
        test_config(&server).retry_backoff(Duration::from_millis(50), Duration::from_millis(50));
    let running = run(driver.clone(), config);
    conveyor.wait_for_consumer("builder").await;
    let spec = json!({"transient_until": 2, "retry_after_ms": 1500});
    let run_id = conveyor
        .publish(
            "resources.build",
            "create",
            &resource("build", "a", spec),
            Payload::String,
        )
        .await;
    tap.result(&run_id).await;
    let calls = driver.calls_for(&run_id);
    assert_eq!(calls.len(), 2);
    assert!(calls[1].started - calls[0].ended.unwrap() >= Duration::from_millis(1500));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn retries_survive_a_restart_of_the_driver() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let config = || {
        test_config(&server)
            .max_deliver(3)
            .retry_backoff(Duration::from_millis(500), Duration::from_secs(5))
    };
    let (first, running) = builder(&conveyor, config()).await;
    let run_id = conveyor
        .create("build", "a", json!({"transient_until": 99}))
        .await;
    tap.until("the first attempt", |_| {
        !first.calls_for(&run_id).is_empty()
    })
    .await;
    running.stop().await.unwrap();

    // A new instance has no memory of the first; the delivery count comes from JetStream.
    let second = TestDriver::new("builder", &["build"]);
    let running = run(second.clone(), config());
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{result}"
    );
    let attempts: Vec<u64> = second
        .calls_for(&run_id)
        .iter()
        .map(|c| c.attempt)
        .collect();
    assert_eq!(attempts, [2, 3]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn reconciles_run_concurrently_up_to_the_limit() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let (driver, running) = builder(&conveyor, test_config(&server).concurrency(8)).await;

    let started = Instant::now();
    let runs = create_builds(&conveyor, 32, json!({"hold": true, "sleep_ms": 500})).await;
    // Every slot is taken by a held reconcile, so nothing is acked: what the consumer has
    // handed out is exactly what the driver pulled, and that must be its free slots, no more.
    let held = &driver;
    wait_until("8 reconciles", || async move { held.calls().len() == 8 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let consumer = conveyor.consumer("builder").await;
    assert_eq!(driver.calls().len(), 8, "no reconcile beyond the limit");
    assert_eq!(
        consumer.num_ack_pending, 8,
        "pulled only as many events as free slots"
    );
    assert_eq!(
        consumer.num_pending, 24,
        "the rest stay on the stream for other instances"
    );

    driver.release();
    tap.until("32 results", |seen| {
        seen.iter().filter(|s| s.is_result()).count() == 32
    })
    .await;
    let elapsed = started.elapsed();
    assert!(runs.iter().all(|r| driver.calls_for(r).len() == 1));
    assert_eq!(
        driver.peak_concurrency(),
        8,
        "never more than the limit, and the limit is used"
    );
    // Serially the 32 sleeps take 16 s; generous bound far below it.
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    running.stop().await.unwrap();
}

/// Polls `done` until it holds, or fails the test after 30 s.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn prefetched_events_wait_for_a_slot_and_go_back_at_once_on_shutdown() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    // A long ack wait: only an explicit nak can bring an event back within the test.
    let config = || test_config(&server).ack_wait(Duration::from_secs(120));
    let first = TestDriver::new("builder", &["build"]);
    // A long shutdown timeout too: only handing back at once frees the prefetched events.
    let metrics = format!("127.0.0.1:{}", free_port());
    let first_config = config()
        .shutdown_timeout(Duration::from_secs(60))
        .metrics_addr(metrics.parse().unwrap());
    let running = run(first.clone(), first_config.concurrency(2).prefetch(2));
    conveyor.wait_for_consumer("builder").await;
    let runs = create_builds(&conveyor, 8, json!({"hold": true})).await;
    let (first, conveyor) = (&first, &conveyor);
    wait_until("2 reconciles", || async move { first.calls().len() == 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.calls().len(), 2, "prefetched events do not start");
    let consumer = conveyor.consumer("builder").await;
    assert_eq!(consumer.num_ack_pending, 4, "2 running and 2 prefetched");
    let (_, body) = get(&format!("http://{metrics}/metrics"))
        .await
        .expect("the metrics endpoint answers");
    assert!(
        body.contains("conveyor_driver_in_flight{driver=\"builder\"} 2\n"),
        "in_flight counts running events, not prefetched ones: {body}"
    );
    assert!(
        body.contains("conveyor_driver_waiting{driver=\"builder\"} 2\n"),
        "waiting counts the prefetched ones: {body}"
    );

    // Shutting down hands the prefetched events back at once (the ack wait alone would take
    // 2 minutes) and finishes the running ones.
    let stopped = tokio::spawn(running.stop());
    let second = TestDriver::new("builder", &["build"]);
    second.release();
    let running = run(second.clone(), config().concurrency(8));
    tap.until_within("6 results", Duration::from_secs(20), |seen| {
        seen.iter().filter(|s| s.is_result()).count() == 6
    })
    .await;
    let redelivered = second.calls().iter().filter(|c| c.attempt == 2).count();
    assert_eq!((second.calls().len(), redelivered), (6, 2));
    first.release();
    stopped.await.unwrap().unwrap();
    tap.until("8 results", |seen| {
        seen.iter().filter(|s| s.is_result()).count() == 8
    })
    .await;
    assert_eq!(first.calls().len(), 2);
    for run_id in &runs {
        assert_eq!(tap.results(run_id).len(), 1, "run {run_id}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn auto_prefetch_takes_events_ahead_of_short_reconciles_only() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    // The default prefetch, `auto`.
    let (driver, running) = builder(&conveyor, test_config(&server).concurrency(2)).await;
    let pending = |expected: &'static str| {
        let conveyor = &conveyor;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let pending = conveyor.consumer("builder").await.num_ack_pending;
            eprintln!("{expected}: {pending} events handed out");
            pending
        }
    };
    let results = |count: usize| {
        move |seen: &[conveyor_driver_tests::Seen]| {
            seen.iter().filter(|s| s.is_result()).count() >= count
        }
    };

    // Reconciles of a millisecond or two: events are taken ahead of the two slots.
    create_builds(&conveyor, 300, json!({})).await;
    tap.until_within("300 results", Duration::from_secs(30), results(300))
        .await;
    create_builds(&conveyor, 8, json!({"hold": true})).await;
    let held = &driver;
    wait_until("2 held", || async move { held.calls().len() == 302 }).await;
    let ahead = pending("after short reconciles").await;
    assert!(ahead > 2, "{ahead} events handed out: none taken ahead");

    // Reconciles of half a second, ten times the events' 20 ms bound: nothing ahead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver.release();
    tap.until("308 results", results(308)).await;
    create_builds(&conveyor, 6, json!({"sleep_ms": 3000})).await;
    wait_until("2 long", || async move { held.calls().len() == 310 }).await;
    assert_eq!(
        pending("after long reconciles").await,
        2,
        "nothing taken ahead"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn slots_of_expired_pull_requests_are_reused() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let (driver, running) = builder(&conveyor, test_config(&server).concurrency(4)).await;
    // Pull requests expire on the server after 5 s; two rounds of them end unfilled.
    tokio::time::sleep(Duration::from_secs(11)).await;
    create_builds(&conveyor, 8, json!({"sleep_ms": 300})).await;
    tap.until("8 results", |seen| {
        seen.iter().filter(|s| s.is_result()).count() == 8
    })
    .await;
    assert_eq!(driver.peak_concurrency(), 4, "every slot came back");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn events_of_one_resource_run_one_at_a_time_in_arrival_order() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let (driver, running) = builder(&conveyor, test_config(&server).concurrency(8)).await;

    let mut same = Vec::new();
    for i in 0..6 {
        // Decreasing sleeps: a runtime that ran them concurrently would finish them reversed.
        let spec = json!({"sleep_ms": 300 - i * 50});
        same.push(
            conveyor
                .publish(
                    "resources.build",
                    "update",
                    &resource("build", "same", spec),
                    Payload::String,
                )
                .await,
        );
    }
    let other = conveyor
        .publish(
            "resources.build",
            "update",
            &resource("build", "other", json!({})),
            Payload::String,
        )
        .await;
    tap.until("all results", |seen| {
        seen.iter().filter(|s| s.is_result()).count() == 7
    })
    .await;

    let calls: Vec<Call> = driver
        .calls()
        .into_iter()
        .filter(|c| c.resource == "build/same")
        .collect();
    let order: Vec<&str> = calls.iter().map(|c| c.run_id.as_str()).collect();
    assert_eq!(
        order,
        same.iter().map(String::as_str).collect::<Vec<_>>(),
        "arrival order"
    );
    for pair in calls.windows(2) {
        assert!(
            pair[1].started >= pair[0].ended.unwrap(),
            "overlapping reconciles of one resource"
        );
    }
    // The other resource did not wait behind the queue.
    let other_call = &driver.calls_for(&other)[0];
    assert!(other_call.started < calls.last().unwrap().started);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn two_instances_share_one_consumer_and_each_event_gets_one_result() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let a = TestDriver::new("builder", &["build"]);
    let b = TestDriver::new("builder", &["build"]);
    let running_a = run(a.clone(), test_config(&server).concurrency(2));
    let running_b = run(b.clone(), test_config(&server).concurrency(2));
    conveyor.wait_for_consumer("builder").await;

    let runs = create_builds(&conveyor, 40, json!({"sleep_ms": 50})).await;
    tap.until("40 results", |seen| {
        seen.iter().filter(|s| s.is_result()).count() >= 40
    })
    .await;
    tap.settle(Duration::from_secs(3)).await;

    for run_id in &runs {
        assert_eq!(tap.results(run_id).len(), 1, "run {run_id}");
    }
    assert_eq!(tap.seen.iter().filter(|s| s.is_result()).count(), 40);
    let (done_a, done_b) = (a.calls().len(), b.calls().len());
    assert_eq!(done_a + done_b, 40);
    assert!(
        done_a > 0 && done_b > 0,
        "both instances work: {done_a} / {done_b}"
    );
    running_a.stop().await.unwrap();
    running_b.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_of_a_dropped_instance_is_redelivered_and_completed_by_another() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let (doomed, running) = builder(&conveyor, test_config(&server)).await;
    let run_id = conveyor
        .create("build", "a", json!({"sleep_ms": 3000}))
        .await;
    tap.until("the reconcile to start", |_| {
        !doomed.calls_for(&run_id).is_empty()
    })
    .await;
    running.task.abort(); // the whole manager future is dropped mid-reconcile

    let survivor = TestDriver::new("builder", &["build"]);
    let running = run(survivor.clone(), test_config(&server));
    let result = tap.result(&run_id).await["driverresult"].clone();
    assert_eq!(result["success"], true);
    assert_eq!(
        survivor.calls_for(&run_id)[0].attempt,
        2,
        "redelivered once, to the survivor"
    );
    assert_eq!(
        tap.results(&run_id).len(),
        1,
        "the dropped instance published nothing"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn long_reconciles_are_kept_alive_with_in_progress_acks() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let a = TestDriver::new("builder", &["build"]);
    let b = TestDriver::new("builder", &["build"]);
    // ack_wait is 2 s; the reconcile takes 5 s while another instance waits for work.
    let running_a = run(a.clone(), test_config(&server).concurrency(1));
    conveyor.wait_for_consumer("builder").await;
    let run_id = conveyor
        .create("build", "a", json!({"sleep_ms": 5000}))
        .await;
    tap.until("the reconcile to start", |_| {
        !a.calls_for(&run_id).is_empty()
    })
    .await;
    let running_b = run(b.clone(), test_config(&server));
    tap.result(&run_id).await;
    tap.settle(Duration::from_secs(1)).await;
    assert!(
        b.calls_for(&run_id).is_empty(),
        "redelivered while still running"
    );
    assert_eq!(a.calls_for(&run_id).len(), 1);
    assert_eq!(tap.results(&run_id).len(), 1);
    running_a.stop().await.unwrap();
    running_b.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_events_in_flight() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    let (driver, running) = builder(&conveyor, test_config(&server).concurrency(4)).await;
    let runs = create_builds(&conveyor, 3, json!({"sleep_ms": 1500})).await;
    tap.until("three reconciles in flight", |_| driver.calls().len() == 3)
        .await;
    running
        .stop()
        .await
        .expect("run returns Ok after a graceful shutdown");

    // Every in-flight event was published and acked before `run` returned.
    tap.settle(Duration::from_millis(300)).await;
    for run_id in &runs {
        assert_eq!(tap.results(run_id).len(), 1, "run {run_id}");
    }
    let info = conveyor.consumer("builder").await;
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
}

#[tokio::test]
async fn shutdown_timeout_hands_unfinished_events_to_another_instance_at_once() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    // A long ack wait: only an explicit nak can bring the event back quickly.
    let config = || test_config(&server).ack_wait(Duration::from_secs(120));
    let slow = TestDriver::new("builder", &["build"]);
    let running = run(
        slow.clone(),
        config().shutdown_timeout(Duration::from_millis(500)),
    );
    conveyor.wait_for_consumer("builder").await;
    let spec = json!({"sleep_ms": 60_000});
    let run_id = conveyor
        .publish(
            "resources.build",
            "create",
            &resource("build", "a", spec),
            Payload::String,
        )
        .await;
    tap.until("the reconcile to start", |_| {
        !slow.calls_for(&run_id).is_empty()
    })
    .await;
    running
        .stop()
        .await
        .expect("Ok even when events had to be handed back");

    let other = TestDriver::new("builder", &["build"]);
    let running = run(other.clone(), config());
    tap.until_within("the event to come back", Duration::from_secs(20), |_| {
        !other.calls_for(&run_id).is_empty()
    })
    .await;
    assert!(
        tap.results(&run_id).is_empty(),
        "the interrupted reconcile published nothing"
    );
    assert_eq!(other.calls_for(&run_id)[0].attempt, 2);
    running.task.abort();
}

#[tokio::test]
async fn a_nats_server_restart_mid_run_loses_no_event() {
    let mut server = NatsServer::start();
    let (conveyor, _tap) = start(&server).await;
    let (_driver, running) = builder(&conveyor, test_config(&server).concurrency(4)).await;
    let runs = create_builds(&conveyor, 20, json!({"sleep_ms": 200})).await;
    // Acked once the result is stored (the ack follows the PubAck; allow it to arrive).
    let deadline = Instant::now() + PATIENCE;
    while conveyor.consumer("builder").await.num_ack_pending != 0 {
        assert!(
            Instant::now() < deadline,
            "not acked after its result was stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart();

    // Results are read from the pipeline-engine stream: nothing published is missed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut by_run: HashMap<String, Vec<Value>> = HashMap::new();
    while Instant::now() < deadline {
        by_run.clear();
        if let Ok(results) = tokio::time::timeout(
            Duration::from_secs(5),
            stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result"),
        )
        .await
        {
            for Stored { body: result, .. } in results {
                by_run
                    .entry(result["run_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(result);
            }
        }
        if runs.iter().all(|r| by_run.contains_key(r)) {
            break;
        }
        // Acked once the result is stored (the ack follows the PubAck; allow it to arrive).
        let deadline = Instant::now() + PATIENCE;
        while conveyor.consumer("builder").await.num_ack_pending != 0 {
            assert!(
                Instant::now() < deadline,
                "not acked after its result was stored"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let missing: Vec<&String> = runs.iter().filter(|r| !by_run.contains_key(*r)).collect();
    assert!(
        missing.is_empty(),
        "lost {} of 20 events: {missing:?}",
        missing.len()
    );
    for run_id in &runs {
        assert!(by_run[run_id]
            .iter()
            .all(|r| r["driverresult"]["success"] == true));
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_driver_started_before_the_streams_exist_waits_for_them() {
    init_tracing();
    let server = NatsServer::start();
    let conveyor = Conveyor::connect(&server).await;
    let driver = TestDriver::new("builder", &["build"]);
    let running = run(driver.clone(), test_config(&server));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !running.task.is_finished(),
        "the driver must wait, not exit"
    );

    conveyor_driver::testing::create_streams(&conveyor.js)
        .await
        .unwrap();
    let mut tap = conveyor.tap().await;
    conveyor.wait_for_consumer("builder").await;
    let run_id = conveyor.create("build", "a", json!({})).await;
    assert_eq!(tap.result(&run_id).await["driverresult"]["success"], true);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn create_streams_opt_in_creates_the_server_streams() {
    init_tracing();
    let server = NatsServer::start();
    let conveyor = Conveyor::connect(&server).await;
    let (_driver, running) = builder(&conveyor, test_config(&server).create_streams(true)).await;
    for (name, subjects) in [
        ("messages", vec!["resources.>", "events.>", "drivers.>"]),
        ("pipeline-engine", vec!["pipelines.>"]),
        ("logs-engine", vec!["logs.>"]),
    ] {
        let mut stream = conveyor.js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.subjects, subjects);
        assert_eq!(
            info.config.storage,
            async_nats::jetstream::stream::StorageType::File
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn results_that_cannot_be_published_are_naked_until_the_stream_is_back() {
    let server = NatsServer::start();
    let (conveyor, mut tap) = start(&server).await;
    conveyor.js.delete_stream("pipeline-engine").await.unwrap();
    let driver = TestDriver::new("builder", &["build"]);
    let config = test_config(&server)
        .max_deliver(100)
        .retry_backoff(Duration::from_millis(100), Duration::from_millis(500));
    let running = run(driver.clone(), config);
    conveyor.wait_for_consumer("builder").await;
    let run_id = conveyor.create("build", "a", json!({})).await;
    // Nothing is acked without its result: the event keeps coming back.
    tap.until("a redelivery", |_| driver.calls_for(&run_id).len() >= 2)
        .await;
    let info = conveyor.consumer("builder").await;
    assert_eq!(
        info.num_ack_pending, 1,
        "not acked while its result is not stored: {info:?}"
    );

    conveyor_driver::testing::create_streams(&conveyor.js)
        .await
        .unwrap();
    let stored = tokio::time::timeout(PATIENCE, async {
        loop {
            let stored = stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result").await;
            if !stored.is_empty() {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the result is stored once the stream is back");
    assert_eq!(stored.len(), 1, "exactly one result stored");
    assert_eq!(stored[0].body["run_id"], run_id.as_str());
    // Acked once the result is stored (the ack follows the PubAck; allow it to arrive).
    let deadline = Instant::now() + PATIENCE;
    while conveyor.consumer("builder").await.num_ack_pending != 0 {
        assert!(
            Instant::now() < deadline,
            "not acked after its result was stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn results_wait_while_the_result_stream_is_full() {
    let server = NatsServer::start();
    let (conveyor, _tap) = start(&server).await;
    // A full pipeline-engine that rejects new messages.
    let mut config = conveyor
        .js
        .get_stream("pipeline-engine")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_messages = 1;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    conveyor.js.update_stream(&config).await.unwrap();
    conveyor
        .publish_raw("pipelines.other", b"{}".to_vec())
        .await;

    let driver = TestDriver::new("builder", &["build"]);
    let config_driver = test_config(&server)
        .max_deliver(100)
        .retry_backoff(Duration::from_millis(100), Duration::from_millis(500));
    let running = run(driver.clone(), config_driver);
    conveyor.wait_for_consumer("builder").await;
    let run_id = conveyor.create("build", "a", json!({})).await;
    let mut tap = conveyor.tap().await;
    tap.until("a redelivery", |_| driver.calls_for(&run_id).len() >= 2)
        .await;
    assert_eq!(
        conveyor.consumer("builder").await.num_ack_pending,
        1,
        "not acked without its result"
    );

    config.max_messages = -1;
    conveyor.js.update_stream(&config).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let results = stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result").await;
        if let Some(result) = results.first() {
            assert_eq!(result.body["run_id"], run_id.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "the result never got stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(conveyor.consumer("builder").await.num_ack_pending, 0);
}

//! Reliability under failures of the infrastructure: a clustered JetStream losing a node.

use std::collections::HashSet;
use std::time::Duration;

use conveyor_driver_tests::*;
use serde_json::json;

/// Waits until every run in `runs` has a result stored in `pipeline-engine`; returns how many
/// results were stored in all (duplicates included), or the runs still without one.
async fn wait_for_stored_results(
    conveyor: &Conveyor,
    runs: &[String],
    patience: Duration,
) -> Result<usize, Vec<String>> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        // While the cluster elects leaders, reads may fail: that is "not yet".
        let stored = tokio::time::timeout(
            Duration::from_secs(10),
            try_stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result"),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        let done: HashSet<&str> = stored
            .iter()
            .filter_map(|s| s.body["run_id"].as_str())
            .collect();
        let missing: Vec<String> = runs
            .iter()
            .filter(|r| !done.contains(r.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(stored.len());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_clustered_jetstream_loses_no_event_when_a_node_restarts_mid_run() {
    init_tracing();
    let mut cluster = NatsCluster::start().await;
    let conveyor = Conveyor::replicated(&cluster).await;
    let instances: Vec<TestDriver> = (0..3)
        .map(|_| TestDriver::new("builder", &["build"]))
        .collect();
    let config = || {
        test_config(&cluster.nodes[0])
            .nats_url(cluster.url())
            .concurrency(4)
    };
    // Registered first, as README.md asks: three instances creating the consumer at the same
    // moment can make the cluster replace it, dropping the events published in between.
    conveyor_driver::DriverManager::new(instances[0].clone(), config())
        .unwrap()
        .register()
        .await
        .unwrap();
    let running: Vec<Running> = instances
        .iter()
        .map(|driver| run(driver.clone(), config()))
        .collect();
    conveyor.wait_for_consumer("builder").await;

    let mut runs = Vec::new();
    for i in 0..150 {
        runs.push(
            conveyor
                .create("build", &format!("app-{i}"), json!({"sleep_ms": 100}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[1].stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[1].start_again();

    let stored = match wait_for_stored_results(&conveyor, &runs, Duration::from_secs(120)).await {
        Ok(stored) => stored,
        Err(missing) => {
            // Say where each lost event got to: never reconciled, or reconciled and then lost;
            // still in the stream (not acked) or gone (acked or lost by JetStream).
            let calls: Vec<Vec<Call>> = missing
                .iter()
                .map(|run| instances.iter().flat_map(|d| d.calls_for(run)).collect())
                .collect();
            let events = try_stored(&conveyor.js, "messages", "resources.build")
                .await
                .unwrap_or_default();
            let still_stored = missing
                .iter()
                .filter(|run| events.iter().any(|e| e.body["run_id"] == run.as_str()))
                .count();
            let consumer = conveyor.consumer("builder").await;
            panic!(
                "{} of {} events have no result ({still_stored} of them still in `messages`; \
                 consumer: {} ack pending, {} pending, {} redelivered, ack floor {}); their \
                 reconciles: {calls:#?}",
                missing.len(),
                runs.len(),
                consumer.num_ack_pending,
                consumer.num_pending,
                consumer.num_redelivered,
                consumer.ack_floor.stream_sequence,
            )
        }
    };
    let reconciled: usize = instances.iter().map(|d| d.calls().len()).sum();
    let called: HashSet<String> = instances
        .iter()
        .flat_map(|d| d.calls().into_iter().map(|c| c.run_id))
        .collect();
    let results = try_stored(&conveyor.js, "pipeline-engine", "pipelines.driver.result")
        .await
        .unwrap_or_default();
    let never_reconciled: Vec<&str> = results
        .iter()
        .filter(|s| !called.contains(s.body["run_id"].as_str().unwrap_or_default()))
        .map(|s| {
            s.body["driverresult"]["message"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        never_reconciled.is_empty(),
        "results without a reconcile: {never_reconciled:?}"
    );
    assert!(reconciled >= 150);
    assert!(
        instances.iter().filter(|d| !d.calls().is_empty()).count() >= 2,
        "the work is shared"
    );
    eprintln!("150 events, {stored} results stored, {reconciled} reconciles");
    for instance in running {
        instance.stop().await.unwrap();
    }
}

/// Not the runtime: whether the nats-server in use has the race RELIABILITY.md describes. Three
/// connections, one per node, create the same durable consumer at once, and two events are
/// published as soon as the first creation returns; then the consumer must hold both. With
/// nats-server 2.15.1 it missed events in 12 of 240 trials (with one creator: 0 of 120), so this
/// runs by hand only: `cargo test -p conveyor-driver-tests --test reliability -- --ignored concurrent`.
#[tokio::test]
#[ignore = "probes a nats-server race; run by hand"]
async fn concurrent_creation_of_one_consumer_keeps_the_events_published_meanwhile() {
    use async_nats::jetstream::{self, consumer};
    use futures_util::StreamExt;

    let cluster = NatsCluster::start().await;
    let conveyor = Conveyor::replicated(&cluster).await;
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        let client = async_nats::connect(node.url()).await.unwrap();
        streams.push(jetstream::new(client).get_stream("messages").await.unwrap());
    }
    let trials = 40;
    let mut lost = Vec::new();
    for trial in 0..trials {
        let config = consumer::pull::Config {
            durable_name: Some(format!("probe-{trial}")),
            filter_subject: format!("resources.probe-{trial}"),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        };
        let first_created = tokio::sync::Notify::new();
        let create = |i: usize| {
            let (stream, config, first_created) = (&streams[i], config.clone(), &first_created);
            async move {
                let created = stream.create_consumer(config).await.unwrap();
                if i == 0 {
                    first_created.notify_one();
                }
                created.cached_info().created
            }
        };
        let publish = async {
            first_created.notified().await;
            for _ in 0..2 {
                conveyor
                    .publish_raw(&format!("resources.probe-{trial}"), b"{}".to_vec())
                    .await;
            }
        };
        let (first, ..) = tokio::join!(create(0), create(1), create(2), publish);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info = streams[0]
            .consumer_info(format!("probe-{trial}"))
            .await
            .unwrap()
            .clone();
        let held = info.num_pending + info.num_ack_pending as u64;
        if held != 2 {
            // Not a slow count: the consumer cannot hand them out either.
            let consumer: consumer::PullConsumer = streams[0]
                .get_consumer(&format!("probe-{trial}"))
                .await
                .unwrap();
            let fetched = consumer
                .fetch()
                .max_messages(2)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap()
                .count()
                .await;
            // A different creation time: the consumer the first creation returned was replaced.
            lost.push((trial, held, fetched, info.created != first));
        }
    }
    assert!(
        lost.is_empty(),
        "trials where the consumer holds fewer than the 2 events published (trial, held, \
         fetched, replaced): {lost:?} of {trials}"
    );
}

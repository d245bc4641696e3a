//! Chaos and soak: the `echo` example driver as separate processes under a realistic mix of
//! events, instances SIGKILLed at random, with an exact account of every event.
//!
//! CI runs short versions. The long mode, by hand:
//! `CHAOS_EVENTS=5000 SOAK_EVENTS=100000 cargo test --release -p conveyor-driver-tests --test chaos -- --nocapture`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::*;
use serde_json::{json, Value};

/// How an event is expected to end.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Success(Value),
    Failure(&'static str),
    /// A poison message: terminated, no result.
    Poison,
}

/// The `i`-th event of the mix: 60 % fast, 15 % slow, 10 % failing, 5 % panicking, 10 % poison.
fn event(i: usize) -> (Vec<u8>, Option<String>, Expect) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let (spec, expect) = match i % 20 {
        0..=11 => (json!({"i": i}), None),
        12..=14 => (json!({"i": i, "sleep_ms": 100 + (i % 5) * 100}), None),
        15 | 16 => (
            json!({"fail": true}),
            Some(Expect::Failure("asked to fail")),
        ),
        17 => (json!({"panic": true}), Some(Expect::Failure("panicked"))),
        18 => {
            return (
                b"{\"event\": \"create\", not json".to_vec(),
                None,
                Expect::Poison,
            )
        }
        _ => {
            let body = json!({"event": "create", "payload": {"no": "resource"}, "id": "x", "run_id": run_id});
            return (body.to_string().into_bytes(), None, Expect::Poison);
        }
    };
    let expect = expect.unwrap_or_else(|| Expect::Success(spec.clone()));
    let resource = resource("echo-resource", &format!("res-{i}"), spec);
    let body = json!({"event": "create", "payload": resource.to_string(), "id": format!("m{i}"), "run_id": run_id});
    (body.to_string().into_bytes(), Some(run_id), expect)
}

/// Publishes `count` events of the mix, pipelining the PubAcks; returns the expected outcome
/// of each valid run and the number of poison messages.
async fn publish_mix(conveyor: &Conveyor, count: usize) -> (HashMap<String, Expect>, usize) {
    let mut expected = HashMap::new();
    let mut poison = 0;
    let mut acks = Vec::new();
    for i in 0..count {
        let (body, run_id, expect) = event(i);
        match run_id {
            Some(run_id) => {
                expected.insert(run_id, expect);
            }
            None => poison += 1,
        }
        let ack = conveyor
            .js
            .publish("resources.echo-resource", body.into())
            .await
            .expect("publish");
        acks.push(ack);
        if acks.len() == 256 || i + 1 == count {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
        }
    }
    (expected, poison)
}

/// Collects the result envelopes stored in `pipeline-engine`, as the server's pipeline engine
/// would, through a durable consumer (reading a large stream by sequence would be slow).
struct Results {
    consumer: async_nats::jetstream::consumer::PullConsumer,
    by_run: HashMap<String, Vec<Value>>,
}

impl Results {
    async fn new(conveyor: &Conveyor) -> Self {
        let stream = conveyor
            .js
            .get_stream("pipeline-engine")
            .await
            .expect("pipeline-engine");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("test-results".into()),
                filter_subject: "pipelines.driver.result".into(),
                ..Default::default()
            })
            .await
            .expect("results consumer");
        Self {
            consumer,
            by_run: HashMap::new(),
        }
    }

    /// Takes every result stored since the last call.
    async fn poll(&mut self) -> &HashMap<String, Vec<Value>> {
        loop {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .expect("fetch");
            let mut taken = 0;
            while let Some(Ok(message)) = futures_util::StreamExt::next(&mut batch).await {
                let body: Value = serde_json::from_slice(&message.payload).expect("result JSON");
                let run_id = body["run_id"].as_str().unwrap_or_default().to_owned();
                self.by_run
                    .entry(run_id)
                    .or_default()
                    .push(body["driverresult"].clone());
                message.ack().await.expect("ack");
                taken += 1;
            }
            if taken == 0 {
                return &self.by_run;
            }
        }
    }
}

fn missing(expected: &HashMap<String, Expect>, by_run: &HashMap<String, Vec<Value>>) -> usize {
    expected
        .keys()
        .filter(|run| !by_run.contains_key(*run))
        .count()
}

/// Checks every result against what its event asked for.
fn assert_outcomes(expected: &HashMap<String, Expect>, by_run: &HashMap<String, Vec<Value>>) {
    for (run_id, results) in by_run {
        let expect = expected
            .get(run_id)
            .unwrap_or_else(|| panic!("a result for unknown run {run_id}"));
        for result in results {
            match expect {
                Expect::Success(spec) => {
                    assert_eq!(result["success"], true, "{run_id}: {result}");
                    assert_eq!(&result["data"], spec, "{run_id}");
                }
                Expect::Failure(text) => {
                    assert_eq!(result["success"], false, "{run_id}: {result}");
                    assert!(
                        result["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains(text),
                        "{run_id}: {result}"
                    );
                }
                Expect::Poison => panic!("a poison message got a result: {result}"),
            }
        }
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, so that a failing run can be repeated with its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const CONCURRENCY: usize = 4;

fn echo(server: &NatsServer, concurrency: usize) -> DriverProcess {
    let url = server.url();
    let concurrency = concurrency.to_string();
    let env = [
        ("CONVEYOR_NATS_URL", url.as_str()),
        ("CONVEYOR_CONCURRENCY", concurrency.as_str()),
        ("CONVEYOR_ACK_WAIT", "2s"),
        ("CONVEYOR_MAX_DELIVER", "50"),
        ("CONVEYOR_RETRY_BACKOFF", "100ms"),
    ];
    DriverProcess::start_with("echo", &env, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_instances_killed_at_random_lose_nothing() {
    init_tracing();
    let count = env_count("CHAOS_EVENTS", 600);
    let seed = env_count("CHAOS_SEED", 0x5eed) as u64;
    let mut random = Lcg(seed);
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let mut instances: Vec<DriverProcess> = (0..3).map(|_| echo(&server, CONCURRENCY)).collect();
    conveyor.wait_for_consumer("echo").await;

    let mut results = Results::new(&conveyor).await;
    let (expected, poison) = publish_mix(&conveyor, count).await;
    let started = Instant::now();
    let mut kills = 0;
    let deadline = started + Duration::from_secs(240);
    let by_run = loop {
        tokio::time::sleep(Duration::from_millis(200 + random.below(800))).await;
        let left = missing(&expected, results.poll().await);
        if left == 0 {
            break results.by_run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{left} of {} events without a result (seed {seed})",
            expected.len()
        );
        // Kill at random while at least a tenth of the work is left; then let them finish.
        if left * 10 > expected.len() {
            let victim = random.below(3) as usize;
            instances[victim].kill();
            kills += 1;
            instances[victim] = echo(&server, CONCURRENCY);
        }
    };

    assert_outcomes(&expected, &by_run);
    let duplicates: usize = by_run.values().map(|r| r.len() - 1).sum();
    // A duplicate needs an event that was in flight in a killed instance (result published,
    // ack lost with the process); each instance has at most CONCURRENCY in flight.
    assert!(
        duplicates <= kills * CONCURRENCY,
        "{duplicates} duplicates for {kills} kills"
    );
    // Poison messages were terminated, not left to be redelivered forever.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = conveyor.consumer("echo").await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
    eprintln!(
        "chaos: {count} events ({} valid, {poison} poison), {kills} SIGKILLs, {duplicates} duplicate results, \
         0 lost, {:.1} s (seed {seed})",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    for instance in &mut instances {
        instance.assert_running();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory_stays_flat_and_only_expected_warnings_appear() {
    init_tracing();
    let count = env_count("SOAK_EVENTS", 2000);
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let mut driver = echo(&server, 32);
    conveyor.wait_for_consumer("echo").await;

    let idle = driver.rss_kib().expect("driver running");
    // A first tenth warms up allocator and buffers; then RSS is sampled over the rest.
    let mut results = Results::new(&conveyor).await;
    let (mut expected, _) = publish_mix(&conveyor, count / 10).await;
    let deadline = Instant::now() + PATIENCE * 4;
    while missing(&expected, results.poll().await) > 0 {
        assert!(Instant::now() < deadline, "warm-up did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let baseline = driver.rss_kib().expect("driver running");
    let started = Instant::now();
    let (rest, _) = publish_mix(&conveyor, count - count / 10).await;
    expected.extend(rest);
    let mut samples = vec![baseline];
    let deadline = Instant::now() + Duration::from_secs(600);
    let by_run = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(driver.rss_kib().expect("driver running"));
        if missing(&expected, results.poll().await) == 0 {
            break results.by_run.clone();
        }
        assert!(Instant::now() < deadline, "soak did not finish");
    };
    assert_outcomes(&expected, &by_run);
    let peak = *samples.iter().max().unwrap();
    let end = *samples.last().unwrap();
    eprintln!(
        "soak: {count} events in {:.1} s, RSS idle {idle} KiB, after warm-up {baseline} KiB, peak {peak} KiB, end {end} KiB",
        started.elapsed().as_secs_f64()
    );
    // Flat: the end of the run holds no more than a little over the warmed-up baseline.
    assert!(
        end <= baseline + baseline / 4 + 2048,
        "RSS grew: {samples:?}"
    );

    driver.sigterm();
    assert!(driver.wait(PATIENCE).success());
    let unexpected: Vec<String> = driver
        .output()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .filter(|line| {
            !line.contains("poison message terminated") && !line.contains("reconcile panicked")
        })
        .map(str::to_owned)
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected warnings: {unexpected:#?}"
    );
}

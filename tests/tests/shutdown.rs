//! Kubernetes-shaped shutdown of a driver process (`echo`): with default settings it exits
//! within Kubernetes' 30 s grace period, handing unfinished events back before it exits; after
//! SIGTERM nothing new starts; a second signal hands everything back and exits at once.

use std::time::{Duration, Instant};

use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::{resource, Conveyor, NatsServer, Payload, Seen};
use serde_json::json;

/// A nats-server, the Conveyor side of the wire, and `echo` busy with events.
struct Busy {
    _server: NatsServer,
    conveyor: Conveyor,
    driver: DriverProcess,
}

/// Starts a server and `echo` with default settings (but the URL and `args`), and publishes
/// one event of one resource per `sleeps_ms`, each reconciling that long; waits until all are
/// delivered.
async fn busy_echo(args: &[&str], sleeps_ms: &[u64]) -> Busy {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let driver = DriverProcess::start_with("echo", &[("CONVEYOR_NATS_URL", &server.url())], args);
    conveyor.wait_for_consumer("echo").await;
    for sleep_ms in sleeps_ms {
        let busy = resource("echo-resource", "one", json!({"sleep_ms": sleep_ms}));
        conveyor
            .publish("resources.echo-resource", "create", &busy, Payload::String)
            .await;
    }
    let count = sleeps_ms.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while conveyor.consumer("echo").await.num_ack_pending < count {
        assert!(Instant::now() < deadline, "events not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Busy {
        _server: server,
        conveyor,
        driver,
    }
}

/// Time from `sigterm` to exit, with the exit code.
fn exit_after(driver: &mut DriverProcess, sigterms: usize) -> (Duration, Option<i32>) {
    let started = Instant::now();
    for n in 0..sigterms {
        if n > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        driver.sigterm();
    }
    let status = driver.wait(Duration::from_secs(60));
    (started.elapsed(), status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_settings_a_busy_driver_exits_within_30s_having_handed_its_events_back() {
    let Busy {
        _server,
        conveyor,
        mut driver,
    } = busy_echo(&[], &[120_000]).await;
    let (took, code) = exit_after(&mut driver, 1);
    assert_eq!(code, Some(0), "{}", driver.output());
    assert!(took < Duration::from_secs(28), "exit took {took:?}");
    assert!(
        took > Duration::from_secs(15),
        "exit took {took:?}: not graceful"
    );
    // Handed back (nak), not left to the 30 s ack wait: another instance can take it now.
    assert_handed_back(&conveyor, 1).await;
}

/// All `count` events were handed back (nak, not ack, not left to the 30 s ack wait): a
/// consumer pulling now gets each at once, on its second delivery.
async fn assert_handed_back(conveyor: &Conveyor, count: usize) {
    use futures_util::StreamExt;
    let consumer: async_nats::jetstream::consumer::PullConsumer = conveyor
        .js
        .get_consumer_from_stream("echo", "messages")
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(count)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .unwrap();
    let mut got = 0;
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        assert_eq!(message.info().unwrap().delivered, 2, "handed back once");
        got += 1;
    }
    let info = conveyor.consumer("echo").await;
    assert_eq!(got, count, "events not handed back at once: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_hands_everything_back_and_exits_at_once() {
    let Busy {
        _server,
        conveyor,
        mut driver,
    } = busy_echo(&[], &[120_000]).await;
    let (took, code) = exit_after(&mut driver, 2);
    assert_eq!(code, Some(0), "{}", driver.output());
    // 0.5 s between the signals, then at most the hand-back grace and the drain.
    assert!(took < Duration::from_millis(2500), "exit took {took:?}");
    assert!(
        driver.output().contains("second signal"),
        "{}",
        driver.output()
    );
    assert_handed_back(&conveyor, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_an_event_waiting_for_its_resource_does_not_start() {
    // Two events of one resource: the first reconciles for 2 s, the second waits for its turn.
    let args = ["--shutdown-timeout", "10s"];
    let Busy {
        _server,
        conveyor,
        mut driver,
    } = busy_echo(&args, &[2_000, 120_000]).await;
    // The first result comes 2 s after delivery: the tap is there well before.
    let mut tap = conveyor.tap().await;
    let (took, code) = exit_after(&mut driver, 1);
    assert_eq!(code, Some(0), "{}", driver.output());
    // The first finished during the shutdown; its turn ending did not start the second.
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    tap.until("the first result", |seen| seen.iter().any(Seen::is_result))
        .await;
    let started = driver.output().matches("sleeping 120000 ms").count();
    assert_eq!(started, 0, "{}", driver.output());
    assert_handed_back(&conveyor, 1).await;
}

//! Costs users feel beyond throughput, raw loop and runtime side by side in each run: how long
//! a new process takes to its first result (autoscaling from zero), and what large events cost.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::harness::{self, Kind, Launch, Specs};
use super::stats::{thousands, Spread};
use super::throughput::{self, Scenario};
use super::{spec, BoxError, Plan, DRIVER};

/// Prints the cold start of both drivers: from spawning the process, with one event already
/// queued, to its first pull request (the consumer is bound and the driver asks for events)
/// and to the event's result.
pub async fn cold_start(plan: &Plan) -> Result<(), BoxError> {
    let runs = plan.runs.max(if plan.quick { 1 } else { 5 });
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); 2];
    for _ in 0..runs {
        for (kind, (bound, first)) in [Kind::Raw, Kind::Runtime].into_iter().zip(&mut times) {
            let (b, f) = start_once(&Launch::new(kind, 64, plan.prefetch.as_deref())).await?;
            bound.push(b.as_secs_f64() * 1e3);
            first.push(f.as_secs_f64() * 1e3);
        }
    }
    println!("\n### Cold start\n");
    println!("From spawning the driver process, with one event queued, to its first pull request and to the event's result; median of {runs} runs (min–max).\n");
    println!(
        "| driver | process start → consumer bound (first pull) | process start → first result |"
    );
    println!("|---|---|---|");
    for (kind, (bound, first)) in [Kind::Raw, Kind::Runtime].into_iter().zip(&times) {
        println!(
            "| {} | {} ms | {} ms |",
            kind.name(),
            Spread::of(bound).fixed(1),
            Spread::of(first).fixed(1)
        );
    }
    Ok(())
}

async fn start_once(launch: &Launch) -> Result<(Duration, Duration), BoxError> {
    let mut setup = harness::setup().await?;
    // Pull requests are plain publishes to the JetStream API: a subscriber sees them arrive.
    let mut pulls = setup
        .conveyor
        .client
        .subscribe(format!("$JS.API.CONSUMER.MSG.NEXT.messages.{DRIVER}"))
        .await?;
    setup.conveyor.client.flush().await?;
    let specs: Specs = std::sync::Arc::new(|_| spec::spec(0, 0));
    harness::publish_range(&setup.conveyor.js, 0..1, &specs).await?;
    let started = Instant::now();
    let child = harness::spawn_driver(launch, &setup.server.url())?;
    let bound = async {
        tokio::time::timeout(Duration::from_secs(60), pulls.next())
            .await
            .ok()
            .flatten()
            .map(|_| started.elapsed())
    };
    let first = async {
        harness::next_result(&mut setup.results)
            .await
            .map(|_| started.elapsed())
    };
    let (bound, first) = tokio::join!(bound, first);
    harness::stop(child)?;
    match (bound, first) {
        (Some(bound), Some(first)) => Ok((bound, first)),
        _ => Err(format!(
            "{}: no pull request or no result within a minute",
            launch.kind.name()
        )
        .into()),
    }
}

/// Prints events/s and MB/s of both drivers for specs of 1 KiB, 100 KiB and 900 KiB at
/// concurrency 64. 900 KiB still fits nats-server's default `max_payload` of 1 MiB, with the
/// resource in the event and again in the result envelope.
pub async fn payload(plan: &Plan) -> Result<(), BoxError> {
    println!("\n### Payload size\n");
    println!("No-op at concurrency 64; the spec is padded to the size. MB/s counts the event messages' bytes (10^6 bytes). Median of {} run(s) (min–max); the ratio is the median of each run's runtime/raw.\n", plan.runs);
    println!("| spec | events | event size | raw events/s | runtime events/s | raw MB/s | runtime MB/s | runtime / raw |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, kib, events) in [
        ("1 KiB", 1, 5_000),
        ("100 KiB", 100, 1_000),
        ("900 KiB", 900, 200),
    ] {
        let scenario = Scenario {
            events: plan.events(events),
            work_ms: 0,
            concurrency: 64,
            instances: 1,
            padding: kib * 1024,
        };
        let size = harness::message(0, spec::spec(0, scenario.padding)).1.len();
        let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            let r = throughput::measure(Kind::Raw, &scenario, None).await?;
            let o = throughput::measure(Kind::Runtime, &scenario, plan.prefetch.as_deref()).await?;
            ratios.push(o.events_per_sec / r.events_per_sec);
            raw.push(r.events_per_sec);
            ours.push(o.events_per_sec);
        }
        let (raw, ours) = (Spread::of(&raw), Spread::of(&ours));
        let mb = |rate: f64| rate * size as f64 / 1e6;
        println!(
            "| {label} | {} | {} B | {} | {} | {:.1} | {:.1} | **{}** |",
            thousands(scenario.events as f64),
            thousands(size as f64),
            raw.whole(),
            ours.whole(),
            mb(raw.median),
            mb(ours.median),
            Spread::of(&ratios).fixed(2)
        );
    }
    Ok(())
}

//! Events per second against concurrency, raw loop and runtime side by side in each run, and
//! the measurements that bound them: the sleep ceiling, publish-to-result latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::{self, mib, proc_kib, Kind, Launch, Specs};
use super::stats::{thousands, Spread};
use super::{spec, BoxError, Plan, DRIVER};

/// The concurrencies of the sweep (and of the chart).
pub const CONCURRENCIES: [usize; 5] = [1, 4, 16, 64, 256];

/// One scenario: its events, work per event, concurrency and instances.
pub struct Scenario {
    pub events: usize,
    pub work_ms: u64,
    pub concurrency: usize,
    pub instances: usize,
    /// Filler bytes in each event's spec (the payload scenarios).
    pub padding: usize,
}

impl Scenario {
    fn name(&self) -> String {
        let work = match self.work_ms {
            0 => "no-op".to_owned(),
            ms => format!("{ms} ms"),
        };
        match self.instances {
            1 => format!("{work}, concurrency {}", self.concurrency),
            n => format!("{work}, concurrency {}, {n} instances", self.concurrency),
        }
    }
}

/// One measurement of one driver.
pub struct Sample {
    /// From the driver's start to the last result.
    pub events_per_sec: f64,
    /// From the first result to the last.
    pub steady_per_sec: f64,
    pub peak_rss_kib: u64,
    /// CPU time per event of the driver processes, and of the nats-server, in µs.
    pub driver_cpu_us: f64,
    pub server_cpu_us: f64,
    /// Pull requests the drivers sent per event: each costs the server a request to parse
    /// and track.
    pub pulls_per_event: f64,
}

/// Both drivers on one scenario.
pub struct Point {
    pub work_ms: u64,
    pub concurrency: usize,
    pub instances: usize,
    pub raw: Spread,
    pub runtime: Spread,
}

/// Runs the sweep and the two-instance scenario, prints them as a markdown table, and returns
/// the points for the chart.
pub async fn sweep(plan: &Plan) -> Result<Vec<Point>, BoxError> {
    let mut scenarios = Vec::new();
    for work_ms in [0, 10] {
        for concurrency in CONCURRENCIES {
            // About 4 s at the ideal rate for the 10 ms work, at most 20 000 events.
            let events = if work_ms == 0 {
                20_000
            } else {
                (concurrency * 400).clamp(400, 20_000)
            };
            scenarios.push(Scenario {
                events: plan.events(events),
                work_ms,
                concurrency,
                instances: 1,
                padding: 0,
            });
        }
    }
    scenarios.push(Scenario {
        events: plan.events(20_000),
        work_ms: 10,
        concurrency: 64,
        instances: 2,
        padding: 0,
    });
    println!(
        "\n### Throughput (runtime: {})\n",
        plan.prefetch
            .as_deref()
            .map_or("default configuration".to_owned(), |p| {
                format!("CONVEYOR_PREFETCH={p}")
            })
    );
    println!("Events/s from the driver's start to the last result; median of {} run(s) (min–max). The ratio is the median of each run's runtime/raw, both measured back to back.\n", plan.runs);
    println!("CPU per event is the CPU time of the driver processes and of the nats-server over the measurement, divided by the events (median, raw → runtime). On a machine where the driver, the server and the benchmark share the cores, throughput follows the sum.\n");
    println!("| scenario | events | raw events/s | runtime events/s | runtime / raw | runtime × ideal | runtime peak RSS | driver CPU µs/event | server CPU µs/event | pull requests/event |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut points: Vec<Point> = Vec::new();
    for scenario in scenarios.iter().filter(|s| plan.selects(&s.name())) {
        let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut rss = 0;
        for _ in 0..plan.runs {
            let r = measure(Kind::Raw, scenario, None).await?;
            let o = measure(Kind::Runtime, scenario, plan.prefetch.as_deref()).await?;
            ratios.push(o.events_per_sec / r.events_per_sec);
            rss = rss.max(o.peak_rss_kib);
            raw.push(r);
            ours.push(o);
        }
        let rate = |samples: &[Sample]| {
            Spread::of(&samples.iter().map(|s| s.events_per_sec).collect::<Vec<_>>())
        };
        let point = Point {
            work_ms: scenario.work_ms,
            concurrency: scenario.concurrency,
            instances: scenario.instances,
            raw: rate(&raw),
            runtime: rate(&ours),
        };
        let ideal = match scenario.work_ms {
            0 => "—".to_owned(),
            ms => {
                let ideal = (scenario.concurrency * scenario.instances) as f64 * 1000.0 / ms as f64;
                let steady = Spread::of(&ours.iter().map(|s| s.steady_per_sec).collect::<Vec<_>>());
                format!(
                    "{:.2} (first to last result: {:.2})",
                    point.runtime.median / ideal,
                    steady.median / ideal
                )
            }
        };
        let median = |samples: &[Sample], of: fn(&Sample) -> f64| {
            Spread::of(&samples.iter().map(of).collect::<Vec<_>>()).median
        };
        println!(
            "| {} | {} | {} | {} | **{}** | {ideal} | {} MiB | {:.0} → {:.0} | {:.0} → {:.0} | {:.2} → {:.2} |",
            scenario.name(),
            thousands(scenario.events as f64),
            point.raw.whole(),
            point.runtime.whole(),
            Spread::of(&ratios).fixed(2),
            mib(rss),
            median(&raw, |s| s.driver_cpu_us),
            median(&ours, |s| s.driver_cpu_us),
            median(&raw, |s| s.server_cpu_us),
            median(&ours, |s| s.server_cpu_us),
            median(&raw, |s| s.pulls_per_event),
            median(&ours, |s| s.pulls_per_event),
        );
        points.push(point);
    }
    let one = points
        .iter()
        .find(|p| p.instances == 1 && p.work_ms == 10 && p.concurrency == 64);
    let two = points.iter().find(|p| p.instances == 2);
    if let (Some(one), Some(two)) = (one, two) {
        println!(
            "\nTwo instances against one (10 ms, concurrency 64): runtime **{:.2}×**, raw {:.2}×.",
            two.runtime.median / one.runtime.median,
            two.raw.median / one.raw.median
        );
    }
    let window = if plan.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    for concurrency in [1, 64] {
        println!(
            "\nSleep ceiling: tokio sleep(10 ms) alone, {concurrency} at once: {:.0}/s (ideal {}/s).",
            sleep_ceiling(concurrency, Duration::from_millis(10), window).await,
            concurrency * 100
        );
    }
    Ok(points)
}

/// Runs `scenario` once with `kind`'s drivers, each a fresh process on a fresh server.
pub async fn measure(
    kind: Kind,
    scenario: &Scenario,
    prefetch: Option<&str>,
) -> Result<Sample, BoxError> {
    let mut setup = harness::setup().await?;
    let url = setup.server.url();
    let launch = Launch::new(kind, scenario.concurrency, prefetch);
    let start = || {
        (0..scenario.instances)
            .map(|_| harness::spawn_driver(&launch, &url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BoxError::from)
    };
    let pulls = harness::count(
        &setup.conveyor.client,
        format!("$JS.API.CONSUMER.MSG.NEXT.messages.{DRIVER}"),
    )
    .await?;
    let (work_ms, padding) = (scenario.work_ms, scenario.padding);
    let specs: Specs = Arc::new(move |_| spec::spec(work_ms, padding));
    // First and last result: the steady rate leaves out the driver's start.
    let (mut first, mut last) = (None, Instant::now());
    let (elapsed, children) =
        harness::drive(&mut setup, scenario.events, specs, start, |_, _, _| {
            last = Instant::now();
            first.get_or_insert(last);
        })
        .await?;
    let steady = first.map_or(Duration::ZERO, |first| last - first);
    let peak_rss_kib = children
        .iter()
        .map(|c| proc_kib(c.id(), "VmHWM:"))
        .max()
        .unwrap_or(0);
    // Read before the stop: shutting down is not per-event work.
    let driver_cpu: Duration = children.iter().map(|c| harness::cpu_time(c.id())).sum();
    let server_cpu = setup.server.pid().map_or(Duration::ZERO, harness::cpu_time);
    for child in children {
        harness::stop(child)?;
    }
    let per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / scenario.events as f64;
    Ok(Sample {
        events_per_sec: scenario.events as f64 / elapsed.as_secs_f64(),
        steady_per_sec: (scenario.events.saturating_sub(1)) as f64 / steady.as_secs_f64(),
        peak_rss_kib,
        driver_cpu_us: per_event(driver_cpu),
        server_cpu_us: per_event(server_cpu),
        pulls_per_event: pulls.total() as f64 / scenario.events as f64,
    })
}

/// How many `work` sleeps per second `concurrency` loops complete, with nothing else to do:
/// the most any driver can reach in the 10 ms scenarios, as the timer rounds every sleep up.
async fn sleep_ceiling(concurrency: usize, work: Duration, window: Duration) -> f64 {
    let deadline = Instant::now() + window;
    let loops = (0..concurrency).map(|_| {
        tokio::spawn(async move {
            let mut done = 0u32;
            while Instant::now() < deadline {
                tokio::time::sleep(work).await;
                done += 1;
            }
            done
        })
    });
    let mut total = 0;
    for done in futures_util::future::join_all(loops).await {
        total += done.unwrap_or(0);
    }
    f64::from(total) / window.as_secs_f64()
}

/// Prints, for both drivers, the p50 and p99 of publish-to-result latency at a steady 500
/// events/s (concurrency 64, no-op), and the RSS of a connected, idle driver.
pub async fn latency_and_idle(plan: &Plan) -> Result<(), BoxError> {
    println!("\n### Latency and idle memory\n");
    println!("| driver | p50 publish→result | p99 | idle RSS |");
    println!("|---|---|---|---|");
    for kind in [Kind::Raw, Kind::Runtime] {
        let launch = Launch::new(kind, 64, plan.prefetch.as_deref());
        let (p50, p99) = latency(&launch, plan.events(2_000), 500.0).await?;
        let idle = idle_rss(&launch, plan).await?;
        println!(
            "| {} | {:.2} ms | {:.2} ms | {} MiB |",
            kind.name(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            mib(idle)
        );
    }
    Ok(())
}

/// Publishes `count` events at `rate` per second to a running driver and returns the p50 and
/// p99 of the time from publish to result.
async fn latency(
    launch: &Launch,
    count: usize,
    rate: f64,
) -> Result<(Duration, Duration), BoxError> {
    let mut setup = harness::setup().await?;
    let child = harness::spawn_driver(launch, &setup.server.url())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let collector = tokio::spawn(async move {
        let mut arrived = HashMap::new();
        while arrived.len() < count {
            match harness::next_result(&mut setup.results).await {
                Some(message) => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&message.payload).unwrap_or_default();
                    let run_id = body["run_id"].as_str().unwrap_or_default().to_owned();
                    arrived.insert(run_id, Instant::now());
                }
                None => break,
            }
        }
        arrived
    });
    let mut sent = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for i in 0..count {
        ticker.tick().await;
        let (run_id, body) = harness::message(i, spec::spec(0, 0));
        sent.insert(run_id, Instant::now());
        setup
            .conveyor
            .js
            .publish(format!("resources.{DRIVER}"), body.into())
            .await?
            .await?;
    }
    let arrived = collector.await?;
    harness::stop(child)?;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(run, at)| arrived.get(run).map(|done| done.duration_since(*at)))
        .collect();
    if latencies.len() < count {
        return Err(format!("only {} of {count} results arrived", latencies.len()).into());
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((pick(0.50), pick(0.99)))
}

/// RSS of a connected driver with nothing to do.
async fn idle_rss(launch: &Launch, plan: &Plan) -> Result<u64, BoxError> {
    let setup = harness::setup().await?;
    let child = harness::spawn_driver(launch, &setup.server.url())?;
    let settle = if plan.quick { 500 } else { 2_000 };
    tokio::time::sleep(Duration::from_millis(settle)).await;
    let rss = proc_kib(child.id(), "VmRSS:");
    harness::stop(child)?;
    Ok(rss)
}

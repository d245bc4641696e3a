//! End-to-end benchmark of conveyor-driver against a raw async-nats loop, side by side.
//!
//! `cargo run --release -p conveyor-driver-bench` starts its own nats-server on loopback for
//! each measurement, creates the Conveyor streams, publishes DriverMessages exactly as the
//! Conveyor server does (payload as a string), starts the driver under test as a separate
//! process (this binary in `driver` mode, so that its memory is its own) and measures from the
//! driver's start to the last result envelope on `pipelines.driver.result`.
//!
//! Both drivers do the same protocol work per event: parse, one log line to `logs.<run_id>`
//! (JetStream) and `live.logs.<run_id>.<driver>` (core NATS), optional async work, publish the
//! result envelope and await its PubAck, then ack.

mod raw;
mod runtime;

use std::collections::HashMap;
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use conveyor_driver_tests::{Conveyor, NatsServer};
use futures_util::StreamExt;
use serde_json::json;

/// The driver name and resource type used by both drivers.
const DRIVER: &str = "bench";

/// Any error, for a benchmark that stops at the first one.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "conveyor-driver vs raw async-nats: throughput, latency, memory")]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    /// Measurements per scenario (the median is reported, with min–max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scale every scenario's event count by this factor (e.g. 0.01 for a smoke test).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Events for the memory-growth run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    soak_events: usize,
    /// Run only the scenarios whose name contains this text (and skip latency and memory).
    #[arg(long)]
    only: Option<String>,
    /// The runtime driver's prefetch (`CONVEYOR_PREFETCH`): events taken ahead of free slots.
    #[arg(long, default_value_t = 0)]
    prefetch: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// Run one driver (used by the benchmark itself, as a child process).
    Driver {
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        nats_url: String,
        #[arg(long)]
        concurrency: usize,
        #[arg(long, default_value_t = 0)]
        work_ms: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Kind {
    Raw,
    Runtime,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Runtime => "runtime",
        }
    }
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Mode::Driver {
            kind,
            nats_url,
            concurrency,
            work_ms,
        }) => runtime.block_on(async move {
            match kind {
                Kind::Raw => raw::run(&nats_url, concurrency, work_ms).await,
                Kind::Runtime => runtime::run(&nats_url, concurrency, work_ms).await,
            }
        }),
        None => runtime.block_on(report(cli)),
    }
}

/// One scenario: its events, work per event, concurrency and instances.
struct Scenario {
    name: &'static str,
    events: usize,
    work_ms: u64,
    concurrency: usize,
    instances: usize,
}

/// One measurement.
struct Sample {
    /// From the driver's start to the last result.
    events_per_sec: f64,
    /// From the first result to the last.
    steady_per_sec: f64,
    peak_rss_kib: u64,
}

async fn report(cli: Cli) -> Result<(), BoxError> {
    PREFETCH.store(cli.prefetch, Ordering::Relaxed);
    let scaled = |n: usize| ((n as f64 * cli.scale).round() as usize).max(10);
    let scenarios = [
        Scenario {
            name: "no-op, concurrency 1",
            events: scaled(20_000),
            work_ms: 0,
            concurrency: 1,
            instances: 1,
        },
        Scenario {
            name: "no-op, concurrency 64",
            events: scaled(20_000),
            work_ms: 0,
            concurrency: 64,
            instances: 1,
        },
        Scenario {
            name: "10 ms, concurrency 1",
            events: scaled(500),
            work_ms: 10,
            concurrency: 1,
            instances: 1,
        },
        Scenario {
            name: "10 ms, concurrency 64",
            events: scaled(5_000),
            work_ms: 10,
            concurrency: 64,
            instances: 1,
        },
        Scenario {
            name: "10 ms, concurrency 64, 2 instances",
            events: scaled(5_000),
            work_ms: 10,
            concurrency: 64,
            instances: 2,
        },
    ];
    println!("runtime prefetch: {}\n", cli.prefetch);
    println!("| scenario | events | raw events/s | runtime events/s | runtime / raw | runtime peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut one_instance = 0.0;
    let selected = scenarios.iter().filter(|s| {
        cli.only
            .as_ref()
            .is_none_or(|only| s.name.contains(only.as_str()))
    });
    for scenario in selected {
        let raw = summarize(measure_runs(Kind::Raw, scenario, cli.runs).await?);
        let ours = summarize(measure_runs(Kind::Runtime, scenario, cli.runs).await?);
        if scenario.instances == 1 && scenario.work_ms == 10 && scenario.concurrency == 64 {
            one_instance = ours.median;
        }
        let ideal = if scenario.work_ms > 0 {
            let ideal = (scenario.concurrency * scenario.instances) as f64 * 1000.0
                / scenario.work_ms as f64;
            format!(
                " ({:.2} × ideal {ideal:.0}/s; first to last result: raw {:.0}/s, runtime {:.0}/s = {:.2} × ideal)",
                ours.median / ideal,
                raw.steady,
                ours.steady,
                ours.steady / ideal
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {}{} | {:.2} | {} MiB |",
            scenario.name,
            scenario.events,
            raw.display(),
            ours.display(),
            ideal,
            ours.median / raw.median,
            mib(ours.peak_rss_kib),
        );
        if scenario.instances == 2 && one_instance > 0.0 {
            println!(
                "|  | two instances / one: {:.2} |  |  |  |  |",
                ours.median / one_instance
            );
        }
    }
    for concurrency in [1, 64] {
        println!(
            "ceiling: tokio sleep(10 ms) alone, {concurrency} at once: {:.0}/s",
            sleep_ceiling(concurrency, Duration::from_millis(10)).await
        );
    }
    if cli.only.is_some() {
        return Ok(());
    }
    println!();
    for kind in [Kind::Raw, Kind::Runtime] {
        let (p50, p99) = latency(kind, scaled(2_000), 500.0).await?;
        let idle = idle_rss(kind).await?;
        println!(
            "{}: latency publish→result at 500 events/s, concurrency 64: p50 {:.2} ms, p99 {:.2} ms; idle RSS {} MiB",
            kind.name(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            mib(idle)
        );
    }
    if cli.soak_events > 0 {
        soak(cli.soak_events).await?;
    }
    Ok(())
}

struct Summary {
    median: f64,
    min: f64,
    max: f64,
    /// The median of the steady rates.
    steady: f64,
    peak_rss_kib: u64,
}

impl Summary {
    fn display(&self) -> String {
        format!("{:.0} ({:.0}–{:.0})", self.median, self.min, self.max)
    }
}

fn summarize(mut samples: Vec<Sample>) -> Summary {
    samples.sort_by(|a, b| a.steady_per_sec.total_cmp(&b.steady_per_sec));
    let steady = samples[samples.len() / 2].steady_per_sec;
    samples.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    Summary {
        steady,
        median: samples[samples.len() / 2].events_per_sec,
        min: samples[0].events_per_sec,
        max: samples[samples.len() - 1].events_per_sec,
        peak_rss_kib: samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

async fn measure_runs(
    kind: Kind,
    scenario: &Scenario,
    runs: usize,
) -> Result<Vec<Sample>, BoxError> {
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        samples.push(measure(kind, scenario).await?);
    }
    Ok(samples)
}

/// A server with the streams and the driver's consumer, and a subscription on the results.
struct Setup {
    server: NatsServer,
    conveyor: Conveyor,
    results: async_nats::Subscriber,
}

async fn setup() -> Result<Setup, BoxError> {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    // The consumer exists before the events: the messages stream keeps only events some
    // consumer is interested in.
    raw::bind(&conveyor.js).await?;
    let results = conveyor
        .client
        .subscribe(conveyor_driver::wire::subjects::RESULT)
        .await?;
    conveyor.client.flush().await?;
    Ok(Setup {
        server,
        conveyor,
        results,
    })
}

/// How many published events may wait unprocessed. JetStream serves a consumer much more
/// slowly with a deep backlog (measured here: 20 000 queued events cut both drivers to a few
/// hundred events/s), which would measure the server instead of the driver; so events are fed
/// while the driver runs, never more than this far ahead of the results.
const BACKLOG: usize = 1000;

/// Publishes events `range` as DriverMessages (payload as a string), pipelining the PubAcks.
async fn publish_range(
    js: &async_nats::jetstream::Context,
    range: Range<usize>,
    work_ms: u64,
) -> Result<(), BoxError> {
    let mut acks = Vec::new();
    for i in range {
        let (_, body) = message(i, work_ms);
        acks.push(
            js.publish(format!("resources.{DRIVER}"), body.into())
                .await?,
        );
        if acks.len() == 256 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Publishes the first [`BACKLOG`] of `count` events, starts the drivers with `start`, feeds the
/// rest as results come in, and returns the time from the start to the last result (and what
/// `start` returned).
async fn drive<T>(
    setup: &mut Setup,
    count: usize,
    work_ms: u64,
    start: impl FnOnce() -> Result<T, BoxError>,
    mut on_result: impl FnMut(usize, &T),
) -> Result<(Duration, T), BoxError> {
    let first = count.min(BACKLOG);
    publish_range(&setup.conveyor.js, 0..first, work_ms).await?;
    let started = Instant::now();
    let drivers = start()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (js, seen) = (setup.conveyor.js.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut next = first;
            while next < count {
                let allowed = (seen.load(Ordering::Relaxed) + BACKLOG).min(count);
                if next >= allowed {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let upto = allowed.min(next + 256);
                publish_range(&js, next..upto, work_ms).await?;
                next = upto;
            }
            Ok::<(), BoxError>(())
        })
    };
    for done in 1..=count {
        match tokio::time::timeout(Duration::from_secs(60), setup.results.next()).await {
            Ok(Some(_)) => {
                seen.store(done, Ordering::Relaxed);
                on_result(done, &drivers);
            }
            _ => return Err(format!("only {} of {count} results arrived", done - 1).into()),
        }
    }
    let elapsed = started.elapsed();
    feeder.await??;
    Ok((elapsed, drivers))
}

fn message(i: usize, work_ms: u64) -> (String, Vec<u8>) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let resource = json!({
        "id": format!("r{i}"), "name": format!("app-{i}"), "resource": DRIVER, "pipeline": "bench",
        "metadata": {"owner": "bench"}, "spec": {"work_ms": work_ms, "image": "rust:1"},
    });
    let body = json!({"event": "create", "payload": resource.to_string(), "id": format!("m{i}"), "run_id": run_id});
    (run_id, body.to_string().into_bytes())
}

/// The `--prefetch` of the run, for the runtime drivers it starts.
static PREFETCH: AtomicUsize = AtomicUsize::new(0);

fn spawn_driver(
    kind: Kind,
    url: &str,
    concurrency: usize,
    work_ms: u64,
) -> Result<Child, std::io::Error> {
    let exe = std::env::current_exe()?;
    // BENCH_PROFILE_WITH="perf record -e cpu-clock -g -o perf.data" runs the runtime driver
    // under a profiler.
    let wrapper = match kind {
        Kind::Runtime => std::env::var("BENCH_PROFILE_WITH").unwrap_or_default(),
        Kind::Raw => String::new(),
    };
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    command
        .args(["driver", "--kind", kind.name(), "--nats-url", url])
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--work-ms",
            &work_ms.to_string(),
        ])
        .env(
            "CONVEYOR_PREFETCH",
            PREFETCH.load(Ordering::Relaxed).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

fn stop(mut child: Child) -> Result<(), BoxError> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

async fn measure(kind: Kind, scenario: &Scenario) -> Result<Sample, BoxError> {
    let mut setup = setup().await?;
    let url = setup.server.url();
    let start = || {
        (0..scenario.instances)
            .map(|_| spawn_driver(kind, &url, scenario.concurrency, scenario.work_ms))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BoxError::from)
    };
    // First and last result: the steady rate leaves out the driver's start.
    let (mut first, mut last) = (None, Instant::now());
    let (elapsed, children) = drive(
        &mut setup,
        scenario.events,
        scenario.work_ms,
        start,
        |_, _| {
            last = Instant::now();
            first.get_or_insert(last);
        },
    )
    .await?;
    let steady = first.map_or(Duration::ZERO, |first| last - first);
    let peak_rss_kib = children
        .iter()
        .map(|c| proc_kib(c.id(), "VmHWM:"))
        .max()
        .unwrap_or(0);
    for child in children {
        stop(child)?;
    }
    Ok(Sample {
        events_per_sec: scenario.events as f64 / elapsed.as_secs_f64(),
        steady_per_sec: (scenario.events - 1) as f64 / steady.as_secs_f64(),
        peak_rss_kib,
    })
}

/// How many `work` sleeps per second `concurrency` loops complete, with nothing else to do:
/// the most any driver can reach in the 10 ms scenarios, as the timer rounds every sleep up.
async fn sleep_ceiling(concurrency: usize, work: Duration) -> f64 {
    let window = Duration::from_secs(2);
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

/// Publishes `count` events at `rate` per second to a running driver and returns the p50 and
/// p99 of the time from publish to result.
async fn latency(kind: Kind, count: usize, rate: f64) -> Result<(Duration, Duration), BoxError> {
    let mut setup = setup().await?;
    let child = spawn_driver(kind, &setup.server.url(), 64, 0)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let collector = tokio::spawn(async move {
        let mut arrived = HashMap::new();
        while arrived.len() < count {
            match tokio::time::timeout(Duration::from_secs(60), setup.results.next()).await {
                Ok(Some(message)) => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&message.payload).unwrap_or_default();
                    let run_id = body["run_id"].as_str().unwrap_or_default().to_owned();
                    arrived.insert(run_id, Instant::now());
                }
                _ => break,
            }
        }
        arrived
    });
    let mut sent = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for i in 0..count {
        ticker.tick().await;
        let (run_id, body) = message(i, 0);
        sent.insert(run_id, Instant::now());
        setup
            .conveyor
            .js
            .publish(format!("resources.{DRIVER}"), body.into())
            .await?
            .await?;
    }
    let arrived = collector.await?;
    stop(child)?;
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
async fn idle_rss(kind: Kind) -> Result<u64, BoxError> {
    let setup = setup().await?;
    let child = spawn_driver(kind, &setup.server.url(), 64, 0)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = proc_kib(child.id(), "VmRSS:");
    stop(child)?;
    Ok(rss)
}

/// Runs `count` no-op events through one runtime driver at concurrency 64, sampling its RSS,
/// and prints the samples at each tenth of the run.
async fn soak(count: usize) -> Result<(), BoxError> {
    let mut setup = setup().await?;
    let url = setup.server.url();
    let mut samples = Vec::new();
    let start = || spawn_driver(Kind::Runtime, &url, 64, 0).map_err(BoxError::from);
    let sample = |done: usize, child: &Child| {
        if done.is_multiple_of((count / 10).max(1)) {
            samples.push((done, proc_kib(child.id(), "VmRSS:")));
        }
    };
    let (_, child) = drive(&mut setup, count, 0, start, sample).await?;
    stop(child)?;
    let line: Vec<String> = samples
        .iter()
        .map(|(n, kib)| format!("{n}: {} MiB", mib(*kib)))
        .collect();
    println!("runtime RSS over a {count}-event run: {}", line.join(", "));
    Ok(())
}

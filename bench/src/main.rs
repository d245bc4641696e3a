//! End-to-end benchmark of conveyor-driver against a raw async-nats loop, side by side.
//!
//! `cargo run --release -p conveyor-driver-bench` starts its own nats-server on loopback for
//! each measurement, creates the Conveyor streams, publishes DriverMessages exactly as the
//! Conveyor server does (payload as a string), starts the driver under test as a separate
//! process (this binary in `driver` mode, so that its memory is its own) and measures from the
//! driver's start to the last result envelope on `pipelines.driver.result`.
//!
//! Both drivers do the same protocol work per event: parse, one log line to `logs.<run_id>`
//! (JetStream) and `live.logs.<run_id>.<driver>` (core NATS), the work the event's spec asks
//! for (`work_ms`), publish the result envelope and await its PubAck, then ack.
//!
//! The output is markdown, ready to paste into BENCHMARKS.md.

mod binsize;
mod chart;
mod costs;
mod fairness;
mod harness;
mod machine;
mod raw;
mod resources;
mod runtime;
mod spec;
mod stats;
mod throughput;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};

use harness::Kind;

/// The driver name and resource type used by both drivers.
const DRIVER: &str = "bench";

/// Any error, for a benchmark that stops at the first one.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    about = "conveyor-driver vs raw async-nats: throughput, fairness, latency, memory, start-up, size"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    /// Measurements per scenario (the median is reported, with min–max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scale every scenario's event count by this factor (e.g. 0.01 for a smoke test).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// A smoke run in under a minute: one run of every section at a hundredth of the events
    /// (times --scale), with 200 ms instead of 2 s for the fairness scenario's long reconciles.
    #[arg(long)]
    quick: bool,
    /// Distinct resources for the many-resources run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    resources: usize,
    /// Run only the sections and throughput scenarios whose name contains this text (e.g.
    /// "fairness", "cold start", "payload", "many resources", "binary size", "latency",
    /// "concurrency 64").
    #[arg(long)]
    only: Option<String>,
    /// `CONVEYOR_PREFETCH` for the runtime driver outside the fairness scenario (which compares
    /// its own settings). Unset: the runtime's default.
    #[arg(long)]
    prefetch: Option<String>,
    /// Where to write the chart of the throughput sweep [default: concurrency.svg in the bench
    /// crate's directory; with --quick, conveyor-bench-quick.svg in the temporary directory, so
    /// that a smoke run leaves the committed chart alone].
    #[arg(long)]
    chart: Option<PathBuf>,
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
        /// Print when each event was received (runtime only; the fairness scenario).
        #[arg(long)]
        received_log: bool,
    },
}

/// What to run, from the command line.
pub struct Plan {
    pub runs: usize,
    pub quick: bool,
    scale: f64,
    pub prefetch: Option<String>,
    only: Option<String>,
}

impl Plan {
    /// A scenario's event count at this plan's scale (at least 10).
    pub fn events(&self, full: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(10)
    }

    /// Whether the section or scenario `name` runs.
    pub fn selects(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| name.contains(only.as_str()))
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
            received_log,
        }) => runtime.block_on(async move {
            match kind {
                Kind::Raw => raw::run(&nats_url, concurrency).await,
                Kind::Runtime => runtime::run(&nats_url, concurrency, received_log).await,
            }
        }),
        None => runtime.block_on(report(cli)),
    }
}

async fn report(cli: Cli) -> Result<(), BoxError> {
    let begun = Instant::now();
    let plan = Plan {
        runs: if cli.quick { 1 } else { cli.runs.max(1) },
        quick: cli.quick,
        scale: if cli.quick {
            cli.scale * 0.01
        } else {
            cli.scale
        },
        prefetch: cli.prefetch,
        only: cli.only,
    };
    println!("## Benchmark run\n");
    machine::describe();
    println!(
        "- Command: `{}`",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let points = throughput::sweep(&plan).await?;
    if points.iter().any(|p| p.instances == 1) {
        let path = cli.chart.unwrap_or_else(|| {
            if plan.quick {
                std::env::temp_dir().join("conveyor-bench-quick.svg")
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("concurrency.svg")
            }
        });
        let title = match &plan.prefetch {
            Some(prefetch) => {
                format!("events/s against concurrency (runtime CONVEYOR_PREFETCH={prefetch})")
            }
            None => "events/s against concurrency, one instance".to_owned(),
        };
        let title = if cfg!(debug_assertions) {
            format!("{title} (debug build: not a measurement)")
        } else {
            title
        };
        chart::draw(&points, &path, &title)?;
        println!("\nChart: `{}`.", path.display());
    }
    if plan.selects("latency") {
        throughput::latency_and_idle(&plan).await?;
    }
    if plan.selects("fairness") {
        fairness::fairness(&plan).await?;
    }
    if plan.selects("cold start") {
        costs::cold_start(&plan).await?;
    }
    if plan.selects("payload") {
        costs::payload(&plan).await?;
    }
    if plan.selects("many resources") && cli.resources > 0 {
        resources::many_resources(&plan, plan.events(cli.resources)).await?;
    }
    if plan.selects("binary size") {
        binsize::binary_size()?;
    }
    println!(
        "\nBenchmark finished in {:.0} s.",
        begun.elapsed().as_secs_f64()
    );
    Ok(())
}

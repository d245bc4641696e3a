//! What every measurement shares: a fresh nats-server with the Conveyor streams and the
//! driver's consumer, publishing events as the Conveyor server does, starting and stopping the
//! driver processes, and reading their memory.

use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use conveyor_driver_tests::{Conveyor, NatsServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{raw, BoxError, DRIVER};

/// Which driver a process runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Kind {
    Raw,
    Runtime,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Runtime => "runtime",
        }
    }
}

/// How to start one driver process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub kind: Kind,
    pub concurrency: usize,
    /// `CONVEYOR_PREFETCH` for the runtime; `None` leaves it unset, so the runtime's default
    /// applies whatever it is.
    pub prefetch: Option<String>,
    /// Print the runtime's `received` lines on a piped stdout (the fairness scenario).
    pub received_log: bool,
}

impl Launch {
    pub fn new(kind: Kind, concurrency: usize, prefetch: Option<&str>) -> Self {
        Self {
            kind,
            concurrency,
            prefetch: prefetch.map(str::to_owned),
            received_log: false,
        }
    }
}

/// The spec of event `i`, shared with the feeder task.
pub type Specs = Arc<dyn Fn(usize) -> Value + Send + Sync>;

/// A server with the streams and the driver's consumer, and a subscription on the results.
pub struct Setup {
    pub server: NatsServer,
    pub conveyor: Conveyor,
    pub results: async_nats::Subscriber,
}

pub async fn setup() -> Result<Setup, BoxError> {
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
pub const BACKLOG: usize = 1000;

/// Publishes events `range` as DriverMessages (payload as a string), pipelining the PubAcks,
/// and returns their stream sequences.
pub async fn publish_range(
    js: &async_nats::jetstream::Context,
    range: Range<usize>,
    specs: &Specs,
) -> Result<Vec<u64>, BoxError> {
    let mut acks = Vec::new();
    let mut sequences = Vec::new();
    for i in range {
        let (_, body) = message(i, specs(i));
        acks.push(
            js.publish(format!("resources.{DRIVER}"), body.into())
                .await?,
        );
        if acks.len() == 256 {
            for ack in acks.drain(..) {
                sequences.push(ack.await?.sequence);
            }
        }
    }
    for ack in acks {
        sequences.push(ack.await?.sequence);
    }
    Ok(sequences)
}

/// Publishes the first [`BACKLOG`] of `count` events, starts the drivers with `start`, feeds the
/// rest as results come in, and returns the time from the start to the last result (and what
/// `start` returned). `on_result` sees each result's number and body.
pub async fn drive<T>(
    setup: &mut Setup,
    count: usize,
    specs: Specs,
    start: impl FnOnce() -> Result<T, BoxError>,
    mut on_result: impl FnMut(usize, &[u8], &T),
) -> Result<(Duration, T), BoxError> {
    let first = count.min(BACKLOG);
    publish_range(&setup.conveyor.js, 0..first, &specs).await?;
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
                publish_range(&js, next..upto, &specs).await?;
                next = upto;
            }
            Ok::<(), BoxError>(())
        })
    };
    for done in 1..=count {
        match next_result(&mut setup.results).await {
            Some(message) => {
                seen.store(done, Ordering::Relaxed);
                on_result(done, &message.payload, &drivers);
            }
            None => return Err(format!("only {} of {count} results arrived", done - 1).into()),
        }
    }
    let elapsed = started.elapsed();
    feeder.await??;
    Ok((elapsed, drivers))
}

/// The next result, or `None` when none came for a minute.
pub async fn next_result(results: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .ok()
        .flatten()
}

/// Event `i` as a DriverMessage: its run id and body. The resource's id is `r<i>` and its
/// name `app-<i>`, so every event is for a resource of its own.
pub fn message(i: usize, spec: Value) -> (String, Vec<u8>) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let resource = json!({
        "id": format!("r{i}"), "name": format!("app-{i}"), "resource": DRIVER, "pipeline": "bench",
        "metadata": {"owner": "bench"}, "spec": spec,
    });
    let body = json!({"event": "create", "payload": resource.to_string(), "id": format!("m{i}"), "run_id": run_id});
    (run_id, body.to_string().into_bytes())
}

/// Starts a driver process: this binary in `driver` mode.
pub fn spawn_driver(launch: &Launch, url: &str) -> Result<Child, std::io::Error> {
    let exe = std::env::current_exe()?;
    // BENCH_PROFILE_WITH="perf record -e cpu-clock -g -o perf.data" runs the runtime driver
    // under a profiler.
    let wrapper = match launch.kind {
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
        .args(["driver", "--kind", launch.kind.name(), "--nats-url", url])
        .args(["--concurrency", &launch.concurrency.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Explicit for every variant: what the caller's shell exported must not leak in.
    command.env_remove("CONVEYOR_PREFETCH");
    if let Some(prefetch) = &launch.prefetch {
        command.env("CONVEYOR_PREFETCH", prefetch);
    }
    if launch.received_log {
        command.arg("--received-log").stdout(Stdio::piped());
    }
    command.spawn()
}

/// Stops a driver with SIGTERM, as Kubernetes would, and waits for it (killing it after 30 s).
pub fn stop(mut child: Child) -> Result<(), BoxError> {
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
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The CPU time process `pid` has used so far, all its threads, user and system
/// (`/proc/<pid>/stat`); zero if it cannot be read.
pub fn cpu_time(pid: u32) -> Duration {
    // Fields 14 and 15 count clock ticks of USER_HZ, which Linux fixes at 100 per second
    // for what it reports to user space. The command name (field 2) may hold spaces, so
    // fields are counted after its closing parenthesis.
    const TICK: Duration = Duration::from_millis(10);
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u32> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some(fields.iter().sum::<u32>())
        })
        .unwrap_or(0);
    TICK * ticks
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Counts the messages published on `subject` from now on, as the server routes them.
pub async fn count(client: &async_nats::Client, subject: String) -> Result<Counter, BoxError> {
    let mut messages = client.subscribe(subject).await?;
    client.flush().await?;
    let seen = Arc::new(AtomicUsize::new(0));
    let counting = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while messages.next().await.is_some() {
            counting.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(Counter { seen, task })
}

/// Messages seen on a subject; stops counting when dropped.
pub struct Counter {
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// The messages seen so far.
    pub fn total(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! The fairness scenario: two runtime instances at concurrency 4 share events that mix 1 ms
//! and 2 s reconciles (1 in 10 long), once per prefetch setting. Speed bought by hoarding shows
//! here: an event prefetched by a busy instance waits while the other instance sits idle.
//!
//! Each instance reports when it took each event (its `received` lines on stdout, from the
//! runtime's own debug event) and, in the result data, when the reconcile started and ended.
//! From these the benchmark knows, for every event, how long it waited in its instance while
//! the other instance had fewer than 4 reconciles running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{self, Kind, Launch, Specs};
use super::spec::{self, Timing};
use super::stats::Spread;
use super::{BoxError, Plan, DRIVER};

const CONCURRENCY: usize = 4;
const INSTANCES: usize = 2;

/// The prefetch settings compared: the runtime's default (no `CONVEYOR_PREFETCH` at all), none,
/// and a fixed 64.
const VARIANTS: [(&str, Option<&str>); 3] = [
    ("default", None),
    ("prefetch 0", Some("0")),
    ("prefetch 64", Some("64")),
];

/// Where each instance took each event: stream sequence → (pid, unix µs).
type Receipts = Arc<Mutex<HashMap<u64, Vec<(u32, i64)>>>>;

/// One run of one variant.
struct Outcome {
    makespan: Duration,
    /// The longest time one event waited in its instance while the other had a free slot.
    longest_unfair_wait: Duration,
    /// How many events waited more than 100 ms so.
    unfair_events: usize,
}

pub async fn fairness(plan: &Plan) -> Result<(), BoxError> {
    // About 30 s for 8 slots: 1200 events, 120 of them of 2 s.
    let (events, long_ms) = if plan.quick {
        (40, 200)
    } else {
        (1_200, 2_000)
    };
    println!("\n### Fairness: two instances at concurrency {CONCURRENCY}\n");
    println!("{events} events, every 10th a {long_ms} ms reconcile and the rest 1 ms, published at once to two runtime instances that are both pulling. Makespan: from the first publish to the last result. Wait: the time an event spent received by one instance, not started, while the other instance had a free slot. Median of {} run(s) (min–max); the makespan ratio is the median of each run's ratio to prefetch 0.\n", plan.runs);
    let mut outcomes: Vec<Vec<Outcome>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for _ in 0..plan.runs {
        for (variant, outcomes) in VARIANTS.iter().zip(outcomes.iter_mut()) {
            outcomes.push(run(variant.1, events, long_ms).await?);
        }
    }
    println!("| runtime | makespan | makespan / prefetch 0 | longest wait while the other instance had a free slot | events waiting > 100 ms so |");
    println!("|---|---|---|---|---|");
    let baseline = &outcomes[1];
    for ((name, _), outcomes) in VARIANTS.iter().zip(&outcomes) {
        let secs = |o: &Outcome| o.makespan.as_secs_f64();
        let ratios: Vec<f64> = outcomes
            .iter()
            .zip(baseline)
            .map(|(o, b)| secs(o) / secs(b))
            .collect();
        let makespan = Spread::of(&outcomes.iter().map(secs).collect::<Vec<_>>());
        let wait = Spread::of(
            &outcomes
                .iter()
                .map(|o| o.longest_unfair_wait.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        );
        let unfair = Spread::of(
            &outcomes
                .iter()
                .map(|o| o.unfair_events as f64)
                .collect::<Vec<_>>(),
        );
        println!(
            "| {name} | {} s | **{}** | {} ms | {} |",
            makespan.fixed(2),
            Spread::of(&ratios).fixed(3),
            wait.whole(),
            unfair.whole()
        );
    }
    Ok(())
}

async fn run(prefetch: Option<&str>, events: usize, long_ms: u64) -> Result<Outcome, BoxError> {
    let mut setup = harness::setup().await?;
    let launch = Launch {
        received_log: true,
        ..Launch::new(Kind::Runtime, CONCURRENCY, prefetch)
    };
    let receipts = Receipts::default();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..INSTANCES {
        let mut child = harness::spawn_driver(&launch, &setup.server.url())?;
        readers.push(read_receipts(&mut child, Arc::clone(&receipts))?);
        children.push(child);
    }
    wait_until_pulling(&setup.conveyor.js, INSTANCES).await;
    let specs: Specs = Arc::new(move |i| spec::spec(if i % 10 == 0 { long_ms } else { 1 }, 0));
    let published_at = Instant::now();
    let sequences = harness::publish_range(&setup.conveyor.js, 0..events, &specs).await?;
    let mut timings: HashMap<usize, Timing> = HashMap::new();
    while timings.len() < events {
        let Some(message) = harness::next_result(&mut setup.results).await else {
            return Err(format!("only {} of {events} results arrived", timings.len()).into());
        };
        let body: Value = serde_json::from_slice(&message.payload)?;
        let index = body["resource"]["id"]
            .as_str()
            .and_then(|id| id.strip_prefix('r')?.parse().ok())
            .ok_or("a result without its resource id")?;
        let timing: Timing = serde_json::from_value(body["driverresult"]["data"].clone())?;
        timings.insert(index, timing);
    }
    let makespan = published_at.elapsed();
    for child in children {
        harness::stop(child)?;
    }
    for reader in readers {
        let _ = reader.join();
    }
    let receipts = receipts.lock().map_err(|_| "receipts poisoned")?;
    let mut waits = Vec::new();
    for (index, timing) in &timings {
        let received = sequences
            .get(*index)
            .and_then(|sequence| receipts.get(sequence))
            .and_then(|taken| {
                // The last time this instance took it before starting it (a redelivery can
                // have gone to either instance).
                taken
                    .iter()
                    .filter(|(pid, at)| *pid == timing.pid && *at <= timing.started_at)
                    .map(|(_, at)| *at)
                    .max()
            })
            .ok_or_else(|| {
                format!("no `received` line for event {index}: has the runtime's `event received` debug event changed?")
            })?;
        let others: Vec<&Timing> = timings.values().filter(|t| t.pid != timing.pid).collect();
        waits.push(free_time(&others, received, timing.started_at));
    }
    let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
    Ok(Outcome {
        makespan,
        longest_unfair_wait: micros(waits.iter().copied().max().unwrap_or(0)),
        unfair_events: waits.iter().filter(|&&w| w > 100_000).count(),
    })
}

/// Reads a runtime instance's `received <sequence> <unix µs>` lines into `receipts` until it
/// exits.
fn read_receipts(
    child: &mut Child,
    receipts: Receipts,
) -> Result<std::thread::JoinHandle<()>, BoxError> {
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or("the driver's stdout is not piped")?;
    Ok(std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut words = line.split_whitespace();
            if words.next() != Some("received") {
                continue;
            }
            let sequence = words.next().and_then(|w| w.parse().ok());
            let at = words.next().and_then(|w| w.parse().ok());
            if let (Some(sequence), Some(at), Ok(mut receipts)) = (sequence, at, receipts.lock()) {
                receipts.entry(sequence).or_default().push((pid, at));
            }
        }
    }))
}

/// Waits (up to 20 s) until the consumer has at least `instances` pull requests waiting, and a
/// second more, so that no instance gets a head start on the events. The count cannot tell
/// clients apart (one instance may have two requests out); the second covers that, as a
/// runtime instance pulls some 50 ms after its start (see the cold start).
async fn wait_until_pulling(js: &async_nats::jetstream::Context, instances: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let settle = Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(stream) = js.get_stream("messages").await {
            if let Ok(mut consumer) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(DRIVER)
                .await
            {
                if let Ok(info) = consumer.info().await {
                    if info.num_waiting >= instances {
                        tokio::time::sleep(settle).await;
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("fairness: not every instance was pulling after 20 s; going on");
}

/// How long, within `[from, to]` (unix µs), the instance that ran `others` had fewer than
/// [`CONCURRENCY`] reconciles running.
fn free_time(others: &[&Timing], from: i64, to: i64) -> i64 {
    if to <= from {
        return 0;
    }
    // The running count changes only at starts and ends: walk them in time order.
    let mut changes: Vec<(i64, i64)> = Vec::with_capacity(others.len() * 2);
    let mut running = 0i64;
    for t in others {
        if t.started_at <= from && t.finished_at > from {
            running += 1;
        }
        if t.started_at > from && t.started_at < to {
            changes.push((t.started_at, 1));
        }
        if t.finished_at > from && t.finished_at < to {
            changes.push((t.finished_at, -1));
        }
    }
    changes.sort_unstable();
    let (mut free, mut at) = (0, from);
    for (when, change) in changes {
        if running < CONCURRENCY as i64 {
            free += when - at;
        }
        running += change;
        at = when;
    }
    if running < CONCURRENCY as i64 {
        free += to - at;
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(started_at: i64, finished_at: i64) -> Timing {
        Timing {
            pid: 1,
            started_at,
            finished_at,
        }
    }

    #[test]
    fn free_time_counts_only_while_a_slot_is_free() {
        // Four reconciles fill the other instance from 10 to 20 (one of them until 30).
        let full: Vec<Timing> = vec![ran(10, 20), ran(10, 20), ran(10, 20), ran(5, 30)];
        let others: Vec<&Timing> = full.iter().collect();
        // Free from 0 to 10 and from 20 to 40, busy in between.
        assert_eq!(free_time(&others, 0, 40), 10 + 20);
        assert_eq!(free_time(&others, 12, 18), 0);
        assert_eq!(free_time(&others, 18, 18), 0);
        assert_eq!(free_time(&[], 0, 7), 7);
    }
}

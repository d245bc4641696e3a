//! What a benchmark event asks of the driver (its spec) and what the driver reports back (its
//! result data), shared by both drivers and the benchmark so that they cannot drift apart.
//!
//! The work per event travels in the spec, not on the driver's command line, so that one run
//! can mix short and long reconciles (the fairness scenario) exactly as real resources would.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The spec of a benchmark resource.
#[derive(Debug, Default, Deserialize)]
pub struct BenchSpec {
    /// Milliseconds of asynchronous work (a sleep) the reconcile does.
    #[serde(default)]
    pub work_ms: u64,
}

/// A spec asking for `work_ms` of work, padded with `padding` bytes of filler to make the
/// event as large as a payload scenario needs.
pub fn spec(work_ms: u64, padding: usize) -> Value {
    let mut spec = json!({"work_ms": work_ms, "image": "rust:1"});
    if padding > 0 {
        // Plain letters, so that escaping the resource into the payload string adds nothing.
        spec["padding"] = Value::String("x".repeat(padding));
    }
    spec
}

/// The work an event's spec asks for (none when the spec does not say).
pub fn work_ms(spec: &Value) -> u64 {
    BenchSpec::deserialize(spec).map_or(0, |spec| spec.work_ms)
}

/// When a reconcile ran, and in which process: the result data of both drivers. The fairness
/// scenario reads it to see which instance held which event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timing {
    /// The driver process (one per instance).
    pub pid: u32,
    /// Wall-clock microseconds since the Unix epoch at the start of the reconcile.
    pub started_at: i64,
    /// The same at its end, before the result is published.
    pub finished_at: i64,
}

impl Timing {
    /// The timing of a reconcile that started at `started_at` and ends now.
    pub fn since(started_at: i64) -> Value {
        let timing = Timing {
            pid: std::process::id(),
            started_at,
            finished_at: now_micros(),
        };
        serde_json::to_value(timing).unwrap_or(Value::Null)
    }
}

/// Wall-clock microseconds since the Unix epoch: comparable across the processes of one
/// machine, unlike `Instant`.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

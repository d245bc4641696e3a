//! A driver for tests: echoes its resource's spec back as the result data.
//!
//! Name `echo`, resources `["echo-resource"]`. Per event it logs a line naming the resource
//! (`echo: <event> event for <name>`), then, from the spec, in this order:
//!
//! - `log_lines` (a number) logs that many lines as fast as it can, each exactly `log_bytes`
//!   bytes long (a number, default 80): `echo line <i> ` (`i` from 0) padded with `x` (cut
//!   to `log_bytes` when shorter than that prefix);
//! - `sleep_ms` (a number) sleeps that long;
//! - `block_ms` (a number) blocks its thread that long with `std::thread::sleep`, on purpose:
//!   it stands for the blocking calls CI tools make (`Command::output`, sync HTTP clients);
//! - `trace: true` emits a `tracing::info!` event (the tracing bridge makes it a run log line);
//! - `panic: true` panics; `fail: true` fails with a message containing `asked to fail`;
//! - `api_health: true` asks the Conveyor API (`--api-url`) for its health and succeeds with
//!   that answer as `data`;
//! - `data_bytes` (a number) succeeds with `data` a string of that many `x`;
//! - otherwise it succeeds with `data` equal to the spec.
//!
//! `log_lines`, `log_bytes` and `data_bytes` make workloads of a given size (large outputs,
//! floods of log lines) for tests and benchmarks.

use std::time::Duration;

use conveyor_driver::prelude::*;
use serde_json::Value;

#[driver(name = "echo", resources = ["echo-resource"])]
async fn echo(
    event: Event,
    Spec(spec): Spec<Value>,
    log: Logger,
    api: Option<Client>,
) -> Result<Value, String> {
    log.log(format!(
        "echo: {} event for {}",
        event.name, event.resource.name
    ));
    if let Some(lines) = spec.get("log_lines").and_then(Value::as_u64) {
        let bytes = spec.get("log_bytes").and_then(Value::as_u64).unwrap_or(80);
        let bytes = usize::try_from(bytes).map_err(|_| "echo: log_bytes is too large")?;
        for i in 0..lines {
            log.log(line_of(i, bytes));
        }
    }
    if let Some(ms) = spec.get("sleep_ms").and_then(Value::as_u64) {
        log.log(format!("echo: sleeping {ms} ms"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = spec.get("block_ms").and_then(Value::as_u64) {
        log.log(format!("echo: blocking its thread {ms} ms"));
        std::thread::sleep(Duration::from_millis(ms));
    }
    if spec.get("trace").and_then(Value::as_bool) == Some(true) {
        tracing::info!(resource = %event.resource.name, "echo: traced");
        tracing::debug!("echo: too fine to bridge");
    }
    if spec.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("echo asked to panic");
    }
    if spec.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err(format!("echo asked to fail on {}", event.resource.name));
    }
    if spec.get("api_health").and_then(Value::as_bool) == Some(true) {
        let api = api.ok_or("echo: no Conveyor API configured (--api-url)")?;
        let health = api.health().await.map_err(|err| err.to_string())?;
        return Ok(Value::Object(health));
    }
    if let Some(bytes) = spec.get("data_bytes").and_then(Value::as_u64) {
        let bytes = usize::try_from(bytes).map_err(|_| "echo: data_bytes is too large")?;
        return Ok(Value::String("x".repeat(bytes)));
    }
    Ok(spec)
}

/// Log line `i` of a `log_lines` workload: exactly `bytes` bytes, `echo line <i> ` then `x`s.
fn line_of(i: u64, bytes: usize) -> String {
    let mut line = format!("echo line {i} ");
    line.truncate(bytes);
    let pad = bytes - line.len();
    line.extend(std::iter::repeat_n('x', pad));
    line
}

//! A driver for tests: echoes its resource's spec back as the result data.
//!
//! Name `echo`, resources `["echo-resource"]`. Per event it logs a line naming the resource,
//! then, from the spec: `sleep_ms` (a number) sleeps that long; `panic: true` panics;
//! `fail: true` fails with a message containing `asked to fail`; `trace: true` emits a
//! `tracing::info!` event (the tracing bridge makes it a run log line); `api_health: true`
//! asks the Conveyor API (`--api-url`) for its health and succeeds with that answer as `data`;
//! otherwise it succeeds with `data` equal to the spec.

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
    if let Some(ms) = spec.get("sleep_ms").and_then(Value::as_u64) {
        log.log(format!("echo: sleeping {ms} ms"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
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
    Ok(spec)
}

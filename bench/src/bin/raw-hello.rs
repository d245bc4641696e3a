//! The `hello` example written against async-nats alone, for the binary-size comparison: it
//! binds the `hello` consumer for `greeting` resources, logs `hello, <name>!` to the run's log
//! (JetStream and live), publishes the result and acks, until SIGTERM. No configuration beyond
//! the URL, no retries, no ordering: the floor any driver binary starts from. Concurrency 4,
//! the runtime's default.
//!
//! ```text
//! raw-hello nats://127.0.0.1:4222
//! ```

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());
    let consumer = js
        .get_stream("messages")
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some("hello".to_owned()),
            filter_subjects: vec![
                "resources.greeting".to_owned(),
                "drivers.hello.resources.greeting".to_owned(),
            ],
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let work = consumer
        .messages()
        .await?
        .for_each_concurrent(4, |message| {
            let (client, js) = (client.clone(), js.clone());
            async move {
                if let Ok(message) = message {
                    if let Err(err) = greet(&client, &js, message).await {
                        eprintln!("raw-hello: {err}");
                    }
                }
            }
        });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = work => {}
        _ = term.recv() => {}
    }
    client.drain().await?;
    Ok(())
}

async fn greet(
    client: &async_nats::Client,
    js: &jetstream::Context,
    message: jetstream::Message,
) -> Result<(), BoxError> {
    let event: Value = serde_json::from_slice(&message.payload)?;
    let run_id = event["run_id"].as_str().unwrap_or_default().to_owned();
    let resource: Value = match &event["payload"] {
        Value::String(text) => serde_json::from_str(text)?,
        other => other.clone(),
    };
    let name = resource["name"].as_str().unwrap_or_default().to_owned();
    let log = json!({
        "runid": run_id, "driver": "hello", "pipeline": resource["pipeline"],
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "message": format!("hello, {name}!"),
    });
    let log = serde_json::to_vec(&log)?;
    client
        .publish(format!("live.logs.{run_id}.hello"), log.clone().into())
        .await?;
    js.publish(format!("logs.{run_id}"), log.into())
        .await?
        .await?;
    let envelope = json!({
        "event": "driver.result", "run_id": run_id, "resource": resource,
        "driverresult": {"success": true, "message": format!("greeted {name}"), "data": null, "driver": "hello"},
    });
    js.publish(
        "pipelines.driver.result",
        serde_json::to_vec(&envelope)?.into(),
    )
    .await?
    .await?;
    message.ack().await?;
    Ok(())
}

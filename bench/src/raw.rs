//! The baseline: a minimal hand-written async-nats loop doing the same protocol work per event
//! as the runtime, with the same number of events in flight.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

use super::spec::{self, Timing};
use super::{BoxError, DRIVER};

/// Creates (or updates) the durable consumer with the configuration the runtime uses.
pub async fn bind(js: &jetstream::Context) -> Result<consumer::PullConsumer, BoxError> {
    let stream = js.get_stream("messages").await?;
    let config = consumer::pull::Config {
        durable_name: Some(DRIVER.to_owned()),
        description: Some(format!("Conveyor CI driver {DRIVER}")),
        filter_subjects: vec![
            format!("resources.{DRIVER}"),
            format!("drivers.{DRIVER}.resources.{DRIVER}"),
        ],
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 1000,
        ..Default::default()
    };
    Ok(stream.create_consumer(config).await?)
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    run_id: String,
}

/// Consumes until SIGTERM.
pub async fn run(url: &str, concurrency: usize) -> Result<(), BoxError> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());
    let consumer = bind(&js).await?;
    // async-nats' default pull stream (it prefetches a batch of messages).
    let messages = consumer.messages().await?;
    let work = messages.for_each_concurrent(concurrency, |message| {
        let (client, js) = (client.clone(), js.clone());
        async move {
            if let Ok(message) = message {
                if let Err(err) = handle(&client, &js, message).await {
                    eprintln!("raw: {err}");
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

async fn handle(
    client: &async_nats::Client,
    js: &jetstream::Context,
    message: jetstream::Message,
) -> Result<(), BoxError> {
    let started_at = spec::now_micros();
    let parsed: Message = serde_json::from_slice(&message.payload)?;
    let resource_json: String = serde_json::from_str(parsed.payload.get())?;
    let resource: Value = serde_json::from_str(&resource_json)?;
    let log = json!({
        "runid": parsed.run_id, "driver": DRIVER, "pipeline": resource["pipeline"],
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "message": format!("working on {}", resource["name"]),
    });
    let log = Bytes::from(serde_json::to_vec(&log)?);
    client
        .publish(format!("live.logs.{}.{DRIVER}", parsed.run_id), log.clone())
        .await?;
    let _stored = js.publish(format!("logs.{}", parsed.run_id), log).await?;
    let work_ms = spec::work_ms(&resource["spec"]);
    if work_ms > 0 {
        tokio::time::sleep(Duration::from_millis(work_ms)).await;
    }
    let envelope = json!({
        "event": "driver.result", "run_id": parsed.run_id, "resource": resource,
        "driverresult": {"success": true, "message": "done", "data": Timing::since(started_at), "driver": DRIVER},
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

//! Plays the Conveyor server for a demo: publishes one resource event exactly as the server
//! does, then prints the run's live log lines and its result envelope as they arrive.
//!
//! ```text
//! publish --nats-url nats://127.0.0.1:4222 --driver shell --resource-type script \
//!         --name hello --spec '{"script": "echo hi"}'
//! ```
//!
//! It waits for the driver's consumer first: the `messages` stream keeps an event only while
//! some consumer is interested in it. Exit code 0 when the run succeeded, 1 when it failed, 2
//! on any other problem (no consumer, no result in time, bad arguments).

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Publish a resource event like the Conveyor server and follow its run")]
struct Args {
    /// NATS server URL
    #[arg(
        long,
        env = "CONVEYOR_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// The driver whose consumer must exist before publishing
    #[arg(long)]
    driver: String,
    /// Resource type (the event goes to `resources.<type>`)
    #[arg(long)]
    resource_type: String,
    /// Resource name
    #[arg(long, default_value = "demo")]
    name: String,
    /// Event name
    #[arg(long, default_value = "create")]
    event: String,
    /// Resource spec, as JSON
    #[arg(long, default_value = "{}")]
    spec: String,
    /// How long to wait for the consumer, then for the result, in seconds
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("publish: error: {err}");
            ExitCode::from(2)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args) -> Result<bool, BoxError> {
    let spec: Value =
        serde_json::from_str(&args.spec).map_err(|err| format!("--spec is not JSON: {err}"))?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let client = async_nats::connect(&args.nats_url).await?;
    let js = jetstream::new(client.clone());

    println!(
        "publish: waiting for the consumer of driver `{}`…",
        args.driver
    );
    tokio::time::timeout(timeout, wait_for_consumer(&js, &args.driver))
        .await
        .map_err(|_| format!("driver `{}` has no consumer after {timeout:?}", args.driver))?;

    let run_id = uuid::Uuid::new_v4().to_string();
    let mut logs = client.subscribe(format!("live.logs.{run_id}.>")).await?;
    let mut results = client.subscribe("pipelines.driver.result").await?;
    client.flush().await?;

    let resource = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": args.name,
        "resource": args.resource_type,
        "metadata": {},
        "spec": spec,
    });
    // Like the Go server: the payload is a string holding the resource JSON.
    let message = json!({
        "event": args.event,
        "payload": resource.to_string(),
        "id": uuid::Uuid::new_v4().to_string(),
        "run_id": run_id,
    });
    let subject = format!("resources.{}", args.resource_type);
    js.publish(subject.clone(), message.to_string().into())
        .await?
        .await?;
    println!(
        "publish: sent `{}` of {}/{} to {subject} (run {run_id})",
        args.event, args.resource_type, args.name
    );

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(line) = logs.next() => print_log(&line),
            Some(result) = results.next() => {
                let envelope: Value = serde_json::from_slice(&result.payload)?;
                if envelope["run_id"] != json!(run_id) {
                    continue;
                }
                // Lines published just before the result may still be on their way.
                while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(200), logs.next()).await {
                    print_log(&line);
                }
                println!("result on pipelines.driver.result:\n{}", serde_json::to_string_pretty(&envelope)?);
                return Ok(envelope["driverresult"]["success"] == json!(true));
            }
            _ = &mut deadline => return Err(format!("no result for run {run_id} after {timeout:?}").into()),
        }
    }
}

async fn wait_for_consumer(js: &jetstream::Context, driver: &str) {
    loop {
        if let Ok(stream) = js.get_stream("messages").await {
            if stream.consumer_info(driver).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints a live log line with its labels (the `Conveyor-Label-<key>` headers).
fn print_log(message: &async_nats::Message) {
    let labels: Vec<String> = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .filter_map(|(key, values)| {
            let key = key.to_string();
            let label = key.strip_prefix("Conveyor-Label-")?.to_owned();
            let value = values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",");
            Some(format!("{label}={value}"))
        })
        .collect();
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", labels.join(" "))
    };
    match serde_json::from_slice::<Value>(&message.payload) {
        Ok(line) => println!(
            "log  {} [{}] {}{labels}",
            line["timestamp"].as_str().unwrap_or("?"),
            line["driver"].as_str().unwrap_or("?"),
            line["message"].as_str().unwrap_or("")
        ),
        Err(_) => println!("log  {}", String::from_utf8_lossy(&message.payload)),
    }
}

//! The driver under test: a `#[driver]` function run by conveyor-driver's Driver Manager.

use std::fmt;
use std::time::Duration;

use conveyor_driver::prelude::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::spec::{self, Timing};
use super::BoxError;

#[driver(name = "bench", resources = ["bench"], main = false)]
async fn bench(event: Event, log: Logger) -> DriverResult {
    let started_at = spec::now_micros();
    log.log(format!("working on {}", event.resource.name));
    let work = spec::work_ms(&event.resource.spec);
    if work > 0 {
        tokio::time::sleep(Duration::from_millis(work)).await;
    }
    DriverResult::success("done").with_data(Timing::since(started_at))
}

/// Runs the driver until SIGTERM. With `received_log`, prints `received <stream sequence>
/// <unix µs>` on stdout for every event the instance takes from the consumer.
pub async fn run(url: &str, concurrency: usize, received_log: bool) -> Result<(), BoxError> {
    if received_log {
        let only_debug = tracing_subscriber::filter::Targets::new()
            .with_target("conveyor_driver", tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(ReceivedLog.with_filter(only_debug))
            .try_init()?;
    }
    // From the environment for the prefetch; the rest is set here.
    let config = Config::from_env()?.nats_url(url).concurrency(concurrency);
    DriverManager::new(BenchDriver, config)?.run().await?;
    Ok(())
}

/// Turns the runtime's `event received` debug event into a line on stdout. The reconcile only
/// sees an event once it starts; the fairness scenario also needs when the instance took it,
/// which is when a prefetched event starts waiting there.
struct ReceivedLog;

impl<S: tracing::Subscriber> Layer<S> for ReceivedLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Received::default();
        event.record(&mut fields);
        if let (true, Some(sequence)) = (fields.is_received, fields.sequence) {
            println!("received {sequence} {}", spec::now_micros());
        }
    }
}

/// The fields of interest of a runtime debug event.
#[derive(Default)]
struct Received {
    is_received: bool,
    sequence: Option<u64>,
}

impl Visit for Received {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "sequence" {
            self.sequence = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.is_received = format!("{value:?}") == "event received";
        }
    }
}

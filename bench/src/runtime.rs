//! The driver under test: a `#[driver]` function run by conveyor-driver's Driver Manager.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conveyor_driver::prelude::*;

use super::BoxError;

/// Milliseconds of asynchronous work per event.
static WORK_MS: AtomicU64 = AtomicU64::new(0);

#[driver(name = "bench", resources = ["bench"], main = false)]
async fn bench(event: Event, log: Logger) -> DriverResult {
    log.log(format!("working on {}", event.resource.name));
    let work = WORK_MS.load(Ordering::Relaxed);
    if work > 0 {
        tokio::time::sleep(Duration::from_millis(work)).await;
    }
    DriverResult::success("done")
}

/// Runs the driver until SIGTERM.
pub async fn run(url: &str, concurrency: usize, work_ms: u64) -> Result<(), BoxError> {
    WORK_MS.store(work_ms, Ordering::Relaxed);
    // From the environment for the prefetch; the rest is set here.
    let config = Config::from_env()?.nats_url(url).concurrency(concurrency);
    DriverManager::new(BenchDriver, config)?.run().await?;
    Ok(())
}

//! Many resources: every event is for a resource of its own, so the per-resource ordering sees
//! each name once. The runtime must forget a resource once its last event ends; if it did not,
//! its memory would grow with every name ever seen. RSS sampled during the run shows which.

use std::process::Child;
use std::sync::Arc;

use super::harness::{self, mib, proc_kib, Kind, Launch, Specs};
use super::stats::thousands;
use super::{spec, BoxError, Plan};

/// Prints, for both drivers at concurrency 64, the RSS after 10 %, 50 % and 100 % of `count`
/// no-op events for distinct resources.
pub async fn many_resources(plan: &Plan, count: usize) -> Result<(), BoxError> {
    println!("\n### Many resources\n");
    println!("{} no-op events at concurrency 64, each for a resource of its own (`app-0`, `app-1`, …), so each passes the per-resource ordering once. RSS of the driver process when that share of the results has arrived.\n", thousands(count as f64));
    println!("| driver | events/s | RSS at 10 % | at 50 % | at 100 % |");
    println!("|---|---|---|---|---|");
    for kind in [Kind::Raw, Kind::Runtime] {
        let launch = Launch::new(kind, 64, plan.prefetch.as_deref());
        let (rate, samples) = sample_rss(&launch, count).await?;
        let at = |share: usize| {
            samples
                .iter()
                .find(|(done, _)| *done >= count * share / 100)
                .map_or("—".to_owned(), |(_, kib)| format!("{} MiB", mib(*kib)))
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            kind.name(),
            thousands(rate),
            at(10),
            at(50),
            at(100)
        );
    }
    Ok(())
}

/// Runs `count` events through one driver, sampling its RSS at every tenth of the run; returns
/// the rate and the samples (results so far, KiB).
async fn sample_rss(launch: &Launch, count: usize) -> Result<(f64, Vec<(usize, u64)>), BoxError> {
    let mut setup = harness::setup().await?;
    let url = setup.server.url();
    let mut samples = Vec::new();
    let start = || harness::spawn_driver(launch, &url).map_err(BoxError::from);
    let tenth = (count / 10).max(1);
    let sample = |done: usize, _: &[u8], child: &Child| {
        if done.is_multiple_of(tenth) || done == count {
            samples.push((done, proc_kib(child.id(), "VmRSS:")));
        }
    };
    let specs: Specs = Arc::new(|_| spec::spec(0, 0));
    let (elapsed, child) = harness::drive(&mut setup, count, specs, start, sample).await?;
    harness::stop(child)?;
    Ok((count as f64 / elapsed.as_secs_f64(), samples))
}

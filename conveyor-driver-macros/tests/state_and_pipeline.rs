//! What `State<T>` and `PipelineContext` parameters get, through the test kit (no NATS).

use std::sync::atomic::{AtomicU64, Ordering};

use conveyor_driver::prelude::*;
use conveyor_driver::testing::{EventBuilder, Harness};
use serde_json::json;

/// Counts the reconciles that used it.
#[derive(Debug, Default)]
struct Counter {
    reconciles: AtomicU64,
}

async fn open_counter(_: &Config) -> Result<Counter, std::io::Error> {
    Ok(Counter::default())
}

#[driver(name = "counting", resources = ["job"], state = open_counter, main = false)]
async fn counting(counter: State<Counter>, log: Logger) -> Result<u64, ReconcileError> {
    let seen = counter.reconciles.fetch_add(1, Ordering::SeqCst) + 1;
    log.log(format!("reconcile number {seen}"));
    Ok(seen)
}

#[test]
fn every_reconcile_shares_the_one_state() {
    let harness = Harness::new(CountingDriver).state(Counter::default());
    for expected in 1..=3 {
        let run = harness.run_blocking(EventBuilder::new("job"));
        run.assert_success()
            .assert_logged(&format!("reconcile number {expected}"));
        assert_eq!(run.result().unwrap().data, json!(expected));
    }
}

#[test]
fn a_driver_without_its_state_fails_its_runs_saying_how_to_give_it() {
    let run = Harness::new(CountingDriver).run_blocking(EventBuilder::new("job"));
    run.assert_failure_contains(
        "the driver takes `State<Counter>`, but it has no state: its `state` hook did not run (in a test, give it with `Harness::state`)",
    );
    // The reason is in the run's log too.
    run.assert_logged("State<Counter>");
    // A state of another type is named.
    Harness::new(CountingDriver)
        .state(7_u32)
        .run_blocking(EventBuilder::new("job"))
        .assert_failure_contains("but its state is a `u32`");
}

#[test]
fn the_hook_is_what_the_runtime_runs() {
    use conveyor_driver::Driver;
    let hook = CountingDriver.state_hook().expect("a state hook");
    assert_eq!(hook.name(), "open_counter");
    assert_eq!(hook.state_type(), "Counter");
}

#[derive(serde::Deserialize)]
struct Checkout {
    path: String,
}

#[driver(name = "builder", resources = ["app"], main = false)]
async fn build(pipeline: PipelineContext, log: Logger) -> Result<String, ReconcileError> {
    let name = pipeline.name().unwrap_or("none");
    if !pipeline.is_later_step() {
        log.log(format!("first step of {name}"));
        return Ok("nothing to build yet".into());
    }
    let checkout: Checkout = pipeline.result_of("fetch")?;
    log.log(format!("building {} in {name}", checkout.path));
    Ok(checkout.path)
}

#[test]
fn a_later_step_reads_the_result_of_an_earlier_one() {
    let fetched = DriverResult::success("fetched").with_data(json!({"path": "/work/app"}));
    let run = Harness::new(BuilderDriver).run_blocking(
        EventBuilder::new("app")
            .pipeline("ci")
            .event("process")
            .earlier_result("fetch", fetched),
    );
    run.assert_success()
        .assert_logged("building /work/app in ci");
    assert_eq!(run.result().unwrap().data, "/work/app");

    let first = Harness::new(BuilderDriver).run_blocking(EventBuilder::new("app"));
    first.assert_success().assert_logged("first step of none");
}

#[test]
fn a_missing_or_wrong_earlier_result_fails_naming_the_key_and_the_type() {
    let run = Harness::new(BuilderDriver)
        .run_blocking(EventBuilder::new("app").event("process").pipeline("ci"));
    run.assert_failure_contains(
        "no result of an earlier step under metadata `driverresults.fetch`",
    );
    let wrong = DriverResult::success("fetched").with_data(json!({"path": 7}));
    Harness::new(BuilderDriver)
        .run_blocking(
            EventBuilder::new("app")
                .event("process")
                .earlier_result("fetch", wrong),
        )
        .assert_failure_contains(
            "the result under metadata `driverresults.fetch` is not a valid `Checkout`: invalid data.path",
        );
}

/// An error that is only `Display`, as `anyhow::Error` is: a failed result showing it.
#[derive(Debug)]
struct Plain(&'static str);

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

type Outcome<T> = Result<T, Plain>;

#[driver(name = "aliased", resources = ["app"], main = false)]
async fn aliased(Spec(fail): Spec<bool>) -> Outcome<u8> {
    if fail {
        Err(Plain("it did not work"))
    } else {
        Ok(4)
    }
}

#[test]
fn return_types_through_an_alias_convert_like_spelt_out_ones() {
    let harness = Harness::new(AliasedDriver);
    harness
        .run_blocking(EventBuilder::new("app").spec(true))
        .assert_failure_contains("it did not work");
    let run = harness.run_blocking(EventBuilder::new("app").spec(false));
    assert_eq!(run.assert_success().result().unwrap().data, json!(4));
}

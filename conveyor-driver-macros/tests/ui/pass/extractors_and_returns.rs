//! Every parameter kind, in any order, and every supported return type.
use conveyor_driver::prelude::*;
use conveyor_driver::{Driver, FromEvent};

#[derive(serde::Deserialize)]
struct BuildSpec {
    image: String,
}

#[derive(serde::Serialize)]
struct BuildOutput {
    image: String,
}

#[derive(Debug)]
struct BuildError;
impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build failed")
    }
}
impl std::error::Error for BuildError {}

#[driver(name = "builder", resources = ["build", "release"], events = ["create", "update"], main = false)]
async fn reconcile(log: Logger, event: Event, Spec(spec): Spec<BuildSpec>, run: RunId, resource: Resource) -> Result<BuildOutput, BuildError> {
    log.log(format!("{} {} {} {}", event.name, run, resource.name, spec.image));
    Ok(BuildOutput { image: spec.image })
}

#[driver(name = "none", resources = ["r"], main = false)]
async fn no_params() {}

#[driver(name = "plain", resources = ["r"], main = false, driver = Plain)]
async fn plain() -> DriverResult {
    DriverResult::success("ok")
}

#[driver(name = "retrying", resources = ["r"], main = false)]
async fn retrying() -> Result<(), ReconcileError> {
    Err(ReconcileError::transient("later"))
}

#[driver(name = "custom", resources = ["r"], main = false)]
async fn custom() -> Result<DriverResult, std::io::Error> {
    Ok(DriverResult::failure("no"))
}

#[driver(name = "display", resources = ["r"], main = false)]
async fn display() -> Result<u32, String> {
    Err("nope".to_owned())
}

#[driver(name = "boxed", resources = ["r"], main = false)]
pub(crate) async fn boxed(_: Event) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(vec![])
}

fn assert_driver<D: Driver>(_: D) {}

fn main() {
    assert_eq!(BuilderDriver::NAME, "builder");
    assert_eq!(BuilderDriver::RESOURCES, &["build", "release"]);
    assert_eq!(BuilderDriver::EVENTS, Some(&["create", "update"][..]));
    assert_eq!(
        BuilderDriver::FILTER_SUBJECTS,
        &[
            "resources.build",
            "drivers.builder.resources.build",
            "resources.release",
            "drivers.builder.resources.release",
        ]
    );
    assert_eq!(NoneDriver::EVENTS, None);
    assert_eq!(BuilderDriver.events(), Some(vec!["create".to_owned(), "update".to_owned()]));
    assert_driver(BuilderDriver);
    assert_driver(NoneDriver);
    assert_driver(Plain);
    assert_driver(RetryingDriver);
    assert_driver(CustomDriver);
    assert_driver(DisplayDriver);
    assert_driver(BoxedDriver);
    // The function stays callable.
    let _future = no_params();
    let _ = <RunId as FromEvent>::from_event;
}

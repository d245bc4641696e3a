use conveyor_driver::prelude::*;

#[driver(name = "builder", crate = "conveyor_driver", resources = ["build"], crate = "cd")]
async fn reconcile(_: Event) {}

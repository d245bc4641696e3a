use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build", "release", "build"])]
async fn reconcile(_: Event) {}

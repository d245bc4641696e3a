use conveyor_driver::prelude::*;

#[driver(name = "builder", resource = ["build"])]
async fn reconcile(_: Event) {}

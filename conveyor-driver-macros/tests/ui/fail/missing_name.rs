use conveyor_driver::prelude::*;

#[driver(resources = ["build"])]
async fn reconcile(_: Event) {}

use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], concurrency = 4)]
async fn reconcile(_: Event) {}

use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], name = "other")]
async fn reconcile(_: Event) {}

use conveyor_driver::prelude::*;

#[driver(name = "my.builder", resources = ["build"])]
async fn reconcile(_: Event) {}

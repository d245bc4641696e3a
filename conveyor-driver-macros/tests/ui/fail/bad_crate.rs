use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], crate = "not a path!")]
async fn reconcile(_: Event) {}

#[driver(name = "other", resources = ["build"], main = false, crate = 5)]
async fn other(_: Event) {}

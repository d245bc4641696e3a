use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"])]
fn reconcile(_: Event) {}

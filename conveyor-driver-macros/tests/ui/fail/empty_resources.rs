use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = [])]
async fn reconcile(_: Event) {}

use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = "build")]
async fn reconcile(_: Event) {}

use conveyor_driver::prelude::*;

#[driver(name = "builder")]
async fn reconcile(_: Event) {}

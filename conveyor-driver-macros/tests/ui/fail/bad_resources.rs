use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["", "my build", "build.*", "logs>"])]
async fn reconcile(_: Event) {}

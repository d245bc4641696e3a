use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], main = false, crate = "crate::sdk")]
async fn reconcile(_: Event) {}

fn main() {}

use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], state = "connect")]
async fn build() {}

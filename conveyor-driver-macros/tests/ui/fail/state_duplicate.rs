use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"], state = connect, state = open)]
async fn build() {}

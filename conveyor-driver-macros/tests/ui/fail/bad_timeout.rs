use conveyor_driver::prelude::*;

#[driver(name = "slow", resources = ["job"], timeout = "30 minuets", main = false)]
async fn slow() {}

#[driver(name = "never", resources = ["job"], timeout = "0s", main = false)]
async fn never() {}

fn main() {}

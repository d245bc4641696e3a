use conveyor_driver::prelude::*;

#[driver(name = "slow", resources = ["job"], main = false, timeout = "30 minuets")]
async fn slow() {}

#[driver(name = "never", resources = ["job"], main = false, timeout = "0s")]
async fn never() {}

fn main() {}

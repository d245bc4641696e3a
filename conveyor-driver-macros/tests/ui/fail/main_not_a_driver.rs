use conveyor_driver::prelude::*;

#[driver(name = "build", resources = ["app"], main = false)]
async fn build() {}

struct Helper;

conveyor_driver::main!(BuildDriver, Helper);

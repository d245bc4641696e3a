//! The smallest useful driver: greets every `greeting` resource in its run log.
//!
//! ```text
//! cargo run -p conveyor-driver-examples --bin hello -- --nats-url nats://127.0.0.1:4222
//! ```

use conveyor_driver::prelude::*;

#[driver(name = "hello", resources = ["greeting"])]
async fn greet(resource: Resource, log: Logger) -> DriverResult {
    log.log(format!("hello, {}!", resource.name));
    DriverResult::success(format!("greeted {}", resource.name))
}

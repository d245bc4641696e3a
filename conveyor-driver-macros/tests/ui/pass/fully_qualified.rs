//! The expansion uses fully qualified paths: no imports needed.
#[conveyor_driver::driver(name = "hello", resources = ["greeting"], main = false)]
async fn greet(resource: conveyor_driver::Resource) -> conveyor_driver::DriverResult {
    conveyor_driver::DriverResult::success(resource.name)
}

fn main() {
    let _ = <HelloDriver as conveyor_driver::Driver>::name(&HelloDriver);
}

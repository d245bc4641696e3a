//! Both halves of a `Result` are checked, also when the return type is an alias.
use conveyor_driver::prelude::*;

struct Output;
struct NotDisplay;

type Outcome<T> = Result<T, NotDisplay>;

#[driver(name = "builder", resources = ["build"])]
async fn build() -> std::io::Result<Output> {
    Ok(Output)
}

#[driver(name = "tester", resources = ["build"], main = false)]
async fn test() -> Outcome<()> {
    Ok(())
}

#[driver(name = "both", resources = ["build"], main = false)]
async fn both() -> Result<Output, NotDisplay> {
    Ok(Output)
}

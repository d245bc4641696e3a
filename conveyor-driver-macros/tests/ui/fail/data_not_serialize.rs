use conveyor_driver::prelude::*;

struct Output;

#[driver(name = "builder", resources = ["build"])]
async fn reconcile(_: Event) -> Result<Output, std::io::Error> {
    Ok(Output)
}

use conveyor_driver::prelude::*;

struct NotDisplay;

#[driver(name = "builder", resources = ["build"])]
async fn reconcile(_: Event) -> Result<(), NotDisplay> {
    Err(NotDisplay)
}

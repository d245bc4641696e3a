use conveyor_driver::prelude::*;

struct Registry;

#[driver(name = "pusher", resources = ["image"])]
async fn push(_registry: State<Registry>) {}

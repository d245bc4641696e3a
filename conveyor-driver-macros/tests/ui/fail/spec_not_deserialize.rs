use conveyor_driver::prelude::*;

struct BuildSpec;

#[driver(name = "builder", resources = ["build"])]
async fn build(_spec: Spec<BuildSpec>) {}

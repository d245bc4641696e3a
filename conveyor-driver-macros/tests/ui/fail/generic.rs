use conveyor_driver::prelude::*;

#[driver(name = "builder", resources = ["build"])]
async fn reconcile<T: serde::de::DeserializeOwned>(_: Spec<T>) {}

//! Two drivers in one binary, sharing the state type of one hook. (`main!` goes in a module
//! here: the test runs the program, and the real `main` would wait for NATS.)
use conveyor_driver::prelude::*;

struct Store;

async fn open(_: &Config) -> Result<Store, String> {
    Ok(Store)
}

#[driver(name = "build", resources = ["app"], state = open, main = false)]
async fn build(_store: State<Store>) {}

#[driver(name = "test", resources = ["app"], state = open, main = false)]
async fn test(_store: State<Store>, _pipeline: PipelineContext) {}

mod program {
    use super::{BuildDriver, TestDriver};
    conveyor_driver::main!(BuildDriver, TestDriver,);

    pub(crate) fn entry() -> fn() -> std::process::ExitCode {
        main
    }
}

fn main() {
    let _ = program::entry();
}

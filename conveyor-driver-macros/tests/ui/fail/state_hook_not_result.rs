use conveyor_driver::prelude::*;

struct Pool;

async fn connect(_: &Config) -> Pool {
    Pool
}

#[driver(name = "builder", resources = ["build"], state = connect)]
async fn build(_pool: State<Pool>) {}

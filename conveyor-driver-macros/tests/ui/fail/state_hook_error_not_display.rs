use conveyor_driver::prelude::*;

struct Pool;
struct Refused;

async fn connect(_: &Config) -> Result<Pool, Refused> {
    Ok(Pool)
}

#[driver(name = "builder", resources = ["build"], state = connect)]
async fn build(_pool: State<Pool>) {}

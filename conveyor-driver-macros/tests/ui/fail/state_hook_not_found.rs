use conveyor_driver::prelude::*;

struct Pool;

#[driver(name = "builder", resources = ["build"], state = conect)]
async fn build(_pool: State<Pool>) {}

async fn connect(_: &Config) -> Result<Pool, String> {
    Ok(Pool)
}

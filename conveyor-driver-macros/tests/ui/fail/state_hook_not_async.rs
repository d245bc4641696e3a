use conveyor_driver::prelude::*;

struct Pool;

fn connect(_: &Config) -> Result<Pool, std::io::Error> {
    Ok(Pool)
}

#[driver(name = "builder", resources = ["build"], state = connect)]
async fn build(_pool: State<Pool>) {}

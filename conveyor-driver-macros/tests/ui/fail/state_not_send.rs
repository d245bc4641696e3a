//! The state is shared by reconciles on every thread: `Rc` cannot be.
use conveyor_driver::prelude::*;
use std::rc::Rc;

async fn connect(_: &Config) -> Result<Rc<u8>, std::io::Error> {
    Ok(Rc::new(1))
}

#[driver(name = "builder", resources = ["build"], state = connect)]
async fn build(_counter: State<Rc<u8>>) {}

//! A shared state from a start-up hook (as a path, through a module), the pipeline context, and
//! return types spelt through aliases.
use conveyor_driver::prelude::*;

mod hooks {
    pub struct Store {
        pub root: String,
    }

    pub async fn open(_config: &conveyor_driver::Config) -> Result<Store, std::io::Error> {
        Ok(Store { root: std::env::temp_dir().display().to_string() })
    }
}

#[derive(serde::Deserialize)]
struct Checkout {
    path: String,
}

#[driver(name = "builder", resources = ["app"], state = hooks::open, main = false)]
async fn build(
    store: State<hooks::Store>,
    pipeline: PipelineContext,
    again: conveyor_driver::State<hooks::Store>,
) -> std::io::Result<String> {
    let checkout: Checkout = pipeline.result_of("fetch").map_err(std::io::Error::other)?;
    Ok(format!("{} {} {}", store.root, again.root, checkout.path))
}

/// A hook whose state no parameter takes still runs.
async fn warm_up(_: &Config) -> Result<(), String> {
    Ok(())
}

#[driver(name = "warm", resources = ["app"], state = warm_up, main = false)]
async fn warm() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

fn main() {
    use conveyor_driver::Driver;
    let hook = BuilderDriver.state_hook().unwrap();
    assert_eq!(hook.name(), "hooks::open");
    assert_eq!(hook.state_type(), "Store");
    assert_eq!(WarmDriver.state_hook().unwrap().state_type(), "()");
}

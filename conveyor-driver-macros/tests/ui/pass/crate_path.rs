//! `crate = "…"`: conveyor-driver reached through another path, as with a renamed dependency
//! (`cd = { package = "conveyor-driver", … }`) or a re-export from another crate.
mod sdk {
    pub use ::conveyor_driver as cd;
}

use sdk::cd::prelude::*;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct BuildSpec {
    image: String,
}

#[driver(name = "renamed", resources = ["build"], main = false, crate = "crate::sdk::cd")]
async fn reconcile(Spec(spec): Spec<BuildSpec>, log: Logger) -> Result<String, std::io::Error> {
    log.log(&spec.image);
    Ok(spec.image)
}

mod nested {
    #[crate::sdk::cd::driver(name = "nested", resources = ["build"], main = false, crate = "super::sdk::cd")]
    pub async fn reconcile() {}
}

fn main() {
    use sdk::cd::Driver;
    assert_eq!(RenamedDriver.name(), "renamed");
    assert!(RenamedDriver.spec_schema().is_some());
    assert_eq!(nested::NestedDriver.name(), "nested");
}

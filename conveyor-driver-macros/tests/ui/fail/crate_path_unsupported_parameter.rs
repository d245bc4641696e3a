//! With `crate = "…"`, a mistake in the function is still reported on it; the generated `main`
//! resolves through the path too (an unresolved one would be reported first).
mod sdk {
    pub use ::conveyor_driver as cd;
}
use sdk::cd::prelude::*;

#[driver(name = "builder", resources = ["build"], crate = "crate::sdk::cd")]
async fn reconcile(_: Event, _name: String) {}

use conveyor_driver::prelude::*;

struct Builder;

impl Builder {
    #[driver(name = "builder", resources = ["build"], main = false)]
    async fn reconcile(&self, _: Event) {}
}

fn main() {}

//! # conveyor-driver
//!
//! The runtime for [Conveyor CI](https://conveyor.open.ug) drivers written in Rust.
//!
//! A driver reacts to resource events that the Conveyor server publishes on NATS JetStream:
//! it does the work (build, deploy, test…), streams log lines back and reports a result that
//! moves the pipeline on. This crate speaks that protocol so a driver only implements
//! [`Driver::reconcile`]:
//!
//! - the [`DriverManager`] binds the driver's durable pull consumer, reconciles events
//!   concurrently (one at a time per resource), keeps long reconciles alive with in-progress
//!   acknowledgements, publishes each result and only then acknowledges the event, retries
//!   transient failures with a backoff that survives restarts, terminates poison messages and
//!   shuts down gracefully;
//! - the [`Logger`] publishes a run's log lines, all before the run's result;
//! - [`wire`] holds the message types, exactly as the protocol's JSON schemas define them.
//!
//! ```no_run
//! use conveyor_driver::prelude::*;
//!
//! struct Hello;
//!
//! impl Driver for Hello {
//!     fn name(&self) -> String { "hello".into() }
//!     fn resources(&self) -> Vec<String> { vec!["greeting".into()] }
//!
//!     async fn reconcile(&self, event: Event, log: Logger) -> ReconcileResult {
//!         log.log(format!("hello, {}", event.resource.name));
//!         Ok(DriverResult::success("greeted"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     DriverManager::new(Hello, Config::from_env()?)?.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Tracing with OpenTelemetry
//!
//! With the `otel` feature, a binary whose `main` is [`cli::run`] (what `#[driver]` generates)
//! exports one `reconcile` span per event over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with the messaging semantic-convention attributes
//! (`messaging.system = nats`, `messaging.destination.name`, `messaging.message.id`) and the run's
//! driver, run id, resource and outcome. A W3C `traceparent`/`tracestate` in the event's NATS
//! headers makes the span its child (a new root otherwise), and the span's own goes out in the
//! headers of the run's log lines, its result and the API requests made during it. The standard
//! `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, defaulting to the driver's name,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`...); `OTEL_SDK_DISABLED=true`
//! turns it off. The last spans are exported when the binary exits.

#![warn(missing_docs)]
// docs.rs builds with `--cfg docsrs` on nightly (Cargo.toml's `package.metadata.docs.rs`):
// every item behind a feature then shows which one, so that readers of the all-features
// documentation know what to enable.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The crate README's (what crates.io shows), compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;

pub mod bridge;
pub mod cli;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod config;
mod context;
mod driver;
mod error;
mod extract;
mod logger;
mod manager;
pub mod metrics;
mod nats_auth;
mod otel;
mod pipeline;
mod settings;
pub mod signature;
mod sizing;
mod state;
pub mod testing;
pub mod wire;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use client::{Client, ClientError};
pub use config::{Config, Prefetch};
pub use context::{PipelineContext, StepError};
pub use conveyor_driver_macros::driver;
pub use driver::{Driver, Event, ReconcileError, ReconcileResult, ResultExt};
pub use error::{Error, NatsError};
pub use extract::{ExtractError, FromEvent, IntoReconcileResult, RunId, Spec};
pub use logger::Logger;
pub use manager::{DriverManager, DriverSet, ShutdownHandle};
pub use settings::ConfigError;
pub use state::{StartError, State, StateHook};
pub use wire::{DriverResult, Resource};

/// A `main` running several drivers in one binary, over one NATS connection (see
/// [`DriverSet`]): each `#[driver]` needs `main = false`.
///
/// ```no_run
/// use conveyor_driver::prelude::*;
///
/// #[driver(name = "build", resources = ["app"], main = false)]
/// async fn build(log: Logger) { log.log("building"); }
///
/// #[driver(name = "test", resources = ["app"], main = false)]
/// async fn test(log: Logger) { log.log("testing"); }
///
/// conveyor_driver::main!(BuildDriver, TestDriver);
/// ```
///
/// The binary has the commands and flags of a single driver's (see [`cli`]); `describe`
/// describes every driver, `register` registers every consumer, and `invoke` takes `--driver
/// NAME`.
#[macro_export]
macro_rules! main {
    () => {
        ::core::compile_error!(
            "`main!` takes the drivers to run, e.g. `conveyor_driver::main!(BuildDriver, TestDriver)`"
        );
        fn main() {}
    };
    ($($driver:expr),+ $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::cli::run_set(
                $crate::DriverSet::new()$(.with($driver))+,
                ::core::env!("CARGO_PKG_VERSION"),
                ::core::env!("CARGO_CRATE_NAME"),
            )
        }
    };
}

/// What the code generated by `#[driver]` uses, so that driver crates need no dependency of
/// their own on it. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::extract::autoref::*;
    pub use crate::extract::spec_schema::*;
    pub use clap;
    pub use serde_json;
    pub use tokio;
    pub use tracing_subscriber;
}

/// The names a driver needs, for `use conveyor_driver::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub use crate::Client;
    pub use crate::{driver, PipelineContext, RunId, Spec, State};
    pub use crate::{
        Config, Driver, DriverManager, DriverResult, DriverSet, Event, Logger, ReconcileError,
        ReconcileResult, Resource, ResultExt,
    };
}

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

#![warn(missing_docs)]

mod config;
mod driver;
mod error;
mod logger;
mod manager;
pub mod wire;

pub use config::{Config, ConfigError};
pub use driver::{error_chain, Driver, Event, ReconcileError, ReconcileResult, ResultExt};
pub use error::Error;
pub use logger::Logger;
pub use manager::{create_streams, DriverManager, ShutdownHandle};
pub use wire::{DriverResult, Resource};

/// The names a driver needs, for `use conveyor_driver::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Config, Driver, DriverManager, DriverResult, Event, Logger, ReconcileError, ReconcileResult,
        Resource, ResultExt,
    };
}

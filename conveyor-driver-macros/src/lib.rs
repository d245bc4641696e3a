//! The `#[driver]` attribute of [`conveyor-driver`](https://docs.rs/conveyor-driver): turns an
//! `async fn` into a Conveyor CI driver and its program. Use it through
//! `conveyor_driver::driver` or `conveyor_driver::prelude`.

mod args;
mod check;
mod entry;
mod expand;

use proc_macro::TokenStream;

/// Turns an `async fn` into a Conveyor CI driver.
///
/// ```no_run
/// use conveyor_driver::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct BuildSpec { image: String }
///
/// #[driver(name = "builder", resources = ["build", "release"], events = ["create", "update"])]
/// async fn reconcile(event: Event, Spec(spec): Spec<BuildSpec>, log: Logger) -> Result<String, std::io::Error> {
///     log.log(format!("{} {}: building {}", event.name, event.resource.name, spec.image));
///     Ok(spec.image)
/// }
/// ```
///
/// # Arguments
///
/// | argument | | |
/// |---|---|---|
/// | `name = "…"` | required | the driver's name: its durable consumer, the `driver` of its logs and results |
/// | `resources = ["…", …]` | required, not empty | the resource types it reconciles |
/// | `events = ["…", …]` | optional | the events it handles (others are acknowledged and skipped); all when left out |
/// | `main = false` | optional | do not generate `main` (for embedding the driver in a program, and for tests) |
/// | `timeout = "30m"` | optional | how long one reconcile may take before its run fails (not retried); `--reconcile-timeout` / `CONVEYOR_RECONCILE_TIMEOUT` override it; default 6 h |
/// | `state = hook` | optional | the start-up hook, an `async fn hook(config: &Config) -> Result<T, E>` (a path, unquoted): run once before the consumer is bound, its `T` is what `State<T>` parameters share; an error stops the driver with one line |
/// | `driver = TypeName` | optional | the name of the generated type; default: `name` in UpperCamelCase + `Driver` (`"builder"` → `BuilderDriver`) |
/// | `crate = "…"` | optional | the path of the conveyor-driver crate in the generated code, for a renamed dependency (`crate = "cd"` with `cd = { package = "conveyor-driver", … }`) or a re-export (`crate = "::my_sdk::conveyor_driver"`); default: `::conveyor_driver` |
///
/// The name, the resources and the events must be single NATS subject tokens: not empty, no
/// whitespace, no `.`, `*` or `>`. This is checked at compile time.
///
/// Every conveyor-driver path the expansion emits (`Driver`, `FromEvent`, `cli::run_crate`, …)
/// starts with the `crate` path; besides it, the expansion uses only `::core` and `::std`. The
/// value must be a plain path (`cd`, `::my_sdk::cd`, `crate::sdk::cd`, `super::cd`), without
/// generic arguments, resolved where the attribute is written.
///
/// # Parameters
///
/// The function takes any number of these, in any order, chosen by type (see
/// `conveyor_driver::FromEvent`, except `State<T>`):
///
/// | parameter | value |
/// |---|---|
/// | `Event` | the whole event: name, run id, resource, delivery attempt |
/// | `Resource` | the resource to reconcile |
/// | `Spec<T>` | the resource's spec deserialized into `T: DeserializeOwned`; when it does not fit, the function is not called and the run fails with a message naming the type, the field and what was expected; with the `schemars` feature and `T: schemars::JsonSchema`, `describe` prints the schema of `T` |
/// | `RunId` | the run identifier |
/// | `Logger` | the run's log |
/// | `Client` | the Conveyor API client of `--api-url` / `CONVEYOR_API_URL`, signed with the TLS settings; without an API URL the run fails saying so |
/// | `PipelineContext` | the pipeline: its name, whether this event is a later step (`process`), and `result_of::<T>("driver")`, the data of an earlier step's result |
/// | `State<T>` | the value the `state` hook built, shared by every reconcile (an `Arc<T>`); written `State<T>`, and `T` must be what the hook builds, both checked at compile time |
/// | `Option<T>` of any of these | `None` where `T` cannot be built (e.g. `Option<Client>` for a driver that also runs without an API URL) |
///
/// # Return type
///
/// What the function returns becomes the run's result (see
/// `conveyor_driver::IntoReconcileResult`):
///
/// | returned | result |
/// |---|---|
/// | `DriverResult` | as it is |
/// | `()` | success, message `reconciled` |
/// | `Result<T, E>` with `T: Serialize` | `Ok(data)`: success, message `reconciled`, `data` = `data` as JSON; `Ok(DriverResult)` is published as it is |
/// | … with `E: std::error::Error` | `Err(e)`: failure, message = `e` and its sources joined with `": "` |
/// | … with `E = ReconcileError` | `Err(e)`: failure, or a retry of the event when `e` is transient |
/// | … with any other `E: Display` (`String`, `anyhow::Error`, …) | `Err(e)`: failure, message = `format!("{e:#}")` |
///
/// A panic in the function fails the run with the panic message; it never stops the process.
///
/// A type that does not fit is a compile error on that type, naming what it lacks: a data type
/// that is not `Serialize`, an error type that is not `Display`, a spec type that is not
/// `Deserialize`, a `State<T>` that the hook does not build (see
/// `conveyor_driver::signature`).
///
/// # Expansion
///
/// - the function, unchanged and callable;
/// - a unit struct (`BuilderDriver` above) implementing `conveyor_driver::Driver` (with
///   `state_hook` calling the `state` hook, when there is one), with the
///   constants `NAME: &str`, `RESOURCES: &[&str]`, `EVENTS: Option<&[&str]>` and
///   `FILTER_SUBJECTS: &[&str]` (`resources.<r>` and `drivers.<name>.resources.<r>` for each
///   resource `r`, computed at compile time);
/// - unless `main = false`, `fn main()` calling `conveyor_driver::cli::run_crate`: it parses the
///   command line (`--nats-url`, `--concurrency`, `--tls-cert`, `--create-streams`,
///   `--log-format`, … each also read from its `CONVEYOR_*` variable; see `--help`), sets up
///   the local output (`RUST_LOG`, default `info`), runs the Driver Manager until SIGTERM or
///   SIGINT, then exits 0 once in-flight events are done. On a fatal error it prints one line
///   to standard error and exits 1.
#[proc_macro_attribute]
pub fn driver(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::driver(args.into(), item.into()).into()
}

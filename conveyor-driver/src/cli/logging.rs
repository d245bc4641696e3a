//! The local output of a driver binary: `tracing` to standard output (or standard error for
//! `invoke`), filtered by `RUST_LOG`, with the tracing bridge into run logs and, with the
//! `otel` feature, the OpenTelemetry export of the reconcile spans (see [`crate::otel`]).

use crate::bridge::RunLogLayer;
use crate::otel::{Service, Telemetry};

use super::LogFormat;

/// Installs the local output on standard output: `RUST_LOG` filter (default `info`) in the
/// chosen format, coloured only on a terminal. Does nothing when a global subscriber is
/// already set. See [`init_tracing_with`] for the tracing bridge.
pub fn init_tracing(format: LogFormat) {
    install_tracing(format, None, false, None);
}

/// [`init_tracing`] plus the [tracing bridge](crate::bridge): `tracing` events inside a
/// reconcile that `run_log` selects become run log lines.
///
/// ```no_run
/// use conveyor_driver::bridge::RunLogLayer;
/// use conveyor_driver::cli::{init_tracing_with, LogFormat};
///
/// init_tracing_with(LogFormat::Json, RunLogLayer::for_crate(env!("CARGO_CRATE_NAME")));
/// ```
pub fn init_tracing_with(format: LogFormat, run_log: RunLogLayer) {
    install_tracing(format, Some(run_log), false, None);
}

/// Installs the subscriber; with `service`, also the OpenTelemetry export, whose returned
/// handle flushes it when dropped: keep it until the program ends.
pub(super) fn install_tracing(
    format: LogFormat,
    run_log: Option<RunLogLayer>,
    to_stderr: bool,
    service: Option<Service<'_>>,
) -> Telemetry {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let default = if to_stderr { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = if to_stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match (format, to_stderr) {
        (LogFormat::Human, false) => layer.boxed(),
        (LogFormat::Human, true) => layer.with_writer(std::io::stderr).boxed(),
        (LogFormat::Json, false) => layer.json().boxed(),
        (LogFormat::Json, true) => layer.json().with_writer(std::io::stderr).boxed(),
    };
    let (telemetry, otel) = Telemetry::start(service);
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(run_log.map(RunLogLayer::filtered))
        .with(otel)
        .try_init();
    telemetry.report();
    telemetry
}

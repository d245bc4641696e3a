//! The tracing bridge: `tracing` events emitted while a reconcile runs (by the driver or by
//! the libraries it calls) become log lines of that run.
//!
//! Every reconcile runs in a span named `reconcile` (fields `driver`, `run_id`, `event`,
//! `resource`, `resource_type`, `resource_name`, `message_id`, `attempt`). [`RunLogLayer`]
//! remembers the run's [`Logger`] in that span; an event inside the span (or inside a span
//! created within it, e.g. one a spawned task is instrumented with) that passes the layer's
//! filter is logged to the run, with labels `level` and `target`. Events of the runtime itself
//! (targets `conveyor_driver` and `conveyor_driver::*`, including the local mirror of run log
//! lines) are never bridged, so nothing is logged twice and nothing loops.
//!
//! The command line of a `#[driver]` binary installs the layer (see [`crate::cli`]); a
//! hand-written `main` adds it to its subscriber:
//!
//! ```no_run
//! use conveyor_driver::bridge::RunLogLayer;
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(RunLogLayer::for_crate(env!("CARGO_CRATE_NAME")).filtered())
//!     .init();
//! ```
//!
//! [`RunLogLayer::filtered`] attaches the layer's own per-layer filter, so that it enables only
//! the reconcile spans and the events it bridges: the other layers' filters stay in charge of
//! everything else (and of the cost of disabled callsites).

use std::cell::RefCell;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Metadata;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::logger::Logger;

thread_local! {
    /// The logger of the reconcile span being created on this thread.
    static RUN_LOGGER: RefCell<Option<Logger>> = const { RefCell::new(None) };
}

/// Runs `make_span` with `logger` visible to [`RunLogLayer::on_new_span`].
pub(crate) fn with_run_logger<T>(logger: &Logger, make_span: impl FnOnce() -> T) -> T {
    let previous = RUN_LOGGER.with(|slot| slot.replace(Some(logger.clone())));
    let value = make_span();
    RUN_LOGGER.with(|slot| *slot.borrow_mut() = previous);
    value
}

/// The run logger stored in a reconcile span's extensions.
struct RunLog(Logger);

/// A [`Layer`] turning `tracing` events inside a reconcile into run log lines.
///
/// Which events are bridged is a [`Targets`] filter; events of `conveyor_driver` itself never
/// are. Build it with [`for_crate`](Self::for_crate) (INFO and above from one crate, what the
/// `#[driver]` binary uses), [`all`](Self::all) (INFO and above from every target) or
/// [`with_filter`](Self::with_filter):
///
/// ```
/// use conveyor_driver::bridge::RunLogLayer;
///
/// let layer = RunLogLayer::with_filter("my_driver=debug,reqwest=warn".parse().unwrap());
/// let layer = RunLogLayer::for_crate("my_driver");
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct RunLogLayer {
    filter: Targets,
}

impl RunLogLayer {
    /// Bridges events at INFO and above whose target is `crate_name` or within it.
    pub fn for_crate(crate_name: &str) -> Self {
        Self::with_filter(Targets::new().with_target(crate_name, Level::INFO))
    }

    /// Bridges events at INFO and above from every target (but the runtime's own).
    pub fn all() -> Self {
        Self::with_filter(Targets::new().with_default(Level::INFO))
    }

    /// Bridges the events `filter` enables, e.g. parsed from `"my_driver=debug,hyper=warn"`
    /// (the `RUST_LOG` target syntax, without span filters).
    pub fn with_filter(filter: Targets) -> Self {
        Self { filter }
    }

    /// The layer with its per-layer filter: what to add to a subscriber.
    pub fn filtered<S>(self) -> Filtered<Self, RunLogFilter, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let filter = RunLogFilter {
            filter: self.filter.clone(),
        };
        tracing_subscriber::Layer::with_filter(self, filter)
    }
}

/// Whether an event with `metadata` becomes a run log line.
fn bridges(filter: &Targets, metadata: &Metadata<'_>) -> bool {
    !is_runtime(metadata.target()) && filter.would_enable(metadata.target(), metadata.level())
}

/// The per-layer filter of [`RunLogLayer::filtered`]: the runtime's `reconcile` spans and the
/// events the layer bridges.
#[derive(Debug, Clone)]
pub struct RunLogFilter {
    filter: Targets,
}

impl<S> Filter<S> for RunLogFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: &Context<'_, S>) -> bool {
        if metadata.is_span() {
            metadata.name() == "reconcile" && is_runtime(metadata.target())
        } else {
            bridges(&self.filter, metadata)
        }
    }
}

/// Whether `target` belongs to the runtime (never bridged).
fn is_runtime(target: &str) -> bool {
    target
        .strip_prefix("conveyor_driver")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl<S> Layer<S> for RunLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let logger = RUN_LOGGER.with(|slot| slot.borrow().clone());
        if let (Some(logger), Some(span)) = (logger, ctx.span(id)) {
            span.extensions_mut().insert(RunLog(logger));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !bridges(&self.filter, metadata) {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(logger) = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<RunLog>().map(|run| run.0.clone()))
        else {
            return;
        };
        let mut message = Message::default();
        event.record(&mut message);
        let labels = vec![
            ("level".to_owned(), metadata.level().to_string()),
            ("target".to_owned(), metadata.target().to_owned()),
        ];
        logger.log_bridged(message.finish(), labels);
    }
}

/// An event's `message` followed by its other fields as `key=value`.
#[derive(Default)]
struct Message {
    message: String,
    fields: String,
}

impl Message {
    fn finish(mut self) -> String {
        if !self.fields.is_empty() {
            if !self.message.is_empty() {
                self.message.push(' ');
            }
            self.message.push_str(&self.fields);
        }
        self.message
    }

    fn field(&mut self, field: &Field) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        self.fields.push_str(field.name());
        self.fields.push('=');
    }
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field);
            self.fields.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field);
            let _ = write!(self.fields, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_targets() {
        assert!(is_runtime("conveyor_driver"));
        assert!(is_runtime("conveyor_driver::run_log"));
        assert!(!is_runtime("conveyor_driver_examples"));
        assert!(!is_runtime("echo"));
    }
}

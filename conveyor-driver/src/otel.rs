//! OpenTelemetry: the reconcile spans of a driver binary exported over OTLP, and the W3C trace
//! context carried from an event to everything its run sends.
//!
//! With the `otel` feature, the `main` of a driver binary ([`cli::run`](crate::cli::run), what
//! `#[driver]` generates) adds a [`tracing-opentelemetry`](tracing_opentelemetry) layer to its
//! `tracing` subscriber:
//!
//! - every reconcile is one span, `reconcile` (kind consumer), with the messaging
//!   semantic-convention attributes (`messaging.system = nats`, `messaging.destination.name`
//!   the event's subject, `messaging.message.id` the DriverMessage's `id`,
//!   `messaging.operation.type = process`, `messaging.consumer.group.name` the consumer) and the
//!   run's `driver`, `run_id`, `event`, `resource`, `attempt` and `outcome` (`success`,
//!   `failure`, `retry` or `panic`; a failure or panic also sets the span's status to error);
//! - an event whose NATS headers carry a W3C `traceparent` (and `tracestate`) continues that
//!   trace: the reconcile span is its child. Without one, the span is a new root;
//! - the run's log lines (both publishes), its result and the API requests made during the
//!   reconcile carry the `traceparent` and `tracestate` of the reconcile span (of the current
//!   span, for API requests), so whoever reads them continues the trace.
//!
//! The spans are exported with OTLP over HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`, then to the
//! default `http://localhost:4318`); the standard variables of the OpenTelemetry SDK apply
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`...). `service.name` defaults to the driver's name. Without
//! an endpoint nothing is exported, but the trace context still flows through.
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns it all off. The exporter is
//! flushed when the binary exits, after a graceful shutdown, so the last spans are not lost.
//!
//! Without the feature, the hooks below do nothing and cost nothing.

#[cfg(feature = "otel")]
mod export;
#[cfg(feature = "otel")]
mod propagate;

#[cfg(feature = "otel")]
pub(crate) use export::Telemetry;
#[cfg(feature = "otel")]
pub(crate) use propagate::{record_outcome, start_span, Delivery, RunTrace, TraceHeaders};

#[cfg(not(feature = "otel"))]
pub(crate) use off::{record_outcome, start_span, Delivery, RunTrace, Telemetry, TraceHeaders};

/// Who the exported spans come from: the resource's `service.name` and `service.version`.
/// Without the `otel` feature nothing reads it: the CLI passes it all the same.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) struct Service<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
}

/// Adds the W3C trace context of the current span to an API request.
#[cfg(feature = "client")]
pub(crate) fn traced(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    TraceHeaders::current()
        .iter()
        .fold(request, |request, (key, value)| request.header(key, value))
}

/// The hooks without the `otel` feature: nothing is carried, nothing is exported.
#[cfg(not(feature = "otel"))]
mod off {
    use tracing_subscriber::layer::{Identity, Layer};

    use super::Service;
    use crate::metrics::Counted;

    /// No exporter.
    pub(crate) struct Telemetry;

    impl Telemetry {
        pub(crate) fn start<S: tracing::Subscriber>(
            _: Option<Service<'_>>,
        ) -> (Self, Option<impl Layer<S>>) {
            (Self, None::<Identity>)
        }

        pub(crate) fn report(&self) {}
    }

    /// No trace context.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct TraceHeaders;

    impl TraceHeaders {
        pub(crate) fn current() -> Self {
            Self
        }

        pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
            std::iter::empty()
        }
    }

    /// No run trace.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct RunTrace;

    impl RunTrace {
        pub(crate) fn headers(&self) -> &TraceHeaders {
            &TraceHeaders
        }
    }

    /// Nothing taken from the message.
    #[derive(Debug, Default)]
    pub(crate) struct Delivery;

    impl Delivery {
        pub(crate) fn of(_: &async_nats::Message) -> Self {
            Self
        }
    }

    pub(crate) fn start_span(_: &tracing::Span, _: Delivery, _: &str, _: &str, _: &RunTrace) {}

    pub(crate) fn record_outcome(_: &tracing::Span, _: Counted, _: Option<&str>) {}
}

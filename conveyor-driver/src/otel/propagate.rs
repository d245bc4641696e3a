//! The W3C trace context in and out: taken from an event's NATS headers as the reconcile
//! span's parent, and written into the headers of what the run sends.

use std::sync::{Arc, OnceLock};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Counted;

/// The W3C trace context of a span as header pairs: `traceparent`, and `tracestate` when the
/// trace has one. Empty outside a span the OpenTelemetry layer knows.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceHeaders {
    pairs: Vec<(String, String)>,
}

impl TraceHeaders {
    /// The trace context of the current span.
    pub(crate) fn current() -> Self {
        Self::of(&tracing::Span::current())
    }

    /// The trace context of `span`.
    pub(crate) fn of(span: &tracing::Span) -> Self {
        let context = span.context();
        let mut headers = Self::default();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut headers);
        }
        headers
    }

    /// The headers, as `(key, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Injector for TraceHeaders {
    /// Keeps a header only with a value: the propagator writes an empty `tracestate` for a
    /// trace without one, which would only take room in every message.
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.pairs.push((key.to_owned(), value));
        }
    }
}

/// The trace context of a run's reconcile span, shared with the task that publishes its log
/// lines: that task starts before the span exists, so the span's context is set once after.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunTrace {
    headers: Arc<OnceLock<TraceHeaders>>,
}

/// What a run without a span context sends: nothing.
static NONE: TraceHeaders = TraceHeaders { pairs: Vec::new() };

impl RunTrace {
    /// The reconcile span's trace context; empty until the span exists.
    pub(crate) fn headers(&self) -> &TraceHeaders {
        self.headers.get().unwrap_or(&NONE)
    }
}

/// What an incoming message tells its reconcile span: the trace it continues and its subject.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// The remote parent, or an empty context (a new root) when the headers carry none;
    /// `None` for an event made in code, whose span keeps its `tracing` parent.
    parent: Option<Context>,
    subject: String,
}

impl Delivery {
    /// The trace context in `message`'s headers and its subject.
    pub(crate) fn of(message: &async_nats::Message) -> Self {
        let parent = match &message.headers {
            Some(headers) => TraceContextPropagator::new().extract(&NatsHeaders(headers)),
            None => Context::new(),
        };
        Self {
            parent: Some(parent),
            subject: message.subject.to_string(),
        }
    }
}

/// Reads the trace context from NATS headers. Header names are matched regardless of case:
/// Go's NATS client canonicalizes them (`Traceparent`).
struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(name).eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Makes `span` the reconcile span of `delivery`: its parent, its kind and its messaging
/// attributes; then shares its trace context with the run's log publisher through `trace`.
/// `message_id` is the DriverMessage's `id`, `consumer` the driver's durable consumer.
pub(crate) fn start_span(
    span: &tracing::Span,
    delivery: Delivery,
    message_id: &str,
    consumer: &str,
    trace: &RunTrace,
) {
    if let Some(parent) = delivery.parent {
        // Fails only when no OpenTelemetry layer sees the span: then there is nothing to set.
        let _ = span.set_parent(parent);
    }
    span.record("otel.kind", "consumer");
    span.set_attribute("messaging.system", "nats");
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.consumer.group.name", consumer.to_owned());
    span.set_attribute("messaging.message.id", message_id.to_owned());
    if !delivery.subject.is_empty() {
        span.set_attribute("messaging.destination.name", delivery.subject);
    }
    // The span is started here, with its parent: from now on its ids are fixed.
    let _ = trace.headers.set(TraceHeaders::of(span));
}

/// Records how the reconcile ended: `outcome`, and an error status with `error` for a failure
/// or a panic.
pub(crate) fn record_outcome(span: &tracing::Span, counted: Counted, error: Option<&str>) {
    let outcome = match counted {
        Counted::Success => "success",
        Counted::Failure => "failure",
        Counted::Retry => "retry",
        Counted::Panic => "panic",
    };
    span.set_attribute("outcome", outcome);
    if matches!(counted, Counted::Failure | Counted::Panic) {
        span.set_status(Status::error(error.unwrap_or(outcome).to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn traced<T>(work: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, work)
    }

    fn message(headers: &[(&str, &str)]) -> async_nats::Message {
        let mut map = async_nats::HeaderMap::new();
        for (key, value) in headers {
            map.insert(*key, *value);
        }
        async_nats::Message {
            subject: "resources.build".into(),
            reply: None,
            payload: Default::default(),
            headers: (!headers.is_empty()).then_some(map),
            status: None,
            description: None,
            length: 0,
        }
    }

    /// The `traceparent` and `tracestate` a reconcile span of `message` sends.
    fn sent(message: &async_nats::Message) -> Vec<(String, String)> {
        traced(|| {
            let span = tracing::info_span!("reconcile", otel.kind = tracing::field::Empty);
            let trace = RunTrace::default();
            start_span(&span, Delivery::of(message), "msg-1", "builder", &trace);
            let sent = trace.headers().pairs.clone();
            let current = span.in_scope(TraceHeaders::current).pairs;
            assert_eq!(sent, current, "the run and its current span agree");
            sent
        })
    }

    fn traceparent(pairs: &[(String, String)]) -> Vec<String> {
        let (_, value) = pairs.iter().find(|(k, _)| k == "traceparent").unwrap();
        value.split('-').map(str::to_owned).collect()
    }

    #[test]
    fn a_traceparent_in_the_headers_becomes_the_parent() {
        let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        for name in ["traceparent", "Traceparent"] {
            let pairs = sent(&message(&[(name, &parent), ("tracestate", "k=v")]));
            let fields = traceparent(&pairs);
            assert_eq!(fields[1], TRACE, "{name}: same trace");
            assert_ne!(fields[2], "00f067aa0ba902b7", "{name}: a span of its own");
            assert_eq!(fields[3], "01");
            assert!(
                pairs.contains(&("tracestate".into(), "k=v".into())),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn without_a_usable_traceparent_the_span_is_a_new_root() {
        let bad = message(&[("traceparent", "00-not-a-trace-01")]);
        for message in [message(&[]), bad] {
            let fields = traceparent(&sent(&message));
            assert_eq!(fields[1].len(), 32);
            assert_ne!(fields[1], TRACE);
            assert_ne!(fields[1], "0".repeat(32));
            assert!(!sent(&message).iter().any(|(k, _)| k == "tracestate"));
        }
    }

    #[test]
    fn outside_a_traced_span_nothing_is_sent() {
        assert_eq!(TraceHeaders::current().iter().count(), 0);
        assert_eq!(RunTrace::default().headers().iter().count(), 0);
    }
}

//! The tracer provider of a driver binary: its OTLP/HTTP exporter, chosen by the standard
//! `OTEL_*` variables, and its flush when the binary exits.

use std::env;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::Service;

/// The tracer provider of a driver binary; dropping it exports the spans still queued.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// What went wrong setting it up, said once the local output is there.
    problem: Option<String>,
}

impl Telemetry {
    /// The provider for `service` and its `tracing` layer, as the `OTEL_*` variables ask;
    /// nothing for `None` (a subscriber set up by `init_tracing`) or when they turn it off.
    pub(crate) fn start<S>(service: Option<Service<'_>>) -> (Self, Option<impl Layer<S>>)
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let off = Self {
            provider: None,
            problem: None,
        };
        let Some(service) = service else {
            return (off, None);
        };
        if flag("OTEL_SDK_DISABLED") || variable("OTEL_TRACES_EXPORTER").as_deref() == Some("none")
        {
            return (off, None);
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource(service));
        let mut problem = None;
        if exporting() {
            match exporter() {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(err) => problem = Some(format!("spans are not exported: {err}")),
            }
        }
        let provider = builder.build();
        let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        // INFO and above whatever `RUST_LOG` says: quieting the local output must not lose the
        // reconcile spans.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer_with_scope(scope))
            .with_threads(false)
            .with_filter(LevelFilter::INFO);
        let telemetry = Self {
            provider: Some(provider),
            problem: problem.or_else(unsupported_protocol),
        };
        (telemetry, Some(layer))
    }

    /// Logs what went wrong setting up, if anything.
    pub(crate) fn report(&self) {
        if let Some(problem) = &self.problem {
            tracing::warn!("OpenTelemetry: {problem}");
        }
    }
}

impl Drop for Telemetry {
    /// Exports what is still queued (bounded by the SDK's shutdown timeout).
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                tracing::warn!(error = %err, "OpenTelemetry: the last spans were not exported");
            }
        }
    }
}

/// Whether an OTLP exporter is asked for: an endpoint is set, or `OTEL_TRACES_EXPORTER=otlp`
/// (then to the default endpoint). Without either a driver exports nothing, rather than
/// trying `localhost:4318` where there usually is no collector.
fn exporting() -> bool {
    variable("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || variable("OTEL_TRACES_EXPORTER").as_deref() == Some("otlp")
}

fn exporter() -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
}

/// A warning when the variables ask for an OTLP protocol other than the one spoken here.
fn unsupported_protocol() -> Option<String> {
    let protocol = variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| variable("OTEL_EXPORTER_OTLP_PROTOCOL"))?;
    (protocol != "http/protobuf")
        .then(|| format!("protocol {protocol:?} is not supported; exporting with http/protobuf"))
}

/// `service.name` the driver's name and `service.version` its binary's, unless
/// `OTEL_RESOURCE_ATTRIBUTES` or `OTEL_SERVICE_NAME` (which wins) say otherwise.
fn resource(service: Service<'_>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.name.to_owned()),
            KeyValue::new("service.version", service.version.to_owned()),
        ])
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if let Some(name) = variable("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// A variable's value; unset and empty are the same.
fn variable(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn flag(name: &str) -> bool {
    variable(name).is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

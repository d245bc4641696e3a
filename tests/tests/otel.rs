//! OpenTelemetry end to end: the `echo` example (built with the `otel` feature) against a real
//! `nats-server`, exporting to a stand-in OTLP/HTTP collector on loopback that decodes each
//! protobuf export. The collector also answers the Conveyor API's `GET /health`, recording
//! its headers, so one listener sees both the spans and the API requests made during them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use conveyor_driver_tests::process::DriverProcess;
use conveyor_driver_tests::{resource, Conveyor, NatsServer, Seen, Tap, PATIENCE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message as _;
use serde_json::{json, Value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// What the stand-in collector received: the decoded exports and the other requests.
#[derive(Default)]
struct Received {
    exports: Vec<ExportTraceServiceRequest>,
    /// `(path, headers)` of every request that is not an export.
    requests: Vec<(String, HeaderMap)>,
}

struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = axum::Router::new()
            .fallback(collect)
            .with_state(Arc::clone(&received));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            received,
            task,
        }
    }

    /// Every span exported so far, with the `service.name` of its resource.
    fn spans(&self) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for export in &received.exports {
            for resource_spans in &export.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|resource| string(&resource.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }

    /// The `traceparent` of each `GET /health` the driver made.
    fn health_traceparents(&self) -> Vec<Option<String>> {
        let received = self.received.lock().unwrap();
        received
            .requests
            .iter()
            .filter(|(path, _)| path == "/health")
            .map(|(_, headers)| {
                let value = headers.get("traceparent")?;
                Some(value.to_str().ok()?.to_owned())
            })
            .collect()
    }
}

async fn collect(
    State(received): State<Arc<Mutex<Received>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let mut received = received.lock().unwrap();
    if uri.path() == "/v1/traces" {
        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
        received.exports.push(export);
        return axum::Json(json!({}));
    }
    received.requests.push((uri.path().to_owned(), headers));
    axum::Json(json!({"status": "healthy"}))
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    let attribute = attributes.iter().find(|kv| kv.key == key)?;
    attribute.value.as_ref()?.value.as_ref()
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes a DriverMessage for a new `echo-resource` named `name` to `subject`, with the
/// NATS headers given; returns its run id and message id.
async fn publish(
    conveyor: &Conveyor,
    subject: &str,
    name: &str,
    spec: Value,
    headers: &[(&str, &str)],
) -> (String, String) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let message = json!({
        "event": "create",
        "payload": resource("echo-resource", name, spec).to_string(),
        "id": id,
        "run_id": run_id,
    });
    let mut map = async_nats::HeaderMap::new();
    for (key, value) in headers {
        map.insert(*key, *value);
    }
    conveyor
        .js
        .publish_with_headers(subject.to_owned(), map, message.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    (run_id, id)
}

/// The `traceparent` of what the driver sent for `run_id`, split into its four fields, and
/// its `tracestate`: from the result and from every log line (persisted and live), which
/// must all carry the same.
fn sent_trace(tap: &Tap, run_id: &str) -> (Vec<String>, Option<String>) {
    let sent: Vec<&Seen> = tap.seen.iter().filter(|s| s.run_id() == run_id).collect();
    assert!(sent.iter().any(|s| s.is_result()), "a result for {run_id}");
    assert!(sent.iter().any(|s| s.subject.starts_with("logs.")));
    assert!(sent.iter().any(|s| s.subject.starts_with("live.logs.")));
    let result = sent.iter().find(|s| s.is_result()).unwrap();
    for seen in &sent {
        assert_eq!(
            seen.headers.get("traceparent"),
            result.headers.get("traceparent"),
            "{} carries the run's trace context",
            seen.subject
        );
        assert_eq!(
            seen.headers.get("tracestate"),
            result.headers.get("tracestate")
        );
    }
    let traceparent = result
        .headers
        .get("traceparent")
        .unwrap_or_else(|| panic!("the result has no traceparent: {:?}", result.headers));
    let fields: Vec<String> = traceparent.split('-').map(str::to_owned).collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    (fields, result.headers.get("tracestate").cloned())
}

async fn start_echo(
    server: &NatsServer,
    conveyor: &Conveyor,
    env: &[(&str, &str)],
) -> DriverProcess {
    let url = server.url();
    let mut all = vec![("CONVEYOR_NATS_URL", url.as_str())];
    all.extend_from_slice(env);
    let driver = DriverProcess::start_with("echo", &all, &[]);
    conveyor.wait_for_consumer("echo").await;
    driver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_spans_are_exported_and_continue_the_event_trace() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let collector = Collector::start().await;
    // A schedule delay longer than the test: the spans can only arrive through the flush at
    // shutdown.
    let mut driver = start_echo(
        &server,
        &conveyor,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("CONVEYOR_API_URL", &collector.url),
        ],
    )
    .await;
    let mut tap = conveyor.tap().await;

    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let continued = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", "vendor=v1"),
    ];
    let child = publish(
        &conveyor,
        "resources.echo-resource",
        "child",
        json!({"api_health": true}),
        &continued,
    )
    .await;
    let root = publish(
        &conveyor,
        "drivers.echo.resources.echo-resource",
        "root",
        json!({"n": 1}),
        &[],
    )
    .await;
    let failed = publish(
        &conveyor,
        "resources.echo-resource",
        "failing",
        json!({"fail": true}),
        &[],
    )
    .await;
    for (run_id, _) in [&child, &root, &failed] {
        tap.result(run_id).await;
    }
    // Log lines published before a result arrive before it; give stragglers a moment.
    tap.settle(Duration::from_millis(200)).await;

    // What the driver sent continues the incoming trace, or starts one per event.
    let (child_sent, child_state) = sent_trace(&tap, &child.0);
    assert_eq!(child_sent[1], TRACE);
    assert_ne!(child_sent[2], PARENT, "a span of the driver's own");
    assert_eq!(child_sent[3], "01");
    assert_eq!(child_state.as_deref(), Some("vendor=v1"));
    let (root_sent, root_state) = sent_trace(&tap, &root.0);
    let (failed_sent, _) = sent_trace(&tap, &failed.0);
    assert_eq!(root_state, None);
    for sent in [&root_sent, &failed_sent] {
        assert_ne!(sent[1], TRACE);
        assert_ne!(sent[1], "0".repeat(32));
    }
    assert_ne!(root_sent[1], failed_sent[1], "one new trace per event");

    // The API request made during the reconcile carries its context too.
    assert_eq!(
        collector.health_traceparents(),
        [Some(child_sent.join("-"))],
        "GET /health"
    );

    assert!(
        collector.spans().is_empty(),
        "nothing exported before shutdown"
    );
    driver.sigterm();
    assert!(driver.wait(PATIENCE).success(), "{}", driver.output());

    let spans = collector.spans();
    let reconciles: Vec<&(String, Span)> = spans
        .iter()
        .filter(|(_, s)| s.name == "reconcile")
        .collect();
    assert_eq!(reconciles.len(), 3, "one span per reconcile: {spans:#?}");
    let span_of = |run_id: &str| {
        let matching: Vec<&Span> = reconciles
            .iter()
            .map(|(_, span)| span)
            .filter(|span| string(&span.attributes, "run_id").as_deref() == Some(run_id))
            .collect();
        assert_eq!(matching.len(), 1, "{run_id}: {reconciles:#?}");
        matching[0].clone()
    };
    for (service, _) in &reconciles {
        assert_eq!(service, "echo", "service.name defaults to the driver");
    }

    let cases = [
        (
            &child,
            &child_sent,
            "resources.echo-resource",
            "child",
            "success",
        ),
        (
            &root,
            &root_sent,
            "drivers.echo.resources.echo-resource",
            "root",
            "success",
        ),
        (
            &failed,
            &failed_sent,
            "resources.echo-resource",
            "failing",
            "failure",
        ),
    ];
    for ((run_id, message_id), sent, subject, name, outcome) in cases {
        let span = span_of(run_id);
        let attribute = |key: &str| string(&span.attributes, key);
        assert_eq!(span.kind, SpanKind::Consumer as i32, "{name}");
        assert_eq!(attribute("messaging.system").as_deref(), Some("nats"));
        assert_eq!(
            attribute("messaging.destination.name").as_deref(),
            Some(subject)
        );
        assert_eq!(attribute("messaging.message.id").as_ref(), Some(message_id));
        assert_eq!(
            attribute("messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(
            attribute("messaging.consumer.group.name").as_deref(),
            Some("echo")
        );
        assert_eq!(attribute("driver").as_deref(), Some("echo"));
        let expected = format!("echo-resource/{name}");
        assert_eq!(attribute("resource").as_deref(), Some(expected.as_str()));
        assert_eq!(attribute("event").as_deref(), Some("create"));
        assert_eq!(attribute("outcome").as_deref(), Some(outcome), "{name}");
        // The span is the one whose context went out with the run's messages.
        assert_eq!(hex(&span.trace_id), sent[1], "{name}");
        assert_eq!(hex(&span.span_id), sent[2], "{name}");
    }
    assert_eq!(hex(&span_of(&child.0).parent_span_id), PARENT);
    assert!(span_of(&root.0).parent_span_id.is_empty(), "a root");
    let status = span_of(&failed.0).status.expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(status.message.contains("asked to fail"), "{status:?}");
    let unset = span_of(&root.0).status.map_or(0, |s| s.code);
    assert_eq!(unset, StatusCode::Unset as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_but_the_trace_flows_through() {
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let _driver = start_echo(&server, &conveyor, &[]).await;
    let mut tap = conveyor.tap().await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (run_id, _) = publish(
        &conveyor,
        "resources.echo-resource",
        "quiet",
        json!({}),
        &[("traceparent", &traceparent)],
    )
    .await;
    tap.result(&run_id).await;
    tap.settle(Duration::from_millis(200)).await;
    let (sent, _) = sent_trace(&tap, &run_id);
    assert_eq!(sent[1], TRACE);
    assert_ne!(sent[2], PARENT);
}

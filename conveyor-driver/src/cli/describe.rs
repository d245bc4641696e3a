//! `describe`: what the driver does on the wire, as one JSON document.

use serde_json::{json, Value};

use crate::driver::Driver;
use crate::manager::DriverManager;
use crate::wire::subjects;

/// Prints `document`. A closed stdout (`describe | head`) ends the output quietly rather
/// than panicking as `println!` would.
pub(super) fn print(document: &Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(document).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// The document of `manager`.
pub(crate) fn document<D: Driver>(manager: &DriverManager<D>) -> Value {
    let schema = manager.driver().spec_schema().unwrap_or(Value::Null);
    describe(manager, schema)
}

/// The embedded JSON schemas of the protocol.
const SCHEMAS: [(&str, &str); 5] = [
    (
        "driver-message",
        include_str!("../../schemas/driver-message.schema.json"),
    ),
    (
        "resource",
        include_str!("../../schemas/resource.schema.json"),
    ),
    ("log", include_str!("../../schemas/log.schema.json")),
    (
        "driver-result",
        include_str!("../../schemas/driver-result.schema.json"),
    ),
    (
        "driver-result-event",
        include_str!("../../schemas/driver-result-event.schema.json"),
    ),
];

fn schema(name: &str) -> Value {
    SCHEMAS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// What `describe` prints.
fn describe<D: Driver>(manager: &DriverManager<D>, spec_schema: Value) -> Value {
    let consumer = manager.consumer_config();
    let config = manager.config();
    let name = manager.name();
    json!({
        "driver": name,
        "resources": manager.resources(),
        "events": manager.events(),
        "consumer": {
            "stream": subjects::MESSAGES_STREAM,
            "config": serde_json::to_value(&consumer).unwrap_or(Value::Null),
        },
        "filter_subjects": consumer.filter_subjects,
        "retry": {
            "max_deliver": config.max_deliver,
            "backoff": humantime::format_duration(config.retry_backoff).to_string(),
            "backoff_max": humantime::format_duration(config.retry_backoff_max).to_string(),
            "note": "max_deliver is enforced by the driver (the consumer's is unlimited): the last failed delivery publishes a failed result",
        },
        "consumes": {
            "subjects": consumer.filter_subjects,
            "message": schema("driver-message"),
            "resource": schema("resource"),
            "spec": spec_schema,
        },
        "emits": {
            "logs": {
                "subjects": [subjects::logs("<run_id>"), subjects::live_logs("<run_id>", name)],
                "label_headers": format!("{}<key>", subjects::LABEL_HEADER_PREFIX),
                "schema": schema("log"),
            },
            "result": {
                "subject": subjects::RESULT,
                "envelope": {
                    "event": "driver.result",
                    "run_id": "<run_id>",
                    "resource": "<the resource as received>",
                    "driverresult": "<driver-result-event>",
                },
                "driver_result": schema("driver-result"),
                "driver_result_event": schema("driver-result-event"),
            },
        },
    })
}

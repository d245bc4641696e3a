//! Every wire type serializes exactly to its JSON schema in `conveyor-driver/schemas/`.

use conveyor_driver::wire::{DriverMessage, DriverResult, DriverResultEvent, LogEntry, Resource};
use conveyor_driver_tests::{assert_schema, resource};
use serde_json::{json, to_value};

#[test]
fn resource_and_driver_message_match_their_schemas() {
    let value = resource("build", "app", json!({"image": "rust"}));
    let parsed: Resource = serde_json::from_value(value.clone()).unwrap();
    assert_schema("resource", &to_value(&parsed).unwrap());
    let mut without_pipeline = parsed.clone();
    without_pipeline.pipeline = None;
    assert_schema("resource", &to_value(&without_pipeline).unwrap());

    let body = json!({"event": "create", "payload": value.to_string(), "id": "m1",
                      "run_id": uuid::Uuid::new_v4().to_string()});
    let message = DriverMessage::parse(body.to_string().as_bytes()).unwrap();
    assert_schema("driver-message", &to_value(&message).unwrap());
}

#[test]
fn results_match_their_schemas() {
    for result in [
        DriverResult::success("built"),
        DriverResult::failure("broken").with_data(json!({"exit_code": 2})),
        DriverResult::success("list").with_data(json!([1, "two"])),
    ] {
        assert_schema("driver-result", &to_value(&result).unwrap());
        assert_schema(
            "driver-result-event",
            &to_value(DriverResultEvent::new(result, "builder")).unwrap(),
        );
    }
}

#[test]
fn log_entries_match_their_schema() {
    let entry = LogEntry {
        runid: uuid::Uuid::new_v4().to_string(),
        driver: "builder".into(),
        pipeline: None,
        timestamp: "2026-11-27T10:00:00.123456Z".into(),
        message: "hello".into(),
    };
    assert_schema("log", &to_value(&entry).unwrap());
    let with_pipeline = LogEntry {
        pipeline: Some("p".into()),
        ..entry
    };
    assert_schema("log", &to_value(&with_pipeline).unwrap());
}

#[test]
#[should_panic(expected = "violates log")]
fn the_schema_check_itself_rejects_extra_keys() {
    assert_schema(
        "log",
        &json!({"runid": uuid::Uuid::new_v4().to_string(), "driver": "d",
        "timestamp": "2026-11-27T10:00:00Z", "message": "m", "run_id": "x"}),
    );
}

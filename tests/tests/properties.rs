//! Properties of the wire types and of subject-token validation, over generated inputs.

use conveyor_driver::wire::{subjects, DriverMessage, Resource};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        ".{1,12}",
        ".{1,12}",
        "[a-z-]{1,10}",
        proptest::option::of(".{1,8}"),
        prop::collection::btree_map(".{0,8}", ".{0,8}", 0..4),
        json_value(),
    )
        .prop_map(|(id, name, kind, pipeline, metadata, spec)| Resource {
            id,
            name,
            resource: kind,
            pipeline,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect::<Map<_, _>>(),
            spec,
        })
}

proptest! {
    #[test]
    fn both_payload_forms_parse_to_the_resource_sent(resource in resource(), as_string in any::<bool>()) {
        let run_id = uuid::Uuid::new_v4().to_string();
        let resource_json = serde_json::to_value(&resource).unwrap();
        let payload = if as_string { Value::String(resource_json.to_string()) } else { resource_json };
        let body = json!({"event": "update", "payload": payload, "id": "m", "run_id": run_id});
        let parsed = DriverMessage::parse(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&parsed.payload, &resource);
        prop_assert_eq!(parsed.run_id, run_id);
        // And the resource survives a round trip through its own serialization.
        let again: Resource = serde_json::from_str(&serde_json::to_string(&resource).unwrap()).unwrap();
        prop_assert_eq!(again, resource);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = DriverMessage::parse(&body);
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(value in json_value(), payload in json_value()) {
        let _ = DriverMessage::parse(value.to_string().as_bytes());
        let body = json!({"event": "e", "payload": payload, "id": "m", "run_id": uuid::Uuid::new_v4()});
        let _ = DriverMessage::parse(body.to_string().as_bytes());
    }

    #[test]
    fn a_valid_token_makes_exactly_one_subject_token(token in ".{0,16}") {
        let valid = !token.is_empty()
            && !token.chars().any(|c| c.is_whitespace() || c == '.' || c == '*' || c == '>');
        prop_assert_eq!(subjects::validate_token(&token).is_ok(), valid);
        if valid {
            let subject = subjects::driver_resource(&token, &token);
            prop_assert_eq!(subject.split('.').count(), 4);
            prop_assert!(!subject.contains(char::is_whitespace));
        }
    }
}

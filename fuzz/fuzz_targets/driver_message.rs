//! Decoding of DriverMessage bodies and their resources: never panics, and whatever parses
//! serializes back to a message that parses to the same value.
#![no_main]

use conveyor_driver::wire::DriverMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(message) = DriverMessage::parse(body) {
        let again = serde_json::to_vec(&message).expect("a parsed message serializes");
        let reparsed = DriverMessage::parse(&again).expect("a serialized message parses");
        assert_eq!(reparsed, message);
        let _ = message
            .payload
            .spec_as::<std::collections::HashMap<String, u32>>();
    }
});

//! The messages a driver exchanges with a Conveyor CI server, shaped exactly like the JSON
//! schemas of the protocol (`shared/spec/schemas/`, copied into this crate's `schemas/`).
//!
//! Incoming: [`DriverMessage`] carrying a [`Resource`]. Outgoing: [`LogEntry`] lines and the
//! [`ResultEnvelope`] wrapping a [`DriverResultEvent`]. The subject and stream names of the
//! protocol live in [`subjects`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A Conveyor CI resource: the thing a driver reconciles.
///
/// `resource` is the resource *type* (e.g. `build`); `name` identifies the instance.
///
/// Unknown fields are ignored when reading (the raw JSON is what goes back to the server), and a
/// `null` metadata, which the Go server sends for an empty map, reads as an empty object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource identifier assigned by the server.
    pub id: String,
    /// Resource name, unique within its type.
    pub name: String,
    /// Resource type, e.g. `build`.
    pub resource: String,
    /// Pipeline this resource belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Arbitrary metadata (the Go server sends string values only; any JSON is accepted).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Map<String, Value>,
    /// Resource-specific specification; usually read typed with [`Resource::spec_as`].
    #[serde(default)]
    pub spec: Value,
}

impl Resource {
    /// Deserializes [`spec`](Self::spec) into `T`.
    ///
    /// The error names the path of the field that failed (e.g. `spec.steps[2].image`) and what
    /// was expected, so it can be shown to a user as it is.
    ///
    /// ```
    /// # use conveyor_driver::wire::Resource;
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Build { image: String }
    ///
    /// let resource: Resource = serde_json::from_str(
    ///     r#"{"id":"1","name":"app","resource":"build","metadata":{},"spec":{"image":7}}"#,
    /// ).unwrap();
    /// let err = resource.spec_as::<Build>().unwrap_err();
    /// assert!(err.to_string().contains("spec.image"), "{err}");
    /// ```
    pub fn spec_as<T: DeserializeOwned>(&self) -> Result<T, SpecError> {
        serde_path_to_error::deserialize(&self.spec).map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." {
                "spec".to_owned()
            } else {
                format!("spec.{path}")
            };
            SpecError {
                field,
                reason: err.into_inner().to_string(),
            }
        })
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

/// The resource spec did not have the shape the driver expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SpecError {
    /// Path of the offending field, starting at `spec`.
    pub field: String,
    /// What was wrong, as serde reports it (e.g. `invalid type: integer, expected a string`).
    pub reason: String,
}

/// An event as the Conveyor server publishes it on the `messages` stream.
///
/// On the wire `payload` is either the resource object or a *string* holding the resource JSON
/// (what the Go server sends today); [`DriverMessage::parse`] accepts both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverMessage {
    /// Event name, e.g. `create`, `update`, `delete`, `process`.
    pub event: String,
    /// The resource the event is about.
    pub payload: Resource,
    /// Message identifier.
    pub id: String,
    /// Run identifier, a UUID.
    pub run_id: String,
}

/// Why a message could not be accepted. Such a message is poison: it can never succeed, so
/// the runtime terminates it instead of redelivering it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoisonError {
    /// The message body is not a JSON object of the DriverMessage shape.
    #[error("message is not a DriverMessage: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `run_id` is missing or is not a UUID.
    #[error("run_id {0:?} is not a UUID")]
    BadRunId(String),
    /// `payload` is neither a resource object nor a string holding one.
    #[error("payload is not a resource: {0}")]
    NotAResource(#[source] serde_json::Error),
}

/// The borrowed first pass of parsing: `payload` is kept raw until its form is known.
#[derive(Deserialize)]
struct RawDriverMessage<'a> {
    event: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    id: String,
    #[serde(default)]
    run_id: Option<String>,
}

/// A parsed message together with the resource JSON exactly as it was received, which the
/// result envelope sends back untouched.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) message: DriverMessage,
    pub(crate) raw_resource: Box<RawValue>,
}

impl DriverMessage {
    /// Parses a message body, accepting the payload as an object or as a JSON string.
    pub fn parse(body: &[u8]) -> Result<Self, PoisonError> {
        Received::parse(body).map(|received| received.message)
    }
}

impl Received {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, PoisonError> {
        let raw: RawDriverMessage<'_> =
            serde_json::from_slice(body).map_err(PoisonError::NotJson)?;
        let run_id = raw.run_id.unwrap_or_default();
        if uuid::Uuid::try_parse(&run_id).is_err() {
            return Err(PoisonError::BadRunId(run_id));
        }
        let raw_resource = match raw.payload.get().as_bytes().first() {
            Some(b'"') => {
                let text: String =
                    serde_json::from_str(raw.payload.get()).map_err(PoisonError::NotAResource)?;
                RawValue::from_string(text).map_err(PoisonError::NotAResource)?
            }
            _ => raw.payload.to_owned(),
        };
        let payload: Resource =
            serde_json::from_str(raw_resource.get()).map_err(PoisonError::NotAResource)?;
        Ok(Self {
            message: DriverMessage {
                event: raw.event,
                payload,
                id: raw.id,
                run_id,
            },
            raw_resource,
        })
    }
}

/// What a reconcile produced: the DriverResult of the design document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverResult {
    /// Whether the reconcile succeeded.
    pub success: bool,
    /// Human-readable summary.
    pub message: String,
    /// Arbitrary result data (`null` when there is none).
    pub data: Value,
}

impl DriverResult {
    /// A successful result with a message and no data.
    pub fn success(message: impl Into<String>) -> Self {
        Self {
            success: true,
            message: message.into(),
            data: Value::Null,
        }
    }

    /// A failed result with a message and no data.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            success: false,
            message: message.into(),
            data: Value::Null,
        }
    }

    /// Sets the result data.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = data.into();
        self
    }
}

/// A [`DriverResult`] stamped with the driver's name: the `driverresult` of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverResultEvent {
    /// Whether the reconcile succeeded.
    pub success: bool,
    /// Human-readable summary.
    pub message: String,
    /// Arbitrary result data.
    pub data: Value,
    /// Name of the driver that produced it.
    pub driver: String,
}

impl From<DriverResultEvent> for DriverResult {
    /// The result without the driver's name.
    fn from(event: DriverResultEvent) -> Self {
        Self {
            success: event.success,
            message: event.message,
            data: event.data,
        }
    }
}

impl DriverResultEvent {
    /// Stamps `result` with the driver name.
    pub fn new(result: DriverResult, driver: impl Into<String>) -> Self {
        Self {
            success: result.success,
            message: result.message,
            data: result.data,
            driver: driver.into(),
        }
    }
}

/// What the runtime publishes to [`subjects::RESULT`]: the server's pipeline engine needs the
/// resource (to find the pipeline and its next step) next to the result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultEnvelope {
    /// Always [`ResultEnvelope::EVENT`].
    pub event: String,
    /// The run the result belongs to.
    pub run_id: String,
    /// The resource exactly as it was received.
    pub resource: Box<RawValue>,
    /// The result.
    pub driverresult: DriverResultEvent,
}

impl ResultEnvelope {
    /// The `event` field of every envelope.
    pub const EVENT: &'static str = "driver.result";

    /// Wraps a result for the run and resource it belongs to.
    pub fn new(
        run_id: impl Into<String>,
        resource: Box<RawValue>,
        result: DriverResultEvent,
    ) -> Self {
        Self {
            event: Self::EVENT.to_owned(),
            run_id: run_id.into(),
            resource,
            driverresult: result,
        }
    }
}

/// One run log line (`log.schema.json`). Note the key `runid`, not `run_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Run identifier.
    pub runid: String,
    /// Driver name.
    pub driver: String,
    /// Pipeline, only when the resource has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// RFC 3339 timestamp in UTC.
    pub timestamp: String,
    /// The line.
    pub message: String,
}

/// Stream and subject names of the protocol.
pub mod subjects {
    /// Stream holding resource events; drivers consume from it.
    pub const MESSAGES_STREAM: &str = "messages";
    /// Stream holding pipeline events, results among them.
    pub const PIPELINE_STREAM: &str = "pipeline-engine";
    /// Stream persisting run logs.
    pub const LOGS_STREAM: &str = "logs-engine";
    /// Subject of result envelopes.
    pub const RESULT: &str = "pipelines.driver.result";
    /// Prefix of the header carrying a log label.
    pub const LABEL_HEADER_PREFIX: &str = "Conveyor-Label-";

    /// `resources.<resource>`: events for every driver of that resource type.
    pub fn resource(resource: &str) -> String {
        format!("resources.{resource}")
    }

    /// `drivers.<driver>.resources.<resource>`: events addressed to one driver.
    pub fn driver_resource(driver: &str, resource: &str) -> String {
        format!("drivers.{driver}.resources.{resource}")
    }

    /// `logs.<run_id>`: persisted log lines of a run.
    pub fn logs(run_id: &str) -> String {
        format!("logs.{run_id}")
    }

    /// `live.logs.<run_id>.<driver>`: live tail of a run's log.
    pub fn live_logs(run_id: &str, driver: &str) -> String {
        format!("live.logs.{run_id}.{driver}")
    }

    /// Checks that `value` is one NATS subject token: non-empty, no whitespace, no `.`, `*`
    /// or `>`. Driver and resource names must be.
    pub fn validate_token(value: &str) -> Result<(), TokenError> {
        if value.is_empty() {
            return Err(TokenError::Empty);
        }
        match value
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            Some(c) => Err(TokenError::Forbidden(c)),
            None => Ok(()),
        }
    }

    /// A name is not a single NATS subject token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum TokenError {
        /// The name is empty.
        #[error("must not be empty")]
        Empty,
        /// The name contains a character a subject token cannot hold.
        #[error("must be a single NATS subject token, but contains {0:?}")]
        Forbidden(char),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RUN: &str = "0b6f4b9e-3c1e-4a57-9d64-2f7f0f3c8a11";

    fn resource() -> Value {
        json!({"id": "r1", "name": "app", "resource": "build", "pipeline": "p", "metadata": {"k": "v"},
               "spec": {"n": 18446744073709551615u64, "s": "héllo"}})
    }

    fn message(payload: Value, run_id: Value) -> Vec<u8> {
        json!({"event": "create", "payload": payload, "id": "m1", "run_id": run_id})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn parses_payload_as_object_and_as_string_alike() {
        let object = Received::parse(&message(resource(), json!(RUN))).unwrap();
        let string = Received::parse(&message(json!(resource().to_string()), json!(RUN))).unwrap();
        assert_eq!(object.message, string.message);
        assert_eq!(object.message.payload.name, "app");
        assert_eq!(object.message.run_id, RUN);
        let raw: Value = serde_json::from_str(string.raw_resource.get()).unwrap();
        assert_eq!(raw, resource(), "the raw resource is the one received");
    }

    #[test]
    fn null_metadata_and_unknown_fields_are_accepted() {
        let mut resource = resource();
        resource["metadata"] = Value::Null;
        resource["created_at"] = json!("2026-01-01");
        let parsed = DriverMessage::parse(&message(resource, json!(RUN))).unwrap();
        assert!(parsed.payload.metadata.is_empty());
    }

    #[test]
    fn poison_kinds_are_told_apart() {
        assert!(matches!(
            DriverMessage::parse(b"{oops"),
            Err(PoisonError::NotJson(_))
        ));
        let no_run = json!({"event": "create", "payload": resource(), "id": "m1"}).to_string();
        assert!(
            matches!(DriverMessage::parse(no_run.as_bytes()), Err(PoisonError::BadRunId(id)) if id.is_empty())
        );
        let bad_run = message(resource(), json!("run-7"));
        assert!(
            matches!(DriverMessage::parse(&bad_run), Err(PoisonError::BadRunId(id)) if id == "run-7")
        );
        for payload in [json!({"x": 1}), json!("{not json"), json!(42), json!("[1]")] {
            let err = DriverMessage::parse(&message(payload.clone(), json!(RUN))).unwrap_err();
            assert!(
                matches!(err, PoisonError::NotAResource(_)),
                "{payload}: {err}"
            );
        }
    }

    #[test]
    fn spec_errors_name_the_field_and_the_expected_type() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Step {
            image: String,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Spec {
            steps: Vec<Step>,
        }
        let mut resource: Resource = serde_json::from_value(resource()).unwrap();
        resource.spec = json!({"steps": [{"image": "a"}, {"image": 3}]});
        let err = resource.spec_as::<Spec>().unwrap_err();
        assert_eq!(err.field, "spec.steps[1].image");
        assert!(err.reason.contains("expected a string"), "{err}");
        resource.spec = json!(7);
        let err = resource.spec_as::<Spec>().unwrap_err();
        assert_eq!(err.field, "spec");
    }

    #[test]
    fn tokens() {
        use subjects::{validate_token, TokenError};
        assert_eq!(validate_token("build-1_x"), Ok(()));
        assert_eq!(validate_token(""), Err(TokenError::Empty));
        for (bad, c) in [
            ("a.b", '.'),
            ("a*", '*'),
            (">", '>'),
            ("a b", ' '),
            ("a\tb", '\t'),
        ] {
            assert_eq!(validate_token(bad), Err(TokenError::Forbidden(c)));
        }
    }
}

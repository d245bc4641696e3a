//! Request and response bodies of the Conveyor REST API (`conveyor-api.swagger.yaml`) that
//! are not already [`wire`](crate::wire) types.
//!
//! Unknown fields are ignored when reading, so a newer server does not break an older client.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A step of a [`Pipeline`] (`types.Step`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Step identifier.
    #[serde(default)]
    pub id: String,
    /// Step name.
    #[serde(default)]
    pub name: String,
    /// The driver that runs this step.
    #[serde(default)]
    pub driver: String,
}

/// A pipeline: the drivers a resource type goes through, in order (`types.Pipeline`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Pipeline name.
    #[serde(default)]
    pub name: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The resource type the pipeline processes.
    #[serde(default)]
    pub resource: String,
    /// Steps, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<Step>,
    /// Metadata (string values in the swagger; any JSON is accepted).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub metadata: Map<String, Value>,
    /// Version, set by the server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// The schema of a resource type (`types.ResourceDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinition {
    /// Identifier, set by the server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The resource type's name, e.g. `build`.
    #[serde(default)]
    pub name: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// JSON schema that resources of this type must satisfy.
    #[serde(default)]
    pub schema: Value,
}

/// What the server answers to a created resource (`201 Created`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceCreated {
    /// The resource's name.
    #[serde(default)]
    pub name: String,
    /// The run the creation started (its logs and results carry it).
    #[serde(default)]
    pub runid: String,
    /// The server's message.
    #[serde(default)]
    pub message: String,
    /// The resource's version.
    #[serde(default)]
    pub version: Option<Value>,
    /// Any other field the server sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message to broadcast to drivers (`types.DriverMessage`): unlike the
/// [`wire::DriverMessage`](crate::wire::DriverMessage), its payload is a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    /// Event name, e.g. `create`.
    pub event: String,
    /// Message identifier.
    pub id: String,
    /// The payload, usually resource JSON as a string.
    pub payload: String,
    /// Run identifier.
    pub run_id: String,
}

/// Filters of [`Client::logs`](super::Client::logs); unset filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Pipeline name.
    pub pipeline: Option<String>,
    /// Driver name.
    pub driver: Option<String>,
    /// Run identifier.
    pub runid: Option<String>,
}

impl LogQuery {
    /// No filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only lines of this pipeline.
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    /// Only lines of this driver.
    #[must_use]
    pub fn driver(mut self, driver: impl Into<String>) -> Self {
        self.driver = Some(driver.into());
        self
    }

    /// Only lines of this run.
    #[must_use]
    pub fn runid(mut self, runid: impl Into<String>) -> Self {
        self.runid = Some(runid.into());
        self
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

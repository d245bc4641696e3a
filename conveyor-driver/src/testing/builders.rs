//! Builders of synthetic resources and events, with defaults a test only overrides where it
//! matters.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::context::stored_result;
use crate::driver::Event;
use crate::wire::{DriverResult, DriverResultEvent, Resource};

/// Builds a [`Resource`] with sensible defaults: id `test-<uuid>`, name `test`, no pipeline,
/// empty metadata, `null` spec.
///
/// ```
/// use conveyor_driver::testing::ResourceBuilder;
///
/// let resource = ResourceBuilder::new("build")
///     .name("app")
///     .pipeline("ci")
///     .metadata("owner", "team-a")
///     .spec(serde_json::json!({"image": "rust"}))
///     .build();
/// assert_eq!(resource.resource, "build");
/// assert_eq!(resource.spec["image"], "rust");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceBuilder {
    resource: Resource,
}

impl ResourceBuilder {
    /// A resource of type `resource_type`.
    pub fn new(resource_type: impl Into<String>) -> Self {
        Self {
            resource: Resource {
                id: format!("test-{}", uuid::Uuid::new_v4()),
                name: "test".to_owned(),
                resource: resource_type.into(),
                pipeline: None,
                metadata: Map::new(),
                spec: Value::Null,
            },
        }
    }

    /// Sets the resource name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.resource.name = name.into();
        self
    }

    /// Sets the resource id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.resource.id = id.into();
        self
    }

    /// Sets the pipeline the resource belongs to (stamped on every log line).
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.resource.pipeline = Some(pipeline.into());
        self
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.resource.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the spec from anything serializable; a value that does not serialize (a map with
    /// non-string keys) becomes `null`.
    #[must_use]
    pub fn spec(mut self, spec: impl Serialize) -> Self {
        self.resource.spec = serde_json::to_value(spec).unwrap_or(Value::Null);
        self
    }

    /// The resource.
    pub fn build(self) -> Resource {
        self.resource
    }
}

impl From<ResourceBuilder> for Resource {
    fn from(builder: ResourceBuilder) -> Self {
        builder.build()
    }
}

/// Builds an [`Event`] with sensible defaults: event `create`, a fresh UUID run id, message id
/// `test-<uuid>`, first attempt, and a resource from [`ResourceBuilder`].
///
/// ```
/// use conveyor_driver::testing::{EventBuilder, ResourceBuilder};
///
/// let event = EventBuilder::new("build").name("app").event("update").attempt(2).build();
/// assert_eq!(event.name, "update");
/// assert_eq!(event.resource.name, "app");
/// assert!(uuid::Uuid::parse_str(&event.run_id).is_ok());
///
/// let event = EventBuilder::for_resource(ResourceBuilder::new("build").build()).build();
/// assert_eq!(event.name, "create");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventBuilder {
    event: Event,
}

impl EventBuilder {
    /// An event about a resource of type `resource_type`.
    pub fn new(resource_type: impl Into<String>) -> Self {
        Self::for_resource(ResourceBuilder::new(resource_type).build())
    }

    /// An event about `resource`.
    pub fn for_resource(resource: impl Into<Resource>) -> Self {
        let event = Event::new(
            "create",
            format!("test-{}", uuid::Uuid::new_v4()),
            uuid::Uuid::new_v4().to_string(),
            resource.into(),
        );
        Self { event }
    }

    /// Sets the event name (`create`, `update`, `delete`, `process`…).
    #[must_use]
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event.name = name.into();
        self
    }

    /// Sets the run id.
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.event.run_id = run_id.into();
        self
    }

    /// Sets the message id.
    #[must_use]
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.event.message_id = id.into();
        self
    }

    /// Sets the delivery attempt (1 is the first delivery).
    #[must_use]
    pub fn attempt(mut self, attempt: u64) -> Self {
        self.event.attempt = attempt;
        self
    }

    /// Sets the resource name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.event.resource.name = name.into();
        self
    }

    /// Sets the resource's pipeline.
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.event.resource.pipeline = Some(pipeline.into());
        self
    }

    /// Sets the resource spec (see [`ResourceBuilder::spec`]).
    #[must_use]
    pub fn spec(mut self, spec: impl Serialize) -> Self {
        self.event.resource.spec = serde_json::to_value(spec).unwrap_or(Value::Null);
        self
    }

    /// Adds a resource metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.event
            .resource
            .metadata
            .insert(key.into(), value.into());
        self
    }

    /// Adds the result of an earlier pipeline step run by `driver`, as the pipeline engine
    /// stores it (metadata `driverresults.<driver>`, the DriverResultEvent as a JSON string),
    /// for a [`PipelineContext`](crate::PipelineContext) to read. A later step gets the event
    /// `process`: set it with [`event`](Self::event).
    ///
    /// ```
    /// use conveyor_driver::testing::EventBuilder;
    /// use conveyor_driver::{DriverResult, PipelineContext};
    ///
    /// let event = EventBuilder::new("app")
    ///     .event("process")
    ///     .earlier_result("git-cloner", DriverResult::success("cloned").with_data(serde_json::json!({"path": "/src"})))
    ///     .build();
    /// let path: serde_json::Value = PipelineContext::of(&event).result_of("git-cloner").unwrap();
    /// assert_eq!(path["path"], "/src");
    /// assert!(event.resource.metadata["driverresults.git-cloner"].is_string());
    /// ```
    #[must_use]
    pub fn earlier_result(mut self, driver: impl Into<String>, result: DriverResult) -> Self {
        let (key, value) = stored_result(&DriverResultEvent::new(result, driver));
        self.event.resource.metadata.insert(key, value);
        self
    }

    /// The event.
    pub fn build(self) -> Event {
        self.event
    }
}

impl From<EventBuilder> for Event {
    fn from(builder: EventBuilder) -> Self {
        builder.build()
    }
}

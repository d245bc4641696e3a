//! The pipeline around an event: which pipeline the resource is in, whether this event is a
//! later step, and what the earlier steps produced.
//!
//! The Conveyor server's pipeline engine, on each successful result, stores the step's
//! DriverResultEvent in the resource's metadata under `driverresults.<driver>`, as a JSON
//! *string* (metadata values are strings on the Go side), and sends the next step the event
//! `process` with that resource. [`PipelineContext`] reads them back, typed.

use std::any::type_name;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::driver::Event;
use crate::extract::short_type_name;
use crate::wire::{DriverResult, DriverResultEvent};

/// The prefix of the metadata keys holding earlier steps' results.
const RESULTS_PREFIX: &str = "driverresults.";

/// The event the pipeline engine sends to every step after the first.
const LATER_STEP_EVENT: &str = "process";

/// The pipeline an event belongs to and the results of its earlier steps: a `#[driver]`
/// parameter (hand-written drivers use [`PipelineContext::of`]).
///
/// ```
/// use conveyor_driver::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Checkout { path: String }
///
/// #[driver(name = "builder", resources = ["app"], main = false)]
/// async fn build(pipeline: PipelineContext, log: Logger) -> Result<(), ReconcileError> {
///     if pipeline.is_later_step() {
///         let checkout: Checkout = pipeline.result_of("git-cloner")?;
///         log.log(format!("building {}", checkout.path));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineContext {
    name: Option<String>,
    later_step: bool,
    /// The `driverresults.*` metadata entries, keyed by driver name.
    results: Map<String, Value>,
}

impl PipelineContext {
    /// The context of `event`.
    pub fn of(event: &Event) -> Self {
        let results = event
            .resource
            .metadata
            .iter()
            .filter_map(|(key, value)| {
                let driver = key.strip_prefix(RESULTS_PREFIX)?;
                Some((driver.to_owned(), value.clone()))
            })
            .collect();
        Self {
            name: event.resource.pipeline.clone().filter(|p| !p.is_empty()),
            later_step: event.name == LATER_STEP_EVENT,
            results,
        }
    }

    /// The pipeline the resource belongs to; `None` for a resource outside any pipeline.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether this event is a later step of a pipeline (the event `process`), which has the
    /// results of the steps before it.
    pub fn is_later_step(&self) -> bool {
        self.later_step
    }

    /// The drivers whose results the resource holds, sorted.
    pub fn earlier_steps(&self) -> Vec<&str> {
        let mut steps: Vec<&str> = self.results.keys().map(String::as_str).collect();
        steps.sort_unstable();
        steps
    }

    /// The data of the result of the earlier step run by `driver`, as a `T`.
    ///
    /// Fails, with an error naming the metadata key, when there is no such result, when it
    /// is not a driver result, when that step failed, or when its data is not a valid `T`
    /// (naming the field, e.g. ``the result of step `git-cloner` (metadata
    /// `driverresults.git-cloner`) is not a valid `Checkout`: invalid data.path: invalid type:
    /// integer `7`, expected a string``). With `?` in a `#[driver]` function, the run fails
    /// with that message.
    pub fn result_of<T: DeserializeOwned>(&self, driver: &str) -> Result<T, StepError> {
        let result = self.driver_result(driver)?;
        if !result.success {
            return Err(StepError::Failed {
                key: key(driver),
                message: result.message,
            });
        }
        serde_path_to_error::deserialize(&result.data).map_err(|err| {
            let path = err.path().to_string();
            StepError::Data {
                key: key(driver),
                expected: short_type_name(type_name::<T>()),
                field: if path == "." {
                    "data".to_owned()
                } else {
                    format!("data.{path}")
                },
                reason: err.into_inner().to_string(),
            }
        })
    }

    /// The whole result of the earlier step run by `driver`: success, message, data.
    pub fn driver_result(&self, driver: &str) -> Result<DriverResultEvent, StepError> {
        let Some(stored) = self.results.get(driver) else {
            return Err(StepError::Missing {
                key: key(driver),
                present: self.earlier_steps().into_iter().map(key).collect(),
            });
        };
        let malformed = |reason: String| StepError::Malformed {
            key: key(driver),
            reason,
        };
        // The server stores a JSON string; resources written by older servers hold the object.
        let parsed = match stored {
            Value::String(text) => serde_json::from_str::<Stored>(text),
            Value::Object(_) => Stored::deserialize(stored),
            other => {
                return Err(malformed(format!(
                    "expected a JSON string or object, found {other}"
                )))
            }
        };
        let stored = parsed.map_err(|err| malformed(err.to_string()))?;
        Ok(DriverResultEvent::new(
            DriverResult {
                success: stored.success,
                message: stored.message,
                data: stored.data,
            },
            stored.driver.unwrap_or_else(|| driver.to_owned()),
        ))
    }
}

/// A DriverResultEvent as stored, read leniently: fields the server may add are ignored.
#[derive(Deserialize)]
struct Stored {
    success: bool,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    driver: Option<String>,
}

/// The metadata key of `driver`'s result.
fn key(driver: &str) -> String {
    format!("{RESULTS_PREFIX}{driver}")
}

/// The metadata entry the pipeline engine stores for `result`: its key and the result as a
/// JSON string (for the test kit's [`EventBuilder`](crate::testing::EventBuilder)).
pub(crate) fn stored_result(result: &DriverResultEvent) -> (String, Value) {
    let text = serde_json::to_string(result).unwrap_or_default();
    (key(&result.driver), Value::String(text))
}

/// An earlier step's result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The resource holds no result under this key.
    #[error("no result of an earlier step under metadata `{key}`; {}", present_steps(.present))]
    Missing {
        /// The metadata key looked up, `driverresults.<driver>`.
        key: String,
        /// The keys of the results the resource does hold.
        present: Vec<String>,
    },
    /// The value under the key is not a driver result.
    #[error("metadata `{key}` is not a driver result: {reason}")]
    Malformed {
        /// The metadata key.
        key: String,
        /// Why not.
        reason: String,
    },
    /// That step failed, so it has no data to give.
    #[error("the step under metadata `{key}` failed: {message}")]
    Failed {
        /// The metadata key.
        key: String,
        /// The failed result's message.
        message: String,
    },
    /// The step's data does not deserialize into the type asked for.
    #[error(
        "the result under metadata `{key}` is not a valid `{expected}`: invalid {field}: {reason}"
    )]
    Data {
        /// The metadata key.
        key: String,
        /// The Rust type asked for, without module paths.
        expected: String,
        /// The field that failed, starting at `data`.
        field: String,
        /// What was wrong, as serde reports it.
        reason: String,
    },
}

fn present_steps(present: &[String]) -> String {
    if present.is_empty() {
        "the resource holds no earlier results (is this the pipeline's first step?)".to_owned()
    } else {
        format!("the resource holds `{}`", present.join("`, `"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EventBuilder;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Checkout {
        path: String,
    }

    fn stored(driver: &str, result: DriverResult) -> (String, Value) {
        stored_result(&DriverResultEvent::new(result, driver))
    }

    fn context(entries: &[(String, Value)]) -> PipelineContext {
        let mut event = EventBuilder::new("app").event("process").pipeline("ci");
        for (key, value) in entries {
            event = event.metadata(key.clone(), value.clone());
        }
        PipelineContext::of(&event.metadata("owner", "team").build())
    }

    #[test]
    fn reads_the_string_the_server_stores_and_the_object_of_older_servers() {
        let ok = DriverResult::success("cloned").with_data(json!({"path": "/src/app"}));
        let as_string = stored("git-cloner", ok.clone());
        assert!(as_string.1.is_string());
        let as_object = (
            "driverresults.git-cloner".to_owned(),
            serde_json::to_value(DriverResultEvent::new(ok, "git-cloner")).unwrap(),
        );
        for entry in [as_string, as_object] {
            let context = context(&[entry]);
            assert_eq!(context.name(), Some("ci"));
            assert!(context.is_later_step());
            assert_eq!(context.earlier_steps(), ["git-cloner"]);
            let checkout: Checkout = context.result_of("git-cloner").unwrap();
            assert_eq!(checkout.path, "/src/app");
            let result = context.driver_result("git-cloner").unwrap();
            assert_eq!(result.message, "cloned");
            assert_eq!(result.driver, "git-cloner");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_type() {
        let context = context(&[
            stored(
                "fetch",
                DriverResult::success("ok").with_data(json!({"path": 7})),
            ),
            stored("lint", DriverResult::failure("3 warnings")),
            ("driverresults.broken".to_owned(), json!("{not json")),
            ("driverresults.number".to_owned(), json!(5)),
        ]);
        let err = context.result_of::<Checkout>("fetch").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the result under metadata `driverresults.fetch` is not a valid `Checkout`: invalid data.path: invalid type: integer `7`, expected a string"
        );
        let err = context.result_of::<Checkout>("git-cloner").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no result of an earlier step under metadata `driverresults.git-cloner`; the resource holds `driverresults.broken`, `driverresults.fetch`, `driverresults.lint`, `driverresults.number`"
        );
        let err = context.result_of::<Checkout>("lint").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the step under metadata `driverresults.lint` failed: 3 warnings"
        );
        let err = context.result_of::<Checkout>("broken").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "metadata `driverresults.broken` is not a driver result: key must be a string"
            ),
            "{err}"
        );
        let err = context.driver_result("number").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a JSON string or object, found 5"),
            "{err}"
        );
        // A whole-data mismatch names `data` itself.
        let err = context.result_of::<Vec<u8>>("fetch").unwrap_err();
        assert!(
            err.to_string().contains("invalid data: invalid type: map"),
            "{err}"
        );
    }

    #[test]
    fn a_first_step_outside_a_pipeline_has_no_results() {
        let context = PipelineContext::of(&EventBuilder::new("app").build());
        assert_eq!(context.name(), None);
        assert!(!context.is_later_step());
        assert!(context.earlier_steps().is_empty());
        let err = context.result_of::<Checkout>("fetch").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(is this the pipeline's first step?)"),
            "{err}"
        );
    }
}

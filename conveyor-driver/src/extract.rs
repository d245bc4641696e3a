//! What a `#[driver]` function may take and return.
//!
//! Parameters are chosen by type, like web framework extractors: each implements [`FromEvent`]
//! ([`Event`], [`Resource`], [`Spec<T>`], [`RunId`], [`Logger`], [`Client`],
//! [`PipelineContext`], and `Option` of any of them), except [`State<T>`](crate::State), which
//! the start-up hook gives. Return values implement [`IntoReconcileResult`] ([`DriverResult`],
//! `()`, `Result<T, E>` with `T: Serialize` and `E: Into<ReconcileError>`); `#[driver]` also
//! accepts `Result<T, E>` with any `E: Display`.

use std::any::Any;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::Serialize;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::context::PipelineContext;
use crate::driver::{Event, ReconcileError, ReconcileResult};
use crate::logger::Logger;
use crate::signature::SpecData;
use crate::wire::{DriverResult, Resource, SpecError};

/// The message of the successful result made from a `()` or an `Ok` value.
pub(crate) const SUCCESS_MESSAGE: &str = "reconciled";

/// A value a `#[driver]` function can take as a parameter, built from the event being
/// reconciled.
///
/// Implemented for [`Event`] (the whole event), [`Resource`] (the resource), [`Spec<T>`] (the
/// resource spec deserialized into `T`), [`RunId`] (the run identifier), [`Logger`] (the
/// run's log), [`Client`] (the Conveyor API client of
/// [`Config::api_url`](crate::Config::api_url)), [`PipelineContext`] (the pipeline and its
/// earlier steps' results) and `Option<T>` of any of these (`None` where `T` cannot be built,
/// e.g. `Option<Client>` for a driver that also runs without an API URL). A
/// [`State<T>`](crate::State) parameter is not a `FromEvent`: `#[driver]` takes it from the
/// start-up hook, and checks at compile time that the hook builds a `T`.
/// A driver may implement it for types of its own:
///
/// ```
/// use conveyor_driver::{Event, ExtractError, FromEvent, Logger};
///
/// /// The `owner` metadata of the resource.
/// struct Owner(String);
///
/// impl FromEvent for Owner {
///     fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
///         match event.resource.metadata.get("owner").and_then(|v| v.as_str()) {
///             Some(owner) => Ok(Owner(owner.to_owned())),
///             None => Err(ExtractError::custom("the resource has no `owner` metadata")),
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a `#[driver]` function",
    label = "unsupported parameter type",
    note = "a `#[driver]` function takes any of: `Event`, `Resource`, `Spec<T>` (T: serde::Deserialize), `RunId`, `Logger`, `Client`, `PipelineContext`, an `Option` of one of them, or `State<T>` (written so, with `#[driver(state = hook)]`)"
)]
pub trait FromEvent: Sized {
    /// Builds the value; an error makes the run fail with its message, without calling the
    /// function.
    fn from_event(event: &Event, log: &Logger) -> Result<Self, ExtractError>;
}

/// A parameter of a `#[driver]` function could not be built from the event. The run fails with
/// this error's message (including its source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The resource spec does not deserialize into the type the function asks for.
    #[error("the resource spec is not a valid `{expected}`")]
    Spec {
        /// The Rust type the spec was read as, without module paths (e.g. `BuildSpec`).
        expected: String,
        /// The field that failed and why.
        #[source]
        source: SpecError,
    },
    /// The function takes the API [`Client`](crate::Client), and no API URL is configured.
    #[cfg(feature = "client")]
    #[error("the driver takes the Conveyor API client, but no API URL is configured (--api-url, CONVEYOR_API_URL)")]
    NoApiClient,
    /// The function takes `State<T>`, and the driver has no state of that type: in a test,
    /// the harness was not given one ([`Harness::state`](crate::testing::Harness::state)).
    #[error("the driver takes `State<{expected}>`, but {}", match .given {
        Some(given) => format!("its state is a `{given}`"),
        None => "it has no state: its `state` hook did not run (in a test, give it with `Harness::state`)".to_owned(),
    })]
    State {
        /// The `T` of the `State<T>` parameter, without module paths.
        expected: String,
        /// The type of the state the driver has, if any.
        given: Option<String>,
    },
    /// A parameter type of the driver's own could not be built.
    #[error("{0}")]
    Custom(String),
}

impl ExtractError {
    /// An error of a [`FromEvent`] implementation of the driver's own.
    pub fn custom(message: impl Into<String>) -> Self {
        Self::Custom(message.into())
    }
}

impl FromEvent for Event {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        Ok(event.clone())
    }
}

impl FromEvent for Resource {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        Ok(event.resource.clone())
    }
}

impl FromEvent for Logger {
    fn from_event(_event: &Event, log: &Logger) -> Result<Self, ExtractError> {
        Ok(log.clone())
    }
}

impl FromEvent for RunId {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        Ok(RunId(event.run_id.clone()))
    }
}

#[cfg(feature = "client")]
impl FromEvent for Client {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        event.client().cloned().ok_or(ExtractError::NoApiClient)
    }
}

/// `None` where `T` cannot be built; the run goes on.
impl<T: FromEvent> FromEvent for Option<T> {
    fn from_event(event: &Event, log: &Logger) -> Result<Self, ExtractError> {
        Ok(T::from_event(event, log).ok())
    }
}

impl FromEvent for PipelineContext {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        Ok(PipelineContext::of(event))
    }
}

impl<T: SpecData> FromEvent for Spec<T> {
    fn from_event(event: &Event, _log: &Logger) -> Result<Self, ExtractError> {
        event
            .resource
            .spec_as::<T>()
            .map(Spec)
            .map_err(|source| ExtractError::Spec {
                expected: short_type_name(std::any::type_name::<T>()),
                source,
            })
    }
}

/// The resource spec, deserialized into `T`: a `#[driver]` parameter.
///
/// When the spec does not fit `T`, the function is not called and the run fails with a message
/// naming the type, the field and what was expected, e.g. ``the resource spec is not a valid
/// `BuildSpec`: invalid spec.image: invalid type: integer `7`, expected a string``.
///
/// ```
/// # use conveyor_driver::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct BuildSpec { image: String }
///
/// async fn build(Spec(spec): Spec<BuildSpec>) -> String {
///     spec.image
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spec<T>(pub T);

impl<T> Spec<T> {
    /// The spec value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Spec<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Spec<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The identifier (a UUID) of the run the event belongs to: a `#[driver]` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub String);

impl RunId {
    /// The identifier as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for RunId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RunId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> Self {
        id.0
    }
}

/// A value a `#[driver]` function can return: what it becomes as the run's result.
///
/// | returned | published |
/// |---|---|
/// | [`DriverResult`] | as it is |
/// | `()` | success, message `reconciled`, no data |
/// | `Ok(data)` of `Result<T, E>`, `T: Serialize` | success, message `reconciled`, `data` = `data` as JSON |
/// | `Ok(result)` of `Result<DriverResult, E>` | `result` as it is |
/// | `Err(error)`, `E: std::error::Error` | failure, message = the error and its sources joined with `": "` |
/// | `Err(error)`, `E` = [`ReconcileError`] | failure, or a retry when it is transient |
///
/// `#[driver]` also accepts `Result<T, E>` whose `E` only implements `Display` (`String`,
/// `anyhow::Error`, `Box<dyn Error>` …): `Err` becomes a failure whose message is the error
/// written with `{:#}` (which for `anyhow` includes the sources).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a `#[driver]` function",
    label = "unsupported return type",
    note = "a `#[driver]` function returns one of: `DriverResult`, `()`, `Result<T, E>` with T: serde::Serialize and E: std::fmt::Display (e.g. a std::error::Error), `Result<T, ReconcileError>`"
)]
pub trait IntoReconcileResult {
    /// Converts the returned value.
    fn into_reconcile_result(self) -> ReconcileResult;
}

impl IntoReconcileResult for DriverResult {
    fn into_reconcile_result(self) -> ReconcileResult {
        Ok(self)
    }
}

impl IntoReconcileResult for () {
    fn into_reconcile_result(self) -> ReconcileResult {
        Ok(DriverResult::success(SUCCESS_MESSAGE))
    }
}

impl<T, E> IntoReconcileResult for Result<T, E>
where
    T: Serialize + 'static,
    E: Into<ReconcileError>,
{
    fn into_reconcile_result(self) -> ReconcileResult {
        match self {
            Ok(data) => Ok(success_with(data)),
            Err(error) => Err(error.into()),
        }
    }
}

/// `data` as a successful result; a [`DriverResult`] passes through unchanged. Data that does
/// not serialize (e.g. a map with non-string keys) gives a failed result.
pub(crate) fn success_with<T: Serialize + 'static>(data: T) -> DriverResult {
    let mut slot = Some(data);
    if let Some(result) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<DriverResult>>()
        .and_then(Option::take)
    {
        return result;
    }
    match serde_json::to_value(&slot) {
        Ok(value) => DriverResult::success(SUCCESS_MESSAGE).with_data(value),
        Err(err) => DriverResult::failure(format!(
            "the result data of type `{}` cannot be written as JSON: {err}",
            short_type_name(std::any::type_name::<T>())
        )),
    }
}

/// `a::b::Foo<c::Bar>` → `Foo<Bar>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// Support for the code `#[driver]` generates. Not public API.
///
/// A returned value is converted by autoref specialization, which picks the first that
/// applies: a value that implements [`IntoReconcileResult`] as it is; any other `Result<T, E>`
/// split into its data and its error; anything else as it is, for the compiler to reject. The
/// error of a split `Result` is picked the same way: an `Into<ReconcileError>` (keeping its
/// sources and its transience), else any other type. What no level fits is then rejected by
/// the call the generated code makes on the user's own type (`<_ as IntoReconcileResult>`,
/// `<_ as ResultData>`, `<_ as ResultError>`), so a diagnostic names that type and the
/// public trait it lacks, never this module.
#[doc(hidden)]
pub mod autoref {
    use std::marker::PhantomData;

    use super::IntoReconcileResult;
    use crate::driver::{Event, ReconcileError, ReconcileResult};
    use crate::logger::Logger;
    use crate::state::State;
    use crate::wire::DriverResult;

    /// Stands for the type `R` of a value: `(&&&wrap(&value)).__conveyor_kind()`.
    pub struct Wrap<R>(PhantomData<R>);

    /// The `Wrap` of `value`'s type.
    pub fn wrap<R>(_value: &R) -> Wrap<R> {
        Wrap(PhantomData)
    }

    /// A returned value as the generated code converts it.
    pub enum Returned<R, T, E> {
        /// Converted with `IntoReconcileResult` (or rejected for not implementing it).
        Whole(R),
        /// The `Ok` data of a `Result`.
        Data(T),
        /// The `Err` of a `Result`.
        Error(E),
    }

    /// The value implements `IntoReconcileResult`, or is not a `Result`.
    pub struct WholeKind;
    /// A `Result` that does not implement `IntoReconcileResult`.
    pub struct ResultKind;

    /// Level 1.
    pub trait WholeSelect {
        /// How to convert.
        fn __conveyor_kind(&self) -> WholeKind {
            WholeKind
        }
    }
    impl<R: IntoReconcileResult> WholeSelect for &&Wrap<R> {}

    /// Level 2.
    pub trait ResultSelect {
        /// How to convert.
        fn __conveyor_kind(&self) -> ResultKind {
            ResultKind
        }
    }
    impl<T, E> ResultSelect for &Wrap<Result<T, E>> {}

    /// Level 3.
    pub trait OtherSelect {
        /// How to convert.
        fn __conveyor_kind(&self) -> WholeKind {
            WholeKind
        }
    }
    impl<R> OtherSelect for Wrap<R> {}

    impl WholeKind {
        /// The value as it is.
        pub fn split<R>(self, value: R) -> Returned<R, (), ReconcileError> {
            Returned::Whole(value)
        }
    }

    impl ResultKind {
        /// The data or the error.
        pub fn split<T, E>(self, value: Result<T, E>) -> Returned<DriverResult, T, E> {
            match value {
                Ok(data) => Returned::Data(data),
                Err(error) => Returned::Error(error),
            }
        }
    }

    /// The error of a split `Result`.
    pub enum ReturnedError<E> {
        /// A `ReconcileError` (from any `std::error::Error`): a failure or a retry.
        Reconcile(ReconcileError),
        /// Anything else: a failed result showing it (or rejected for not being `Display`).
        Other(E),
    }

    /// The error converts into a `ReconcileError`.
    pub struct ReconcileKind;
    /// Any other error.
    pub struct OtherErrorKind;

    /// Level 1 of errors.
    pub trait ReconcileSelect {
        /// How to convert.
        fn __conveyor_error_kind(&self) -> ReconcileKind {
            ReconcileKind
        }
    }
    impl<E: Into<ReconcileError>> ReconcileSelect for &Wrap<E> {}

    /// Level 2 of errors.
    pub trait OtherErrorSelect {
        /// How to convert.
        fn __conveyor_error_kind(&self) -> OtherErrorKind {
            OtherErrorKind
        }
    }
    impl<E> OtherErrorSelect for Wrap<E> {}

    impl ReconcileKind {
        /// The error as a `ReconcileError`, with its sources.
        pub fn split<E: Into<ReconcileError>>(self, error: E) -> ReturnedError<String> {
            ReturnedError::Reconcile(error.into())
        }
    }

    impl OtherErrorKind {
        /// The error as it is.
        pub fn split<E>(self, error: E) -> ReturnedError<E> {
            ReturnedError::Other(error)
        }
    }

    /// A parameter could not be built: the run fails with the reason, also written to its log.
    pub fn reject(error: super::ExtractError, log: &Logger) -> ReconcileResult {
        let error = ReconcileError::from(error);
        log.log(error.message());
        Err(error)
    }

    /// The `State<T>` parameter of `event`'s driver.
    pub fn state<T: 'static>(event: &Event) -> Result<State<T>, super::ExtractError> {
        let shared = event.state();
        shared
            .and_then(|shared| shared.get::<T>())
            .ok_or_else(|| super::ExtractError::State {
                expected: super::short_type_name(std::any::type_name::<T>()),
                given: shared.map(|shared| shared.type_name().to_owned()),
            })
    }
}

/// How a `#[driver]` type finds the JSON schema of its `Spec<T>` parameter, by autoref
/// specialization on each parameter type `P`:
/// `(&SpecSchemaOf::<P>::new()).__conveyor_spec_schema()` is the schema of `T` when `P` is
/// `Spec<T>` (or `Option<Spec<T>>`) with `T: schemars::JsonSchema` and the `schemars` feature is
/// on, and `None` otherwise. Not public API.
#[doc(hidden)]
pub mod spec_schema {
    use std::marker::PhantomData;

    use serde_json::Value;

    /// Stands for the parameter type `P`.
    pub struct SpecSchemaOf<P>(PhantomData<P>);

    impl<P> SpecSchemaOf<P> {
        /// The marker of `P`.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self(PhantomData)
        }
    }

    /// Preferred: a spec type that can describe itself.
    pub trait HasSpecSchema {
        /// The spec's schema.
        fn __conveyor_spec_schema(&self) -> Option<Value>;
    }

    /// Otherwise: no schema.
    pub trait NoSpecSchema {
        /// No schema.
        fn __conveyor_spec_schema(&self) -> Option<Value> {
            None
        }
    }
    impl<P> NoSpecSchema for &SpecSchemaOf<P> {}

    #[cfg(feature = "schemars")]
    impl<T: schemars::JsonSchema> HasSpecSchema for SpecSchemaOf<super::Spec<T>> {
        fn __conveyor_spec_schema(&self) -> Option<Value> {
            Some(schemars::schema_for!(T).to_value())
        }
    }

    #[cfg(feature = "schemars")]
    impl<T: schemars::JsonSchema> HasSpecSchema for SpecSchemaOf<Option<super::Spec<T>>> {
        fn __conveyor_spec_schema(&self) -> Option<Value> {
            Some(schemars::schema_for!(T).to_value())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::autoref::*;
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::HashMap;

    fn event(spec: serde_json::Value) -> Event {
        let resource: Resource = serde_json::from_value(json!({
            "id": "r1", "name": "app", "resource": "build", "metadata": {}, "spec": spec
        }))
        .unwrap();
        Event::new(
            "create",
            "m1",
            "6f1c1a56-0d38-4c3e-9a8f-2b2d8f9b7c11",
            resource,
        )
    }

    fn log() -> Logger {
        Logger::local("6f1c1a56-0d38-4c3e-9a8f-2b2d8f9b7c11", "builder")
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct BuildSpec {
        image: String,
        #[serde(default)]
        steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Step {
        #[allow(dead_code)]
        run: String,
    }

    #[test]
    fn extracts_event_parts() {
        let event = event(json!({"image": "rust"}));
        let log = log();
        assert_eq!(Event::from_event(&event, &log).unwrap(), event);
        assert_eq!(Resource::from_event(&event, &log).unwrap(), event.resource);
        let run_id = RunId::from_event(&event, &log).unwrap();
        assert_eq!(run_id.as_str(), event.run_id);
        assert_eq!(run_id.to_string(), event.run_id);
        assert_eq!(
            Logger::from_event(&event, &log).unwrap().run_id(),
            event.run_id
        );
        let Spec(spec) = Spec::<BuildSpec>::from_event(&event, &log).unwrap();
        assert_eq!(spec.image, "rust");
    }

    #[cfg(feature = "client")]
    #[test]
    fn the_api_client_comes_with_the_event_or_is_reported_missing() {
        let event = event(json!({}));
        let err = Client::from_event(&event, &log()).unwrap_err();
        assert_eq!(err, ExtractError::NoApiClient);
        assert!(err.to_string().contains("CONVEYOR_API_URL"), "{err}");
        assert!(Option::<Client>::from_event(&event, &log())
            .unwrap()
            .is_none());

        let client = Client::builder()
            .base_url("http://127.0.0.1:8080")
            .build()
            .unwrap();
        let event = event.with_client(client);
        let got = Client::from_event(&event, &log()).unwrap();
        assert_eq!(got.base_url().as_str(), "http://127.0.0.1:8080/");
        let got = Option::<Client>::from_event(&event, &log()).unwrap();
        assert!(got.is_some());
        // An optional spec that does not fit is `None`; the run goes on.
        let spec = Option::<Spec<BuildSpec>>::from_event(&event, &log()).unwrap();
        assert_eq!(spec, None);
    }

    #[test]
    fn spec_error_names_field_and_type() {
        let event = event(json!({"image": 7}));
        let err = Spec::<BuildSpec>::from_event(&event, &log()).unwrap_err();
        let message = ReconcileError::from(err).message().to_owned();
        assert!(message.contains("`BuildSpec`"), "{message}");
        assert!(message.contains("spec.image"), "{message}");
        assert!(message.contains("expected a string"), "{message}");

        let event = super::tests::event(json!({"image": "x", "steps": [{"run": "a"}, {}]}));
        let err = Spec::<BuildSpec>::from_event(&event, &log()).unwrap_err();
        let message = ReconcileError::from(err).message().to_owned();
        assert!(message.contains("spec.steps[1]"), "{message}");
        assert!(message.contains("missing field `run`"), "{message}");
    }

    #[test]
    fn spec_of_wrong_shape_or_null_fails_without_panicking() {
        for spec in [json!(null), json!("text"), json!([1, 2]), json!({})] {
            let err = Spec::<BuildSpec>::from_event(&event(spec.clone()), &log()).unwrap_err();
            let ExtractError::Spec { expected, source } = &err else {
                panic!("not a spec error: {err}");
            };
            assert_eq!(expected, "BuildSpec");
            assert!(source.field.starts_with("spec"), "{spec}: {err}");
        }
        // Generic types are named without their module paths.
        let err =
            Spec::<HashMap<String, u8>>::from_event(&event(json!({"a": "b"})), &log()).unwrap_err();
        assert!(err.to_string().contains("`HashMap<String, u8>`"), "{err}");
    }

    #[test]
    fn reject_fails_the_run_permanently() {
        let err = Spec::<BuildSpec>::from_event(&event(json!(1)), &log()).unwrap_err();
        let error = reject(err, &log()).unwrap_err();
        assert!(!error.is_transient());
        assert!(error.message().contains("BuildSpec"));
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name("a::b::Foo"), "Foo");
        assert_eq!(
            short_type_name("std::collections::HashMap<alloc::string::String, u8>"),
            "HashMap<String, u8>"
        );
        assert_eq!(
            short_type_name("&[core::option::Option<x::Y>; 3]"),
            "&[Option<Y>; 3]"
        );
    }

    /// What the `#[driver]` expansion does with a returned value.
    macro_rules! convert {
        ($value:expr) => {{
            use crate::signature::{ResultData, ResultError};
            let value = $value;
            match (&&&wrap(&value)).__conveyor_kind().split(value) {
                Returned::Whole(value) => <_ as IntoReconcileResult>::into_reconcile_result(value),
                Returned::Data(data) => Ok(<_ as ResultData>::into_result(data)),
                Returned::Error(error) => {
                    match (&&wrap(&error)).__conveyor_error_kind().split(error) {
                        ReturnedError::Reconcile(error) => Err(error),
                        ReturnedError::Other(error) => Ok(<_ as ResultError>::into_failure(error)),
                    }
                }
            }
        }};
    }

    #[derive(Debug, thiserror::Error)]
    #[error("build failed")]
    struct BuildError(#[source] std::io::Error);

    #[test]
    fn driver_result_and_unit() {
        let result = DriverResult::failure("no").with_data(json!(1));
        assert_eq!(convert!(result.clone()).unwrap(), result);
        let unit = convert!(()).unwrap();
        assert!(unit.success);
        assert_eq!(unit.message, SUCCESS_MESSAGE);
        assert_eq!(unit.data, serde_json::Value::Null);
    }

    #[test]
    fn ok_values_become_data() {
        #[derive(Serialize)]
        struct Output {
            image: &'static str,
        }
        let ok: Result<Output, BuildError> = Ok(Output { image: "app:1" });
        let result = convert!(ok).unwrap();
        assert!(result.success);
        assert_eq!(result.data, json!({"image": "app:1"}));

        let ok: Result<(), String> = Ok(());
        assert_eq!(
            convert!(ok).unwrap(),
            DriverResult::success(SUCCESS_MESSAGE)
        );

        let inner = DriverResult::failure("custom").with_data(json!([1]));
        let ok: Result<DriverResult, BuildError> = Ok(inner.clone());
        assert_eq!(convert!(ok).unwrap(), inner);
        let ok: Result<DriverResult, String> = Ok(inner.clone());
        assert_eq!(convert!(ok).unwrap(), inner);
    }

    #[test]
    fn unserializable_data_fails_without_panicking() {
        let mut map = HashMap::new();
        map.insert(vec![1u8], 1);
        let ok: Result<HashMap<Vec<u8>, i32>, String> = Ok(map);
        let result = convert!(ok).unwrap();
        assert!(!result.success);
        assert!(
            result.message.contains("HashMap<Vec<u8>, i32>"),
            "{}",
            result.message
        );
    }

    #[test]
    fn std_errors_include_their_sources() {
        let err: Result<(), BuildError> = Err(BuildError(std::io::Error::other("disk full")));
        let error = convert!(err).unwrap_err();
        assert!(!error.is_transient());
        assert_eq!(error.message(), "build failed: disk full");
    }

    #[test]
    fn reconcile_errors_keep_transience() {
        let err: Result<u32, ReconcileError> =
            Err(ReconcileError::transient("busy").retry_after(std::time::Duration::from_secs(3)));
        let error = convert!(err).unwrap_err();
        assert!(error.is_transient());
        assert_eq!(error.retry_delay(), Some(std::time::Duration::from_secs(3)));
    }

    #[test]
    fn display_errors_become_failures() {
        let err: Result<u32, String> = Err("asked to fail".to_owned());
        let result = convert!(err).unwrap();
        assert!(!result.success);
        assert_eq!(result.message, "asked to fail");

        let err: Result<u32, Box<dyn std::error::Error + Send + Sync>> = Err("boxed".into());
        assert_eq!(convert!(err).unwrap().message, "boxed");
    }
}

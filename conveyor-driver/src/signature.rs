//! What the types in a `#[driver]` function's signature must implement.
//!
//! The compiler names these traits when a type does not fit, so that a mistake reads as what
//! to change in your code: the data of a returned `Result` must be `Serialize` ([`ResultData`]),
//! its error `Display` ([`ResultError`]), the type of a `Spec<T>` `Deserialize` ([`SpecData`]),
//! a `State<T>` the `T` of the start-up hook ([`Provides`], [`StateHookFn`]). Each is
//! implemented for every type that fits; there is nothing to implement by hand.

use std::fmt::Display;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Config;
use crate::wire::DriverResult;

/// The data of a successful result: the `T` of a `Result<T, E>` that a `#[driver]` function
/// returns. Any `Serialize` type; a `DriverResult` is published as it is.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the data of a `#[driver]` result",
    label = "`{Self}` does not implement `serde::Serialize`",
    note = "the `T` of a returned `Result<T, E>` becomes the result's JSON `data`: add `#[derive(serde::Serialize)]` to `{Self}`, or return a `DriverResult`"
)]
pub trait ResultData {
    /// The successful result carrying `self` as its data.
    fn into_result(self) -> DriverResult;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + 'static> ResultData for T {
    fn into_result(self) -> DriverResult {
        crate::extract::success_with(self)
    }
}

/// The error of a `Result<T, E>` that a `#[driver]` function returns, when it is not a
/// `std::error::Error` or a `ReconcileError` (those keep their sources and their transience):
/// any `Display` type, e.g. `String` or `anyhow::Error`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a `#[driver]` function",
    label = "`{Self}` does not implement `std::fmt::Display`",
    note = "the `E` of a returned `Result<T, E>` becomes the failed result's message: implement `std::fmt::Display` (or `std::error::Error`) for `{Self}`, or return `ReconcileError` or `String`"
)]
pub trait ResultError {
    /// The failed result whose message is `self` written with `{:#}` (which for `anyhow`
    /// includes the sources).
    fn into_failure(self) -> DriverResult;
}

#[diagnostic::do_not_recommend]
impl<E: Display> ResultError for E {
    fn into_failure(self) -> DriverResult {
        DriverResult::failure(format!("{self:#}"))
    }
}

/// The `T` of a `Spec<T>` parameter: any type that deserializes from the resource spec.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read from the resource spec",
    label = "`{Self}` does not implement `serde::Deserialize`",
    note = "a `Spec<T>` parameter deserializes the resource's spec into `T`: add `#[derive(serde::Deserialize)]` to `{Self}`"
)]
pub trait SpecData: DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> SpecData for T {}

/// A start-up hook (`#[driver(state = connect)]`): an `async fn connect(config: &Config) ->
/// Result<T, E>` whose future is `Send`, with `T: Send + Sync + 'static` (the state) and
/// `E: Display` (what a failure says).
pub trait StateHookFn<'a> {
    /// What the hook builds: the `T` of `State<T>`.
    type State: Send + Sync + 'static;
    /// Why it failed.
    type Error: Display;
    /// The hook's future.
    type Future: Future<Output = Result<Self::State, Self::Error>> + Send + 'a;
    /// Calls the hook.
    fn call(&self, config: &'a Config) -> Self::Future;
}

impl<'a, F, Fut, T, E> StateHookFn<'a> for F
where
    F: Fn(&'a Config) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'a,
    T: Send + Sync + 'static,
    E: Display,
{
    type State = T;
    type Error = E;
    type Future = Fut;
    fn call(&self, config: &'a Config) -> Fut {
        self(config)
    }
}

/// The start-up hook builds a `Self`, which is what a `State<P>` parameter takes: `P` is
/// `Self`.
#[diagnostic::on_unimplemented(
    message = "`State<{P}>` is not what this driver's `state` hook builds",
    label = "the `state` hook builds a `{Self}`, not a `{P}`",
    note = "a `State<T>` parameter gets the `T` of the hook's `Result<T, E>`: write `State<{Self}>`, or make the hook build a `{P}`"
)]
pub trait Provides<P> {
    /// Compiles when the hook's `result` holds a `P`.
    fn check<E>(result: &Result<Self, E>)
    where
        Self: Sized,
    {
        let _ = result;
    }
}

impl<T> Provides<T> for T {}

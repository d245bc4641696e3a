//! Shared state: what a driver builds once at start-up (a Docker client, a database pool, an
//! artifact store) and every reconcile shares, as a [`State<T>`] parameter.
//!
//! See [`State`].

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::Config;
use crate::extract::short_type_name;
use crate::manager::protocol::AbortOnDrop;

/// The driver's shared state, built once by its start-up hook: a `#[driver]` parameter.
///
/// `#[driver(state = connect)]` names the hook, an `async fn connect(config: &Config) ->
/// Result<T, E>`. The runtime runs it once, after reading the configuration and before binding
/// the consumer (`run`, and `invoke`); an error stops the driver with one line naming the hook.
/// A hand-written `main` may give the value instead
/// ([`DriverManager::with_state`](crate::DriverManager::with_state)), and so may a test
/// ([`Harness::state`](crate::testing::Harness::state)).
///
/// Every reconcile gets the same value, behind an [`Arc`]; it derefs to `T`. Interior
/// mutability (a `Mutex`, an atomic, a connection pool) is up to `T`. Its type must be the
/// `T` of the hook's `Result<T, E>`: a `State<T>` that no hook gives does not compile. The
/// drivers of one binary whose states have the same type share one value.
///
/// ```no_run
/// use conveyor_driver::prelude::*;
///
/// struct Registry { url: String }
///
/// async fn connect(_config: &Config) -> Result<Registry, std::env::VarError> {
///     Ok(Registry { url: std::env::var("REGISTRY_URL")? })
/// }
///
/// #[driver(name = "pusher", resources = ["image"], state = connect)]
/// async fn push(registry: State<Registry>, log: Logger) {
///     log.log(format!("pushing to {}", registry.url));
/// }
/// ```
pub struct State<T>(pub Arc<T>);

impl<T> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&self.0).finish()
    }
}

type HookFuture = Pin<Box<dyn Future<Output = Result<SharedState, String>> + Send>>;

/// A driver's start-up hook: builds its [`State`] from the configuration. `#[driver(state =
/// connect)]` makes one from `connect`; [`Driver::state_hook`](crate::Driver::state_hook)
/// hands it to the runtime.
pub struct StateHook {
    name: &'static str,
    state_type: TypeId,
    type_name: String,
    run: Box<dyn Fn(Config) -> HookFuture + Send + Sync>,
}

impl StateHook {
    /// The hook `name` (as shown in errors) calling `hook` with the driver's configuration.
    pub fn new<T, E, F, Fut>(name: &'static str, hook: F) -> Self
    where
        T: Send + Sync + 'static,
        E: fmt::Display,
        F: Fn(Config) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let run = move |config| -> HookFuture {
            let built = hook(config);
            Box::pin(async move {
                match built.await {
                    Ok(value) => Ok(SharedState::new(value)),
                    Err(error) => Err(format!("{error:#}")),
                }
            })
        };
        Self {
            name,
            state_type: TypeId::of::<T>(),
            type_name: short_type_name(std::any::type_name::<T>()),
            run: Box::new(run),
        }
    }

    /// The hook's name, e.g. `connect`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The type of the state it builds, without module paths (e.g. `Registry`).
    pub fn state_type(&self) -> &str {
        &self.type_name
    }

    /// Whether `state` is of the type this hook builds.
    pub(crate) fn builds(&self, state: &SharedState) -> bool {
        self.state_type == state.type_id
    }

    /// Runs the hook for `driver` on the runtime `on`; a panic in it is an error too.
    ///
    /// `on` is the runtime the reconciles run on, not the protocol thread's: clients the hook
    /// builds (connection pools, HTTP clients) tie their background tasks to the runtime that
    /// built them. The hook ends with the future awaiting it (a shutdown during start-up).
    pub(crate) async fn run(
        &self,
        driver: &str,
        config: &Config,
        on: &tokio::runtime::Handle,
    ) -> Result<SharedState, StartError> {
        let mut task = AbortOnDrop(on.spawn((self.run)(config.clone())));
        let message = match task.join().await {
            Ok(Ok(state)) => return Ok(state),
            Ok(Err(message)) => message,
            Err(err) if err.is_panic() => format!(
                "panicked: {}",
                crate::pipeline::panic_message(err.into_panic().as_ref())
            ),
            Err(err) => format!("did not finish: {err}"),
        };
        Err(StartError::Hook {
            driver: driver.to_owned(),
            hook: self.name.to_owned(),
            message,
        })
    }
}

impl fmt::Debug for StateHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateHook")
            .field("name", &self.name)
            .field("state_type", &self.type_name)
            .finish_non_exhaustive()
    }
}

/// The state of a driver, whatever its type: what events carry to their `State<T>`
/// parameters. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedState {
    /// An `Arc<T>`, so that taking it out needs no bound beyond `T: 'static`.
    value: Arc<dyn Any + Send + Sync>,
    type_id: TypeId,
    type_name: String,
}

impl SharedState {
    pub(crate) fn new<T: Send + Sync + 'static>(value: T) -> Self {
        Self {
            value: Arc::new(Arc::new(value)),
            type_id: TypeId::of::<T>(),
            type_name: short_type_name(std::any::type_name::<T>()),
        }
    }

    /// The state as a `State<T>`, if it is a `T`.
    pub(crate) fn get<T: 'static>(&self) -> Option<State<T>> {
        self.value.downcast_ref::<Arc<T>>().cloned().map(State)
    }

    /// The type of the value, without module paths.
    pub(crate) fn type_name(&self) -> &str {
        &self.type_name
    }
}

impl fmt::Debug for SharedState {
    /// The type only: the value may hold secrets (a client with its credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedState<{}>", self.type_name)
    }
}

/// A driver could not start: its start-up hook failed, or it was given a state it does not
/// take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The hook returned an error (or panicked).
    #[error("the start-up hook `{hook}` of driver `{driver}` failed: {message}")]
    Hook {
        /// The driver.
        driver: String,
        /// The hook, as named in `#[driver(state = …)]`.
        hook: String,
        /// The hook's error, written with `{:#}`.
        message: String,
    },
    /// The state given with `with_state` is not of the type the driver takes.
    #[error("driver `{driver}` takes a `{expected}` as its state, but was given a `{given}`")]
    WrongState {
        /// The driver.
        driver: String,
        /// The type its hook builds.
        expected: String,
        /// The type it was given.
        given: String,
    },
    /// The driver was given a state, but has no start-up hook, so nothing takes it.
    #[error(
        "driver `{driver}` takes no state (it has no `state` hook), but was given a `{given}`"
    )]
    NoStateTaken {
        /// The driver.
        driver: String,
        /// The type it was given.
        given: String,
    },
}

/// The state `driver` runs with: `given` (checked against its hook), or the one its `hook`
/// builds, or none.
pub(crate) async fn settle(
    driver: &str,
    hook: Option<StateHook>,
    given: Option<SharedState>,
    config: &Config,
    on: &tokio::runtime::Handle,
) -> Result<Option<SharedState>, StartError> {
    match (hook, given) {
        (None, None) => Ok(None),
        (Some(hook), None) => hook.run(driver, config, on).await.map(Some),
        (Some(hook), Some(given)) if hook.builds(&given) => Ok(Some(given)),
        (Some(hook), Some(given)) => Err(StartError::WrongState {
            driver: driver.to_owned(),
            expected: hook.type_name,
            given: given.type_name,
        }),
        (None, Some(given)) => Err(StartError::NoStateTaken {
            driver: driver.to_owned(),
            given: given.type_name,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Pool(u32);

    fn pool_hook(fail: bool) -> StateHook {
        StateHook::new("connect", move |config: Config| async move {
            if fail {
                Err(format!("cannot reach {}", config.nats_url))
            } else {
                Ok(Pool(config.concurrency as u32))
            }
        })
    }

    /// The runtime hooks run on (as the reconciles' runtime would be).
    fn on() -> &'static tokio::runtime::Handle {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RUNTIME
            .get_or_init(|| tokio::runtime::Runtime::new().unwrap())
            .handle()
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn the_hook_builds_the_state_from_the_config() {
        let config = Config::default().concurrency(3);
        let hook = pool_hook(false);
        assert_eq!(hook.name(), "connect");
        assert_eq!(hook.state_type(), "Pool");
        let state = block_on(settle("builder", Some(hook), None, &config, on())).unwrap();
        let state = state.unwrap();
        assert_eq!(*state.get::<Pool>().unwrap(), Pool(3));
        assert!(state.get::<String>().is_none());
        assert_eq!(format!("{state:?}"), "SharedState<Pool>");
    }

    #[test]
    fn a_failing_or_panicking_hook_is_one_line_naming_it() {
        let err = block_on(settle(
            "builder",
            Some(pool_hook(true)),
            None,
            &Config::default(),
            on(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the start-up hook `connect` of driver `builder` failed: cannot reach nats://127.0.0.1:4222"
        );
        let panicking = StateHook::new("boom", |_: Config| async {
            if true {
                panic!("no socket");
            }
            Ok::<_, String>(())
        });
        let err = block_on(panicking.run("builder", &Config::default(), on())).unwrap_err();
        assert!(
            err.to_string().ends_with("failed: panicked: no socket"),
            "{err}"
        );
    }

    #[test]
    fn a_given_state_must_be_the_hooks_type() {
        let config = Config::default();
        let given = SharedState::new(Pool(9));
        let state = block_on(settle(
            "b",
            Some(pool_hook(true)),
            Some(given),
            &config,
            on(),
        ))
        .unwrap()
        .unwrap();
        // The hook did not run: it would have failed.
        assert_eq!(*state.get::<Pool>().unwrap(), Pool(9));
        let wrong = SharedState::new("text".to_owned());
        let err = block_on(settle(
            "b",
            Some(pool_hook(false)),
            Some(wrong.clone()),
            &config,
            on(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "driver `b` takes a `Pool` as its state, but was given a `String`"
        );
        let err = block_on(settle("b", None, Some(wrong), &config, on())).unwrap_err();
        assert!(matches!(err, StartError::NoStateTaken { .. }), "{err}");
        assert!(block_on(settle("b", None, None, &config, on()))
            .unwrap()
            .is_none());
    }
}

//! `invoke`: one event from a file or standard input, reconciled in-process through the same
//! pipeline as in production, without NATS.

use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::config::Config;
use crate::driver::Driver;
use crate::error::chain;
use crate::logger::{Capture, LogLine};
use crate::pipeline::{Incoming, Outcome, Pipeline};
use crate::wire::{DriverMessage, Received, Resource};

use super::CliError;

/// Reads what `invoke` reconciles: a DriverMessage (either payload form) or a bare Resource.
fn read_event(input: &Path) -> Result<Received, CliError> {
    let mut body = Vec::new();
    let read = if input == Path::new("-") {
        std::io::stdin().read_to_end(&mut body)
    } else {
        std::fs::File::open(input).and_then(|mut file| file.read_to_end(&mut body))
    };
    read.map_err(|err| CliError::Input(format!("cannot read {}: {err}", input.display())))?;
    parse_event(&body)
}

fn parse_event(body: &[u8]) -> Result<Received, CliError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| CliError::Input(format!("not JSON: {err}")))?;
    if value.get("payload").is_some() {
        return Received::parse(body).map_err(|err| CliError::Input(chain(&err)));
    }
    let resource: Resource = serde_json::from_value(value.clone()).map_err(|err| {
        CliError::Input(format!(
            "neither a DriverMessage (no `payload`) nor a Resource: {err}"
        ))
    })?;
    let raw_resource =
        serde_json::value::to_raw_value(&value).map_err(|err| CliError::Input(err.to_string()))?;
    Ok(Received {
        message: DriverMessage {
            event: "create".to_owned(),
            payload: resource,
            id: format!("invoke-{}", uuid::Uuid::new_v4()),
            run_id: uuid::Uuid::new_v4().to_string(),
        },
        raw_resource,
    })
}

/// Reconciles the event in `input` after running the driver's start-up hook: prints each log
/// line to standard error as it is logged and the result envelope to standard output; fails
/// with the outcome when the run did not succeed.
pub(super) fn invoke<D: Driver>(driver: D, config: Config, input: &Path) -> Result<(), CliError> {
    let received = read_event(input)?;
    #[cfg(feature = "client")]
    let client = Client::for_reconciles(&config).map_err(crate::Error::ApiClient)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let mut pipeline = Pipeline::new(driver, config);
    let hook = pipeline.driver().state_hook();
    let state = runtime
        .block_on(crate::state::settle(
            pipeline.name(),
            hook,
            None,
            pipeline.config(),
            runtime.handle(),
        ))
        .map_err(crate::Error::from)?;
    pipeline.set_state(state);
    let capture = Capture::new(Some(Box::new(print_line)));
    let incoming = Incoming::received(received, 1);
    #[cfg(feature = "client")]
    let incoming = incoming.with_client(client.as_ref());
    let run = pipeline.start(incoming, Arc::clone(&capture));
    let (outcome, _) = runtime.block_on(pipeline.reconcile(run));
    match outcome {
        Outcome::Publish(envelope) => {
            let text = serde_json::to_string(&envelope).unwrap_or_default();
            // A closed stdout ends the output quietly rather than panicking as `println!`.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            let result = &envelope.driverresult;
            if result.success {
                Ok(())
            } else {
                Err(CliError::Failed(format!("failed: {}", result.message)))
            }
        }
        Outcome::Retry { delay, message } => Err(CliError::Failed(format!(
            "would retry after {delay:?}: {message}"
        ))),
        Outcome::Skipped => {
            eprintln!(
                "skipped: the driver does not handle this event; no result would be published"
            );
            Ok(())
        }
    }
}

/// A log line on standard error: its JSON body, then its label headers when it has labels.
fn print_line(line: &LogLine) {
    let body = line.json();
    if line.labels.is_empty() {
        eprintln!("{body}");
    } else {
        let headers: serde_json::Map<String, Value> = line
            .headers()
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect();
        eprintln!("{body} {}", Value::Object(headers));
    }
}

//! `trigger RESOURCE.json`: creates the resource in the file through the Conveyor API and
//! prints the run id the server started for it.
//!
//! The file is sent exactly as written: no field is added, dropped or rewritten. Reads
//! `CONVEYOR_API_URL` and, when set, `CONVEYOR_TLS_CERT`, `CONVEYOR_TLS_KEY` (proof-of-possession
//! authentication) and `CONVEYOR_TLS_CA`. Exits 0 on success; otherwise prints one line saying
//! what failed and exits 1 (2 for a usage error).
//!
//! ```text
//! $ CONVEYOR_API_URL=http://localhost:8080 trigger build.json
//! 5f0c2f8e-3f4e-4b8e-9a59-2f1f3c1f9d7a
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use conveyor_driver::client::{ClientBuilder, ClientError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: trigger RESOURCE.json");
        return ExitCode::from(2);
    };
    match trigger(PathBuf::from(path)).await {
        Ok(runid) => {
            if !runid.is_empty() {
                println!("{runid}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("trigger: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

async fn trigger(path: PathBuf) -> Result<String, String> {
    let shown = path.display();
    let body = std::fs::read(&path).map_err(|err| format!("cannot read {shown}: {err}"))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map_err(|err| format!("{shown} is not valid JSON: {err}"))?;
    let client = ClientBuilder::from_env()
        .and_then(ClientBuilder::build)
        .map_err(|err| err.to_string())?;
    let created = client
        .create_resource_json(body)
        .await
        .map_err(|err| match err {
            ClientError::Status {
                status, message, ..
            } => {
                format!("the Conveyor API rejected {shown} ({status}): {message}")
            }
            other => other.to_string(),
        })?;
    if created.runid.is_empty() {
        // Created all the same: report it, but do not fail (a retry would create it twice).
        eprintln!("trigger: the Conveyor API accepted {shown} but returned no run id");
    }
    Ok(created.runid)
}

//! A driver that runs a shell script per resource and streams its output to the run log.
//!
//! Resource type `script`; its spec:
//!
//! ```json
//! {"script": "make test", "env": {"CI": "1"}, "workdir": "/src", "timeout_secs": 600}
//! ```
//!
//! `script` runs with `sh -c`; every line it writes to stdout or stderr goes to the run log as
//! it is produced (labelled `stream=stdout|stderr`). The run succeeds when the script exits
//! with 0; the result data holds `exit_code` (and `timed_out`). When `timeout_secs` passes, the
//! script and the processes it started are killed and the run fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use conveyor_driver::prelude::*;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// The spec of a `script` resource (`shell describe` prints its JSON schema).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ShellSpec {
    /// The script, run with `sh -c`.
    script: String,
    /// Extra environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory; the driver's own when absent.
    #[serde(default)]
    workdir: Option<PathBuf>,
    /// Time limit in seconds; none when absent.
    #[serde(default)]
    timeout_secs: Option<u64>,
}

/// Why the script could not be run at all.
#[derive(Debug, thiserror::Error)]
enum ShellError {
    #[error("cannot start `sh`")]
    Spawn(#[source] std::io::Error),
    #[error("cannot wait for the script")]
    Wait(#[source] std::io::Error),
}

/// How long output readers may run on after the script ended (a background process it started
/// may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

#[driver(name = "shell", resources = ["script"])]
async fn run_script(
    resource: Resource,
    Spec(spec): Spec<ShellSpec>,
    log: Logger,
) -> Result<DriverResult, ShellError> {
    log.log(format!("running the script of {}", resource.name));
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&spec.script)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    if let Some(dir) = &spec.workdir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(ShellError::Spawn)?;
    let mut readers = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(forward_lines(stdout, log.clone(), "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(forward_lines(stderr, log.clone(), "stderr"));
    }

    let status = match spec.timeout_secs {
        None => Some(child.wait().await),
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), child.wait())
            .await
            .ok(),
    };
    let status = match status {
        Some(status) => status.map_err(ShellError::Wait)?,
        None => {
            kill_process_group(&mut child);
            let _ = child.wait().await;
            finish_output(readers).await;
            let secs = spec.timeout_secs.unwrap_or_default();
            log.log(format!("timed out after {secs}s; killed"));
            return Ok(
                DriverResult::failure(format!("script timed out after {secs}s"))
                    .with_data(json!({"exit_code": null, "timed_out": true})),
            );
        }
    };
    finish_output(readers).await;
    let exit_code = status.code();
    let data = json!({"exit_code": exit_code, "timed_out": false});
    Ok(match exit_code {
        Some(0) => DriverResult::success("script succeeded").with_data(data),
        Some(code) => {
            DriverResult::failure(format!("script exited with code {code}")).with_data(data)
        }
        None => DriverResult::failure(format!("script was killed ({status})")).with_data(data),
    })
}

/// Sends each line of `output` to the run log as soon as it is read.
async fn forward_lines(output: impl AsyncRead + Unpin, log: Logger, stream: &'static str) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                log.log_with_labels(text.trim_end_matches(['\n', '\r']), [("stream", stream)]);
            }
            Err(err) => {
                log.log(format!("reading the script's {stream} failed: {err}"));
                break;
            }
        }
    }
}

/// Waits a little for the last output lines, then stops reading.
async fn finish_output(mut readers: tokio::task::JoinSet<()>) {
    let all_read = async { while readers.join_next().await.is_some() {} };
    if tokio::time::timeout(OUTPUT_GRACE, all_read).await.is_err() {
        readers.abort_all();
    }
}

/// Kills the script and everything it started (it leads its own process group).
fn kill_process_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.start_kill();
}

//! Two pipeline steps in one binary, sharing one workspace: `fetch` checks a repository out
//! into the workspace and records where; `build`, the next step, reads that path through the
//! pipeline context and builds what it finds there.
//!
//! Both reconcile resources of type `app`, whose spec is
//!
//! ```json
//! {"repo": "https://git.example/app.git", "files": {"main.c": "int main() {}"}}
//! ```
//!
//! (`files` stands in for what a real clone would bring.) In a Conveyor pipeline `fetch` gets
//! the `create` event, and `build` then gets `process` with `fetch`'s result in the resource's
//! metadata. The workspace is the directory in `STEPS_WORKSPACE` (default: `steps-workspace`
//! in the temporary directory), opened once at start-up; a workspace that cannot be created
//! stops the binary with one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use conveyor_driver::prelude::*;
use serde::{Deserialize, Serialize};

/// Where the checkouts go; shared by both steps.
struct Workspace {
    root: PathBuf,
    checkouts: AtomicU64,
}

/// The start-up hook of both drivers: it runs once, and they share what it builds.
async fn open_workspace(_config: &Config) -> Result<Workspace, std::io::Error> {
    let root = std::env::var_os("STEPS_WORKSPACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("steps-workspace"));
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", root.display())))?;
    tracing::info!(root = %root.display(), "workspace opened");
    Ok(Workspace {
        root,
        checkouts: AtomicU64::new(0),
    })
}

#[derive(Deserialize)]
struct AppSpec {
    repo: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// What `fetch` records, and `build` reads back.
#[derive(Serialize, Deserialize)]
struct Checkout {
    path: PathBuf,
    files: usize,
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("cannot write the checkout: {0}")]
    Io(#[from] std::io::Error),
    #[error("file name {0:?} leaves the checkout")]
    Escapes(String),
}

#[driver(name = "fetch", resources = ["app"], state = open_workspace, main = false)]
async fn fetch(
    workspace: State<Workspace>,
    Spec(spec): Spec<AppSpec>,
    resource: Resource,
    run: RunId,
    log: Logger,
) -> Result<Checkout, StepError> {
    let path = workspace.root.join(run.as_str()).join(&resource.name);
    tokio::fs::create_dir_all(&path).await?;
    for (name, text) in &spec.files {
        if Path::new(name).components().count() != 1 {
            return Err(StepError::Escapes(name.clone()));
        }
        tokio::fs::write(path.join(name), text).await?;
    }
    let number = workspace.checkouts.fetch_add(1, Ordering::Relaxed) + 1;
    log.log(format!(
        "fetched {} into {} (checkout {number} of this instance)",
        spec.repo,
        path.display()
    ));
    Ok(Checkout {
        path,
        files: spec.files.len(),
    })
}

/// What `build` produced.
#[derive(Serialize)]
struct Built {
    artifact: PathBuf,
    bytes: u64,
}

#[driver(name = "build", resources = ["app"], events = ["process"], state = open_workspace, main = false)]
async fn build(
    workspace: State<Workspace>,
    pipeline: PipelineContext,
    log: Logger,
) -> Result<Built, ReconcileError> {
    let checkout: Checkout = pipeline.result_of("fetch")?;
    if !checkout.path.starts_with(&workspace.root) {
        return Err(ReconcileError::new(format!(
            "{} is outside the workspace",
            checkout.path.display()
        )));
    }
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(&checkout.path).await?;
    while let Some(entry) = entries.next_entry().await? {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut bytes = 0;
    for name in &names {
        bytes += tokio::fs::metadata(checkout.path.join(name)).await?.len();
        log.log(format!("compiling {name}"));
    }
    let artifact = checkout.path.join("app.out");
    tokio::fs::write(&artifact, names.join("\n")).await?;
    log.log(format!(
        "built {} from {} files of {} in pipeline {}",
        artifact.display(),
        checkout.files,
        checkout.path.display(),
        pipeline.name().unwrap_or("(none)")
    ));
    Ok(Built { artifact, bytes })
}

conveyor_driver::main!(FetchDriver, BuildDriver);

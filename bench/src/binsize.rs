//! The release binary size of the `hello` example against `raw-hello`, a raw async-nats
//! binary doing the same (`src/bin/raw-hello.rs`): what the runtime adds to a driver's image.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BoxError;

/// Prints the size of both binaries as built and stripped (a copy goes through `strip`). They
/// are looked for beside this benchmark's own binary, that is, in the same target directory
/// and profile.
pub fn binary_size() -> Result<(), BoxError> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("the benchmark binary has no directory")?;
    println!("\n### Binary size\n");
    let binaries: Vec<(&str, PathBuf)> = ["hello", "raw-hello"]
        .into_iter()
        .map(|name| (name, dir.join(name)))
        .collect();
    if let Some((name, _)) = binaries.iter().find(|(_, path)| !path.exists()) {
        println!("Not measured: `{name}` is not in {}. Build both with `cargo build --release -p conveyor-driver-examples --bin hello -p conveyor-driver-bench --bin raw-hello`.", dir.display());
        return Ok(());
    }
    println!("Built in {} (the same profile as this benchmark); stripped: a copy run through `strip`. `hello` is built with the examples crate's features (conveyor-driver's defaults plus `schemars` and `otel`).\n", dir.display());
    println!("| binary | as built | stripped |");
    println!("|---|---|---|");
    let scratch = tempfile::tempdir()?;
    for (name, path) in &binaries {
        let copy = scratch.path().join(name);
        let status = Command::new("strip")
            .arg("-o")
            .arg(&copy)
            .arg(path)
            .status()?;
        if !status.success() {
            return Err(format!("strip {} failed: {status}", path.display()).into());
        }
        println!("| `{name}` | {} | **{}** |", size(path)?, size(&copy)?);
    }
    Ok(())
}

fn size(path: &Path) -> Result<String, BoxError> {
    let bytes = std::fs::metadata(path)?.len();
    Ok(format!("{:.2} MiB", bytes as f64 / 1024.0 / 1024.0))
}

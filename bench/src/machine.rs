//! What the numbers were measured on, printed at the top of every run: figures mean little
//! without the cores, the memory and the server they shared.

use std::process::Command;

/// Prints the machine, the nats-server version and the build profile as a markdown list.
pub fn describe() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpuinfo("model name").unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory = meminfo_gib().map_or("unknown".to_owned(), |gib| format!("{gib:.1} GiB"));
    let profile = if cfg!(debug_assertions) {
        "debug (not a measurement: build with --release)"
    } else {
        "release"
    };
    println!("- Machine: {cores} cores ({cpu}), {memory} of memory");
    println!("- nats-server: {}", nats_server_version());
    println!("- Build: {profile}");
    println!(
        "- Date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
}

/// A field of `/proc/cpuinfo` (first CPU).
fn cpuinfo(field: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(field))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// `MemTotal` of `/proc/meminfo` in GiB.
fn meminfo_gib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0 / 1024.0)
}

/// `nats-server --version` of the server the benchmark starts (`NATS_SERVER` or the one on
/// the PATH), as the test crate does.
fn nats_server_version() -> String {
    let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
    Command::new(&binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(
            || format!("unknown (`{binary} --version` failed)"),
            |version| version.trim().to_owned(),
        )
}

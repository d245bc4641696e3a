//! Example driver binaries as child processes, the way operators run them: built on first use
//! into the tests' own target directory and profile, started with a clean `CONVEYOR_*`
//! environment.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::NatsServer;

/// `target/<profile>/`, with the example binaries freshly built in it.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/examples-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "conveyor-driver-examples",
                "--bins",
                "--target-dir",
            ])
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the examples");
        assert!(
            status.success(),
            "building the example binaries failed: {status}"
        );
        profile_dir
    })
}

/// A command running the example binary `name`, without the `CONVEYOR_*` variables of the
/// test's environment.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binaries().join(name));
    for (key, _) in std::env::vars() {
        if key.starts_with("CONVEYOR_") {
            command.env_remove(key);
        }
    }
    command
}

/// An example driver running as a child process; killed on drop.
pub struct DriverProcess {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl DriverProcess {
    /// Starts example `name` against `server` with `concurrency`.
    pub fn start(name: &'static str, server: &NatsServer, concurrency: usize) -> Self {
        Self::start_with(
            name,
            &[
                ("CONVEYOR_NATS_URL", &server.url()),
                ("CONVEYOR_CONCURRENCY", &concurrency.to_string()),
            ],
            &[],
        )
    }

    /// Starts example `name` with exactly these `CONVEYOR_*` variables and arguments.
    pub fn start_with(name: &'static str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let path = binaries().join(name);
        let mut child = command(name)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .args(args)
            // A backtrace makes the first panic load the debug info (~100 MiB in a debug
            // build), which would swamp the memory measurements.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", path.display()));
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        Self {
            name,
            child,
            output,
        }
    }

    /// Everything it printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its resident set size in KiB, from `/proc` (`None` once it has exited).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Its peak resident set size so far in KiB (`VmHWM`; `None` once it has exited).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, or panics after `patience`.
    pub fn wait(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics, with its output, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited with {status}; output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.output());
        }
    }
}

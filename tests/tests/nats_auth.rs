//! Every NATS authentication method against a real nats-server configured for it, with `echo`
//! running as a process the way operators run it: with the right credential an event is
//! processed; with a wrong one the driver stops within seconds, exit code 1, with one line
//! naming the credential; and nothing it prints (the run, the failed start, `--help`,
//! `describe`) holds a secret.

use std::process::Output;
use std::time::{Duration, Instant};

use conveyor_driver_tests::nats_auth::{AuthServer, Method};
use conveyor_driver_tests::process::{command, DriverProcess};
use conveyor_driver_tests::*;
use serde_json::json;

/// How soon a rejected driver must have stopped.
const FAST: Duration = Duration::from_secs(5);

/// `echo` with the right credentials `good` processes an event; returns all it printed.
async fn processes_an_event(setup: &AuthServer, env: &[(&str, String)], args: &[&str]) -> String {
    init_tracing();
    let conveyor = Conveyor::new(&setup.server).await;
    let mut tap = conveyor.tap().await;
    let mut all: Vec<(&str, &str)> = vec![("CONVEYOR_ACK_WAIT", "2s")];
    let url = setup.server.url();
    if !env.iter().any(|(name, _)| *name == "CONVEYOR_NATS_URL") {
        all.push(("CONVEYOR_NATS_URL", &url));
    }
    all.extend(env.iter().map(|(name, value)| (*name, value.as_str())));
    let mut driver = DriverProcess::start_with("echo", &all, args);
    conveyor.wait_for_consumer("echo").await;
    let run_id = conveyor
        .create("echo-resource", "signed-in", json!({"x": 1}))
        .await;
    let result = tap.result(&run_id).await;
    assert_eq!(result["driverresult"]["success"], true, "{result}");
    driver.sigterm();
    assert!(driver.wait(PATIENCE).success(), "{}", driver.output());
    driver.output()
}

/// `echo` with the credentials `env` (plus `args`) fails within [`FAST`] with exit code 1
/// and one line saying `NATS rejected <what> (authorization violation)`; returns all it
/// printed.
fn is_rejected(setup: &AuthServer, env: &[(&str, String)], args: &[&str], what: &str) -> String {
    let url = setup.server.url();
    let mut all: Vec<(&str, &str)> = vec![("CONVEYOR_NATS_URL", &url)];
    all.extend(env.iter().map(|(name, value)| (*name, value.as_str())));
    let started = Instant::now();
    let mut driver = DriverProcess::start_with("echo", &all, args);
    let status = driver.wait(PATIENCE);
    let took = started.elapsed();
    let output = driver.output();
    eprintln!("rejected in {took:?}:\n{output}");
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(took < FAST, "took {took:?} to fail:\n{output}");
    let message = format!("echo: error: NATS rejected {what} (authorization violation)");
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| line.contains(&message))
        .collect();
    assert_eq!(lines, [message.as_str()], "{output}");
    output
}

/// `--help` and `describe` with the secrets in the environment.
fn help_and_describe(env: &[(&str, String)]) -> String {
    let mut printed = String::new();
    for args in [&["--help"][..], &["describe"]] {
        let Output {
            status,
            stdout,
            stderr,
        } = command("echo")
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .args(args)
            .output()
            .expect("running echo");
        assert!(status.success(), "{args:?}: {status}");
        printed.push_str(&String::from_utf8_lossy(&stdout));
        printed.push_str(&String::from_utf8_lossy(&stderr));
    }
    assert!(printed.contains("--nats-password"), "{printed}");
    printed
}

/// No secret of `setup` in `output`.
fn shows_no_secret(setup: &AuthServer, output: &str) {
    for secret in &setup.secrets {
        assert!(
            !output.contains(secret.as_str()),
            "{secret} printed:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_token() {
    let setup = AuthServer::start(Method::Token);
    let mut output = processes_an_event(&setup, &setup.good, &[]).await;
    output += &is_rejected(&setup, &setup.bad, &[], "the token");
    // The flag, and the token in the URL's user place.
    let wrong = &setup.bad[0].1;
    output += &is_rejected(&setup, &[], &["--nats-token", wrong], "the token");
    let url = setup
        .server
        .url()
        .replace("nats://", &format!("nats://{wrong}@"));
    output += &is_rejected(&setup, &[("CONVEYOR_NATS_URL", url)], &[], "the token");
    output += &help_and_describe(&setup.good);
    shows_no_secret(&setup, &output);
}

#[tokio::test]
async fn a_user_and_password() {
    let setup = AuthServer::start(Method::UserPassword);
    let what = "the user/password credentials of user \"driver\"";
    let mut output = processes_an_event(&setup, &setup.good, &[]).await;
    output += &is_rejected(&setup, &setup.bad, &[], what);
    output += &help_and_describe(&setup.good);
    shows_no_secret(&setup, &output);
}

#[tokio::test]
async fn a_user_and_password_in_the_url() {
    let setup = AuthServer::start(Method::UserPassword);
    let what = "the user/password credentials of user \"driver\"";
    let in_url = |password: &str| {
        let url = setup
            .server
            .url()
            .replace("nats://", &format!("nats://driver:{password}@"));
        vec![("CONVEYOR_NATS_URL", url)]
    };
    let (good, bad) = (&setup.good[1].1, &setup.bad[1].1);
    let mut output = processes_an_event(&setup, &in_url(good), &[]).await;
    output += &is_rejected(&setup, &in_url(bad), &[], what);
    output += &help_and_describe(&in_url(good));
    shows_no_secret(&setup, &output);
}

#[tokio::test]
async fn a_password_in_the_url_of_a_server_not_up_yet_is_not_logged() {
    let setup = AuthServer::start(Method::UserPassword);
    let password = &setup.good[1].1;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("nats://driver:{password}@127.0.0.1:{port}");
    let mut driver = DriverProcess::start_with("echo", &[("CONVEYOR_NATS_URL", &url)], &[]);
    let deadline = Instant::now() + PATIENCE;
    while !driver.output().contains("NATS is not reachable; retrying") {
        assert!(Instant::now() < deadline, "{}", driver.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    driver.kill();
    let output = driver.output();
    assert!(
        output.contains(&format!("nats://driver:***@127.0.0.1:{port}")),
        "{output}"
    );
    shows_no_secret(&setup, &output);
}

#[tokio::test]
async fn an_nkey() {
    let setup = AuthServer::start(Method::NKey);
    let bad = &setup.bad[0].1;
    let mut output = processes_an_event(&setup, &setup.good, &[]).await;
    // Through the flag.
    let what = format!("the NKey of {bad}");
    output += &is_rejected(&setup, &[], &["--nats-nkey", bad], &what);
    output += &help_and_describe(&setup.good);
    shows_no_secret(&setup, &output);
}

#[tokio::test]
async fn a_creds_file() {
    let setup = AuthServer::start(Method::Creds);
    let bad = &setup.bad[0].1;
    let mut output = processes_an_event(&setup, &setup.good, &[]).await;
    let what = format!("the credentials file {bad}");
    output += &is_rejected(&setup, &setup.bad, &[], &what);
    output += &help_and_describe(&setup.good);
    shows_no_secret(&setup, &output);
}

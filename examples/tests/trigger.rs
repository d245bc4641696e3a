//! The `trigger` example as a process, against the local stand-in of the Conveyor API.

use std::path::Path;
use std::process::Output;

use conveyor_driver_tests::api_server::ApiServer;
use conveyor_driver_tests::pki::{Ca, KeyKind};

async fn trigger(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_trigger"));
    command.arg(file);
    for name in [
        "CONVEYOR_API_URL",
        "CONVEYOR_TLS_CERT",
        "CONVEYOR_TLS_KEY",
        "CONVEYOR_TLS_CA",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("trigger must not hang")
        .expect("run trigger");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, text: &[u8]) -> std::path::PathBuf {
    let path = dir.join("resource.json");
    std::fs::write(&path, text).unwrap();
    path
}

const RESOURCE: &str = "{\n  \"name\": \"caf\u{e9}-\u{1F680}\",\n  \"resource\": \"build\",\n  \"pipeline\": \"ci\",\n  \"metadata\": {},\n  \"spec\": {\"big\": 123456789012345678901234567890, \"f\": 1.0000000000000000001, \"s\": \"\\u00e9\"}\n}\n";

#[tokio::test]
async fn sends_the_file_byte_for_byte_and_prints_the_run_id() {
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), RESOURCE.as_bytes());
    let output = trigger(&file, &[("CONVEYOR_API_URL", &server.url)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", "/resources")
    );
    assert_eq!(
        requests[0].body,
        RESOURCE.as_bytes(),
        "the exact bytes of the file"
    );
    let runid = String::from_utf8(output.stdout).unwrap();
    assert!(uuid::Uuid::try_parse(runid.trim()).is_ok(), "{runid:?}");
    assert_eq!(runid.lines().count(), 1);
}

#[tokio::test]
async fn accepts_201_with_extra_fields() {
    let server = ApiServer::start().await;
    server.script(201, r#"{"name":"app","runid":"run-42","message":"Resource created successfully","version":"1","extra":{"nested":[1,2]}}"#);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        br#"{"name":"app","resource":"build","spec":{}}"#,
    );
    let output = trigger(&file, &[("CONVEYOR_API_URL", &server.url)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "run-42\n");
}

#[tokio::test]
async fn a_rejection_names_the_servers_message() {
    let server = ApiServer::start().await;
    server.script(
        400,
        r#"{"error":"Resource validation failed: spec.image is required"}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        br#"{"name":"app","resource":"build","spec":{}}"#,
    );
    let output = trigger(&file, &[("CONVEYOR_API_URL", &server.url)]).await;
    assert!(!output.status.success());
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("rejected") && err.contains("spec.image is required"),
        "{err}"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), br#"{"name":"app","resource":"build"}"#);
    let output = trigger(
        &file,
        &[("CONVEYOR_API_URL", &format!("http://127.0.0.1:{port}"))],
    )
    .await;
    assert!(!output.status.success());
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn a_bad_file_is_reported_without_contacting_the_server() {
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = [("CONVEYOR_API_URL", server.url.as_str())];
    let missing = trigger(&dir.path().join("missing.json"), &url).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cannot read"),
        "{}",
        stderr(&missing)
    );
    let invalid = trigger(&write(dir.path(), b"{\"name\": "), &url).await;
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("is not valid JSON"),
        "{}",
        stderr(&invalid)
    );
    assert_eq!(stderr(&invalid).lines().count(), 1);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn without_an_api_url_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = trigger(&write(dir.path(), b"{}"), &[]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("CONVEYOR_API_URL"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn authenticates_with_the_client_certificate_from_the_environment() {
    let ca = Ca::new("Conveyor CA");
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .client("trigger", KeyKind::P384)
        .write(dir.path(), "client");
    let ca_path = ca.write(dir.path(), "ca");
    let file = write(dir.path(), RESOURCE.as_bytes());
    let env = [
        ("CONVEYOR_API_URL", server.url.as_str()),
        ("CONVEYOR_TLS_CERT", cert.to_str().unwrap()),
        ("CONVEYOR_TLS_KEY", key.to_str().unwrap()),
        ("CONVEYOR_TLS_CA", ca_path.to_str().unwrap()),
    ];
    let output = trigger(&file, &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(server.requests()[0].token.is_some());

    // Without the certificate the server refuses, and trigger says so.
    let output = trigger(&file, &env[..1]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("missing bearer token"),
        "{}",
        stderr(&output)
    );
}

//! Mutual TLS to NATS: the Driver Manager authenticates with the client certificate, and a
//! driver the server rejects fails at start-up with a clear error instead of hanging.

use conveyor_driver_tests::pki::{Ca, KeyKind};
use conveyor_driver_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_driver_with_the_client_certificate_processes_an_event() {
    init_tracing();
    let server = NatsServer::start_tls();
    let tls = server.tls().expect("TLS server").clone();
    let conveyor = Conveyor::new(&server).await;
    let mut tap = conveyor.tap().await;
    let config = test_config(&server)
        .tls(&tls.client_cert, &tls.client_key)
        .tls_ca(&tls.ca);
    let driver = TestDriver::new("secure", &["build"]);
    let running = run(driver.clone(), config);
    conveyor.wait_for_consumer("secure").await;

    let run_id = conveyor
        .publish(
            "resources.build",
            "create",
            &resource("build", "app", json!({"x": 1})),
            Payload::String,
        )
        .await;
    let result = tap.result(&run_id).await;
    assert_eq!(result["driverresult"]["success"], true, "{result}");
    assert_eq!(driver.calls_for(&run_id).len(), 1);
    running.stop().await.expect("clean stop");
}

async fn start_error(config: conveyor_driver::Config) -> String {
    let running = run(TestDriver::new("rejected", &["build"]), config);
    let outcome = tokio::time::timeout(PATIENCE, running.task)
        .await
        .expect("the driver must fail, not hang")
        .expect("no panic");
    let err = outcome.expect_err("a rejected driver must not start");
    assert!(
        matches!(err, conveyor_driver::Error::Connect { .. }),
        "{err:?}"
    );
    eprintln!("start-up error: {err}");
    err.to_string()
}

#[tokio::test]
async fn a_driver_without_a_client_certificate_fails_clearly() {
    init_tracing();
    let server = NatsServer::start_tls();
    let tls = server.tls().expect("TLS server").clone();
    // Trusts the server, but has no certificate of its own.
    let message = start_error(test_config(&server).tls_ca(&tls.ca)).await;
    assert!(message.contains(&server.url()), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

#[tokio::test]
async fn a_driver_with_a_certificate_of_another_ca_fails_clearly() {
    init_tracing();
    let server = NatsServer::start_tls();
    let tls = server.tls().expect("TLS server").clone();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("Other CA")
        .client("intruder", KeyKind::P256)
        .write(dir.path(), "intruder");
    let message = start_error(test_config(&server).tls(&cert, &key).tls_ca(&tls.ca)).await;
    assert!(message.contains(&server.url()), "{message}");
}

#[tokio::test]
async fn a_driver_that_does_not_trust_the_server_fails_clearly() {
    init_tracing();
    let server = NatsServer::start_tls();
    let tls = server.tls().expect("TLS server").clone();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = Ca::new("Other CA").write(dir.path(), "other-ca");
    let message = start_error(
        test_config(&server)
            .tls(&tls.client_cert, &tls.client_key)
            .tls_ca(other_ca),
    )
    .await;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

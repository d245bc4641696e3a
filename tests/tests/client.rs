//! The typed API client against a local stand-in of the Conveyor REST API: every endpoint,
//! proof-of-possession authentication (accepted and rejected cases), errors, retries and live
//! log streams.

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use conveyor_driver::client::{
    BroadcastMessage, Client, ClientError, Credentials, CredentialsError, LogQuery, Pipeline,
    ResourceDefinition, Step,
};
use conveyor_driver::wire::{LogEntry, Resource};
use conveyor_driver_tests::api_server::ApiServer;
use conveyor_driver_tests::pki::{Ca, Identity, KeyKind, RSA_PKCS1};
use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

fn client(server: &ApiServer) -> Client {
    Client::builder()
        .base_url(&server.url)
        .retry_backoff(Duration::from_millis(10))
        .build()
        .expect("client")
}

fn resource(kind: &str, name: &str, spec: Value) -> Resource {
    Resource {
        id: String::new(),
        name: name.into(),
        resource: kind.into(),
        pipeline: None,
        metadata: Map::new(),
        spec,
    }
}

fn wait<T>(what: &str) -> impl FnOnce(Result<T, tokio::time::error::Elapsed>) -> T + '_ {
    move |r| r.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---- endpoints ----------------------------------------------------------------------------

#[tokio::test]
async fn resources_create_list_get_version_update_delete() {
    let server = ApiServer::start().await;
    let client = client(&server);

    let created = client
        .create_resource(&resource("build", "app", json!({"image": "rust"})))
        .await
        .unwrap();
    assert_eq!(created.name, "app");
    assert!(uuid::Uuid::try_parse(&created.runid).is_ok(), "{created:?}");
    assert_eq!(created.version, Some(json!("1")));

    let list = client.list_resources("build").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].spec, json!({"image": "rust"}));
    assert!(
        client.list_resources("deploy").await.unwrap().is_empty(),
        "null reads as empty"
    );

    let got = client.get_resource("build", "app").await.unwrap();
    assert_eq!(got.name, "app");
    assert_eq!(got.metadata["version"], "1");

    let mut changed = got.clone();
    changed.spec = json!({"image": "rust:slim"});
    let updated = client
        .update_resource("build", "app", &changed)
        .await
        .unwrap();
    assert_eq!(updated.metadata["version"], "2");
    assert_eq!(
        client.get_resource("build", "app").await.unwrap().spec,
        json!({"image": "rust:slim"})
    );
    assert_eq!(
        client
            .get_resource_version("build", "app", "1")
            .await
            .unwrap()
            .spec,
        json!({"image": "rust"})
    );

    client.delete_resource("build", "app").await.unwrap();
    let err = client.get_resource("build", "app").await.unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND), "{err}");

    let calls: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    let expected = [
        ("POST", "/resources"),
        ("GET", "/resources/build"),
        ("GET", "/resources/deploy"),
        ("GET", "/resources/build/app"),
        ("PUT", "/resources/build/app"),
        ("GET", "/resources/build/app"),
        ("GET", "/resources/build/app/1"),
        ("DELETE", "/resources/build/app"),
        ("GET", "/resources/build/app"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(calls, expected);
}

#[tokio::test]
async fn path_segments_are_escaped() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let _ = client.get_resource("build", "a b/c?d").await;
    assert_eq!(server.requests()[0].path, "/resources/build/a%20b%2Fc%3Fd");
}

#[tokio::test]
async fn resource_definitions_create_apply_get_update_delete() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let definition = ResourceDefinition {
        name: "build".into(),
        description: "a build".into(),
        version: "1.0".into(),
        schema: json!({"type": "object"}),
        ..Default::default()
    };
    let created = client
        .create_resource_definition(&definition)
        .await
        .unwrap();
    assert!(!created.id.is_empty());
    assert_eq!(created.schema, json!({"type": "object"}));
    let again = client
        .create_resource_definition(&definition)
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert!(
        again
            .to_string()
            .contains("Resource definition already exists"),
        "{again}"
    );

    let applied = client
        .apply_resource_definition(&ResourceDefinition {
            version: "1.1".into(),
            ..definition.clone()
        })
        .await
        .unwrap();
    assert_eq!(applied.version, "1.1");
    assert_eq!(
        client
            .get_resource_definition("build")
            .await
            .unwrap()
            .version,
        "1.1"
    );
    let updated = client
        .update_resource_definition(
            "build",
            &ResourceDefinition {
                description: "new".into(),
                ..definition
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "new");
    client.delete_resource_definition("build").await.unwrap();
    assert!(client.get_resource_definition("build").await.is_err());

    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        paths.contains(&"POST /resource-definitions/apply".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"PUT /resource-definitions/build".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"DELETE /resource-definitions/build".to_owned()),
        "{paths:?}"
    );
}

#[tokio::test]
async fn pipelines_create_get_update_delete() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let pipeline = Pipeline {
        name: "ci".into(),
        resource: "build".into(),
        steps: vec![Step {
            id: "1".into(),
            name: "compile".into(),
            driver: "builder".into(),
        }],
        ..Default::default()
    };
    assert_eq!(client.create_pipeline(&pipeline).await.unwrap(), pipeline);
    assert_eq!(
        client.get_pipeline("ci").await.unwrap().steps[0].driver,
        "builder"
    );
    let changed = Pipeline {
        description: "two steps".into(),
        ..pipeline.clone()
    };
    assert_eq!(
        client
            .update_pipeline("ci", &changed)
            .await
            .unwrap()
            .description,
        "two steps"
    );
    client.delete_pipeline("ci").await.unwrap();
    let err = client.get_pipeline("ci").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Status { message, .. } if message == "Pipeline not found"),
        "{err}"
    );
}

#[tokio::test]
async fn logs_are_stored_and_queried_by_pipeline_driver_and_run() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let line = |runid: &str, driver: &str, message: &str| LogEntry {
        runid: runid.into(),
        driver: driver.into(),
        pipeline: Some("ci".into()),
        timestamp: "2026-01-01T00:00:00Z".into(),
        message: message.into(),
    };
    client
        .create_log(&line("r1", "builder", "one"))
        .await
        .unwrap();
    client
        .create_log(&line("r1", "tester", "two"))
        .await
        .unwrap();
    client
        .create_log(&line("r2", "builder", "three"))
        .await
        .unwrap();

    let by_run = client.logs(&LogQuery::new().runid("r1")).await.unwrap();
    assert_eq!(
        by_run
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    let by_driver = client
        .logs(&LogQuery::new().driver("builder").pipeline("ci"))
        .await
        .unwrap();
    assert_eq!(by_driver.len(), 2);
    assert_eq!(client.logs(&LogQuery::new()).await.unwrap().len(), 3);
    let queries: Vec<Option<String>> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.query)
        .collect();
    assert_eq!(
        queries,
        [
            Some("runid=r1".into()),
            Some("pipeline=ci&driver=builder".into()),
            None
        ]
    );
}

#[tokio::test]
async fn health_and_broadcast_message() {
    let server = ApiServer::start().await;
    let client = client(&server);
    assert_eq!(client.health().await.unwrap()["status"], "healthy");
    let message = BroadcastMessage {
        event: "create".into(),
        id: "m1".into(),
        payload: r#"{"name":"app"}"#.into(),
        run_id: "r1".into(),
    };
    let answer = client.broadcast_message(&message).await.unwrap();
    assert_eq!(answer["message"], "Message published successfully");
    let sent: Value = serde_json::from_slice(&server.requests()[1].body).unwrap();
    assert_eq!(
        sent,
        json!({"event": "create", "id": "m1", "payload": "{\"name\":\"app\"}", "run_id": "r1"})
    );
}

#[tokio::test]
async fn create_resource_json_sends_the_bytes_as_given() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let text = "{ \"name\": \"ünï\", \"resource\": \"build\", \"spec\": {\"n\": 123456789012345678901234567890} }\n";
    let created = client.create_resource_json(text).await.unwrap();
    assert_eq!(created.name, "ünï");
    assert_eq!(server.requests()[0].body, text.as_bytes());
    let err = client.create_resource_json("{not json").await.unwrap_err();
    assert!(matches!(err, ClientError::Body(_)), "{err}");
    assert_eq!(server.requests().len(), 1, "invalid JSON is not sent");
}

// ---- live logs ----------------------------------------------------------------------------

fn live(runid: &str, driver: &str, message: &str) -> Value {
    json!({"runid": runid, "driver": driver, "timestamp": "2026-01-01T00:00:00Z", "message": message})
}

#[tokio::test]
async fn driver_log_stream_delivers_each_line_as_the_server_sends_it() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let mut lines = client.stream_driver_logs("builder", "r1").await.unwrap();
    for i in 0..3 {
        // Other drivers' and runs' lines are not for this stream.
        server.send_live(live("r1", "tester", "not mine"));
        server.send_live(live("r2", "builder", "not mine either"));
        server.send_live(live("r1", "builder", &format!("line {i}")));
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .map(wait_some)
            .unwrap();
        assert_eq!(line.message, format!("line {i}"));
        assert_eq!(line.driver, "builder");
    }
    assert_eq!(server.requests()[0].path, "/logs/streams/builder/r1");
}

fn wait_some(item: Option<Result<LogEntry, ClientError>>) -> LogEntry {
    item.expect("stream ended").expect("a log entry")
}

#[tokio::test]
async fn pipeline_log_stream_delivers_lines_of_every_driver_of_the_run() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let mut lines = client.stream_pipeline_logs("r1").await.unwrap();
    server.send_live(live("r1", "builder", "built"));
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .map(wait_some);
    assert_eq!(wait("first line")(first).driver, "builder");
    server.send_live(live("r2", "builder", "other run"));
    server.send_live(live("r1", "tester", "tested"));
    let second = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .map(wait_some);
    assert_eq!(wait("second line")(second).message, "tested");
    assert_eq!(server.requests()[0].path, "/logs/pipeline/r1");
}

#[tokio::test]
async fn a_malformed_live_line_is_a_decode_error_and_the_stream_goes_on() {
    let server = ApiServer::start().await;
    let client = client(&server);
    let mut lines = client.stream_pipeline_logs("r1").await.unwrap();
    server.send_live(json!({"runid": "r1", "unexpected": true}));
    server.send_live(live("r1", "builder", "fine"));
    let bad = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(bad, Err(ClientError::Decode { .. })), "{bad:?}");
    let good = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .map(wait_some)
        .unwrap();
    assert_eq!(good.message, "fine");
}

// ---- errors and retries ------------------------------------------------------------------

#[tokio::test]
async fn the_servers_error_message_is_surfaced() {
    let server = ApiServer::start().await;
    let client = client(&server);
    server.script(
        400,
        r#"{"error": "Resource validation failed: spec.image is required"}"#,
    );
    let err = client
        .create_resource(&resource("build", "x", json!({})))
        .await
        .unwrap_err();
    match &err {
        ClientError::Status {
            status, message, ..
        } => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(
                message,
                "Resource validation failed: spec.image is required"
            );
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("POST") && err.to_string().contains("/resources"),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_parse_says_what_was_expected() {
    let server = ApiServer::start().await;
    let client = client(&server);
    server.script(200, r#"{"name": 7}"#);
    let err = client.get_resource("build", "app").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Decode {
                expected: "a Resource",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not a Resource"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .retries(1)
        .retry_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn a_slow_server_is_a_timeout() {
    let server = ApiServer::start().await;
    let client = Client::builder()
        .base_url(&server.url)
        .timeout(Duration::from_millis(300))
        .retries(0)
        .build()
        .unwrap();
    server.script_delayed(200, "{}", Duration::from_secs(5));
    let err = client.health().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_unavailable() {
    let server = ApiServer::start().await;
    let client = client(&server);
    client
        .create_pipeline(&Pipeline {
            name: "ci".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.script(503, r#"{"error": "busy"}"#);
    server.script(502, "bad gateway");
    assert_eq!(client.get_pipeline("ci").await.unwrap().name, "ci");
    server.script(503, "{}");
    client
        .update_pipeline(
            "ci",
            &Pipeline {
                name: "ci".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    server.script(504, "{}");
    client.delete_pipeline("ci").await.unwrap();
    let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        ["POST", "GET", "GET", "GET", "PUT", "PUT", "DELETE", "DELETE"]
    );
}

#[tokio::test]
async fn post_requests_are_never_retried() {
    let server = ApiServer::start().await;
    let client = client(&server);
    server.script(503, r#"{"error": "busy"}"#);
    let err = client
        .create_pipeline(&Pipeline {
            name: "ci".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_give_up_after_the_configured_number() {
    let server = ApiServer::start().await;
    let client = Client::builder()
        .base_url(&server.url)
        .retries(2)
        .retry_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    for _ in 0..5 {
        server.script(503, r#"{"error": "still busy"}"#);
    }
    let err = client.health().await.unwrap_err();
    assert!(err.to_string().contains("still busy"), "{err}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn configuration_errors_are_clear() {
    let err = Client::builder().build().unwrap_err();
    assert!(err.to_string().contains("CONVEYOR_API_URL"), "{err}");
    let err = Client::builder().base_url("ftp://x").build().unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    let err = Client::builder()
        .base_url("http://x")
        .tls("/nonexistent/c.pem", "/nonexistent/k.pem")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
}

// ---- authentication ------------------------------------------------------------------------

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn files(identity: &Identity, key_pem: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = identity.write(dir.path(), "client");
    std::fs::write(&key, key_pem).unwrap();
    Files {
        _dir: dir,
        cert,
        key,
    }
}

async fn authenticated_call(
    ca: &Ca,
    identity: &Identity,
    key_pem: &str,
) -> (ApiServer, Result<Map<String, Value>, ClientError>) {
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    let files = files(identity, key_pem);
    let client = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .build()
        .expect("credentials load");
    let result = client.health().await;
    (server, result)
}

/// Decodes a token's header and claims without verifying.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    let claims = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&claims).unwrap(),
    )
}

async fn assert_accepted(ca: &Ca, identity: &Identity, key_pem: &str, alg: &str, chain_len: usize) {
    let (server, result) = authenticated_call(ca, identity, key_pem).await;
    result.unwrap_or_else(|err| panic!("{alg} token rejected: {err}"));
    let token = server.requests()[0].token.clone().expect("a bearer token");
    let (header, claims) = parts(&token);
    assert_eq!(header["alg"], alg);
    let x5c = header["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), chain_len);
    assert_eq!(
        STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(),
        identity.leaf_der,
        "leaf first, standard base64"
    );
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        URL_SAFE_NO_PAD.encode(Sha256::digest(&identity.leaf_der))
    );
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120, "two minutes by default");
}

#[tokio::test]
async fn rsa_pkcs8_key_signs_rs256() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::Rsa);
    assert_accepted(&ca, &identity, &identity.key_pem, "RS256", 1).await;
}

#[tokio::test]
async fn rsa_pkcs1_key_signs_rs256() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::Rsa);
    assert_accepted(&ca, &identity, RSA_PKCS1, "RS256", 1).await;
}

#[tokio::test]
async fn p256_key_signs_es256() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    assert_accepted(&ca, &identity, &identity.key_pem, "ES256", 1).await;
}

#[tokio::test]
async fn p384_sec1_key_signs_es384() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P384);
    assert_accepted(&ca, &identity, &identity.key_sec1_pem(), "ES384", 1).await;
}

#[tokio::test]
async fn p256_sec1_key_signs_es256() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    assert_accepted(&ca, &identity, &identity.key_sec1_pem(), "ES256", 1).await;
}

#[tokio::test]
async fn a_chain_with_an_intermediate_is_sent_whole_and_accepted() {
    let ca = Ca::new("Conveyor CA");
    let intermediate = ca.intermediate("Drivers CA");
    let identity = intermediate.client("driver", KeyKind::P384);
    assert_accepted(&ca, &identity, &identity.key_pem, "ES384", 2).await;
}

#[tokio::test]
async fn a_token_is_reused_until_shortly_before_it_expires() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    let files = files(&identity, &identity.key_pem);
    let client = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .build()
        .unwrap();
    client.health().await.unwrap();
    client.clone().health().await.unwrap();
    let tokens: Vec<String> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.token)
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1]);

    // A lifetime of one second is renewed at once (the renewal margin is a quarter of it).
    let short = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .token_lifetime(Duration::from_secs(1))
        .build()
        .unwrap();
    short.health().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    short.health().await.unwrap();
    let tokens: Vec<String> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.token)
        .collect();
    assert_ne!(tokens[2], tokens[3]);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let ca = Ca::new("Conveyor CA");
    let other = Ca::new("Other CA");
    let identity = other.client("intruder", KeyKind::P256);
    let (_server, result) = authenticated_call(&ca, &identity, &identity.key_pem).await;
    let err = result.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    assert!(
        err.to_string().contains("certificate chain not trusted"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_token_is_rejected() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    server.set_clock_offset(180); // the server lives three minutes ahead: the token is stale
    let files = files(&identity, &identity.key_pem);
    let client = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    assert!(err.to_string().contains("token expired"), "{err}");
}

#[tokio::test]
async fn a_tampered_token_is_rejected() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::Rsa);
    let credentials =
        Credentials::from_pem(identity.chain_pem.as_bytes(), identity.key_pem.as_bytes()).unwrap();
    let token = credentials.sign_token(Duration::from_secs(120)).unwrap();
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    let (header, mut claims) = parts(token.expose());
    claims["exp"] = json!(claims["exp"].as_u64().unwrap() + 3600);
    let mut pieces: Vec<String> = token.expose().split('.').map(str::to_owned).collect();
    pieces[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = pieces.join(".");
    assert_eq!(header["alg"], "RS256");

    let http = reqwest::Client::new();
    let send = |token: String| {
        http.get(format!("{}/health", server.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        send(token.expose().to_owned()).await.unwrap().status(),
        200,
        "the untouched token is valid"
    );
    let answer = send(tampered).await.unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer.text().await.unwrap().contains("invalid signature"));
    // A valid signature by another key of the same CA does not pass as this certificate.
    let other = ca.client("other", KeyKind::P256);
    let other =
        Credentials::from_pem(other.chain_pem.as_bytes(), other.key_pem.as_bytes()).unwrap();
    let mut swapped: Vec<String> = other
        .sign_token(Duration::from_secs(60))
        .unwrap()
        .expose()
        .split('.')
        .map(str::to_owned)
        .collect();
    let (mut other_header, _) = parts(&swapped.join("."));
    other_header["x5c"] = header["x5c"].clone();
    swapped[0] = URL_SAFE_NO_PAD.encode(other_header.to_string());
    assert_eq!(send(swapped.join(".")).await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_missing_token_is_rejected_with_the_servers_message() {
    let ca = Ca::new("Conveyor CA");
    let server = ApiServer::start_with_ca(&ca.cert_der).await;
    let err = client(&server).health().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Status { message, .. } if message == "missing bearer token"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_an_error_at_construction() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    let other = ca.client("other", KeyKind::P256);
    let rsa = ca.client("rsa", KeyKind::Rsa);
    for key in [
        other.key_pem.clone(),
        other.key_sec1_pem(),
        rsa.key_pem.clone(),
        RSA_PKCS1.to_owned(),
    ] {
        let err = Credentials::from_pem(identity.chain_pem.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(
            matches!(err, CredentialsError::KeyMismatch { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("does not match the leaf certificate"),
            "{err}"
        );
    }
    // Through the builder, too.
    let files = files(&identity, &other.key_pem);
    let err = Client::builder()
        .base_url("http://127.0.0.1:1")
        .tls(&files.cert, &files.key)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Credentials(CredentialsError::KeyMismatch { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn unusable_pem_is_a_clear_error() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::P256);
    let err = Credentials::from_pem(b"no pem here", identity.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CredentialsError::Certificate(_)), "{err:?}");
    let err = Credentials::from_pem(identity.chain_pem.as_bytes(), identity.chain_pem.as_bytes())
        .unwrap_err();
    assert!(matches!(err, CredentialsError::Key(_)), "{err:?}");
}

#[test]
fn secrets_never_appear_in_debug_display_or_errors() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client("driver", KeyKind::Rsa);
    let credentials =
        Credentials::from_pem(identity.chain_pem.as_bytes(), identity.key_pem.as_bytes()).unwrap();
    let token = credentials.sign_token(Duration::from_secs(60)).unwrap();
    let signature = token.expose().rsplit('.').next().unwrap().to_owned();
    let key_body: Vec<String> = identity
        .key_pem
        .lines()
        .chain(RSA_PKCS1.lines())
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    let client = Client::builder()
        .base_url("http://127.0.0.1:1")
        .credentials(credentials.clone())
        .build()
        .unwrap();
    let builder = Client::builder()
        .credentials(credentials.clone())
        .tls("c.pem", "secret-key-path.pem");
    // A mismatching key's error, a PEM error from a garbled key.
    let mismatch = Credentials::from_pem(
        ca.client("x", KeyKind::P256).chain_pem.as_bytes(),
        identity.key_pem.as_bytes(),
    )
    .unwrap_err();
    let mut garbled = identity.key_pem.clone();
    garbled.insert_str(40, "!!!");
    let garbled =
        Credentials::from_pem(identity.chain_pem.as_bytes(), garbled.as_bytes()).unwrap_err();
    let texts = [
        format!("{credentials:?}"),
        format!("{token:?}"),
        format!("{token}"),
        format!("{client:?}"),
        format!("{builder:?}"),
        format!("{mismatch:?} {mismatch}"),
        format!("{garbled:?} {garbled}"),
    ];
    for text in &texts {
        assert!(
            !text.contains(token.expose()) && !text.contains(&signature),
            "token leaked: {text}"
        );
        for line in &key_body {
            assert!(!text.contains(line.as_str()), "key material leaked: {text}");
        }
    }
    assert!(
        texts[0].contains("<redacted>") && texts[0].contains("CN=driver"),
        "{}",
        texts[0]
    );
    assert!(!texts[4].contains("secret-key-path"), "{}", texts[4]);
}

#[tokio::test]
async fn p521_pkcs8_key_signs_es512() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client_p521("driver");
    assert!(identity.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_accepted(&ca, &identity, &identity.key_pem, "ES512", 1).await;
}

#[tokio::test]
async fn p521_sec1_key_signs_es512() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client_p521("driver");
    let sec1 = identity.key_sec1_pem();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_accepted(&ca, &identity, &sec1, "ES512", 1).await;
}

#[tokio::test]
async fn an_es512_token_is_raw_r_s_and_its_alg_must_fit_the_curve() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client_p521("driver");
    let credentials =
        Credentials::from_pem(identity.chain_pem.as_bytes(), identity.key_pem.as_bytes()).unwrap();
    assert_eq!(credentials.algorithm().as_str(), "ES512");
    let token = credentials.sign_token(Duration::from_secs(60)).unwrap();
    let pieces: Vec<&str> = token.expose().split('.').collect();
    let signature = URL_SAFE_NO_PAD.decode(pieces[2]).unwrap();
    assert_eq!(signature.len(), 132, "r‖s, 66 bytes each");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let verify =
        |token: &str| conveyor_driver_tests::api_server::verify_token(token, &ca.cert_der, now);
    verify(token.expose()).expect("the token verifies");

    // The stand-in verifies as the server does: another alg for a P-521 key is refused …
    let (mut header, _) = parts(token.expose());
    header["alg"] = json!("ES384");
    let relabelled = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        pieces[1],
        pieces[2]
    );
    let err = verify(&relabelled).unwrap_err();
    assert!(err.contains("does not fit the leaf key (ES512)"), "{err}");
    // … and so is a DER-encoded signature, or one cut short.
    let (r, s) = signature.split_at(66);
    let der = der_signature(r, s);
    let der_token = format!(
        "{}.{}.{}",
        pieces[0],
        pieces[1],
        URL_SAFE_NO_PAD.encode(&der)
    );
    let err = verify(&der_token).unwrap_err();
    assert!(err.contains("2×66 bytes"), "{err}");
    let short = format!(
        "{}.{}.{}",
        pieces[0],
        pieces[1],
        URL_SAFE_NO_PAD.encode(&signature[..131])
    );
    assert!(verify(&short).is_err());
    // A flipped bit in the claims breaks the signature.
    let mut claims = URL_SAFE_NO_PAD.decode(pieces[1]).unwrap();
    claims[2] ^= 1;
    let tampered = format!(
        "{}.{}.{}",
        pieces[0],
        URL_SAFE_NO_PAD.encode(&claims),
        pieces[2]
    );
    let err = verify(&tampered).unwrap_err();
    assert!(err.contains("invalid signature"), "{err}");
}

/// The ASN.1 DER `ECDSA-Sig-Value` of `r` and `s`, the encoding JWS does not use.
fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let integer = |bytes: &[u8]| {
        let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
        let mut out = vec![0x02];
        let pad = bytes.first().is_some_and(|b| *b >= 0x80);
        out.push((bytes.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
        out
    };
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, 0x81, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn a_p521_key_of_another_certificate_is_a_mismatch() {
    let ca = Ca::new("Conveyor CA");
    let identity = ca.client_p521("driver");
    let other = ca.client_p521("other");
    let p256 = ca.client("p256", KeyKind::P256);
    for key in [
        other.key_pem.clone(),
        other.key_sec1_pem(),
        p256.key_pem.clone(),
        p256.key_sec1_pem(),
    ] {
        let err = Credentials::from_pem(identity.chain_pem.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(
            matches!(err, CredentialsError::KeyMismatch { .. }),
            "{err:?}"
        );
    }
    // A P-521 key for a P-256 certificate, too.
    let err =
        Credentials::from_pem(p256.chain_pem.as_bytes(), identity.key_pem.as_bytes()).unwrap_err();
    assert!(
        matches!(err, CredentialsError::KeyMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_ca_is_trusted_for_an_https_api() {
    let ca = Ca::new("Conveyor CA");
    let server = ApiServer::start_https(&ca.server(), &ca.cert_der).await;
    assert!(server.url.starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.write(dir.path(), "ca");
    let identity = ca.client("driver", KeyKind::P256);
    let files = files(&identity, &identity.key_pem);
    let client = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .ca(&ca_path)
        .build()
        .unwrap();
    assert_eq!(client.health().await.unwrap()["status"], "healthy");

    // Without the CA, the server's certificate is not trusted: a connection error, no retry loop.
    let untrusting = Client::builder()
        .base_url(&server.url)
        .tls(&files.cert, &files.key)
        .retries(0)
        .build()
        .unwrap();
    let err = untrusting.health().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

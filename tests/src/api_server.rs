//! A local stand-in for the Conveyor REST API (loopback only), for client tests.
//!
//! It serves every endpoint of `conveyor-api.swagger.yaml` from memory, records each request
//! (method, path, query, exact body bytes, bearer token), and, when started with a CA,
//! verifies the bearer token the way the Conveyor server does: the `x5c` chain must lead to the
//! CA, `cnf.x5t#S256` must be the leaf's thumbprint, `alg` must be the one of the leaf's key
//! (RS256; ES256/ES384/ES512 for P-256/P-384/P-521), the signature (raw `r‖s` for ECDSA) must
//! verify with the leaf's key, and the token must not be expired. Responses can be scripted to test error handling.

// Handlers answer with ready-made error responses; their size does not matter in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use futures_util::StreamExt as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use pkcs8::der::asn1::ObjectIdentifier;
use pkcs8::der::Decode as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/resources/build/app`.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// The bearer token, if any.
    pub token: Option<String>,
}

/// A scripted answer, used instead of the normal handling for one request.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Status to answer.
    pub status: u16,
    /// Body to answer.
    pub body: String,
    /// Delay before answering.
    pub delay: Duration,
}

#[derive(Default)]
struct Store {
    resources: HashMap<(String, String), Vec<Value>>,
    definitions: HashMap<String, Value>,
    pipelines: HashMap<String, Value>,
    logs: Vec<Value>,
}

struct Shared {
    ca_der: Option<Vec<u8>>,
    clock_offset: Mutex<i64>,
    recorded: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Scripted>>,
    store: Mutex<Store>,
    live: broadcast::Sender<Value>,
}

/// The running test server; stops when dropped.
pub struct ApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// A server that does not check authentication (records tokens all the same).
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// A server that requires a valid proof-of-possession token chaining to `ca_der`.
    pub async fn start_with_ca(ca_der: &[u8]) -> Self {
        Self::spawn(Some(ca_der.to_vec())).await
    }

    /// Like [`start_with_ca`](Self::start_with_ca) over HTTPS with `identity` as the
    /// server certificate: `url` is `https://127.0.0.1:<port>`.
    pub async fn start_https(identity: &crate::pki::Identity, ca_der: &[u8]) -> Self {
        let mut server = Self::spawn_with(Some(ca_der.to_vec()), Some(identity)).await;
        server.url = server.url.replacen("http://", "https://", 1);
        server
    }

    async fn spawn(ca_der: Option<Vec<u8>>) -> Self {
        Self::spawn_with(ca_der, None).await
    }

    async fn spawn_with(ca_der: Option<Vec<u8>>, tls: Option<&crate::pki::Identity>) -> Self {
        let shared = Arc::new(Shared {
            ca_der,
            clock_offset: Mutex::new(0),
            recorded: Mutex::default(),
            script: Mutex::default(),
            store: Mutex::default(),
            live: broadcast::channel(64).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(identity) => {
                use rustls_pki_types::pem::PemObject as _;
                let chain = CertificateDer::pem_slice_iter(identity.chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("server chain");
                let key =
                    rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                        .expect("server key");
                let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server certificate");
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        };
        Self { url, shared, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Answers the next request with `status` and `body` instead of handling it.
    pub fn script(&self, status: u16, body: &str) {
        self.script_delayed(status, body, Duration::ZERO);
    }

    /// Like [`script`](Self::script), after `delay`.
    pub fn script_delayed(&self, status: u16, body: &str, delay: Duration) {
        self.shared.script.lock().unwrap().push_back(Scripted {
            status,
            body: body.to_owned(),
            delay,
        });
    }

    /// Shifts the server's clock by `seconds` when it checks token expiry.
    pub fn set_clock_offset(&self, seconds: i64) {
        *self.shared.clock_offset.lock().unwrap() = seconds;
    }

    /// Sends a live log line to the connected SSE streams that match it.
    pub fn send_live(&self, entry: Value) {
        let _ = self.shared.live.send(entry);
    }

    /// How many SSE streams are connected.
    pub fn live_streams(&self) -> usize {
        self.shared.live.receiver_count()
    }
}

/// Accepts TCP connections and completes the TLS handshake (failed handshakes are dropped).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    shared.recorded.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        body: body.to_vec(),
        token: token.clone(),
    });
    if let Some(ca) = &shared.ca_der {
        let now = now_secs() + *shared.clock_offset.lock().unwrap();
        let Some(token) = token else {
            return error(StatusCode::UNAUTHORIZED, "missing bearer token");
        };
        if let Err(reason) = verify_token(&token, ca, now) {
            return error(StatusCode::UNAUTHORIZED, &reason);
        }
    }
    let scripted = shared.script.lock().unwrap().pop_front();
    if let Some(scripted) = scripted {
        tokio::time::sleep(scripted.delay).await;
        let status = StatusCode::from_u16(scripted.status).expect("valid status");
        return (
            status,
            [("content-type", "application/json")],
            scripted.body,
        )
            .into_response();
    }
    let segments: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    route(&shared, &method, &segments, uri.query(), &body)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Invalid request payload"))
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &[&str],
    query: Option<&str>,
    body: &[u8],
) -> Response {
    let mut store = shared.store.lock().unwrap();
    let result = match (method.as_str(), path) {
        ("GET", ["health"]) => Ok((StatusCode::OK, json!({"status": "healthy"}))),
        ("POST", ["drivers", "broadcast-message"]) => json_body(body).and_then(|message| {
            if message.get("event").and_then(Value::as_str).unwrap_or_default().is_empty() {
                return Err(error(StatusCode::BAD_REQUEST, "event is required"));
            }
            Ok((StatusCode::OK, json!({"message": "Message published successfully"})))
        }),
        ("POST", ["resources"]) => json_body(body).and_then(|mut resource| {
            let kind = resource["resource"].as_str().unwrap_or_default().to_owned();
            if kind.is_empty() {
                return Err(error(StatusCode::BAD_REQUEST, "Resource type is required"));
            }
            let name = resource["name"].as_str().unwrap_or_default().to_owned();
            resource["id"] = json!(uuid::Uuid::new_v4().to_string());
            resource["metadata"] = json!({"version": "1"});
            store.resources.insert((kind, name.clone()), vec![resource]);
            let runid = uuid::Uuid::new_v4().to_string();
            Ok((
                StatusCode::CREATED,
                json!({"name": name, "runid": runid, "message": "Resource created successfully", "version": "1"}),
            ))
        }),
        ("GET", ["resources", kind]) => {
            let mut list: Vec<Value> = store
                .resources
                .iter()
                .filter(|((k, _), _)| k == kind)
                .filter_map(|(_, versions)| versions.last().cloned())
                .collect();
            list.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_owned());
            // The Go server answers `null` for an empty list.
            Ok((StatusCode::OK, if list.is_empty() { Value::Null } else { Value::Array(list) }))
        }
        ("GET", ["resources", kind, name]) => match store.resources.get(&((*kind).to_owned(), (*name).to_owned())) {
            Some(versions) => Ok((StatusCode::OK, versions.last().cloned().unwrap_or(Value::Null))),
            None => Err(error(StatusCode::NOT_FOUND, "Resource not found")),
        },
        ("GET", ["resources", kind, name, version]) => {
            let found = store.resources.get(&((*kind).to_owned(), (*name).to_owned())).and_then(|versions| {
                versions.iter().find(|r| r["metadata"]["version"].as_str() == Some(version)).cloned()
            });
            match found {
                Some(resource) => Ok((StatusCode::OK, resource)),
                None => Err(error(StatusCode::NOT_FOUND, "Resource not found")),
            }
        }
        ("PUT", ["resources", kind, name]) => json_body(body).and_then(|mut resource| {
            let Some(versions) = store.resources.get_mut(&((*kind).to_owned(), (*name).to_owned())) else {
                return Err(error(StatusCode::NOT_FOUND, "Resource not found"));
            };
            resource["id"] = versions[0]["id"].clone();
            resource["metadata"] = json!({"version": (versions.len() + 1).to_string()});
            versions.push(resource.clone());
            Ok((StatusCode::OK, resource))
        }),
        ("DELETE", ["resources", kind, name]) => {
            store.resources.remove(&((*kind).to_owned(), (*name).to_owned()));
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        ("POST", ["resource-definitions"]) | ("POST", ["resource-definitions", "apply"]) => {
            json_body(body).and_then(|mut definition| {
                let name = definition["name"].as_str().unwrap_or_default().to_owned();
                if name.is_empty() {
                    return Err(error(StatusCode::BAD_REQUEST, "name is required"));
                }
                let apply = path.len() == 2;
                if !apply && store.definitions.contains_key(&name) {
                    return Err(error(StatusCode::BAD_REQUEST, "Resource definition already exists"));
                }
                definition["id"] = json!(uuid::Uuid::new_v4().to_string());
                store.definitions.insert(name, definition.clone());
                Ok((StatusCode::CREATED, definition))
            })
        }
        ("GET", ["resource-definitions", name]) => match store.definitions.get(*name) {
            Some(definition) => Ok((StatusCode::OK, definition.clone())),
            None => Err(error(StatusCode::NOT_FOUND, "Resource definition not found")),
        },
        ("PUT", ["resource-definitions", name]) => json_body(body).map(|definition| {
            store.definitions.insert((*name).to_owned(), definition.clone());
            (StatusCode::OK, definition)
        }),
        ("DELETE", ["resource-definitions", name]) => {
            store.definitions.remove(*name);
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        ("POST", ["pipelines"]) => json_body(body).map(|pipeline| {
            let name = pipeline["name"].as_str().unwrap_or_default().to_owned();
            store.pipelines.insert(name, pipeline.clone());
            (StatusCode::CREATED, pipeline)
        }),
        ("GET", ["pipelines", name]) => match store.pipelines.get(*name) {
            Some(pipeline) => Ok((StatusCode::OK, pipeline.clone())),
            None => Err(error(StatusCode::NOT_FOUND, "Pipeline not found")),
        },
        ("PUT", ["pipelines", name]) => json_body(body).and_then(|pipeline| {
            if !store.pipelines.contains_key(*name) {
                return Err(error(StatusCode::NOT_FOUND, "Pipeline not found"));
            }
            store.pipelines.insert((*name).to_owned(), pipeline.clone());
            Ok((StatusCode::OK, pipeline))
        }),
        ("DELETE", ["pipelines", name]) => match store.pipelines.remove(*name) {
            Some(_) => Ok((StatusCode::NO_CONTENT, Value::Null)),
            None => Err(error(StatusCode::NOT_FOUND, "Pipeline not found")),
        },
        ("GET", ["logs"]) => {
            let params: HashMap<String, String> = query
                .map(|q| {
                    q.split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                        .collect()
                })
                .unwrap_or_default();
            let lines: Vec<Value> = store
                .logs
                .iter()
                .filter(|line| {
                    ["pipeline", "driver", "runid"]
                        .iter()
                        .all(|key| params.get(*key).is_none_or(|want| line[*key].as_str() == Some(want.as_str())))
                })
                .cloned()
                .collect();
            Ok((StatusCode::OK, Value::Array(lines)))
        }
        ("POST", ["logs"]) => json_body(body).map(|line| {
            store.logs.push(line);
            (StatusCode::CREATED, json!("Log created"))
        }),
        ("GET", ["logs", "streams", driver, runid]) => {
            let (driver, runid) = ((*driver).to_owned(), (*runid).to_owned());
            return sse(shared, move |line| line["driver"] == driver.as_str() && line["runid"] == runid.as_str());
        }
        ("GET", ["logs", "pipeline", runid]) => {
            let runid = (*runid).to_owned();
            return sse(shared, move |line| line["runid"] == runid.as_str());
        }
        _ => Err(error(StatusCode::NOT_FOUND, "no such endpoint")),
    };
    match result {
        Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(response) => response,
    }
}

fn sse(shared: &Shared, filter: impl Fn(&Value) -> bool + Send + 'static) -> Response {
    let receiver = shared.live.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(line) => return Some((line, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |line| std::future::ready(filter(line)))
    .map(|line| Ok::<_, Infallible>(Event::default().data(line.to_string())));
    Sse::new(stream).into_response()
}

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The signature check of each `alg`; ES512 is RustCrypto's, as jsonwebtoken has no P-521.
enum Check {
    Jwt(Algorithm, DecodingKey),
    Es512(p521::ecdsa::VerifyingKey),
}

impl Check {
    fn alg(&self) -> &'static str {
        match self {
            Self::Jwt(Algorithm::RS256, _) => "RS256",
            Self::Jwt(Algorithm::ES256, _) => "ES256",
            Self::Jwt(Algorithm::ES384, _) => "ES384",
            Self::Jwt(..) => "unexpected",
            Self::Es512(_) => "ES512",
        }
    }

    /// Verifies the base64url `signature` of `signed` (`header.claims`).
    fn verify(&self, signed: &str, signature: &str) -> Result<(), String> {
        match self {
            Self::Jwt(algorithm, key) => {
                match jsonwebtoken::crypto::verify(signature, signed.as_bytes(), key, *algorithm) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("the signature does not verify".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Self::Es512(key) => {
                use p521::ecdsa::signature::Verifier as _;
                let raw = URL_SAFE_NO_PAD
                    .decode(signature)
                    .map_err(|e| format!("the signature is not base64url: {e}"))?;
                if raw.len() != 132 {
                    return Err(format!(
                        "an ES512 signature is r‖s of 2×66 bytes, not {} bytes",
                        raw.len()
                    ));
                }
                let signature = p521::ecdsa::Signature::from_slice(&raw)
                    .map_err(|_| "malformed r‖s".to_owned())?;
                key.verify(signed.as_bytes(), &signature)
                    .map_err(|_| "the signature does not verify".to_owned())
            }
        }
    }
}

/// Verifies a proof-of-possession token as the Conveyor server does; `now` in Unix seconds.
pub fn verify_token(token: &str, ca_der: &[u8], now: i64) -> Result<(), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature] = parts[..] else {
        return Err("malformed token: not three dot-separated parts".into());
    };
    let segment = |b64: &str| -> Result<Value, String> {
        let json = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| format!("malformed token: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| format!("malformed token: {e}"))
    };
    let header = segment(header_b64)?;
    let x5c = header["x5c"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("token has no x5c chain")?;
    let chain: Vec<Vec<u8>> = x5c
        .iter()
        .map(|c| {
            STANDARD
                .decode(c.as_str().unwrap_or_default())
                .map_err(|e| format!("x5c is not standard base64: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // 1. The chain leads to the CA.
    let ca = CertificateDer::from(ca_der.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| format!("bad CA: {e}"))?;
    let leaf = CertificateDer::from(chain[0].clone());
    let intermediates: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("bad leaf certificate: {e}"))?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64)),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| format!("certificate chain not trusted: {e}"))?;

    // 2. The signature verifies with the leaf's key (and the algorithm fits the key).
    let cert = x509_cert::Certificate::from_der(&chain[0]).map_err(|e| format!("bad leaf: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let public = spki.subject_public_key.raw_bytes();
    let check = if spki.algorithm.oid == RSA_ENCRYPTION {
        Check::Jwt(Algorithm::RS256, DecodingKey::from_rsa_der(public))
    } else {
        let curve: Option<ObjectIdentifier> = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok());
        match curve {
            Some(c) if c == P256 => Check::Jwt(Algorithm::ES256, DecodingKey::from_ec_der(public)),
            Some(c) if c == P384 => Check::Jwt(Algorithm::ES384, DecodingKey::from_ec_der(public)),
            Some(c) if c == P521 => Check::Es512(
                p521::ecdsa::VerifyingKey::from_sec1_bytes(public)
                    .map_err(|_| "bad P-521 leaf key")?,
            ),
            _ => return Err("unsupported leaf key".into()),
        }
    };
    if header["alg"].as_str() != Some(check.alg()) {
        return Err(format!(
            "alg {} does not fit the leaf key ({})",
            header["alg"],
            check.alg()
        ));
    }
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    check
        .verify(signed, signature)
        .map_err(|e| format!("invalid signature: {e}"))?;
    let claims = segment(claims_b64)?;

    // 3. The thumbprint binds the token to the leaf.
    let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(&chain[0]));
    if claims["cnf"]["x5t#S256"].as_str() != Some(thumbprint.as_str()) {
        return Err("cnf.x5t#S256 does not match the leaf certificate".into());
    }

    // 4. Short-lived and not expired.
    let exp = claims["exp"].as_i64().ok_or("exp is not a number")?;
    let iat = claims["iat"].as_i64().ok_or("iat is not a number")?;
    if exp <= now {
        return Err("token expired".into());
    }
    if exp - iat > 600 {
        return Err("token lifetime too long".into());
    }
    Ok(())
}

//! `nats-server` configured for each NATS authentication method, with the credentials of a
//! client it accepts and of one it turns down, as `CONVEYOR_*` variables for a driver.
//!
//! The NKeys are generated with the `nkeys` crate (the one async-nats signs with). The
//! operator, account and user JWTs of the `.creds` setup are signed here too: `nats-jwt`, the
//! crate for them, makes neither operator JWTs nor accounts with JetStream, and a Conveyor
//! driver needs JetStream. A NATS JWT is `base64url(header).base64url(claims).base64url(ed25519
//! signature of the first two by the issuer's NKey)`, the claims as the Go `jwt` package (v2)
//! reads them; the server runs in operator mode with a memory resolver preloaded with the
//! account, as `nsc` would set it up.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{json, Value};

use crate::NatsServer;

/// An authentication method of a NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `authorization { token }`.
    Token,
    /// `authorization { users = [{ user, password }] }`.
    UserPassword,
    /// `authorization { users = [{ nkey }] }`.
    NKey,
    /// Operator mode: an operator, an account with JetStream, and a user's `.creds` file.
    Creds,
}

/// How the test's own client (the [`Conveyor`](crate::Conveyor) side) signs in.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// A token.
    Token(String),
    /// A user and password.
    UserPassword(String, String),
    /// An NKey seed.
    NKey(String),
    /// The text of a `.creds` file.
    Creds(String),
}

impl ClientAuth {
    /// `options` signing in with these credentials.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match self {
            Self::Token(token) => options.token(token.clone()),
            Self::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Self::NKey(seed) => options.nkey(seed.clone()),
            Self::Creds(text) => options.credentials(text).expect("valid creds"),
        }
    }
}

/// A server requiring one method, and credentials it accepts and rejects.
pub struct AuthServer {
    /// The server; [`Conveyor`](crate::Conveyor) signs in to it with the right credentials.
    pub server: NatsServer,
    /// `CONVEYOR_*` variables with credentials the server accepts.
    pub good: Vec<(&'static str, String)>,
    /// `CONVEYOR_*` variables with credentials it rejects.
    pub bad: Vec<(&'static str, String)>,
    /// Every secret of both, which no output may show.
    pub secrets: Vec<String>,
    /// The seed and credentials files.
    pub dir: tempfile::TempDir,
}

impl AuthServer {
    /// Starts a server that requires `method`.
    pub fn start(method: Method) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (config, auth, good, bad, secrets) = match method {
            Method::Token => {
                let (token, wrong) = (secret("token"), secret("wrong-token"));
                (
                    format!("authorization {{ token: {} }}\n", quote(&token)),
                    ClientAuth::Token(token.clone()),
                    vec![("CONVEYOR_NATS_TOKEN", token.clone())],
                    vec![("CONVEYOR_NATS_TOKEN", wrong.clone())],
                    vec![token, wrong],
                )
            }
            Method::UserPassword => {
                let (password, wrong) = (secret("password"), secret("wrong-password"));
                (
                    format!(
                        "authorization {{ users = [ {{ user: \"driver\", password: {} }} ] }}\n",
                        quote(&password)
                    ),
                    ClientAuth::UserPassword("driver".to_owned(), password.clone()),
                    vec![
                        ("CONVEYOR_NATS_USER", "driver".to_owned()),
                        ("CONVEYOR_NATS_PASSWORD", password.clone()),
                    ],
                    vec![
                        ("CONVEYOR_NATS_USER", "driver".to_owned()),
                        ("CONVEYOR_NATS_PASSWORD", wrong.clone()),
                    ],
                    vec![password, wrong],
                )
            }
            Method::NKey => {
                let (user, stranger) = (KeyPair::new_user(), KeyPair::new_user());
                let good = write_seed(dir.path(), "driver.nk", &user);
                let bad = write_seed(dir.path(), "stranger.nk", &stranger);
                (
                    format!(
                        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
                        quote(&user.public_key())
                    ),
                    ClientAuth::NKey(seed_of(&user)),
                    vec![("CONVEYOR_NATS_NKEY", good.display().to_string())],
                    vec![("CONVEYOR_NATS_NKEY", bad.display().to_string())],
                    vec![seed_of(&user), seed_of(&stranger)],
                )
            }
            Method::Creds => {
                let operator = KeyPair::new_operator();
                // JetStream needs a system account.
                let system = KeyPair::new_account();
                let account = KeyPair::new_account();
                let user = KeyPair::new_user();
                // A user of an account the server does not know.
                let other_account = KeyPair::new_account();
                let stranger = KeyPair::new_user();
                let creds = creds(&user, &account);
                let good = dir.path().join("driver.creds");
                std::fs::write(&good, &creds).expect("write creds");
                let bad = dir.path().join("stranger.creds");
                std::fs::write(&bad, self::creds(&stranger, &other_account)).expect("write creds");
                (
                    format!(
                        "operator: {}\nsystem_account: {}\nresolver: MEMORY\n\
                         resolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
                        quote(&operator_jwt(&operator)),
                        system.public_key(),
                        system.public_key(),
                        quote(&account_jwt(&system, &operator, false)),
                        account.public_key(),
                        quote(&account_jwt(&account, &operator, true)),
                    ),
                    ClientAuth::Creds(creds),
                    vec![("CONVEYOR_NATS_CREDS", good.display().to_string())],
                    vec![("CONVEYOR_NATS_CREDS", bad.display().to_string())],
                    [
                        &user,
                        &account,
                        &system,
                        &operator,
                        &stranger,
                        &other_account,
                    ]
                    .into_iter()
                    .map(seed_of)
                    .collect(),
                )
            }
        };
        Self {
            server: NatsServer::start_configured(&config, auth),
            good,
            bad,
            secrets,
            dir,
        }
    }
}

/// A random secret, recognisable in output.
fn secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string")
}

fn seed_of(key: &KeyPair) -> String {
    key.seed().expect("a key pair with its seed")
}

/// A seed file as `nk -gen user` writes it.
fn write_seed(dir: &Path, name: &str, key: &KeyPair) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", seed_of(key))).expect("write seed");
    path
}

/// A `.creds` file as `nsc generate creds` writes it.
fn creds(user: &KeyPair, account: &KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user_jwt(user, account),
        seed_of(user)
    )
}

fn operator_jwt(operator: &KeyPair) -> String {
    jwt(
        operator,
        &operator.public_key(),
        json!({"type": "operator", "version": 2}),
    )
}

/// An account without limits, with JetStream or (the system account) without.
fn account_jwt(account: &KeyPair, operator: &KeyPair, jetstream: bool) -> String {
    let storage = if jetstream { -1 } else { 0 };
    let limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": storage, "disk_storage": storage, "streams": storage, "consumer": storage,
    });
    let nats = json!({"limits": limits, "type": "account", "version": 2});
    jwt(operator, &account.public_key(), nats)
}

fn user_jwt(user: &KeyPair, account: &KeyPair) -> String {
    let nats = json!({"subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
    jwt(account, &user.public_key(), nats)
}

/// A JWT about `subject`, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, nats: Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("signing");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

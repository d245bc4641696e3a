//! How the Driver Manager proves who it is to NATS, and what it says when the server says no.
//!
//! A NATS server takes one of a token, a user and password, an NKey, or a user JWT signed in
//! with its NKey (a `.creds` file, decentralized auth); mutual TLS goes with any of them.
//! Credentials in the URL (`nats://user:password@host`, and `nats://token@host` as nats.go and
//! the NATS CLI read it) are taken out of it and passed as connect options: async-nats sends
//! only those, and the addresses it is handed, and may log, then hold no secret.
//!
//! The files are read once, at start-up: a missing or malformed one is an error then, naming
//! the file, never its content.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Error;
use crate::settings::{invalid_value, redact_urls, ConfigError};

/// The credentials the connection presents, read from their settings and files.
pub(crate) struct Credentials {
    secret: Secret,
    tls: bool,
}

/// At most one of these: a server checks one kind of credential.
enum Secret {
    None,
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
    /// The seed, and the file it came from.
    NKey(String, PathBuf),
    /// The file's text, and the file.
    Creds(String, PathBuf),
}

/// Shows which credential, never the secret itself.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("method", &self.what())
            .field("tls", &self.tls)
            .finish()
    }
}

/// The credentials of the URLs: the same in each URL that has any.
enum InUrl {
    Token(String),
    UserPassword(String, String),
}

impl Credentials {
    /// The credentials of `config`, with its seed or credentials file read; an error names
    /// the file that cannot be read or holds no credential.
    pub(crate) async fn load(config: &Config) -> Result<Self, Error> {
        let in_url = url_credentials(&config.nats_url)
            .map_err(|reason| invalid_value("nats_url", &redact_urls(&config.nats_url), reason))?;
        let secret = if let Some(path) = &config.nats_creds {
            let text = read(path, "credentials file").await?;
            // The same parser that signs in with it, so that a file it cannot use fails here.
            async_nats::ConnectOptions::new()
                .credentials(&text)
                .map_err(|err| unusable(path, "credentials file", err.to_string()))?;
            Secret::Creds(text, path.clone())
        } else if let Some(path) = &config.nats_nkey {
            let text = read(path, "NKey seed file").await?;
            let seed = text
                .lines()
                .map(str::trim)
                .find(|line| nkeys::KeyPair::from_seed(line).is_ok())
                .ok_or_else(|| {
                    let reason = "holds no NKey seed (a line such as SUAB…)".to_owned();
                    unusable(path, "NKey seed file", reason)
                })?;
            Secret::NKey(seed.to_owned(), path.clone())
        } else if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
            Secret::UserPassword {
                user: user.clone(),
                password: password.clone(),
            }
        } else if let Some(token) = &config.nats_token {
            Secret::Token(token.clone())
        } else {
            match in_url {
                Some(InUrl::UserPassword(user, password)) => {
                    Secret::UserPassword { user, password }
                }
                Some(InUrl::Token(token)) => Secret::Token(token),
                None => Secret::None,
            }
        };
        Ok(Self {
            secret,
            tls: config.tls_cert.is_some(),
        })
    }

    /// `options` presenting these credentials.
    pub(crate) fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        Ok(match &self.secret {
            Secret::None => options,
            Secret::Token(token) => options.token(token.clone()),
            Secret::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Secret::NKey(seed, _) => options.nkey(seed.clone()),
            Secret::Creds(text, _) => options.credentials(text)?,
        })
    }

    /// The error for a server that turned these credentials down with `err`, or `None` when
    /// `err` is not about credentials (TLS, say).
    pub(crate) fn rejected(&self, err: &async_nats::ConnectError) -> Option<Error> {
        use async_nats::ConnectErrorKind as Kind;
        let reason = match err.kind() {
            Kind::AuthorizationViolation => "authorization violation".to_owned(),
            Kind::Authentication => "the credentials cannot sign the server's challenge".to_owned(),
            // The server's other refusals (an expired or revoked user JWT, an authentication
            // timeout) come as its own words.
            _ => match source_of::<async_nats::ServerError>(err)? {
                async_nats::ServerError::Other(text) if is_about_credentials(text) => {
                    text.to_lowercase()
                }
                _ => return None,
            },
        };
        Some(Error::Rejected {
            what: self.what(),
            reason,
        })
    }

    /// What the server was shown, as an error names it.
    fn what(&self) -> String {
        match &self.secret {
            Secret::None if self.tls => "the client certificate".to_owned(),
            Secret::None => "the connection without credentials (set CONVEYOR_NATS_TOKEN, \
                 CONVEYOR_NATS_USER and CONVEYOR_NATS_PASSWORD, CONVEYOR_NATS_NKEY or \
                 CONVEYOR_NATS_CREDS)"
                .to_owned(),
            Secret::Token(_) => "the token".to_owned(),
            Secret::UserPassword { user, .. } => {
                format!("the user/password credentials of user {user:?}")
            }
            Secret::NKey(_, path) => format!("the NKey of {}", path.display()),
            Secret::Creds(_, path) => format!("the credentials file {}", path.display()),
        }
    }
}

/// Whether `err` is the server turning down credentials in words of its own (an expired or
/// revoked user JWT, an authentication timeout) rather than as an authorization violation.
pub(crate) fn refuses_credentials(err: &async_nats::ConnectError) -> bool {
    matches!(
        source_of::<async_nats::ServerError>(err),
        Some(async_nats::ServerError::Other(text)) if is_about_credentials(text)
    )
}

fn is_about_credentials(text: &str) -> bool {
    let text = text.to_lowercase();
    ["authentication", "authorization", "expired", "revoked"]
        .iter()
        .any(|word| text.contains(word))
}

/// The first source of `err` that is an `E`.
fn source_of<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// The text of the file `path`; an error names it as `what`.
async fn read(path: &Path, what: &'static str) -> Result<String, Error> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|err| unusable(path, what, err.to_string()))
}

fn unusable(path: &Path, what: &'static str, reason: String) -> Error {
    Error::NatsCredentials {
        what,
        path: path.to_owned(),
        reason,
    }
}

/// The servers of `urls` without the credentials they carry.
pub(crate) fn addresses(urls: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    crate::settings::server_addrs(urls)?
        .into_iter()
        .map(|addr| {
            let mut url = addr.into_inner();
            // Only fails for URLs that cannot have credentials, which then have none.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            async_nats::ServerAddr::from_url(url).map_err(|err| err.to_string())
        })
        .collect()
}

/// The credentials in `urls`, decoded; an error when two URLs carry different ones, as one
/// connection presents one set to every server.
fn url_credentials(urls: &str) -> Result<Option<InUrl>, String> {
    let mut found = None;
    for addr in crate::settings::server_addrs(urls)? {
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let here = match (addr.username(), addr.password()) {
            (Some(user), Some(password)) => InUrl::UserPassword(decode(user), decode(password)),
            (Some(token), None) => InUrl::Token(decode(token)),
            _ => continue,
        };
        match &found {
            Some(seen) if !same(seen, &here) => {
                return Err("the URLs carry different credentials; give them once with \
                     CONVEYOR_NATS_USER and CONVEYOR_NATS_PASSWORD (or CONVEYOR_NATS_TOKEN)"
                    .to_owned())
            }
            _ => found = Some(here),
        }
    }
    Ok(found)
}

fn same(a: &InUrl, b: &InUrl) -> bool {
    match (a, b) {
        (InUrl::Token(a), InUrl::Token(b)) => a == b,
        (InUrl::UserPassword(a, x), InUrl::UserPassword(b, y)) => a == b && x == y,
        _ => false,
    }
}

/// Checks that the credentials of `config` are complete and of one kind.
pub(crate) fn validate(config: &Config) -> Result<(), ConfigError> {
    let in_url = url_credentials(&config.nats_url)
        .map_err(|reason| invalid_value("nats_url", &redact_urls(&config.nats_url), reason))?;
    match (&config.nats_user, &config.nats_password) {
        (Some(_), None) => {
            return Err(invalid_value(
                "nats_user",
                "password missing",
                "a NATS user needs its password (CONVEYOR_NATS_PASSWORD)",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid_value(
                "nats_password",
                "user missing",
                "a NATS password needs its user (CONVEYOR_NATS_USER)",
            ))
        }
        _ => {}
    }
    let given = [
        (
            config.nats_token.is_some() || matches!(in_url, Some(InUrl::Token(_))),
            "CONVEYOR_NATS_TOKEN",
        ),
        (
            config.nats_user.is_some() || matches!(in_url, Some(InUrl::UserPassword(..))),
            "CONVEYOR_NATS_USER",
        ),
        (config.nats_nkey.is_some(), "CONVEYOR_NATS_NKEY"),
        (config.nats_creds.is_some(), "CONVEYOR_NATS_CREDS"),
    ];
    let given: Vec<&str> = given
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
    if given.len() > 1 {
        return Err(invalid_value(
            "nats credentials",
            &given.join(" and "),
            "a NATS server takes one of a token, a user and password, an NKey or a credentials \
             file (any of them with mutual TLS); credentials in the URL count",
        ));
    }
    Ok(())
}

/// The NATS credentials, beside the settings' other setters.
impl Config {
    /// Signs in to NATS with `token` (a server with `authorization { token: … }`). The same as
    /// `nats://TOKEN@host` in the URL.
    #[must_use]
    pub fn nats_token(mut self, token: impl Into<String>) -> Self {
        self.nats_token = Some(token.into());
        self
    }

    /// Signs in to NATS as `user` with `password`. The same as `nats://user:password@host` in
    /// the URL, and beats it.
    #[must_use]
    pub fn nats_user_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.nats_user = Some(user.into());
        self.nats_password = Some(password.into());
        self
    }

    /// Signs in to NATS with the NKey whose seed (`SU…`, as `nsc` or `nk -gen user` writes
    /// it) is in the file `seed`: the server sends a challenge, the seed signs it, and the
    /// seed itself never leaves the process.
    #[must_use]
    pub fn nats_nkey(mut self, seed: impl Into<PathBuf>) -> Self {
        self.nats_nkey = Some(seed.into());
        self
    }

    /// Signs in to NATS with the user JWT and NKey seed of the `.creds` file `creds`, for a
    /// server in operator mode (decentralized JWT authentication).
    #[must_use]
    pub fn nats_creds(mut self, creds: impl Into<PathBuf>) -> Self {
        self.nats_creds = Some(creds.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_addresses_and_come_decoded() {
        let urls = "nats://alice:p%40ss@127.0.0.1:4222, tls://alice:p%40ss@10.0.0.2";
        let addrs = addresses(urls).unwrap();
        assert_eq!(addrs.len(), 2);
        for addr in &addrs {
            assert!(
                !addr.as_url_str().contains("alice"),
                "{}",
                addr.as_url_str()
            );
            assert!(!addr.as_url_str().contains("ss"), "{}", addr.as_url_str());
        }
        assert!(addrs[1].tls_required());
        match url_credentials(urls).unwrap() {
            Some(InUrl::UserPassword(user, password)) => {
                assert_eq!((user.as_str(), password.as_str()), ("alice", "p@ss"))
            }
            _ => panic!("expected user and password"),
        }
        assert!(matches!(
            url_credentials("nats://s3cret@h").unwrap(),
            Some(InUrl::Token(token)) if token == "s3cret"
        ));
        assert!(url_credentials("nats://h:1,nats://h:2").unwrap().is_none());
        let err = url_credentials("nats://a:x@h:1,nats://a:y@h:2")
            .err()
            .unwrap();
        assert!(
            err.contains("different credentials") && !err.contains('x'),
            "{err}"
        );
    }

    #[test]
    fn one_kind_of_credential_and_complete() {
        assert!(validate(&Config::default().nats_token("t")).is_ok());
        assert!(validate(&Config::default().nats_user_password("u", "p").tls("c", "k")).is_ok());
        let err = validate(&Config::default().nats_token("t").nats_creds("u.creds")).unwrap_err();
        assert!(
            err.to_string()
                .contains("CONVEYOR_NATS_TOKEN and CONVEYOR_NATS_CREDS"),
            "{err}"
        );
        let err =
            validate(&Config::default().nats_url("nats://u:p@h").nats_nkey("u.nk")).unwrap_err();
        assert!(
            err.to_string()
                .contains("CONVEYOR_NATS_USER and CONVEYOR_NATS_NKEY"),
            "{err}"
        );
        // The setting beats the URL's credentials of the same kind.
        assert!(validate(
            &Config::default()
                .nats_url("nats://u:p@h")
                .nats_user_password("v", "q")
        )
        .is_ok());
        let config = Config {
            nats_user: Some("u".to_owned()),
            ..Config::default()
        };
        let err = validate(&config).unwrap_err();
        assert!(err.to_string().contains("CONVEYOR_NATS_PASSWORD"), "{err}");
    }

    #[tokio::test]
    async fn unusable_files_are_named_and_their_content_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUNOTAREALSEEDBUTASECRET\n").unwrap();
        for config in [
            Config::default().nats_nkey(&bad),
            Config::default().nats_creds(&bad),
            Config::default().nats_nkey(dir.path().join("missing.nk")),
        ] {
            let err = Credentials::load(&config).await.unwrap_err().to_string();
            assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
            assert!(!err.contains("SECRET"), "{err}");
        }
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let good = dir.path().join("user.nk");
        std::fs::write(&good, format!("# a user seed\n{seed}\n")).unwrap();
        let credentials = Credentials::load(&Config::default().nats_nkey(&good))
            .await
            .unwrap();
        assert!(matches!(&credentials.secret, Secret::NKey(found, _) if *found == seed));
        assert!(!format!("{credentials:?}").contains(&seed));
    }

    #[tokio::test]
    async fn settings_beat_the_url_and_rejections_name_the_method() {
        let config = Config::default()
            .nats_url("nats://alice:pw@h")
            .nats_user_password("bob", "pw2");
        let credentials = Credentials::load(&config).await.unwrap();
        assert!(matches!(&credentials.secret, Secret::UserPassword { user, .. } if user == "bob"));
        let rejection =
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation);
        let err = credentials.rejected(&rejection).unwrap().to_string();
        assert_eq!(
            err,
            "NATS rejected the user/password credentials of user \"bob\" (authorization violation)"
        );
        let tls = async_nats::ConnectError::new(async_nats::ConnectErrorKind::Tls);
        assert!(credentials.rejected(&tls).is_none());
        let token = Credentials::load(&Config::default().nats_url("nats://tok@h"))
            .await
            .unwrap();
        assert!(matches!(&token.secret, Secret::Token(t) if t == "tok"));
    }
}

//! Proof-of-possession authentication: short-lived JWTs signed with the client certificate's
//! private key and carrying the certificate chain (`x5c`) and its thumbprint (`cnf`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use pkcs8::der::asn1::{AnyRef, ObjectIdentifier};
use pkcs8::der::{Decode as _, Encode as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::jwt::{self, Algorithm, SigningKey};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The default lifetime of a token: two minutes, as the Conveyor server expects.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(120);

/// Why a client certificate and key cannot be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `client certificate`, `private key` or `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate input holds no PEM `CERTIFICATE`, or a malformed one.
    #[error("invalid client certificate chain: {0}")]
    Certificate(String),
    /// The key input holds no PKCS#1, PKCS#8 or SEC1 PEM private key, or a malformed one.
    #[error("invalid private key: {0}")]
    Key(String),
    /// The key type or curve cannot sign tokens (e.g. Ed25519 or a curve other than P-256,
    /// P-384 and P-521).
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The private key does not belong to the leaf (first) certificate of the chain.
    #[error("the private key does not match the leaf certificate ({subject})")]
    KeyMismatch {
        /// The leaf certificate's subject.
        subject: String,
    },
    /// Signing a token failed.
    #[error("cannot sign the authentication token: {0}")]
    Sign(String),
}

/// A client certificate chain and its private key, ready to sign proof-of-possession tokens.
///
/// The key is checked against the leaf certificate when loading: a key of another certificate
/// is an error here, not a rejected request later. `Debug` shows the certificate's identity,
/// never the key.
///
/// ```no_run
/// use conveyor_driver::client::Credentials;
///
/// let credentials = Credentials::from_files("client.pem", "client.key")?;
/// println!("{credentials:?}"); // algorithm, subject, thumbprint; no key
/// # Ok::<(), conveyor_driver::client::CredentialsError>(())
/// ```
#[derive(Clone)]
pub struct Credentials {
    key: SigningKey,
    x5c: Vec<String>,
    thumbprint: String,
    subject: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("algorithm", &self.key.algorithm())
            .field("subject", &self.subject)
            .field("chain_len", &self.x5c.len())
            .field("thumbprint", &self.thumbprint)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The claims of a proof-of-possession token.
#[derive(Serialize)]
struct Claims<'a> {
    iat: u64,
    exp: u64,
    cnf: Confirmation<'a>,
}

#[derive(Serialize)]
struct Confirmation<'a> {
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
}

/// A signed bearer token. `Debug` and `Display` are redacted; read it with
/// [`Token::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The compact JWT, for an `Authorization: Bearer` header. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted token>")
    }
}

impl Credentials {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#1, PKCS#8 or
    /// SEC1) from files.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, CredentialsError> {
        let cert_pem = read_file("client certificate", cert.as_ref())?;
        let key_pem = read_file("private key", key.as_ref())?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// Like [`from_files`](Self::from_files), from PEM text in memory.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, CredentialsError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CredentialsError::Certificate(pem_error(&err)))?;
        let leaf = chain
            .first()
            .ok_or_else(|| CredentialsError::Certificate("no PEM CERTIFICATE found".into()))?;
        let cert = x509_cert::Certificate::from_der(leaf.as_ref()).map_err(|err| {
            CredentialsError::Certificate(format!("the leaf is not an X.509 certificate: {err}"))
        })?;
        let subject = cert.tbs_certificate.subject.to_string();
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let public_key = spki.subject_public_key.raw_bytes();

        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|err| CredentialsError::Key(pem_error(&err)))?;
        let signing_key = if spki.algorithm.oid == RSA_ENCRYPTION {
            let pkcs1 = match &key {
                PrivateKeyDer::Pkcs1(der) => der.secret_pkcs1_der().to_vec(),
                PrivateKeyDer::Pkcs8(der) => {
                    let info = pkcs8_info(der.secret_pkcs8_der())?;
                    if info.algorithm.oid != RSA_ENCRYPTION {
                        return Err(mismatch(subject));
                    }
                    info.private_key.to_vec()
                }
                _ => return Err(mismatch(subject)),
            };
            SigningKey::rsa(&pkcs1)
        } else if spki.algorithm.oid == EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or_else(|| {
                    CredentialsError::Certificate("EC public key without a named curve".into())
                })?;
            ec_key(&key, curve, subject.clone())?
        } else {
            return Err(CredentialsError::Unsupported(format!(
                "public key algorithm {} (expected RSA or EC P-256/P-384/P-521)",
                spki.algorithm.oid
            )));
        };

        // Proof that the key belongs to the leaf: sign with it, verify with the certificate.
        let algorithm = signing_key.algorithm();
        let verified = signing_key.matches(public_key).map_err(|reason| {
            CredentialsError::Key(format!("the key cannot sign {algorithm}: {reason}"))
        })?;
        if !verified {
            return Err(mismatch(subject));
        }

        Ok(Self {
            key: signing_key,
            x5c: chain.iter().map(|c| STANDARD.encode(c.as_ref())).collect(),
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(leaf.as_ref())),
            subject,
        })
    }

    /// The JWT algorithm the key signs with (`RS256`, `ES256`, `ES384` or `ES512`).
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// `base64url(SHA-256(leaf DER))`, the `cnf.x5t#S256` claim.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The leaf certificate's subject, e.g. `CN=driver`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Signs a token valid from now for `lifetime`.
    pub fn sign_token(&self, lifetime: Duration) -> Result<Token, CredentialsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iat: now,
            exp: now.saturating_add(lifetime.as_secs().max(1)),
            cnf: Confirmation {
                x5t_s256: &self.thumbprint,
            },
        };
        jwt::encode(&self.key, &self.x5c, &claims)
            .map(Token)
            .map_err(CredentialsError::Sign)
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pkcs8_info(der: &[u8]) -> Result<pkcs8::PrivateKeyInfo<'_>, CredentialsError> {
    pkcs8::PrivateKeyInfo::from_der(der)
        .map_err(|_| CredentialsError::Key("malformed PKCS#8 key".into()))
}

/// The signing key of an EC certificate on `curve`, from a PKCS#8 or SEC1 `key`.
fn ec_key(
    key: &PrivateKeyDer<'_>,
    curve: ObjectIdentifier,
    subject: String,
) -> Result<SigningKey, CredentialsError> {
    let algorithm = if curve == P256 {
        Algorithm::Es256
    } else if curve == P384 {
        Algorithm::Es384
    } else if curve == P521 {
        Algorithm::Es512
    } else {
        return Err(CredentialsError::Unsupported(format!("EC curve {curve}")));
    };
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(der) => {
            let info = pkcs8_info(der.secret_pkcs8_der())?;
            // A key on another curve belongs to another certificate.
            if info.algorithm.oid != EC_PUBLIC_KEY
                || info.algorithm.parameters_oid().ok() != Some(curve)
            {
                return Err(mismatch(subject));
            }
            der.secret_pkcs8_der().to_vec()
        }
        PrivateKeyDer::Sec1(der) => {
            let algorithm = pkcs8::AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY,
                parameters: Some(AnyRef::from(&curve)),
            };
            pkcs8::PrivateKeyInfo::new(algorithm, der.secret_sec1_der())
                .to_der()
                .map_err(|_| {
                    CredentialsError::Key("cannot convert the SEC1 key to PKCS#8".into())
                })?
        }
        _ => return Err(mismatch(subject)),
    };
    if algorithm != Algorithm::Es512 {
        return Ok(SigningKey::ec(&pkcs8, algorithm));
    }
    // A SEC1 key of another curve fails here: it is another certificate's too.
    use p521::pkcs8::DecodePrivateKey as _;
    let secret = p521::SecretKey::from_pkcs8_der(&pkcs8).map_err(|_| mismatch(subject))?;
    SigningKey::p521(&secret).map_err(CredentialsError::Key)
}

fn mismatch(subject: String) -> CredentialsError {
    CredentialsError::KeyMismatch { subject }
}

/// Describes a PEM error without echoing the input.
fn pem_error(err: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match err {
        E::NoItemsFound => {
            "no matching PEM section found (expected PKCS#1, PKCS#8 or SEC1 for keys)".into()
        }
        E::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        E::IllegalSectionStart { .. } => "malformed PEM BEGIN line".into(),
        E::Base64Decode(_) => "PEM body is not valid base64".into(),
        E::Io(err) => format!("I/O error: {}", err.kind()),
        _ => "malformed PEM".into(),
    }
}

/// Reuses a token until shortly before it expires.
pub(crate) struct TokenCache {
    credentials: Credentials,
    lifetime: Duration,
    current: Mutex<Option<(Token, Instant)>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("credentials", &self.credentials)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(credentials: Credentials, lifetime: Duration) -> Self {
        Self {
            credentials,
            lifetime,
            current: Mutex::new(None),
        }
    }

    /// A token valid for at least a quarter of its lifetime (at most 30 s short of it).
    pub(crate) fn token(&self) -> Result<Token, CredentialsError> {
        let margin = (self.lifetime / 4).min(Duration::from_secs(30));
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((token, renew_at)) = current.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let token = self.credentials.sign_token(self.lifetime)?;
        let renew_at = Instant::now() + self.lifetime.saturating_sub(margin);
        *current = Some((token.clone(), renew_at));
        Ok(token)
    }
}

//! The one JWT path for every algorithm: the header and claims are built and encoded here, and
//! only the signature is dispatched by key type. RS256, ES256 and ES384 are signed by
//! jsonwebtoken (ring); ES512 by RustCrypto's `p521`, because jsonwebtoken has no P-521.
//! ECDSA signatures are the raw `r‖s` of JWS (RFC 7518 §3.4), 2×66 bytes for P-521.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use serde::Serialize;

/// The JWS algorithm of a proof-of-possession token; it follows from the certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, for RSA keys.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// ECDSA P-521 with SHA-512.
    Es512,
}

impl Algorithm {
    /// The `alg` header value, e.g. `ES512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// jsonwebtoken's name for the algorithms it signs; `None` for ES512.
    fn ring(self) -> Option<jsonwebtoken::Algorithm> {
        match self {
            Self::Rs256 => Some(jsonwebtoken::Algorithm::RS256),
            Self::Es256 => Some(jsonwebtoken::Algorithm::ES256),
            Self::Es384 => Some(jsonwebtoken::Algorithm::ES384),
            Self::Es512 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A private key that signs tokens. No `Debug`: it is key material.
#[derive(Clone)]
pub(crate) enum SigningKey {
    /// RS256, ES256, ES384 through jsonwebtoken.
    Ring(jsonwebtoken::EncodingKey, Algorithm),
    /// ES512.
    P521(p521::ecdsa::SigningKey),
}

impl SigningKey {
    /// An RSA key, PKCS#1 DER.
    pub(crate) fn rsa(pkcs1: &[u8]) -> Self {
        Self::Ring(
            jsonwebtoken::EncodingKey::from_rsa_der(pkcs1),
            Algorithm::Rs256,
        )
    }

    /// A P-256 or P-384 key, PKCS#8 DER.
    pub(crate) fn ec(pkcs8: &[u8], algorithm: Algorithm) -> Self {
        Self::Ring(jsonwebtoken::EncodingKey::from_ec_der(pkcs8), algorithm)
    }

    /// A P-521 key from its private scalar (from a PKCS#8 or SEC1 key).
    pub(crate) fn p521(secret: &p521::SecretKey) -> Result<Self, String> {
        p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes())
            .map(Self::P521)
            .map_err(|_| "invalid P-521 private key".to_owned())
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ring(_, algorithm) => *algorithm,
            Self::P521(_) => Algorithm::Es512,
        }
    }

    /// The base64url signature of `message`; the reason when the key cannot sign.
    fn sign(&self, message: &[u8]) -> Result<String, String> {
        match self {
            Self::Ring(key, algorithm) => {
                let algorithm = algorithm.ring().ok_or("no ring algorithm")?;
                jsonwebtoken::crypto::sign(message, key, algorithm).map_err(|err| key_error(&err))
            }
            Self::P521(key) => {
                let signature: p521::ecdsa::Signature = key
                    .try_sign(message)
                    .map_err(|_| "P-521 signing failed".to_owned())?;
                Ok(URL_SAFE_NO_PAD.encode(signature.to_bytes()))
            }
        }
    }

    /// Whether this key signs what `public_key` (the certificate's subject public key: PKCS#1
    /// DER for RSA, a SEC1 point for EC) verifies: a probe is signed and verified.
    pub(crate) fn matches(&self, public_key: &[u8]) -> Result<bool, String> {
        let probe = b"conveyor-driver key check";
        let signature = self.sign(probe)?;
        Ok(match self {
            Self::Ring(_, algorithm) => {
                let key = match algorithm {
                    Algorithm::Rs256 => jsonwebtoken::DecodingKey::from_rsa_der(public_key),
                    _ => jsonwebtoken::DecodingKey::from_ec_der(public_key),
                };
                let algorithm = algorithm.ring().ok_or("no ring algorithm")?;
                jsonwebtoken::crypto::verify(&signature, probe, &key, algorithm).unwrap_or(false)
            }
            Self::P521(_) => {
                let verified = || -> Option<()> {
                    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(public_key).ok()?;
                    let raw = URL_SAFE_NO_PAD.decode(&signature).ok()?;
                    let signature = p521::ecdsa::Signature::from_slice(&raw).ok()?;
                    key.verify(probe, &signature).ok()
                };
                verified().is_some()
            }
        })
    }
}

/// The JOSE header of a token.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    x5c: &'a [String],
}

/// The compact JWT `header.claims.signature`, signed by `key`, with the chain `x5c`.
pub(crate) fn encode(
    key: &SigningKey,
    x5c: &[String],
    claims: &impl Serialize,
) -> Result<String, String> {
    let header = Header {
        alg: key.algorithm().as_str(),
        typ: "JWT",
        x5c,
    };
    let mut token = segment(&header, "header")?;
    token.push('.');
    token.push_str(&segment(claims, "claims")?);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// `base64url(JSON(value))`, one part of a compact JWT.
fn segment(value: &impl Serialize, what: &str) -> Result<String, String> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|_| format!("cannot serialise the token's {what}"))
}

/// Describes a jsonwebtoken error by its kind only.
fn key_error(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match err.kind() {
        K::InvalidEcdsaKey => "invalid ECDSA key".into(),
        K::InvalidRsaKey(_) => "invalid RSA key".into(),
        K::InvalidKeyFormat => "invalid key format".into(),
        K::InvalidAlgorithm => "algorithm does not fit the key".into(),
        _ => "signing failed".into(),
    }
}

//! Test certificates, generated with `rcgen`: a CA, optional intermediates, client
//! certificates with RSA, P-256 or P-384 keys, and a server certificate for 127.0.0.1. P-521
//! client keys, which `ring` (rcgen's backend) lacks, are generated with RustCrypto's `p521`
//! and their certificates built with `x509-cert`, signed by the same CA.
//!
//! `ring` cannot generate RSA keys, so the RSA client key is a throwaway fixture
//! (`fixtures/rsa-2048.*.pem`, the same key in PKCS#8 and PKCS#1); its certificate is generated.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The throwaway RSA test key, PKCS#8.
pub const RSA_PKCS8: &str = include_str!("../fixtures/rsa-2048.pkcs8.pem");
/// The same key, PKCS#1.
pub const RSA_PKCS1: &str = include_str!("../fixtures/rsa-2048.pkcs1.pem");

/// The key type of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048 (the fixture key).
    Rsa,
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
}

impl KeyKind {
    fn key_pair(self) -> KeyPair {
        match self {
            Self::Rsa => KeyPair::from_pem(RSA_PKCS8).expect("RSA fixture key"),
            Self::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key"),
            Self::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key"),
        }
    }
}

/// A certificate authority (root or intermediate) that issues certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// The chain above it (intermediates only), PEM, nearest first.
    chain_above: String,
}

/// A certificate with its key.
#[derive(Clone)]
pub struct Identity {
    /// Leaf first, then the intermediates, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
}

impl Identity {
    /// The key as SEC1 (`EC PRIVATE KEY`) PEM; EC keys only.
    pub fn key_sec1_pem(&self) -> String {
        use pkcs8::der::Decode as _;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(self.key_pem.as_bytes())
            .map(|k: rustls_pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .expect("PKCS#8 PEM");
        let info = pkcs8::PrivateKeyInfo::from_der(&der).expect("PKCS#8");
        pem("EC PRIVATE KEY", info.private_key)
    }

    /// Writes `cert.pem` and `key.pem` into `dir` and returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt.pem"));
        let key = dir.join(format!("{name}.key.pem"));
        std::fs::write(&cert, &self.chain_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A serial number unique enough for test certificates.
fn rand_serial() -> u32 {
    use p521::elliptic_curve::rand_core::RngCore as _;
    p521::elliptic_curve::rand_core::OsRng.next_u32() >> 1
}

/// PEM-encodes DER.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A new self-signed root CA (P-256).
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            chain_above: String::new(),
        }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("intermediate key");
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            chain_above: format!("{}{}", self.cert_pem_if_intermediate(), self.chain_above),
        }
    }

    fn cert_pem_if_intermediate(&self) -> &str {
        // A root is not part of the chain a client sends; an intermediate is.
        if self.is_root() {
            ""
        } else {
            &self.cert_pem
        }
    }

    fn is_root(&self) -> bool {
        self.chain_above.is_empty() && self.issuer_is_self()
    }

    fn issuer_is_self(&self) -> bool {
        use pkcs8::der::Decode as _;
        let cert = x509_cert::Certificate::from_der(&self.cert_der).expect("CA DER");
        cert.tbs_certificate.issuer == cert.tbs_certificate.subject
    }

    /// A client certificate for `name` with a key of `kind`.
    pub fn client(&self, name: &str, kind: KeyKind) -> Identity {
        let key = kind.key_pair();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, key)
    }

    /// A client certificate for `name` with a P-521 key generated here (PKCS#8 in `key_pem`),
    /// issued by this CA, which must have a P-256 key (a root, not an intermediate).
    pub fn client_p521(&self, name: &str) -> Identity {
        use pkcs8::der::{Decode as _, Encode as _};
        use std::str::FromStr as _;
        use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};

        let key = p521::SecretKey::random(&mut p521::elliptic_curve::rand_core::OsRng);
        let key_pem = {
            use p521::pkcs8::EncodePrivateKey as _;
            key.to_pkcs8_pem(Default::default())
                .expect("P-521 PKCS#8")
                .to_string()
        };
        let spki = {
            use p521::pkcs8::EncodePublicKey as _;
            let der = key.public_key().to_public_key_der().expect("P-521 SPKI");
            x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).expect("SPKI")
        };
        let ca_cert = x509_cert::Certificate::from_der(&self.cert_der).expect("CA DER");
        let ca_key = {
            use p256::pkcs8::DecodePrivateKey as _;
            p256::ecdsa::SigningKey::from_pkcs8_der(&self.issuer.key().serialize_der())
                .expect("client_p521 needs a P-256 issuer (a root CA)")
        };
        let mut builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: ca_cert.tbs_certificate.subject.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            x509_cert::serial_number::SerialNumber::from(rand_serial()),
            x509_cert::time::Validity::from_now(std::time::Duration::from_secs(24 * 3600))
                .expect("validity"),
            x509_cert::name::Name::from_str(&format!("CN={name}")).expect("name"),
            spki,
            &ca_key,
        )
        .expect("certificate builder");
        builder
            .add_extension(&x509_cert::ext::pkix::ExtendedKeyUsage(vec![
                // id-kp-clientAuth
                pkcs8::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2"),
            ]))
            .expect("extended key usage");
        let cert = builder
            .build::<p256::ecdsa::DerSignature>()
            .expect("sign the P-521 certificate");
        let leaf_der = cert.to_der().expect("certificate DER");
        Identity {
            chain_pem: format!(
                "{}{}{}",
                pem("CERTIFICATE", &leaf_der),
                self.cert_pem_if_intermediate(),
                self.chain_above
            ),
            key_pem,
            leaf_der,
        }
    }

    /// A server certificate for 127.0.0.1 and `localhost`.
    pub fn server(&self) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, key)
    }

    fn issue(&self, params: CertificateParams, key: KeyPair) -> Identity {
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("issue certificate");
        Identity {
            chain_pem: format!(
                "{}{}{}",
                cert.pem(),
                self.cert_pem_if_intermediate(),
                self.chain_above
            ),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
        }
    }

    /// Writes the CA certificate to `dir/<name>.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.cert_pem).expect("write CA");
        path
    }
}

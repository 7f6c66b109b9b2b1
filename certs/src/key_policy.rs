//! The key policy: which public keys the instance CA certifies, for which
//! purpose. Checked at the edge, before a CSR's proof of possession, so a
//! refused key is named for what it is rather than as a bad signature.
//!
//! | purpose | accepted |
//! |---|---|
//! | auth (TLS identity of a server) | ECDSA P-256, Ed25519 |
//! | signing (a member's message signatures) | ECDSA P-256, Ed25519 |
//! | CA (the instance CA, trusted external CAs) | ECDSA P-256 or P-384, Ed25519, RSA 3072..=8192 bits |
//!
//! Auth and signing keys are made by security servers, which make and load
//! P-256 and Ed25519 keys only, and every envelope signature names one of
//! those two algorithms; anything else could be certified but never used.

use std::fmt;

use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::CertError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Smallest and largest RSA modulus accepted for CA keys, in bits.
pub const CA_RSA_BITS: std::ops::RangeInclusive<usize> = 3072..=8192;

/// What a key is to be certified for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// A security server's TLS identity.
    Auth,
    /// A member's message-signing key.
    Signing,
    /// A certificate authority.
    Ca,
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPurpose::Auth => "auth",
            KeyPurpose::Signing => "signing",
            KeyPurpose::Ca => "CA",
        })
    }
}

/// A public key's type and size, as read from its SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    /// ECDSA on another curve (its OID, or `None` when unnamed).
    EcdsaOther(Option<String>),
    Ed25519,
    Rsa {
        bits: usize,
    },
    /// Any other algorithm (its OID).
    Other(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyType::EcdsaOther(Some(curve)) => write!(f, "ECDSA on curve {curve}"),
            KeyType::EcdsaOther(None) => f.write_str("ECDSA on an unnamed curve"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
            KeyType::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyType::Other(oid) => write!(f, "algorithm {oid}"),
        }
    }
}

/// The key types the policy accepts for `purpose`, for messages.
pub fn accepted(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Auth | KeyPurpose::Signing => "ECDSA P-256 or Ed25519",
        KeyPurpose::Ca => "ECDSA P-256 or P-384, Ed25519, or RSA of 3072 to 8192 bits",
    }
}

/// Whether the policy accepts `key` for `purpose` (pure).
pub fn allows(purpose: KeyPurpose, key: &KeyType) -> bool {
    match (purpose, key) {
        (_, KeyType::EcdsaP256 | KeyType::Ed25519) => true,
        (KeyPurpose::Ca, KeyType::EcdsaP384) => true,
        (KeyPurpose::Ca, KeyType::Rsa { bits }) => CA_RSA_BITS.contains(bits),
        _ => false,
    }
}

/// Reads the type and size of a public key.
pub fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> KeyType {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => KeyType::EcdsaP256,
                Some(OID_P384) => KeyType::EcdsaP384,
                _ => KeyType::EcdsaOther(curve),
            }
        }
        OID_ED25519 => KeyType::Ed25519,
        OID_RSA => KeyType::Rsa {
            bits: match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => 0,
            },
        },
        _ => KeyType::Other(alg),
    }
}

/// The type of a DER SubjectPublicKeyInfo.
pub fn spki_key_type(der: &[u8]) -> Result<KeyType, CertError> {
    let (_, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    Ok(key_type(&spki))
}

/// Refuses `key` unless the policy accepts it for `purpose`.
pub fn check(purpose: KeyPurpose, key: &KeyType) -> Result<(), CertError> {
    if allows(purpose, key) {
        return Ok(());
    }
    Err(CertError::KeyPolicy {
        purpose: purpose.to_string(),
        found: key.to_string(),
        accepted: accepted(purpose),
    })
}

/// Checks the key of a DER CSR against the policy (the CSR's signature is
/// not checked here; see [`crate::csr::verify_for`]).
pub fn check_csr(der: &[u8], purpose: KeyPurpose) -> Result<(), CertError> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CertError::BadCsr(e.to_string()))?;
    check(
        purpose,
        &key_type(&csr.certification_request_info.subject_pki),
    )
}

/// Checks the key of a DER certificate against the policy.
pub fn check_certificate(der: &[u8], purpose: KeyPurpose) -> Result<(), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    check(purpose, &key_type(cert.public_key()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyAlgorithm, PrivateKey, csr};

    #[test]
    fn policy_table() {
        use KeyPurpose::*;
        let table = [
            (Auth, KeyType::EcdsaP256, true),
            (Auth, KeyType::Ed25519, true),
            (Auth, KeyType::EcdsaP384, false),
            (Auth, KeyType::Rsa { bits: 2048 }, false),
            (Signing, KeyType::EcdsaP256, true),
            (Signing, KeyType::Ed25519, true),
            (Signing, KeyType::EcdsaP384, false),
            (Signing, KeyType::Rsa { bits: 4096 }, false),
            (
                Signing,
                KeyType::EcdsaOther(Some("1.3.132.0.10".into())),
                false,
            ),
            (Ca, KeyType::EcdsaP256, true),
            (Ca, KeyType::EcdsaP384, true),
            (Ca, KeyType::Ed25519, true),
            (Ca, KeyType::Rsa { bits: 2048 }, false),
            (Ca, KeyType::Rsa { bits: 3072 }, true),
            (Ca, KeyType::Rsa { bits: 8192 }, true),
            (Ca, KeyType::Rsa { bits: 16384 }, false),
            (Ca, KeyType::EcdsaOther(None), false),
            (Ca, KeyType::Other("1.2.3".into()), false),
        ];
        for (purpose, key, want) in table {
            assert_eq!(allows(purpose, &key), want, "{purpose} {key}");
        }
    }

    #[test]
    fn real_csrs_are_typed_and_named() {
        // Made with openssl; their self-signatures are valid.
        let table: [(&[u8], &str); 5] = [
            (include_bytes!("../testdata/rsa512.der"), "RSA-512"),
            (include_bytes!("../testdata/rsa2048.der"), "RSA-2048"),
            (include_bytes!("../testdata/p384.der"), "ECDSA P-384"),
            (
                include_bytes!("../testdata/secp256k1.der"),
                "ECDSA on curve 1.3.132.0.10",
            ),
            (
                include_bytes!("../testdata/brainpool.der"),
                "ECDSA on curve 1.3.36.3.3.2.8.1.1.7",
            ),
        ];
        for (der, name) in table {
            for purpose in [KeyPurpose::Auth, KeyPurpose::Signing] {
                let err = csr::verify_for(der, purpose).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, CertError::KeyPolicy { .. }), "{msg}");
                assert!(msg.contains(name) && msg.contains("key policy"), "{msg}");
            }
        }
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let key = PrivateKey::generate(alg).unwrap();
            let der = csr::create(&key, "x").unwrap();
            csr::verify_for(&der, KeyPurpose::Signing).unwrap();
            csr::verify_for(&der, KeyPurpose::Auth).unwrap();
        }
    }
}

use std::fmt;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

use crate::CertError;

/// The key algorithms Lienthong issues and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256 — the default, widely supported.
    #[default]
    EcdsaP256,
    /// Ed25519 — faster signing and verification.
    Ed25519,
}

/// A key algorithm's name that is neither `p256` nor `ed25519`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key algorithm {0:?}; use p256 or ed25519")]
pub struct UnknownKeyAlgorithm(pub String);

impl std::str::FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;
    fn from_str(s: &str) -> Result<Self, UnknownKeyAlgorithm> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            other => Err(UnknownKeyAlgorithm(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        })
    }
}

/// A private key. Its `Debug` output never shows key material, so it is safe
/// to hold in structs that get logged.
pub struct PrivateKey {
    pub(crate) pair: KeyPair,
    pub(crate) algorithm: KeyAlgorithm,
}

impl PrivateKey {
    /// Generates a fresh key pair.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, CertError> {
        let alg = match algorithm {
            KeyAlgorithm::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &PKCS_ED25519,
        };
        let pair = KeyPair::generate_for(alg).map_err(|e| CertError::BadKey(e.to_string()))?;
        Ok(PrivateKey { pair, algorithm })
    }

    /// Parses a PKCS#8 PEM private key (P-256 or Ed25519).
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        if !pem.contains("-----END PRIVATE KEY-----") {
            return Err(CertError::NoPemBlock {
                what: "private key".into(),
                label: "PRIVATE KEY",
            });
        }
        let pair = KeyPair::from_pem(pem).map_err(|e| CertError::BadKey(e.to_string()))?;
        let algorithm = if pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcdsaP256
        } else if pair.algorithm() == &PKCS_ED25519 {
            KeyAlgorithm::Ed25519
        } else {
            return Err(CertError::BadKey(
                "unsupported key algorithm; Lienthong uses P-256 or Ed25519".into(),
            ));
        };
        Ok(PrivateKey { pair, algorithm })
    }

    /// The key as PKCS#8 PEM. Handle with care: this is the secret.
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The key as PKCS#8 DER. Handle with care: this is the secret.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.pair.serialize_der()
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.pair.subject_public_key_info()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_material() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key.to_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&body), "{shown}");
        assert_eq!(shown, "PrivateKey(p256, <redacted>)");
    }

    #[test]
    fn pem_roundtrip_both_algorithms() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let key = PrivateKey::generate(alg).unwrap();
            let back = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(back.algorithm(), alg);
            assert_eq!(back.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn truncated_key_pem_is_refused() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key.to_pem();
        let cut = &pem[..pem.len() / 2];
        let err = PrivateKey::from_pem(cut).unwrap_err().to_string();
        assert!(err.contains("no PRIVATE KEY block"), "{err}");
    }
}

//! Envelope signatures: sign and verify over `lienthong_proto::canonical`.
//!
//! A [`Signer`] holds a member's signing key and certificate fingerprint; a
//! [`VerifyingKey`] is parsed once from a signing certificate (the global
//! configuration's copy) and reused. A signature names its algorithm and its
//! signer's certificate, and may sign a batch root instead of one digest
//! (see `BatchPath` in the envelope proto).

use lienthong_proto::canonical::{self, Signed};
use lienthong_proto::merkle;
use lienthong_proto::pb::exchange::v1::{
    BatchPath, RequestEnvelope, RequestHeader, ResponseEnvelope, ResponseHeader, Signature,
    SignatureAlgorithm,
};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

use crate::{CertError, Fingerprint, KeyAlgorithm, PrivateKey};

/// Largest batch a signature may cover.
pub const MAX_BATCH: u64 = 4096;
/// Longest batch path: ceil(log2(MAX_BATCH)).
const MAX_BATCH_PATH: usize = 12;

enum SignerKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A member's signing key bound to its certificate.
pub struct Signer {
    key: SignerKey,
    fingerprint: Fingerprint,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, <redacted>)", self.fingerprint)
    }
}

impl Signer {
    /// Binds `key` to its signing certificate; refuses a key that is not the
    /// certificate's.
    pub fn new(key: &PrivateKey, certificate: &[u8]) -> Result<Self, CertError> {
        let info = crate::verify::parse(certificate)?;
        if info.public_key_der != key.public_key_der() {
            return Err(CertError::BadKey(
                "the signing key does not belong to the certificate".into(),
            ));
        }
        Self::with_fingerprint(key, Fingerprint::of(certificate))
    }

    /// Binds `key` to its CSR, before any certificate exists: a server's
    /// first registration request is signed this way, and the signature
    /// names the CSR's SHA-256 instead of a certificate's.
    pub fn for_csr(key: &PrivateKey, csr_der: &[u8]) -> Result<Self, CertError> {
        let v = crate::csr::verify(csr_der)?;
        if v.public_key_der() != key.public_key_der() {
            return Err(CertError::BadKey(
                "the signing key does not belong to the CSR".into(),
            ));
        }
        Self::with_fingerprint(key, Fingerprint::of(csr_der))
    }

    fn with_fingerprint(key: &PrivateKey, fingerprint: Fingerprint) -> Result<Self, CertError> {
        let der = key.to_pkcs8_der();
        let rng = SystemRandom::new();
        let key = match key.algorithm() {
            KeyAlgorithm::EcdsaP256 => SignerKey::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
                    .map_err(|e| CertError::BadKey(e.to_string()))?,
            ),
            KeyAlgorithm::Ed25519 => SignerKey::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|e| CertError::BadKey(e.to_string()))?,
            ),
        };
        Ok(Signer {
            key,
            fingerprint,
            rng,
        })
    }

    /// The fingerprint of the certificate this signer signs as.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn raw_sign(&self, input: &[u8]) -> Result<(SignatureAlgorithm, Vec<u8>), CertError> {
        Ok(match &self.key {
            SignerKey::Ecdsa(k) => (
                SignatureAlgorithm::EcdsaP256Sha256,
                k.sign(&self.rng, input)
                    .map_err(|_| CertError::BadKey("ECDSA signing failed".into()))?
                    .as_ref()
                    .to_vec(),
            ),
            SignerKey::Ed25519(k) => (SignatureAlgorithm::Ed25519, k.sign(input).as_ref().to_vec()),
        })
    }

    /// Signs one digest of canonical bytes.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, CertError> {
        let (alg, value) = self.raw_sign(&canonical::signature_input(&Signed::Single(*digest)))?;
        Ok(Signature {
            algorithm: alg as i32,
            value,
            signer_certificate_sha256: self.fingerprint.0.to_vec(),
            batch: None,
        })
    }

    /// Signs several digests with one signature over their Merkle root; the
    /// returned signatures, one per digest, each carry their batch path.
    pub fn sign_batch(&self, digests: &[[u8; 32]]) -> Result<Vec<Signature>, CertError> {
        if digests.len() <= 1 {
            return digests.iter().map(|d| self.sign_digest(d)).collect();
        }
        if digests.len() as u64 > MAX_BATCH {
            return Err(CertError::BadBatch(format!(
                "{} digests; at most {MAX_BATCH} per batch",
                digests.len()
            )));
        }
        let leaves: Vec<merkle::Hash> = digests.iter().map(|d| merkle::leaf_hash(d)).collect();
        let root = merkle::root(&leaves);
        let tree_size = leaves.len() as u64;
        let (alg, value) = self.raw_sign(&canonical::signature_input(&Signed::Batch {
            root,
            tree_size,
        }))?;
        (0..leaves.len())
            .map(|i| {
                let path = merkle::inclusion_proof(&leaves, i)
                    .ok_or_else(|| CertError::BadBatch("index out of range".into()))?;
                Ok(Signature {
                    algorithm: alg as i32,
                    value: value.clone(),
                    signer_certificate_sha256: self.fingerprint.0.to_vec(),
                    batch: Some(BatchPath {
                        leaf_index: i as u64,
                        tree_size,
                        path: path.iter().map(|h| h.to_vec()).collect(),
                    }),
                })
            })
            .collect()
    }

    /// Signs a request header and wraps both in an envelope.
    pub fn sign_request(&self, header: RequestHeader) -> Result<RequestEnvelope, CertError> {
        let digest = canonical::digest(&canonical::request_header(&header));
        Ok(RequestEnvelope {
            header: Some(header),
            signature: Some(self.sign_digest(&digest)?),
        })
    }

    /// Signs a response header and wraps both in an envelope.
    pub fn sign_response(&self, header: ResponseHeader) -> Result<ResponseEnvelope, CertError> {
        let digest = canonical::digest(&canonical::response_header(&header));
        Ok(ResponseEnvelope {
            header: Some(header),
            signature: Some(self.sign_digest(&digest)?),
        })
    }

    /// The public key in the form [`VerifyingKey`] holds.
    pub fn public_key_raw(&self) -> &[u8] {
        match &self.key {
            SignerKey::Ecdsa(k) => k.public_key().as_ref(),
            SignerKey::Ed25519(k) => k.public_key().as_ref(),
        }
    }
}

/// How many verified batch signatures a key remembers.
const VERIFIED_BATCHES: usize = 4096;

/// A signer's public key, parsed once from its signing certificate.
///
/// A batch signature covers many envelopes; once verified, the key
/// remembers it (root, size, signature value), so the other envelopes of
/// the batch cost a few hashes instead of a signature verification. Clones
/// share the memory.
#[derive(Clone)]
pub struct VerifyingKey {
    algorithm: KeyAlgorithm,
    raw: Vec<u8>,
    fingerprint: Fingerprint,
    verified_batches: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({}, {})", self.algorithm, self.fingerprint)
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";

impl VerifyingKey {
    /// Extracts the public key of a certificate (P-256 or Ed25519). The
    /// certificate itself must be verified separately (chain, validity).
    pub fn from_cert(der: &[u8]) -> Result<Self, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        Self::from_spki(cert.public_key(), Fingerprint::of(der))
    }

    /// Extracts the public key of a CSR whose proof of possession verifies;
    /// signatures by it name the CSR's SHA-256 (see [`Signer::for_csr`]).
    pub fn from_csr(der: &[u8]) -> Result<Self, CertError> {
        use x509_parser::prelude::FromDer;
        crate::csr::verify(der)?;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|e| CertError::BadCsr(e.to_string()))?;
        Self::from_spki(
            &csr.certification_request_info.subject_pki,
            Fingerprint::of(der),
        )
    }

    fn from_spki(
        spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
        fingerprint: Fingerprint,
    ) -> Result<Self, CertError> {
        let alg_oid = spki.algorithm.algorithm.to_id_string();
        let algorithm = match alg_oid.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                if curve.as_deref() != Some(OID_P256) {
                    return Err(CertError::Malformed(format!(
                        "EC key on curve {curve:?}; only P-256 is accepted"
                    )));
                }
                KeyAlgorithm::EcdsaP256
            }
            OID_ED25519 => KeyAlgorithm::Ed25519,
            other => {
                return Err(CertError::Malformed(format!(
                    "public key algorithm {other} is not accepted; use P-256 or Ed25519"
                )));
            }
        };
        Ok(VerifyingKey {
            algorithm,
            raw: spki.subject_public_key.data.to_vec(),
            fingerprint,
            verified_batches: Default::default(),
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Verifies that `signature` covers `digest` (directly or via its batch path).
    pub fn verify(&self, signature: &Signature, digest: &[u8; 32]) -> Result<(), CertError> {
        if signature.signer_certificate_sha256 != self.fingerprint.0 {
            return Err(CertError::WrongIdentity {
                expected: self.fingerprint.to_string(),
                found: hex::encode(&signature.signer_certificate_sha256),
            });
        }
        let alg = SignatureAlgorithm::try_from(signature.algorithm)
            .unwrap_or(SignatureAlgorithm::Unspecified);
        let ring_alg: &dyn sig::VerificationAlgorithm = match (alg, self.algorithm) {
            (SignatureAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP256) => {
                &sig::ECDSA_P256_SHA256_ASN1
            }
            (SignatureAlgorithm::Ed25519, KeyAlgorithm::Ed25519) => &sig::ED25519,
            _ => return Err(CertError::AlgorithmMismatch(format!("{alg:?}"))),
        };
        let signed = match &signature.batch {
            None => Signed::Single(*digest),
            Some(b) => Signed::Batch {
                root: batch_root(b, digest)?,
                tree_size: b.tree_size,
            },
        };
        let input = canonical::signature_input(&signed);
        let remembered = match signed {
            Signed::Single(_) => None,
            Signed::Batch { .. } => {
                let key = lienthong_proto::sha256(&[input.as_slice(), &signature.value].concat());
                if self.lock_batches().contains(&key) {
                    return Ok(());
                }
                Some(key)
            }
        };
        sig::UnparsedPublicKey::new(ring_alg, &self.raw)
            .verify(&input, &signature.value)
            .map_err(|_| CertError::BadSignature)?;
        if let Some(key) = remembered {
            let mut seen = self.lock_batches();
            if seen.len() >= VERIFIED_BATCHES {
                seen.clear();
            }
            seen.insert(key);
        }
        Ok(())
    }

    fn lock_batches(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 32]>> {
        match self.verified_batches.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Verifies a request envelope; returns the header's digest (which the
    /// response must bind).
    pub fn verify_request(&self, env: &RequestEnvelope) -> Result<[u8; 32], CertError> {
        let (Some(header), Some(signature)) = (&env.header, &env.signature) else {
            return Err(CertError::BadSignature);
        };
        let digest = canonical::digest(&canonical::request_header(header));
        self.verify(signature, &digest)?;
        Ok(digest)
    }

    /// Verifies a response envelope and that it answers the request whose
    /// digest is `request_digest`.
    pub fn verify_response(
        &self,
        env: &ResponseEnvelope,
        request_digest: &[u8; 32],
    ) -> Result<(), CertError> {
        let (Some(header), Some(signature)) = (&env.header, &env.signature) else {
            return Err(CertError::BadSignature);
        };
        let digest = canonical::digest(&canonical::response_header(header));
        self.verify(signature, &digest)?;
        if header.request_digest != request_digest {
            return Err(CertError::WrongIdentity {
                expected: format!("a response to request {}", hex::encode(request_digest)),
                found: format!(
                    "a response to request {}",
                    hex::encode(&header.request_digest)
                ),
            });
        }
        Ok(())
    }
}

/// The batch root a path leads to from `digest`, refusing malformed paths.
fn batch_root(b: &BatchPath, digest: &[u8; 32]) -> Result<[u8; 32], CertError> {
    if b.tree_size < 2 || b.tree_size > MAX_BATCH {
        return Err(CertError::BadBatch(format!(
            "tree size {} outside 2..={MAX_BATCH}",
            b.tree_size
        )));
    }
    if b.path.len() > MAX_BATCH_PATH {
        return Err(CertError::BadBatch(format!(
            "path of {} hashes is too long",
            b.path.len()
        )));
    }
    let path: Vec<merkle::Hash> = b
        .path
        .iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| CertError::BadBatch("path hash is not 32 bytes".into()))?;
    merkle::root_from_inclusion(&merkle::leaf_hash(digest), b.leaf_index, b.tree_size, &path)
        .ok_or_else(|| CertError::BadBatch("path does not fit the leaf index and tree size".into()))
}

#[cfg(test)]
mod tests;

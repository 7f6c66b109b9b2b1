//! Certificate signing requests: created next to the key, verified by the CA.
//!
//! The CSR's self-signature is the proof of possession: only the holder of
//! the private key can produce it. The CA takes nothing else from the CSR —
//! subject, usage and validity come from the approved registration request.

use rcgen::{CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType};
use rustls_pki_types::CertificateSigningRequestDer;

use crate::key_policy::{self, KeyPurpose};
use crate::{CertError, PrivateKey};

/// Largest CSR accepted, in bytes (a P-256 CSR is about 250 bytes).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Creates a DER CSR for `key`, its subject common name set to `subject`
/// (informational: the CA decides the certificate's subject).
pub fn create(key: &PrivateKey, subject: &str) -> Result<Vec<u8>, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key.pair)?;
    Ok(csr.der().to_vec())
}

/// A CSR whose proof of possession has been checked.
#[derive(Debug)]
pub struct VerifiedCsr {
    pub(crate) params: CertificateSigningRequestParams,
}

impl VerifiedCsr {
    /// The requested public key as raw bytes (for P-256 the uncompressed
    /// point, for Ed25519 the 32-byte key): what a registry compares to
    /// refuse reuse of a revoked key.
    pub fn public_key_raw(&self) -> &[u8] {
        use rcgen::PublicKeyData;
        self.params.public_key.der_bytes()
    }

    /// The requested public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.params.public_key.subject_public_key_info()
    }
}

/// Checks the CSR's key against the key policy for `purpose`
/// ([`crate::key_policy`]), then its self-signature (proof of possession).
pub fn verify_for(der: &[u8], purpose: KeyPurpose) -> Result<VerifiedCsr, CertError> {
    check_len(der)?;
    key_policy::check_csr(der, purpose)?;
    verify(der)
}

fn check_len(der: &[u8]) -> Result<(), CertError> {
    if der.len() > MAX_CSR_LEN {
        return Err(CertError::BadCsr(format!(
            "{} bytes; at most {MAX_CSR_LEN} are accepted",
            der.len()
        )));
    }
    Ok(())
}

/// Parses a DER CSR and checks its self-signature (proof of possession).
pub fn verify(der: &[u8]) -> Result<VerifiedCsr, CertError> {
    check_len(der)?;
    let csr = CertificateSigningRequestDer::from(der);
    let params = CertificateSigningRequestParams::from_der(&csr).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => CertError::CsrProofOfPossession,
        other => CertError::BadCsr(other.to_string()),
    })?;
    Ok(VerifiedCsr { params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyAlgorithm;

    #[test]
    fn csr_roundtrip_proves_possession() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let key = PrivateKey::generate(alg).unwrap();
            let der = create(&key, "VN/GOV/000102/ss1").unwrap();
            let v = verify(&der).unwrap();
            assert!(!v.public_key_raw().is_empty());
        }
    }

    #[test]
    fn tampered_csr_fails_proof_of_possession() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut der = create(&key, "VN/GOV/000102/ss1").unwrap();
        // Change one byte of the subject name inside the signed part.
        let pos = der
            .windows(3)
            .position(|w| w == b"ss1")
            .expect("subject is in the CSR");
        der[pos + 2] = b'2';
        let err = verify(&der).unwrap_err();
        assert!(matches!(err, CertError::CsrProofOfPossession), "{err}");
    }

    #[test]
    fn garbage_and_oversized_csrs_are_refused() {
        assert!(matches!(verify(b"not a csr"), Err(CertError::BadCsr(_))));
        let big = vec![0u8; MAX_CSR_LEN + 1];
        assert!(verify(&big).unwrap_err().to_string().contains("at most"));
    }
}

//! Fixtures shared by this crate's unit tests.

use rustls_pki_types::CertificateDer;

use crate::csr::{self, VerifiedCsr};
use crate::{InstanceCa, KeyAlgorithm, PrivateKey, Validity};

/// A fresh P-256 instance CA.
pub fn ca(instance: &str) -> InstanceCa {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    InstanceCa::create(instance, key, Validity::days(3650)).unwrap()
}

/// A verified CSR for a fresh key of `alg`.
pub fn csr_for(alg: KeyAlgorithm) -> VerifiedCsr {
    csr_and_key(alg).0
}

/// A verified CSR and the key it is for.
pub fn csr_and_key(alg: KeyAlgorithm) -> (VerifiedCsr, PrivateKey) {
    let key = PrivateKey::generate(alg).unwrap();
    (
        csr::verify(&csr::create(&key, "test").unwrap()).unwrap(),
        key,
    )
}

/// A signing key and its certificate for `member`, from a fresh CA.
pub fn signing_pair(alg: KeyAlgorithm, member: &str) -> (PrivateKey, CertificateDer<'static>) {
    let ca = ca("VN");
    let (csr, key) = csr_and_key(alg);
    let cert = ca
        .issue_signing(&csr, &member.parse().unwrap(), Validity::days(10))
        .unwrap();
    (key, cert)
}

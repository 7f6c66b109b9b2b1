//! Certificate signing requests as the registry receives them: DER
//! (`csr::verify`, the proof of possession), the public key taken from a
//! verified CSR (`VerifyingKey::from_csr`), and PEM as an operator's file
//! holds it (what `pem::read_csr` parses).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_certs::signing::VerifyingKey;
use lienthong_certs::{csr, pem};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;

fn check(der: &[u8]) {
    let Ok(v) = csr::verify(der) else {
        assert!(VerifyingKey::from_csr(der).is_err());
        return;
    };
    assert!(der.len() <= csr::MAX_CSR_LEN);
    assert!(!v.public_key_der().is_empty());
    let _ = v.public_key_raw();
    let _ = VerifyingKey::from_csr(der);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(der) = CertificateSigningRequestDer::from_pem_slice(data) {
        check(der.as_ref());
    }
    // PEM round trip of whatever DER was given.
    let text = pem::encode("CERTIFICATE REQUEST", data);
    let back = CertificateSigningRequestDer::from_pem_slice(text.as_bytes()).expect("own PEM");
    assert_eq!(back.as_ref(), data);
});

//! Certificates from peers and files: parsing (`verify::parse`), chain and
//! usage checks against the fixture's CA for every usage, the identities
//! they name, public keys (`VerifyingKey::from_cert`), as a CA (trust
//! anchors, `Trust::new`), and PEM (`pem::certs_from_pem`).

#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use lienthong_certs::signing::VerifyingKey;
use lienthong_certs::tls::Trust;
use lienthong_certs::verify::{self, Usage};
use lienthong_certs::{Fingerprint, pem};
use lienthong_fuzz::fixture;
use rustls_pki_types::CertificateDer;

fn check(der: &[u8]) {
    let f = fixture();
    let now = SystemTime::now();
    let cert = CertificateDer::from(der);
    let parsed = verify::parse(der);
    if let Ok(info) = &parsed {
        assert!(der.len() <= verify::MAX_CERT_LEN);
        let _ = verify::fmt_time(info.not_before);
        let _ = verify::fmt_time(info.not_after);
    }
    for usage in [Usage::TlsClient, Usage::TlsServer, Usage::Signing] {
        if let Ok(info) = verify::verify_cert(&cert, &f.anchors, now, usage) {
            assert!(parsed.is_ok());
            assert!(!info.is_ca && info.digital_signature);
        }
    }
    let _ = verify::verify_auth_cert(&cert, &f.anchors, now, Usage::TlsClient, None);
    let _ = verify::verify_signing_cert(&cert, &f.anchors, now, None);
    if let Ok(id) = verify::auth_identity(der) {
        assert_eq!(id.to_string().parse().ok(), Some(id));
    }
    if let Ok(m) = verify::signing_identity(der) {
        assert_eq!(m.to_string().parse().ok(), Some(m));
    }
    if let Ok(k) = VerifyingKey::from_cert(der) {
        assert_eq!(k.fingerprint(), Fingerprint::of(der));
    }
    if let Ok(trust) = Trust::new(&[cert.clone()], [Fingerprint::of(der)]) {
        let own = CertificateDer::from(f.auth_cert.as_slice());
        let _ = trust.verify_peer(&own, Usage::TlsClient, now, None);
        let _ = trust.verify_peer(&cert, Usage::TlsServer, now, None);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(certs) = pem::certs_from_pem("fuzz", data) {
        assert!(!certs.is_empty());
        for c in &certs {
            check(c);
        }
        let again =
            pem::certs_from_pem("fuzz", pem::certs_to_pem(&certs).as_bytes()).expect("own PEM");
        assert_eq!(again, certs);
    }
});

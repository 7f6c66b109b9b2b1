use super::*;
use crate::test_support::{ca, csr_for};
use crate::{InstanceCa, KeyAlgorithm, PrivateKey, Validity};
use time::OffsetDateTime;

fn server() -> ServerId {
    "VN/GOV/000102/ss1".parse().unwrap()
}

fn member() -> MemberId {
    "VN/GOV/000102".parse().unwrap()
}

#[test]
fn auth_certificate_verifies_for_both_tls_roles_and_names_its_server() {
    let ca = ca("VN");
    let cert = ca
        .issue_auth(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &server(),
            "127.0.0.1:5500",
            Validity::days(1),
        )
        .unwrap();
    let anchors = anchors(&[ca.certificate().clone()]).unwrap();
    for usage in [Usage::TlsClient, Usage::TlsServer] {
        let id =
            verify_auth_cert(&cert, &anchors, SystemTime::now(), usage, Some(&server())).unwrap();
        assert_eq!(id, server());
    }
}

#[test]
fn signing_certificate_verifies_and_names_its_member() {
    let ca = ca("VN");
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let cert = ca
            .issue_signing(&csr_for(alg), &member(), Validity::days(1))
            .unwrap();
        let anchors = anchors(&[ca.certificate().clone()]).unwrap();
        assert_eq!(
            verify_signing_cert(&cert, &anchors, SystemTime::now(), Some(&member())).unwrap(),
            member()
        );
    }
}

#[test]
fn wrong_ca_is_refused() {
    let ca1 = ca("VN");
    let ca2 = ca("VN");
    let cert = ca1
        .issue_auth(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &server(),
            "localhost",
            Validity::days(1),
        )
        .unwrap();
    let anchors = anchors(&[ca2.certificate().clone()]).unwrap();
    // Same CA name, different key.
    let err =
        verify_auth_cert(&cert, &anchors, SystemTime::now(), Usage::TlsClient, None).unwrap_err();
    assert!(matches!(err, CertError::BadCertificateSignature), "{err}");
    assert!(err.to_string().contains("not issued by a trusted CA"));
    // Another instance's CA.
    let ca3 = ca("VN-TEST");
    let anchors = super::anchors(&[ca3.certificate().clone()]).unwrap();
    let err =
        verify_auth_cert(&cert, &anchors, SystemTime::now(), Usage::TlsClient, None).unwrap_err();
    assert!(matches!(err, CertError::UnknownIssuer), "{err}");
    assert!(err.to_string().contains("not issued by a trusted CA"));
}

#[test]
fn expired_and_not_yet_valid_are_refused_with_dates() {
    let ca = ca("VN");
    let anchors = anchors(&[ca.certificate().clone()]).unwrap();
    let now = OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let cert = ca
        .issue_signing(&csr_for(KeyAlgorithm::EcdsaP256), &member(), past)
        .unwrap();
    let err = verify_signing_cert(&cert, &anchors, SystemTime::now(), None).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(err.to_string().starts_with("certificate expired at "));

    let future = Validity {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(10),
    };
    let cert = ca
        .issue_signing(&csr_for(KeyAlgorithm::EcdsaP256), &member(), future)
        .unwrap();
    let err = verify_signing_cert(&cert, &anchors, SystemTime::now(), None).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
}

#[test]
fn wrong_key_usage_is_refused_both_ways() {
    let ca = ca("VN");
    let anchors = anchors(&[ca.certificate().clone()]).unwrap();
    let signing = ca
        .issue_signing(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &member(),
            Validity::days(1),
        )
        .unwrap();
    // A signing certificate is not a TLS identity.
    let err = verify_cert(&signing, &anchors, SystemTime::now(), Usage::TlsClient).unwrap_err();
    assert!(matches!(err, CertError::WrongKeyUsage(_)), "{err}");
    // An auth certificate cannot sign messages.
    let auth = ca
        .issue_auth(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &server(),
            "localhost",
            Validity::days(1),
        )
        .unwrap();
    let err = verify_signing_cert(&auth, &anchors, SystemTime::now(), None).unwrap_err();
    assert!(matches!(err, CertError::WrongKeyUsage(_)), "{err}");
    // The CA certificate is not an end entity.
    let err = verify_cert(
        ca.certificate(),
        &anchors,
        SystemTime::now(),
        Usage::Signing,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::WrongKeyUsage(_)), "{err}");
}

#[test]
fn wrong_identity_is_refused() {
    let ca = ca("VN");
    let anchors = anchors(&[ca.certificate().clone()]).unwrap();
    let cert = ca
        .issue_auth(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &server(),
            "localhost",
            Validity::days(1),
        )
        .unwrap();
    let other: ServerId = "VN/GOV/000102/ss2".parse().unwrap();
    let err = verify_auth_cert(
        &cert,
        &anchors,
        SystemTime::now(),
        Usage::TlsServer,
        Some(&other),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate identity VN/GOV/000102/ss1 does not match the expected VN/GOV/000102/ss2"
    );
}

#[test]
fn ca_refuses_identities_of_another_instance() {
    let ca = ca("VN");
    let foreign: MemberId = "VN-TEST/GOV/1".parse().unwrap();
    let err = ca
        .issue_signing(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &foreign,
            Validity::days(1),
        )
        .unwrap_err();
    assert!(matches!(err, CertError::WrongIdentity { .. }), "{err}");
}

#[test]
fn ca_reloads_from_its_files_and_keeps_issuing() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let key_pem = key.to_pem();
    let ca = InstanceCa::create("VN", key, Validity::days(10)).unwrap();
    let loaded = InstanceCa::load(
        ca.certificate().clone(),
        PrivateKey::from_pem(&key_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(loaded.instance().as_str(), "VN");
    let cert = loaded
        .issue_signing(
            &csr_for(KeyAlgorithm::EcdsaP256),
            &member(),
            Validity::days(1),
        )
        .unwrap();
    let anchors = anchors(&[ca.certificate().clone()]).unwrap();
    verify_signing_cert(&cert, &anchors, SystemTime::now(), None).unwrap();
    // A key that is not the CA's is refused.
    let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(matches!(
        InstanceCa::load(ca.certificate().clone(), other),
        Err(CertError::BadKey(_))
    ));
}

#[test]
fn garbage_certificates_are_refused() {
    assert!(matches!(parse(b"garbage"), Err(CertError::Malformed(_))));
    let ca = ca("VN");
    let mut der = ca.certificate().to_vec();
    der.push(0);
    assert!(parse(&der).unwrap_err().to_string().contains("trailing"));
}

mod untrusted_bytes {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a peer sends as a certificate or CSR, parsing answers
        /// with a value or an error — never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
            let _ = auth_identity(&bytes);
            let _ = crate::csr::verify(&bytes);
            let _ = crate::signing::VerifyingKey::from_cert(&bytes);
        }

        /// A real certificate with any single byte changed never verifies as
        /// the original identity with a valid chain.
        #[test]
        fn flipped_certificate_byte_is_refused(pos in 0usize..400, bit in 0u8..8) {
            let ca = ca("VN");
            let cert = ca
                .issue_signing(&csr_for(KeyAlgorithm::EcdsaP256), &member(), Validity::days(1))
                .unwrap();
            let mut der = cert.to_vec();
            let pos = pos % der.len();
            der[pos] ^= 1 << bit;
            let anchors = anchors(&[ca.certificate().clone()]).unwrap();
            let tampered = CertificateDer::from(der);
            prop_assert!(verify_signing_cert(&tampered, &anchors, SystemTime::now(), Some(&member())).is_err());
        }
    }
}

use super::*;
use crate::test_support::signing_pair;
use lienthong_proto::pb::identifiers::v1 as idpb;

fn signer(alg: KeyAlgorithm) -> (Signer, VerifyingKey) {
    let (key, cert) = signing_pair(alg, "VN/GOV/000102");
    (
        Signer::new(&key, &cert).unwrap(),
        VerifyingKey::from_cert(&cert).unwrap(),
    )
}

fn header() -> RequestHeader {
    RequestHeader {
        message_id: "m-1".into(),
        client: Some(idpb::SubsystemId {
            member: Some(idpb::MemberId {
                instance: "VN".into(),
                member_class: "GOV".into(),
                member_code: "000102".into(),
            }),
            subsystem_code: "business".into(),
        }),
        method: "GetPerson".into(),
        payload_digest: vec![1; 32],
        payload_size: 12,
        ..Default::default()
    }
}

#[test]
fn request_and_response_roundtrip_both_algorithms() {
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let (s, v) = signer(alg);
        let env = s.sign_request(header()).unwrap();
        let digest = v.verify_request(&env).unwrap();
        let resp = s
            .sign_response(ResponseHeader {
                message_id: "m-1".into(),
                request_digest: digest.to_vec(),
                ..Default::default()
            })
            .unwrap();
        v.verify_response(&resp, &digest).unwrap();
        // A response bound to another request is refused.
        let err = v.verify_response(&resp, &[9; 32]).unwrap_err();
        assert!(err.to_string().contains("a response to request"), "{err}");
    }
}

#[test]
fn altered_header_or_payload_digest_is_refused() {
    let (s, v) = signer(KeyAlgorithm::EcdsaP256);
    let mut env = s.sign_request(header()).unwrap();
    env.header.as_mut().unwrap().purpose = "curiosity".into();
    assert!(matches!(
        v.verify_request(&env),
        Err(CertError::BadSignature)
    ));
    let mut env = s.sign_request(header()).unwrap();
    env.header.as_mut().unwrap().payload_digest[0] ^= 1;
    assert!(matches!(
        v.verify_request(&env),
        Err(CertError::BadSignature)
    ));
}

#[test]
fn another_signers_key_and_algorithm_confusion_are_refused() {
    let (s, _) = signer(KeyAlgorithm::EcdsaP256);
    let (_, other) = signer(KeyAlgorithm::EcdsaP256);
    let env = s.sign_request(header()).unwrap();
    assert!(matches!(
        other.verify_request(&env),
        Err(CertError::WrongIdentity { .. })
    ));

    let (s, v) = signer(KeyAlgorithm::Ed25519);
    let mut env = s.sign_request(header()).unwrap();
    env.signature.as_mut().unwrap().algorithm = SignatureAlgorithm::EcdsaP256Sha256 as i32;
    assert!(matches!(
        v.verify_request(&env),
        Err(CertError::AlgorithmMismatch(_))
    ));
}

#[test]
fn batch_signatures_verify_per_leaf_and_resist_swaps() {
    let (s, v) = signer(KeyAlgorithm::EcdsaP256);
    let digests: Vec<[u8; 32]> = (0..7u8).map(|i| [i; 32]).collect();
    let sigs = s.sign_batch(&digests).unwrap();
    assert_eq!(sigs.len(), 7);
    for (d, sg) in digests.iter().zip(&sigs) {
        v.verify(sg, d).unwrap();
    }
    // A leaf's path does not vouch for another digest.
    assert!(v.verify(&sigs[0], &digests[1]).is_err());
    // Malformed paths are refused, not trusted.
    let mut bad = sigs[3].clone();
    bad.batch.as_mut().unwrap().tree_size = MAX_BATCH + 1;
    assert!(matches!(
        v.verify(&bad, &digests[3]),
        Err(CertError::BadBatch(_))
    ));
    let mut bad = sigs[3].clone();
    bad.batch.as_mut().unwrap().path[0] = vec![0; 31];
    assert!(matches!(
        v.verify(&bad, &digests[3]),
        Err(CertError::BadBatch(_))
    ));
}

#[test]
fn signer_refuses_a_key_that_is_not_the_certificates() {
    let (_, cert) = signing_pair(KeyAlgorithm::EcdsaP256, "VN/GOV/000102");
    let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(matches!(
        Signer::new(&other, &cert),
        Err(CertError::BadKey(_))
    ));
}

#[test]
fn csr_bound_signatures_verify_only_with_that_csr() {
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(alg).unwrap();
        let csr = crate::csr::create(&key, "VN/GOV/000102").unwrap();
        let s = Signer::for_csr(&key, &csr).unwrap();
        let v = VerifyingKey::from_csr(&csr).unwrap();
        let sig = s.sign_digest(&[9; 32]).unwrap();
        v.verify(&sig, &[9; 32]).unwrap();
        assert!(v.verify(&sig, &[8; 32]).is_err());

        let other = PrivateKey::generate(alg).unwrap();
        let other_csr = crate::csr::create(&other, "VN/GOV/000102").unwrap();
        assert!(
            Signer::for_csr(&key, &other_csr).is_err(),
            "key must match the CSR"
        );
        let v_other = VerifyingKey::from_csr(&other_csr).unwrap();
        assert!(v_other.verify(&sig, &[9; 32]).is_err());
    }
}

#[test]
fn remembered_batches_still_refuse_forgeries() {
    let (s, v) = signer(KeyAlgorithm::Ed25519);
    let digests: Vec<[u8; 32]> = (0..5u8).map(|i| [i; 32]).collect();
    let sigs = s.sign_batch(&digests).unwrap();
    // The first verification is remembered; the rest of the batch rides on it.
    for (d, sg) in digests.iter().zip(&sigs) {
        v.verify(sg, d).unwrap();
    }
    // A remembered batch does not make a different signature value valid,
    assert!(v.verify(&sigs[1], &[9; 32]).is_err());
    let mut forged = sigs[2].clone();
    forged.value[0] ^= 1;
    assert!(v.verify(&forged, &digests[2]).is_err());
    // nor does it vouch for a digest outside the batch with a borrowed path.
    let mut moved = sigs[2].clone();
    moved.batch.as_mut().unwrap().leaf_index = 3;
    assert!(v.verify(&moved, &digests[2]).is_err());
    // A different signer's key never accepts it.
    let (_, other) = signer(KeyAlgorithm::Ed25519);
    assert!(other.verify(&sigs[0], &digests[0]).is_err());
}

use lienthong_certs::KeyAlgorithm;
use lienthong_certs::signing::VerifyingKey;

use super::*;

fn server() -> ServerId {
    "VN/GOV/000102/ss1".parse().unwrap()
}

fn key(algorithm: KeyAlgorithm) -> PrivateKey {
    PrivateKey::generate(algorithm).unwrap()
}

/// Whether `req`'s owner signature verifies with the key of `csr`.
fn signed_by_csr(req: &SubmitRequest, csr: &[u8]) -> bool {
    let mut unsigned = req.clone();
    let signature = unsigned.owner_signature.take().unwrap();
    let digest = canonical::digest(&canonical::registration_request(&unsigned));
    VerifyingKey::from_csr(csr)
        .unwrap()
        .verify(&signature, &digest)
        .is_ok()
}

#[test]
fn a_first_request_is_signed_by_the_owner_key_it_asks_to_certify() {
    let (auth, owner) = (key(KeyAlgorithm::EcdsaP256), key(KeyAlgorithm::Ed25519));
    let req = first_request(&server(), "10.0.0.1:5500", "lt_token", &auth, &owner).unwrap();
    assert_eq!(req.kind, RequestKind::AuthCertificate as i32);
    assert_eq!(req.enrollment_token, "lt_token");
    assert_eq!(req.address, "10.0.0.1:5500");
    assert_eq!(req.signing_csrs.len(), 1);
    let signing = &req.signing_csrs[0];
    assert_eq!(
        signing.member,
        Some((&server().owner).into()),
        "the signing CSR is the owner's"
    );
    assert!(signed_by_csr(&req, &signing.csr));
    let auth_csr = &req.auth_csr.as_ref().unwrap().csr;
    assert!(
        !signed_by_csr(&req, auth_csr),
        "the auth key signs nothing but TLS"
    );
}

#[test]
fn changing_a_signed_request_breaks_its_signature() {
    let (auth, owner) = (key(KeyAlgorithm::EcdsaP256), key(KeyAlgorithm::Ed25519));
    let mut req = first_request(&server(), "10.0.0.1:5500", "lt_token", &auth, &owner).unwrap();
    let csr = req.signing_csrs[0].csr.clone();
    req.address = "10.6.6.6:5500".into();
    assert!(!signed_by_csr(&req, &csr));
}

#[test]
fn signing_again_replaces_the_signature() {
    let owner_key = key(KeyAlgorithm::Ed25519);
    let csr = csr::create(&owner_key, "VN/GOV/000102").unwrap();
    let owner = Signer::for_csr(&owner_key, &csr).unwrap();
    let req = server_request(&server(), Some("10.0.0.2:5500"), &owner).unwrap();
    let mut moved = req.clone();
    moved.address = "10.0.0.3:5500".into();
    let resigned = sign_submission(moved, &owner).unwrap();
    assert!(signed_by_csr(&resigned, &csr));
    assert_ne!(resigned.owner_signature, req.owner_signature);
}

#[test]
fn a_server_request_moves_with_an_address_and_removes_without() {
    let owner_key = key(KeyAlgorithm::Ed25519);
    let csr = csr::create(&owner_key, "VN/GOV/000102").unwrap();
    let owner = Signer::for_csr(&owner_key, &csr).unwrap();
    let moved = server_request(&server(), Some("10.0.0.2:5500"), &owner).unwrap();
    assert_eq!(moved.kind, RequestKind::AddressChange as i32);
    assert_eq!(moved.address, "10.0.0.2:5500");
    let removed = server_request(&server(), None, &owner).unwrap();
    assert_eq!(removed.kind, RequestKind::ServerRemoval as i32);
    assert!(removed.address.is_empty());
}

#[test]
fn a_client_request_carries_a_csr_only_for_a_new_member_key() {
    let owner_key = key(KeyAlgorithm::Ed25519);
    let csr = csr::create(&owner_key, "VN/GOV/000102").unwrap();
    let owner = Signer::for_csr(&owner_key, &csr).unwrap();
    let client: SubsystemId = "VN/GOV/000102/population".parse().unwrap();
    let known = client_request(&server(), &client, None, &owner).unwrap();
    assert_eq!(known.kind, RequestKind::Client as i32);
    assert!(known.signing_csrs.is_empty());
    assert!(signed_by_csr(&known, &csr));
    let member: MemberId = "VN/GOV/000103".parse().unwrap();
    let new_key = key(KeyAlgorithm::Ed25519);
    let fresh = client_request(&server(), &client, Some((&member, &new_key)), &owner).unwrap();
    assert_eq!(fresh.signing_csrs.len(), 1);
    assert_eq!(fresh.signing_csrs[0].member, Some((&member).into()));
    assert!(fresh.signing_csrs[0].consent.is_none());
}

#[test]
fn a_consent_verifies_for_the_request_it_travels_with() {
    let owner_key = key(KeyAlgorithm::Ed25519);
    let owner_csr = csr::create(&owner_key, "VN/GOV/000102").unwrap();
    let owner = Signer::for_csr(&owner_key, &owner_csr).unwrap();
    let member_key = key(KeyAlgorithm::Ed25519);
    let member_csr = csr::create(&member_key, "VN/GOV/000103").unwrap();
    let member_signer = Signer::for_csr(&member_key, &member_csr).unwrap();
    let client: SubsystemId = "VN/GOV/000103/tax".parse().unwrap();
    let new_key = key(KeyAlgorithm::Ed25519);
    let req =
        client_request_with_consent(&server(), &client, &new_key, &member_signer, &owner).unwrap();
    assert!(signed_by_csr(&req, &owner_csr));
    let asked = &req.signing_csrs[0];
    let consent = asked.consent.as_ref().unwrap();
    let digest = crate::consent::consent_digest(&server(), &client.member, &asked.csr);
    let member_key = VerifyingKey::from_csr(&member_csr).unwrap();
    assert!(member_key.verify(consent, &digest).is_ok());
    let elsewhere: ServerId = "VN/GOV/000102/ss2".parse().unwrap();
    let digest = crate::consent::consent_digest(&elsewhere, &client.member, &asked.csr);
    assert!(member_key.verify(consent, &digest).is_err());
}

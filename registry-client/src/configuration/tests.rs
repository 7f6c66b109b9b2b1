use std::time::{Duration, UNIX_EPOCH};

use lienthong_certs::signing::Signer;
use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};

use super::*;

/// A configuration key certified by a fresh CA, and an anchor naming it.
fn setup() -> (Signer, Anchor) {
    let ca_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let ca = InstanceCa::create("VN-TEST", ca_key, Validity::days(1)).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let request = csr::verify(&csr::create(&key, "configuration").unwrap()).unwrap();
    let cert = ca
        .issue_configuration_signing(&request, Validity::days(1))
        .unwrap();
    let anchor = Anchor {
        instance: "VN-TEST".into(),
        registry_addresses: vec!["127.0.0.1:4400".into()],
        configuration_signing_certificates: vec![cert.to_vec()],
        instance_ca_certificate: ca.certificate().to_vec(),
        ..Default::default()
    };
    (Signer::new(&key, &cert).unwrap(), anchor)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn signed(signer: &Signer, version: u64, expires_in_ms: i64) -> SignedConfiguration {
    let now = now_ms();
    let c = GlobalConfiguration {
        instance: "VN-TEST".into(),
        version,
        created_at_unix_ms: now - 1_000,
        expires_at_unix_ms: now + expires_in_ms,
        ..Default::default()
    };
    conf::sign_configuration(&c, signer).unwrap()
}

#[test]
fn an_expired_copy_loads_when_nothing_is_held_but_never_replaces_one() {
    let (signer, anchor) = setup();
    let expired = signed(&signer, 4, -500);
    let now = SystemTime::now();
    assert_eq!(verify(&anchor, &expired, None, now).unwrap().version, 4);
    assert!(matches!(
        verify(&anchor, &expired, Some(3), now),
        Err(ConfError::Expired { version: 4, .. })
    ));
}

#[test]
fn a_held_version_refuses_rollback() {
    let (signer, anchor) = setup();
    let now = SystemTime::now();
    let three = signed(&signer, 3, 600_000);
    assert!(matches!(
        verify(&anchor, &three, Some(3), now),
        Err(ConfError::NotNewer { held: 3, got: 3 })
    ));
    assert_eq!(verify(&anchor, &three, Some(2), now).unwrap().version, 3);
}

#[test]
fn a_copy_of_another_instance_or_from_the_future_is_refused_even_unheld() {
    let (signer, anchor) = setup();
    let (other_signer, _) = setup();
    let now = SystemTime::now();
    let foreign = signed(&other_signer, 3, 600_000);
    assert!(matches!(
        verify(&anchor, &foreign, None, now),
        Err(ConfError::UnknownSigner(_))
    ));
    let early = now - Duration::from_secs(3_600);
    assert!(matches!(
        verify(&anchor, &signed(&signer, 3, 600_000), None, early),
        Err(ConfError::FromTheFuture { .. })
    ));
}

#[test]
fn a_kept_copy_reads_back_and_garbage_is_named() {
    let (signer, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configuration.bin");
    assert!(read_cached(&path).unwrap().is_none());
    let copy = signed(&signer, 7, 600_000);
    write_cached(&path, &copy).unwrap();
    assert_eq!(read_cached(&path).unwrap(), Some(copy));
    std::fs::write(&path, b"\xff\xff\xff\xff").unwrap();
    let e = read_cached(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: not a configuration: ", path.display())),
        "{e}"
    );
}

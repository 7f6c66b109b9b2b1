//! Publishers of two nodes on one store (SQLite here; the store's own
//! contract tests run the lease on PostgreSQL too).

use std::sync::Arc;
use std::time::Duration;

use lienthong_certs::signing::Signer;
use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};

use super::{Failing, Publisher, Timing};
use crate::model::InstanceSettings;
use crate::store::{SqliteStore, Store};

fn settings() -> InstanceSettings {
    InstanceSettings {
        instance: "VN".parse().unwrap(),
        addresses: vec!["127.0.0.1:4400".into()],
        configuration_validity_secs: 600,
        poll_interval_secs: 60,
        auto_approve: false,
    }
}

/// A publisher named `node` on `store`, signing with a fresh key of `ca`.
fn publisher(store: Arc<dyn Store>, ca: &InstanceCa, node: &str) -> Publisher {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let request = csr::verify(&csr::create(&key, "configuration signing").unwrap()).unwrap();
    let cert = ca
        .issue_configuration_signing(&request, Validity::days(1))
        .unwrap();
    Publisher::new(
        store,
        Signer::new(&key, &cert).unwrap(),
        ca.certificate().to_vec(),
        settings(),
        Timing {
            lease: Duration::from_secs(600),
            ..Timing::default()
        },
        node.into(),
    )
}

#[test]
fn one_node_publishes_and_none_does_on_a_schema_newer_than_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let ca = InstanceCa::create(
        "VN",
        PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap(),
        Validity::days(1),
    )
    .unwrap();
    let a = publisher(
        Arc::new(SqliteStore::create(&path, &settings()).unwrap()),
        &ca,
        "a",
    );
    let b = publisher(Arc::new(SqliteStore::open(&path).unwrap()), &ca, "b");

    a.start_up().unwrap();
    b.start_up().unwrap();
    assert!(a.leading() && !b.leading());
    let first = a.current().unwrap();
    let served = b.current().unwrap();
    assert_eq!(
        (served.version, &served.signed),
        (first.version, &first.signed),
        "the follower serves the publisher's bytes"
    );
    assert!(b.publish_now().is_err(), "only the lease holder publishes");
    assert_eq!(a.publish_now().unwrap().version, first.version + 1);
    b.tick().unwrap();
    assert_eq!(b.current().unwrap().version, first.version + 1);

    // Another node, upgraded, migrated the store past these two: neither
    // publishes any more, and the lease is free for the upgraded node.
    let migrated = rusqlite::Connection::open(&path).unwrap();
    migrated.pragma_update(None, "user_version", 99).unwrap();
    let err = a.tick().unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
    assert!(!a.leading());
    assert!(b.tick().is_err());
    assert!(!b.leading());
    assert!(a.publish_now().is_err());

    let known = crate::store::MIGRATIONS.len() as i64;
    migrated.pragma_update(None, "user_version", known).unwrap();
    b.tick().unwrap();
    assert!(b.leading(), "the lease was given up");
}

#[test]
fn a_lasting_failure_is_logged_when_it_starts_or_changes_and_the_recovery_once() {
    let mut f = Failing::default();
    let up = || Ok::<(), &str>(());
    let down = || Err("database down");
    assert!(!f.log("a", up()), "nothing to say");
    assert!(f.log("a", down()));
    assert!(!f.log("a", down()), "the same failure again");
    assert!(f.log("a", Err("another")));
    assert!(f.log("a", up()), "recovered");
    assert!(!f.log("a", up()));
}

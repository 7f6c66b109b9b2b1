//! Contract tests of publication on shared stores: the publisher lease,
//! versions recorded with their bytes, and the registry's keys.

use std::time::Duration;

use lienthong_certs::Fingerprint;

use super::{at_once, node_pairs, stores};
use crate::store::postgres::TestDatabase as _;
use crate::store::{KeyFingerprint, PublicationRecord, Store, StoreError};

/// A lease that outlasts any test.
pub(super) const LONG: Duration = Duration::from_secs(600);

pub(super) fn record(version: u64) -> PublicationRecord {
    PublicationRecord {
        version,
        created_at_ms: version as i64,
        seq: version,
    }
}

fn versions_after(s: &dyn Store, v: u64) -> Option<(u64, Vec<u8>)> {
    s.publication_after(v)
        .unwrap()
        .map(|p| (p.record.version, p.signed))
}

#[test]
fn versions_are_recorded_by_the_lease_holder_one_after_another_with_their_bytes() {
    for s in stores() {
        let refused = s.record_publication("a", &record(1), b"v1").unwrap_err();
        assert!(
            matches!(&refused, StoreError::Conflict(m) if m.contains("lease")),
            "{refused}"
        );
        assert_eq!(s.last_publication().unwrap(), None, "nothing recorded");
        assert!(s.take_lease("a", LONG).unwrap());
        assert!(s.record_publication("a", &record(0), b"v0").is_err());
        s.record_publication("a", &record(1), b"v1").unwrap();
        for (version, why) in [(1, "repeated"), (3, "skipped"), (0, "backwards")] {
            let err = s
                .record_publication("a", &record(version), b"x")
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{why}: {err}");
        }
        s.record_publication("a", &record(2), b"v2").unwrap();
        assert_eq!(versions_after(s.as_ref(), 0), Some((2, b"v2".to_vec())));
        assert_eq!(versions_after(s.as_ref(), 1), Some((2, b"v2".to_vec())));
        assert_eq!(versions_after(s.as_ref(), 2), None);
        assert_eq!(s.last_publication().unwrap(), Some(record(2)));
    }
}

#[test]
fn one_node_holds_the_lease_until_it_is_released_or_expires() {
    for n in node_pairs() {
        assert!(n.a.take_lease("a", LONG).unwrap());
        assert!(!n.b.take_lease("b", LONG).unwrap(), "held by a");
        assert!(n.a.take_lease("a", LONG).unwrap(), "a renews");
        n.a.record_publication("a", &record(1), b"v1").unwrap();
        assert!(n.b.record_publication("b", &record(2), b"v2").is_err());

        n.b.release_lease("b").unwrap();
        assert!(!n.b.take_lease("b", LONG).unwrap(), "b released nothing");
        n.a.release_lease("a").unwrap();
        assert!(n.b.take_lease("b", LONG).unwrap(), "released by a");
        let stale = n.a.record_publication("a", &record(2), b"a's v2");
        assert!(stale.is_err(), "a no longer publishes");
        n.b.record_publication("b", &record(2), b"b's v2").unwrap();
        assert_eq!(
            versions_after(n.a.as_ref(), 1),
            Some((2, b"b's v2".to_vec()))
        );

        // A lease that is not renewed expires (here at once), and its
        // holder's publications are refused from then on.
        assert!(n.b.take_lease("b", Duration::ZERO).unwrap());
        assert!(n.b.record_publication("b", &record(3), b"v3").is_err());
        assert!(
            n.a.take_lease("a", LONG).unwrap(),
            "expired lease taken over"
        );
        assert!(!n.b.take_lease("b", LONG).unwrap());
        n.a.record_publication("a", &record(3), b"v3").unwrap();
        assert_eq!(n.b.last_publication().unwrap(), Some(record(3)));
    }
}

#[test]
fn two_nodes_taking_a_free_lease_at_once_one_holds_it() {
    for n in node_pairs() {
        let (a, b) = at_once(
            || n.a.take_lease("a", LONG).unwrap(),
            || n.b.take_lease("b", LONG).unwrap(),
        );
        assert!(a ^ b, "exactly one holds the lease: a {a}, b {b}");
    }
}

#[test]
fn two_nodes_publishing_at_once_record_each_version_once() {
    for n in node_pairs() {
        assert!(n.a.take_lease("a", LONG).unwrap());
        n.a.record_publication("a", &record(1), b"v1").unwrap();
        // The same node name on both (two processes on one home): the
        // version check alone keeps a version from being recorded twice.
        let (a, b) = at_once(
            || n.a.record_publication("a", &record(2), b"from a"),
            || n.b.record_publication("a", &record(2), b"from b"),
        );
        assert!(a.is_ok() ^ b.is_ok(), "exactly one recorded: {a:?} {b:?}");
        let kept = versions_after(n.b.as_ref(), 1).unwrap();
        assert_eq!(kept.0, 2);
        assert_eq!(
            kept.1,
            if a.is_ok() { b"from a" } else { b"from b" },
            "the bytes of the recorded one"
        );
    }
}

#[test]
fn pruning_old_publications_keeps_the_newest_with_its_bytes() {
    for s in stores() {
        assert!(s.take_lease("a", LONG).unwrap());
        for v in 1..=8 {
            s.record_publication("a", &record(v), format!("v{v}").as_bytes())
                .unwrap();
        }
        assert_eq!(versions_after(s.as_ref(), 0), Some((8, b"v8".to_vec())));
    }
}

fn key(purpose: &'static str, byte: u8) -> KeyFingerprint {
    KeyFingerprint {
        purpose,
        file: "ca.pem",
        sha256: Fingerprint([byte; 32]),
    }
}

#[test]
fn the_registry_keys_are_recorded_once_and_other_keys_refused() {
    for n in node_pairs() {
        n.a.check_keys(&[key("instance CA", 1)]).unwrap();
        n.b.check_keys(&[key("instance CA", 1), key("configuration signing", 2)])
            .unwrap();
        n.a.check_keys(&[key("instance CA", 1), key("configuration signing", 2)])
            .unwrap();
        let err =
            n.a.check_keys(&[key("instance CA", 1), key("configuration signing", 3)])
                .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Conflict(_)), "{msg}");
        for part in [
            "configuration signing",
            "ca.pem",
            &Fingerprint([2; 32]).to_string(),
            &Fingerprint([3; 32]).to_string(),
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
        n.b.check_keys(&[key("instance CA", 1), key("configuration signing", 2)])
            .unwrap();
    }
}

#[test]
fn a_raised_version_floor_is_where_the_next_version_starts() {
    for n in node_pairs() {
        assert!(n.a.take_lease("a", LONG).unwrap());
        n.a.record_publication("a", &record(1), b"v1").unwrap();
        assert_eq!(
            n.b.raise_version_floor("restorer", 1).unwrap(),
            2,
            "below: no change"
        );
        let seq = n.a.seq().unwrap();
        assert_eq!(n.b.raise_version_floor("restorer", 500).unwrap(), 500);
        assert!(n.a.seq().unwrap() > seq, "the publisher sees a change");
        assert_eq!(n.a.last_publication().unwrap().unwrap().version, 499);
        assert_eq!(
            versions_after(n.a.as_ref(), 1),
            None,
            "no document to serve"
        );
        assert!(n.a.record_publication("a", &record(2), b"v2").is_err());
        n.a.record_publication("a", &record(500), b"v500").unwrap();
        assert_eq!(
            versions_after(n.b.as_ref(), 1),
            Some((500, b"v500".to_vec()))
        );
        assert!(n.b.raise_version_floor("restorer", 0).is_err());
        let audit =
            n.a.audit(&crate::model::AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.action == "RaiseVersionFloor" && e.detail.contains("500"))
        );
    }
}

#[test]
fn a_schema_migrated_past_this_program_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let sqlite = crate::store::SqliteStore::create(&path, &super::settings()).unwrap();
    sqlite.schema_is_known().unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let mut refused = vec![sqlite.schema_is_known().unwrap_err()];
    if let Some(t) = super::pg_target() {
        let t = t.scratch().unwrap();
        let pg = crate::store::PgStore::create(&t, &super::settings()).unwrap();
        pg.schema_is_known().unwrap();
        t.execute("UPDATE schema_version SET version = 99").unwrap();
        refused.push(pg.schema_is_known().unwrap_err());
    }
    for err in refused {
        let msg = err.to_string();
        let ours = crate::store::MIGRATIONS.len().to_string();
        assert!(msg.contains("99") && msg.contains(&ours), "{msg}");
    }
}

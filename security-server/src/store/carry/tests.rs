//! A node's own policy when it joins a cluster (PostgreSQL only: a
//! cluster's database is; skipped without `LIENTHONG_TEST_DATABASE_URL`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lienthong_certs::Fingerprint;

use crate::access::AccessRule;
use crate::store::tests::{at_once, cluster_database};
use crate::store::{Backend, ClusterDatabase, JoinReport, ServerStore};

fn rule(subject: &str, method: Option<&str>) -> AccessRule {
    AccessRule {
        subject: subject.parse().unwrap(),
        provider: "VN/GOV/000102/population".parse().unwrap(),
        service: "population.v1.PersonRegistry".into(),
        method: method.map(Into::into),
    }
}

fn backend(url: &str) -> Backend {
    Backend {
        provider: "VN/GOV/000102/population".parse().unwrap(),
        service: "population.v1.PersonRegistry".into(),
        url: url.into(),
        timeout: Duration::from_millis(5000),
    }
}

/// A node on its own (`server.db` in `dir`) with a grant, a backend at
/// `url`, a pin and body logging.
fn solo_with_policy(dir: &Path, subject: &str, url: &str) -> PathBuf {
    let path = dir.join("server.db");
    let s = ServerStore::open(&path).unwrap();
    s.grant(&rule(subject, Some("GetPerson"))).unwrap();
    s.set_backend(&backend(url)).unwrap();
    let business = "VN/GOV/000305/business".parse().unwrap();
    s.pin_client(&business, &Fingerprint([7; 32])).unwrap();
    s.set_body_logging(&business, true).unwrap();
    path
}

/// Rows of the policy tables left in `server.db`.
fn local_rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT (SELECT count(*) FROM access_rules) + (SELECT count(*) FROM backends)
                  + (SELECT count(*) FROM client_pins) + (SELECT count(*) FROM body_logging)",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn database(dir: &Path) -> Option<ClusterDatabase> {
    let db = cluster_database(dir);
    if db.is_none() {
        eprintln!("LIENTHONG_TEST_DATABASE_URL is not set: no cluster to join, skipped");
    }
    db
}

#[test]
fn the_first_node_carries_its_policy_into_an_empty_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(dir.path()) else {
        return;
    };
    let path = solo_with_policy(
        dir.path(),
        "VN/GOV/000305/business",
        "http://127.0.0.1:9000",
    );
    let (store, report) = ServerStore::join_cluster(&path, &db).unwrap();
    assert_eq!(
        report.imported,
        [
            "grant VN/GOV/000305/business may call VN/GOV/000102/population/population.v1.PersonRegistry (method GetPerson)",
            "backend VN/GOV/000102/population/population.v1.PersonRegistry -> http://127.0.0.1:9000 (timeout 5000 ms)",
            "pin VN/GOV/000305/business certificate 0707070707070707070707070707070707070707070707070707070707070707",
            "body logging VN/GOV/000305/business",
        ]
    );
    assert!(report.differing.is_empty());
    assert!(store.is_clustered());
    assert_eq!(
        store.rules().unwrap(),
        [rule("VN/GOV/000305/business", Some("GetPerson"))]
    );
    assert_eq!(
        store.backends().unwrap(),
        [backend("http://127.0.0.1:9000")]
    );
    assert_eq!(store.client_pins().unwrap().len(), 1);
    assert_eq!(store.body_logging().unwrap().len(), 1);
    assert_eq!(
        local_rows(&path),
        0,
        "in the cluster's database now, not left behind in server.db"
    );

    // A second node sees them, and its own empty policy changes nothing.
    let other = tempfile::tempdir().unwrap();
    let (second, report) = ServerStore::join_cluster(&other.path().join("server.db"), &db).unwrap();
    assert_eq!(report, JoinReport::default());
    assert_eq!(second.rules().unwrap(), store.rules().unwrap());
    assert_eq!(second.backends().unwrap(), store.backends().unwrap());

    // Served again with the database: nothing to carry, nothing differs.
    let (_, again) = ServerStore::join_cluster(&path, &db).unwrap();
    assert_eq!(again, JoinReport::default());
}

#[test]
fn a_node_joining_a_cluster_with_a_policy_keeps_the_clusters_and_reports_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(dir.path()) else {
        return;
    };
    let first = tempfile::tempdir().unwrap();
    let (cluster, _) = ServerStore::join_cluster(&first.path().join("server.db"), &db).unwrap();
    cluster
        .grant(&rule("VN/GOV/000305/business", Some("GetPerson")))
        .unwrap();
    cluster
        .set_backend(&backend("http://10.0.0.5:9000"))
        .unwrap();
    let version = cluster.rules_version().unwrap();

    let path = solo_with_policy(
        dir.path(),
        "VN/GOV/000305/business",
        "http://127.0.0.1:9000",
    );
    ServerStore::open(&path)
        .unwrap()
        .grant(&rule("group:VN/investigators", None))
        .unwrap();
    let (store, report) = ServerStore::join_cluster(&path, &db).unwrap();
    assert!(report.imported.is_empty());
    assert_eq!(
        report.differing,
        [
            "grant group:VN/investigators may call VN/GOV/000102/population/population.v1.PersonRegistry (every method)",
            "backend VN/GOV/000102/population/population.v1.PersonRegistry -> http://127.0.0.1:9000 (timeout 5000 ms) (the cluster's: http://10.0.0.5:9000 (timeout 5000 ms))",
            "pin VN/GOV/000305/business certificate 0707070707070707070707070707070707070707070707070707070707070707",
            "body logging VN/GOV/000305/business",
        ],
        "the grant both have is not reported"
    );
    assert_eq!(
        store.rules().unwrap(),
        [rule("VN/GOV/000305/business", Some("GetPerson"))],
        "the cluster's policy is in force"
    );
    assert_eq!(store.backends().unwrap(), [backend("http://10.0.0.5:9000")]);
    assert_eq!(
        cluster.rules_version().unwrap(),
        version,
        "the cluster's policy did not change"
    );
    assert_eq!(
        local_rows(&path),
        5,
        "the node's own entries are kept in server.db"
    );
}

#[test]
fn two_first_nodes_joining_at_once_carry_over_one_policy() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(dir.path()) else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path_a = solo_with_policy(a.path(), "VN/GOV/000305/business", "http://127.0.0.1:9000");
    let path_b = solo_with_policy(b.path(), "group:VN/investigators", "http://127.0.0.1:9001");
    let (ra, rb) = at_once(
        || ServerStore::join_cluster(&path_a, &db).unwrap(),
        || ServerStore::join_cluster(&path_b, &db).unwrap(),
    );
    let (winner, loser) = if ra.1.imported.is_empty() {
        (rb, ra)
    } else {
        (ra, rb)
    };
    assert_eq!(winner.1.imported.len(), 4);
    assert!(winner.1.differing.is_empty());
    assert!(
        loser.1.imported.is_empty(),
        "exactly one policy carried over"
    );
    assert_eq!(
        loser.1.differing.len(),
        2,
        "its grant and backend differ; pin and body logging are the same: {:?}",
        loser.1.differing
    );
    assert_eq!(winner.0.rules().unwrap().len(), 1);
    assert_eq!(loser.0.rules().unwrap(), winner.0.rules().unwrap());
}

//! Contract tests of the server's store: each runs on SQLite always and on
//! PostgreSQL when `LIENTHONG_TEST_DATABASE_URL` names a database (`.ci/run`
//! starts one), each PostgreSQL store in a fresh schema of its own.

use super::*;

/// A node's store and the directory of its `server.db`.
pub(crate) struct Node {
    pub(crate) store: ServerStore,
    pub(crate) dir: tempfile::TempDir,
    /// Where the cluster's database password file is, kept while the node is.
    _password_dir: Option<tempfile::TempDir>,
}

impl Node {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("server.db")
    }

    /// The store opened again from the node's `server.db`, as a new process.
    fn reopened(&self) -> ServerStore {
        ServerStore::open(&self.path()).unwrap()
    }
}

fn solo() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = ServerStore::open(&dir.path().join("server.db")).unwrap();
    Node {
        store,
        dir,
        _password_dir: None,
    }
}

/// A fresh schema of the test database, as a cluster's database with its
/// password in a file of `dir`; `None` without a test database.
pub(crate) fn cluster_database(dir: &Path) -> Option<ClusterDatabase> {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let url = std::env::var("LIENTHONG_TEST_DATABASE_URL").ok()?;
    let schema = format!(
        "server_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let (bare, password) = without_password(&url).unwrap();
    let sep = if bare.contains('?') { '&' } else { '?' };
    let bare = format!("{bare}{sep}options=-c%20search_path%3D{schema}");
    let file = password.map(|p| {
        let f = dir.join("database-password");
        std::fs::write(&f, format!("{p}\n")).unwrap();
        f
    });
    Some(ClusterDatabase::new(&bare, file.as_deref()).unwrap())
}

/// A node of a cluster on `db`.
fn cluster_node(db: &ClusterDatabase, password_dir: Option<tempfile::TempDir>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = ServerStore::join_cluster(&dir.path().join("server.db"), db)
        .unwrap()
        .0;
    Node {
        store,
        dir,
        _password_dir: password_dir,
    }
}

/// Two nodes of a new cluster; `None` without a test database.
pub(crate) fn cluster_pair() -> Option<(Node, Node)> {
    let password_dir = tempfile::tempdir().unwrap();
    let db = cluster_database(password_dir.path())?;
    let b = cluster_node(&db, None);
    let a = cluster_node(&db, Some(password_dir));
    Some((a, b))
}

/// Every backend, fresh: one SQLite node, and a PostgreSQL cluster's node.
fn stores() -> Vec<Node> {
    let mut v = vec![solo()];
    if let Some((a, _)) = cluster_pair() {
        v.push(a);
    }
    v
}

/// Two stores on one set of tables: two processes on one `server.db`
/// (the CLI beside a running server), and two nodes of a cluster.
fn pairs() -> Vec<(Node, ServerStore)> {
    let one = solo();
    let other = one.reopened();
    let mut v = vec![(one, other)];
    if let Some((a, b)) = cluster_pair() {
        v.push((a, b.store));
    }
    v
}

pub(crate) fn at_once<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let ha = s.spawn(|| {
            start.wait();
            a()
        });
        let hb = s.spawn(|| {
            start.wait();
            b()
        });
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

fn rule() -> AccessRule {
    AccessRule {
        subject: "group:VN/investigators".parse().unwrap(),
        provider: "VN/GOV/000102/population".parse().unwrap(),
        service: "population.v1.PersonRegistry".into(),
        method: Some("GetPerson".into()),
    }
}

fn backend(url: &str) -> Backend {
    Backend {
        provider: rule().provider,
        service: rule().service,
        url: url.into(),
        timeout: Duration::from_secs(3),
    }
}

fn business() -> SubsystemId {
    "VN/GOV/000305/business".parse().unwrap()
}

#[test]
fn rules_and_backends_persist_and_version() {
    for node in stores() {
        let s = &node.store;
        let at = s.policy_location();
        assert_eq!(s.rules_version().unwrap(), 0, "{at}");
        assert!(s.grant(&rule()).unwrap());
        assert!(!s.grant(&rule()).unwrap(), "granting twice changes nothing");
        assert_eq!(s.rules_version().unwrap(), 1, "{at}");
        s.set_backend(&backend("http://127.0.0.1:9000")).unwrap();
        assert!(s.set_backend(&backend("ftp://x")).is_err());
        assert_eq!(s.rules_version().unwrap(), 2, "{at}");

        let s = node.reopened();
        assert_eq!(
            s.policy_location(),
            at,
            "the node opens the same store again"
        );
        assert_eq!(s.rules().unwrap(), vec![rule()]);
        assert_eq!(
            s.backends().unwrap(),
            vec![backend("http://127.0.0.1:9000")]
        );
        assert!(s.revoke(&rule()).unwrap());
        assert!(!s.revoke(&rule()).unwrap());
        assert!(s.rules().unwrap().is_empty());
        assert_eq!(s.rules_version().unwrap(), 3, "{at}");
    }
}

#[test]
fn pins_and_body_logging_persist_and_version() {
    for node in stores() {
        let s = &node.store;
        let fp = Fingerprint([7; 32]);
        assert!(s.pin_client(&business(), &fp).unwrap());
        assert!(!s.pin_client(&business(), &fp).unwrap());
        assert!(s.set_body_logging(&business(), true).unwrap());
        assert!(!s.set_body_logging(&business(), true).unwrap());
        assert_eq!(s.rules_version().unwrap(), 2);
        let s = node.reopened();
        assert_eq!(s.client_pins().unwrap(), vec![(business(), fp)]);
        assert_eq!(s.body_logging().unwrap(), vec![business()]);
        assert!(s.unpin_client(&business(), &fp).unwrap());
        assert!(s.set_body_logging(&business(), false).unwrap());
        assert!(s.client_pins().unwrap().is_empty());
        assert!(s.body_logging().unwrap().is_empty());
        assert_eq!(s.rules_version().unwrap(), 4);
    }
}

#[test]
fn a_change_on_one_node_is_seen_on_the_other() {
    for (a, b) in pairs() {
        let a = &a.store;
        let before = b.rules_version().unwrap();
        a.grant(&rule()).unwrap();
        assert!(
            b.rules_version().unwrap() > before,
            "the version moves for b"
        );
        assert_eq!(b.rules().unwrap(), vec![rule()]);
        b.set_backend(&backend("http://10.0.0.5:9000")).unwrap();
        assert_eq!(a.backends().unwrap(), vec![backend("http://10.0.0.5:9000")]);
        a.pin_client(&business(), &Fingerprint([1; 32])).unwrap();
        b.set_body_logging(&business(), true).unwrap();
        assert_eq!(b.client_pins().unwrap().len(), 1);
        assert_eq!(a.body_logging().unwrap(), vec![business()]);
        assert_eq!(a.rules_version().unwrap(), b.rules_version().unwrap());
        b.revoke(&rule()).unwrap();
        assert!(
            a.rules().unwrap().is_empty(),
            "a revocation on b holds on a"
        );
    }
}

#[test]
fn the_same_grant_on_two_nodes_at_once_changes_once() {
    for (a, b) in pairs() {
        let a = &a.store;
        for round in 0..5 {
            let before = a.rules_version().unwrap();
            let (x, y) = at_once(|| a.grant(&rule()).unwrap(), || b.grant(&rule()).unwrap());
            assert!(x ^ y, "round {round}: exactly one grant made it ({x}, {y})");
            assert_eq!(a.rules_version().unwrap(), before + 1);
            let (x, y) = at_once(|| a.revoke(&rule()).unwrap(), || b.revoke(&rule()).unwrap());
            assert!(x ^ y, "round {round}: exactly one revocation made it");
            assert_eq!(b.rules_version().unwrap(), before + 2);
        }
    }
}

#[test]
fn a_message_id_is_claimed_once_across_nodes_until_it_expires() {
    for (a, b) in pairs() {
        let a_path = a.path();
        let a = &a.store;
        let keys: Vec<[u8; 16]> = (0..40u8).map(|i| [i; 16]).collect();
        let claim_all = |s: &ServerStore| {
            keys.iter()
                .map(|k| s.claim_message_id(k, 1_000, 2_000).unwrap())
                .collect::<Vec<bool>>()
        };
        let (x, y) = at_once(|| claim_all(a), || claim_all(&b));
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            assert!(x ^ y, "id {i}: exactly one node's claim won ({x}, {y})");
        }
        assert!(
            !a.claim_message_id(&keys[0], 2_000, 3_000).unwrap(),
            "held at its expiry"
        );
        assert!(
            b.claim_message_id(&keys[0], 2_001, 3_001).unwrap(),
            "free after it"
        );
        assert!(
            !a.claim_message_id(&keys[0], 2_002, 3_002).unwrap(),
            "and claimed again"
        );
        assert_eq!(a.held_message_ids().unwrap(), 40);
        // A store sweeps the expired ids at its first claim (and every
        // CLAIMS_PER_SWEEP claims after).
        let fresh = ServerStore::open(&a_path).unwrap();
        assert!(fresh.claim_message_id(&[255; 16], 10_000, 20_000).unwrap());
        assert_eq!(
            a.held_message_ids().unwrap(),
            1,
            "the expired ones are gone"
        );
    }
}

#[test]
fn a_cluster_shares_policy_but_each_node_keeps_its_settings() {
    let Some((a, b)) = cluster_pair() else {
        println!("skipped: LIENTHONG_TEST_DATABASE_URL is not set");
        return;
    };
    assert!(a.store.is_clustered() && b.store.is_clustered());
    assert!(!solo().store.is_clustered());
    a.store
        .set_setting("server_id", "VN/GOV/000102/ss1")
        .unwrap();
    b.store
        .set_setting("server_id", "VN/GOV/000102/ss2")
        .unwrap();
    assert_eq!(
        a.reopened().setting("server_id").unwrap().as_deref(),
        Some("VN/GOV/000102/ss1"),
        "each node's identity is its own"
    );
    let recorded = a.store.setting(SETTING_DATABASE_URL).unwrap().unwrap();
    assert_eq!(without_password(&recorded).unwrap().1, None, "{recorded}");
    let (_, password) =
        without_password(&std::env::var("LIENTHONG_TEST_DATABASE_URL").unwrap()).unwrap();
    if let Some(p) = password {
        let db = std::fs::read(a.path()).unwrap();
        assert!(
            !db.windows(p.len()).any(|w| w == p.as_bytes()),
            "the password is nowhere in server.db"
        );
    }
}

#[test]
fn a_store_newer_than_the_program_is_refused_naming_both_versions() {
    let node = solo();
    drop(node.store);
    rusqlite::Connection::open(node.dir.path().join("server.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let e = ServerStore::open(&node.dir.path().join("server.db")).unwrap_err();
    let known = MIGRATIONS.len().to_string();
    assert!(e.0.contains("99") && e.0.contains(&known), "{e}");

    let Some((a, _b)) = cluster_pair() else {
        return;
    };
    let db = ::postgres::Client::connect(
        &std::env::var("LIENTHONG_TEST_DATABASE_URL").unwrap(),
        ::postgres::NoTls,
    );
    let schema = a
        .store
        .setting(SETTING_DATABASE_URL)
        .unwrap()
        .unwrap()
        .rsplit("%3D")
        .next()
        .unwrap()
        .to_owned();
    db.unwrap()
        .batch_execute(&format!("UPDATE {schema}.schema_version SET version = 99"))
        .unwrap();
    let e = ServerStore::open(&a.path()).unwrap_err();
    assert!(e.0.contains("99") && e.0.contains(&known), "{e}");
    assert!(e.0.contains("cluster's database"), "{e}");
}

#[test]
fn a_wrong_password_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = cluster_database(dir.path()) else {
        return;
    };
    let Some(file) = db.password_file() else {
        return;
    };
    let wrong = "wr0ng-and-secret";
    std::fs::write(file, wrong).unwrap();
    let e = ServerStore::check_database(&db).unwrap_err();
    assert!(e.0.contains(&db.shown()), "{e}");
    assert!(!e.0.contains(wrong), "{e}");
    assert!(e.0.contains("password"), "the server's own words: {e}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_cluster_store_is_usable_from_an_async_runtime() {
    // (The test's own set-up connects off the runtime.)
    let pair = std::thread::spawn(cluster_pair).join().unwrap();
    let Some((a, b)) = pair else { return };
    // Called on the runtime's own thread (a server's start, its admin
    // API): the synchronous client moves off it rather than panic.
    assert!(a.store.grant(&rule()).unwrap());
    assert_eq!(b.store.rules().unwrap(), vec![rule()]);
    let reopened = ServerStore::open(&b.path()).unwrap();
    drop(reopened);
}

//! A registry restored from a backup older than what security servers
//! hold: its versions are refused until `registry version-floor` lifts
//! the next one above theirs.

use lienthong_central_registry::init;
use lienthong_central_registry::store::Database;
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_security_server::conf_client::ConfClient;

async fn add_class(reg: &TestRegistry, code: &str) -> u64 {
    reg.officer()
        .await
        .add_member_class(pb::AddMemberClassRequest {
            code: code.into(),
            description: format!("class {code}"),
        })
        .await
        .expect("change applied")
        .into_inner()
        .configuration_version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restored_from_an_older_backup_publishes_above_what_servers_hold() {
    let mut reg = TestRegistry::start(false).await;
    let cache = tempfile::tempdir().unwrap();
    let conf = ConfClient::new(
        reg.anchor.clone(),
        cache.path().join("configuration.bin"),
        ConfClient::empty_trust(),
    );
    assert!(conf.refresh().await.unwrap());

    // The backup: the store of a stopped registry.
    reg.stop().await;
    let db = reg.path().join("registry.db");
    let backup = cache.path().join("registry.db.backup");
    std::fs::copy(&db, &backup).unwrap();

    // Life goes on after the backup; the server follows.
    reg.restart().await;
    add_class(&reg, "GOV").await;
    let held = add_class(&reg, "COM").await;
    assert!(conf.refresh().await.unwrap());
    assert_eq!(conf.view().unwrap().version, held);

    // The store is lost and the backup restored: the registry continues
    // from the backup's last version, which the server already passed.
    reg.stop().await;
    for f in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(reg.path().join(f));
    }
    std::fs::copy(&backup, &db).unwrap();
    reg.restart().await;
    assert!(
        !conf.refresh().await.unwrap(),
        "nothing newer than what the server holds"
    );
    assert_eq!(conf.view().unwrap().version, held);
    // Anyone may claim any version: the reply stays the same.
    let reply = lienthong_registry_client::distribution_client(reg.channel().await)
        .get_configuration(pb::GetConfigurationRequest {
            if_newer_than: u64::MAX,
        })
        .await
        .expect("answered")
        .into_inner();
    assert!(reply.configuration.is_none() && reply.current_version < held);

    // The operator lifts the next version above the server's, with the
    // registry running: it is published at once and the server takes it.
    let dir = reg.path();
    let next = tokio::task::spawn_blocking(move || {
        init::raise_version_floor_in(&dir, &Database::Home, held + 1)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next, held + 1);
    let version = add_class(&reg, "NGO").await;
    assert!(version > held, "{version} after {held}");
    assert!(conf.refresh().await.unwrap());
    assert_eq!(conf.view().unwrap().version, version);
}

/// The documented backup of a registry on PostgreSQL — `pg_dump` while
/// it serves, `pg_restore` into the emptied database — restored under a
/// fresh node (a new home holding the registry's keys): it serves the
/// same instance, the history up to the backup, and, once the version
/// floor is lifted above what servers hold, publishes versions they
/// take. Needs `LIENTHONG_TEST_DATABASE_URL` and PostgreSQL's client
/// programs (`.ci/run` installs both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_registry_restored_by_pg_restore_under_a_fresh_node_serves_on() {
    use lienthong_integration_tests::nodes::{
        RegistryNode, SharedStore, change_on, database_url, second_home,
    };
    use std::process::Command;
    let Some(url) = database_url() else { return };
    if !["pg_dump", "pg_restore"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) {
        println!("skipped: pg_dump and pg_restore are not installed (Debian's postgresql-client)");
        return;
    }
    // The client programs take the password from the environment, never
    // from their command line.
    let (bare, password) = lienthong_security_server::store::without_password(&url).unwrap();
    let pg = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .env("PGPASSWORD", password.clone().unwrap_or_default())
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    const LEASE: std::time::Duration = std::time::Duration::from_secs(2);

    let store = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || SharedStore::new(&url, "restore"))
            .await
            .unwrap()
    };
    let home = tempfile::tempdir().unwrap();
    let done = {
        let (s, h) = (store.clone(), home.path().to_owned());
        tokio::task::spawn_blocking(move || s.init(&h, false))
            .await
            .unwrap()
    };
    let start = |home: std::path::PathBuf| {
        let s = store.clone();
        tokio::task::spawn_blocking(move || RegistryNode::start(&home, &s, LEASE).expect("starts"))
    };
    let first = start(home.path().to_owned()).await.unwrap();
    let token = done.officer_token.clone();
    let anchor = lienthong_integration_tests::nodes::only(&done.anchor, first.addr);
    let cache = tempfile::tempdir().unwrap();
    let server = |anchor: &lienthong_proto::pb::globalconf::v1::Anchor| {
        ConfClient::new(
            anchor.clone(),
            cache.path().join("configuration.bin"),
            ConfClient::empty_trust(),
        )
    };
    change_on(&anchor, &token, first.addr, "GOV").await;

    // The backup, while the node serves.
    let dump = cache.path().join("registry.dump");
    let file = dump.to_str().unwrap();
    pg(
        "pg_dump",
        &[
            "--format=custom",
            "--schema",
            &store.schema,
            "--file",
            file,
            &bare,
        ],
    );

    // Life goes on after the backup; a server follows.
    let held = change_on(&anchor, &token, first.addr, "LOST").await;
    let conf = server(&anchor);
    assert!(conf.refresh().await.unwrap());
    assert_eq!(conf.view().unwrap().version, held);

    // The machine and the database are lost.
    tokio::task::spawn_blocking(move || first.kill())
        .await
        .unwrap();
    {
        let (url, schema) = (url.clone(), store.schema.clone());
        tokio::task::spawn_blocking(move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .unwrap()
        })
        .await
        .unwrap();
    }

    // Restored into the database, under a fresh node whose operator lifts
    // the version floor above what servers hold, as the docs say.
    pg("pg_restore", &["--no-owner", "--dbname", &bare, file]);
    let fresh = second_home(home.path());
    {
        let (dir, db) = (fresh.path().to_owned(), store.database.clone());
        tokio::task::spawn_blocking(move || init::raise_version_floor_in(&dir, &db, held + 1))
            .await
            .unwrap()
            .unwrap();
    }
    let node = start(fresh.path().to_owned()).await.unwrap();
    let anchor = lienthong_integration_tests::nodes::only(&done.anchor, node.addr);
    // The same instance and officer, the history up to the backup.
    let audit = reg_audit(&anchor, &token, node.addr).await;
    assert!(
        audit.contains("GOV") && !audit.contains("LOST"),
        "the restored history ends at the backup: {audit}"
    );
    let next = change_on(&anchor, &token, node.addr, "NGO").await;
    assert!(next > held, "{next} above {held}, which the server holds");
    let conf = server(&anchor);
    conf.load_cached().unwrap();
    assert!(conf.refresh().await.unwrap(), "the server takes it");
    assert_eq!(conf.view().unwrap().version, next);
    drop(node);
}

/// The audit log's actions and details, as one string.
async fn reg_audit(
    anchor: &lienthong_proto::pb::globalconf::v1::Anchor,
    token: &str,
    addr: std::net::SocketAddr,
) -> String {
    let channel = lienthong_registry_client::connect(
        &lienthong_integration_tests::nodes::only(anchor, addr),
        None,
    )
    .await
    .unwrap();
    let entries = lienthong_registry_client::operator_client(channel, token)
        .unwrap()
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    format!("{entries:?}")
}

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

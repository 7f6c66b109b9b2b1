//! Two security servers of one member (population's ss1 and ss2) sharing
//! their policy through one PostgreSQL store, over real sockets: a grant
//! or a backend set on one node is honoured by the other within a reload,
//! a revocation too, and the consumer keeps getting answers while either
//! node is down. Needs `LIENTHONG_TEST_DATABASE_URL` (`.ci/run` sets it);
//! without it each test says why it skips.

use std::path::Path;
use std::time::{Duration, Instant};

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::nodes::{database_url, fresh_schema};
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::provider::policy::RELOAD_INTERVAL;
use lienthong_security_server::store::{Backend, ClusterDatabase, ServerStore, without_password};

/// Longest wait for anything these tests expect to happen.
const PATIENCE: Duration = Duration::from_secs(20);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("no panic")
}

/// A fresh schema of the test database as a cluster's database, its
/// password (if the URL has one) in a file of `secrets`, as an operator
/// gives it. Blocking.
fn cluster_database(url: &str, secrets: &Path) -> ClusterDatabase {
    let schema = fresh_schema(url, "cluster");
    let (bare, password) = without_password(url).expect("LIENTHONG_TEST_DATABASE_URL");
    let sep = if bare.contains('?') { '&' } else { '?' };
    let file = password.map(|p| {
        let f = secrets.join("database-password");
        std::fs::write(&f, p).expect("password file");
        f
    });
    ClusterDatabase::new(
        &format!("{bare}{sep}options=-c%20search_path%3D{schema}"),
        file.as_deref(),
    )
    .expect("a URL without password")
}

/// Moves a started agency's policy into the cluster's database (as
/// `lienthong server serve --database-url` does) and restarts it.
async fn into_cluster(agency: &mut Agency, db: &ClusterDatabase) {
    agency.stop();
    let (path, db) = (ServerDir(agency.dir.path().to_owned()).store(), db.clone());
    let store = blocking(move || ServerStore::join_cluster(&path, &db).map(drop)).await;
    store.expect("the node joins the cluster's store");
    agency.start().await;
}

fn business_may_read_population() -> AccessRule {
    AccessRule {
        subject: Subject::Subsystem(business()),
        provider: population(),
        service: PERSON_REGISTRY.into(),
        method: None,
    }
}

/// Calls until one answers (returning how long it took) or `PATIENCE`
/// passes (returning the last refusal).
async fn until_answered(is: &InformationSystem) -> Result<Duration, tonic::Status> {
    let start = Instant::now();
    loop {
        match is.business_gets_person().await {
            Ok(_) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() > PATIENCE => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Calls until one is refused with `fault`, or `PATIENCE` passes.
async fn until_refused(is: &InformationSystem, fault: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match is.business_gets_person().await {
            Err(e) if fault_of(&e) == fault => return Ok(()),
            other if start.elapsed() > PATIENCE => return Err(format!("{other:?}")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_of_one_member_share_their_policy_and_fail_over() {
    let Some(url) = database_url() else { return };
    let secrets = tempfile::tempdir().unwrap();
    let db = {
        let dir = secrets.path().to_owned();
        blocking(move || cluster_database(&url, &dir)).await
    };
    let mut f = Federation::start().await;
    for p in &mut f.population {
        into_cluster(p, &db).await;
    }
    let is = f.business.client().await;

    // The cluster's store was new: the first node to join carried its
    // grant and backend over from its server.db (the second node's were
    // the same), so the call is answered with nothing set again.
    until_answered(&is)
        .await
        .expect("the grant carried over from the first node is in force");

    // Revoked on ss1's machine (`lienthong server acl revoke --dir`):
    // refused once the nodes reload.
    let ss1_store = ServerDir(f.population[0].dir.path().to_owned()).store();
    let revoked = blocking(move || {
        ServerStore::open(&ss1_store)
            .and_then(|s| s.revoke(&business_may_read_population()))
            .expect("revoked on ss1")
    })
    .await;
    assert!(revoked, "the carried-over grant is the one revoked");
    until_refused(&is, "server.serverproxy.access_denied")
        .await
        .expect("refused once the revocation reached the nodes");
    let ss1 = f.population[0].server();

    // The operator sets the backend and grants on ss1 only, then ss1 goes
    // down: ss2 answers with ss1's grant, within its reload interval.
    ss1.set_backend(&Backend {
        provider: population(),
        service: PERSON_REGISTRY.into(),
        url: format!("http://{}", f.backend.addr),
        timeout: Duration::from_secs(5),
    })
    .expect("backend set on ss1");
    ss1.grant(&business_may_read_population())
        .expect("granted on ss1");
    f.population[0].stop();
    let took = until_answered(&is)
        .await
        .expect("ss2 honours the grant made on ss1");
    println!("ss2 answered with ss1's grant after {took:?} (reload every {RELOAD_INTERVAL:?})");

    // Both up; a run of calls while ss2 is killed in the middle: every
    // call is answered (the consumer fails over to ss1).
    f.population[0].start().await;
    let before = f.backend_calls();
    for i in 0..40 {
        if i == 20 {
            f.population[1].stop();
        }
        is.business_gets_person()
            .await
            .unwrap_or_else(|e| panic!("call {i} failed while a node went down: {e:?}"));
    }
    assert_eq!(
        f.backend_calls() - before,
        40,
        "every call reached the backend once"
    );

    // A revocation made on ss2 (`lienthong server acl revoke --dir` on
    // its machine) holds on ss1, the only node left.
    f.population[1].start().await;
    let ss2_store = ServerDir(f.population[1].dir.path().to_owned()).store();
    let revoked = blocking(move || {
        ServerStore::open(&ss2_store)
            .and_then(|s| s.revoke(&business_may_read_population()))
            .expect("revoked on ss2")
    })
    .await;
    assert!(revoked, "the grant made on ss1 is the one revoked on ss2");
    f.population[1].stop();
    until_refused(&is, "server.serverproxy.access_denied")
        .await
        .expect("ss1 refuses once ss2's revocation reached it");

    // Each node kept its own identity and message log.
    for p in &f.population {
        let dir = ServerDir(p.dir.path().to_owned());
        let store = {
            let path = dir.store();
            blocking(move || ServerStore::open(&path).expect("store")).await
        };
        assert!(store.is_clustered());
        assert_eq!(
            lienthong_security_server::server_id(&store).unwrap(),
            p.id,
            "each node's identity is its own"
        );
        assert!(dir.message_log().exists());
        drop(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_replayed_to_the_other_node_is_refused() {
    let Some(url) = database_url() else { return };
    let secrets = tempfile::tempdir().unwrap();
    let db = {
        let dir = secrets.path().to_owned();
        blocking(move || cluster_database(&url, &dir)).await
    };
    let mut f = Federation::start().await;
    for p in &mut f.population {
        into_cluster(p, &db).await;
    }
    let backend = Backend {
        provider: population(),
        service: PERSON_REGISTRY.into(),
        url: format!("http://{}", f.backend.addr),
        timeout: Duration::from_secs(5),
    };
    for p in &f.population {
        // Set once in the shared store; each call reloads its node at once.
        p.server().set_backend(&backend).expect("backend");
        p.server()
            .grant(&business_may_read_population())
            .expect("grant");
    }
    let person = || PersonRequest {
        personal_id: "001099012345".into(),
    };
    let to_ss1 = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let to_ss2 = RawPeer::new(&f.registry, &f.business, &f.population[1], None)
        .await
        .unwrap();
    let envelope = to_ss1.sign(to_ss1.header(&business(), &person()), &member("000305"));
    to_ss1
        .send(Some(envelope.clone()), person())
        .await
        .expect("the first use is answered by ss1");
    let calls = f.backend_calls();
    let replayed = to_ss2
        .send(Some(envelope), person())
        .await
        .expect_err("the same request sent to ss2 is a replay");
    assert_eq!(
        fault_of(&replayed),
        "server.serverproxy.replay",
        "{replayed:?}"
    );
    assert_eq!(f.backend_calls(), calls, "the backend is not called for it");
}

//! Registry nodes sharing one PostgreSQL store, over real sockets: one node
//! publishes, every node serves the bytes the store holds, and when the
//! publisher dies (or stops) another takes over without a version repeated
//! or skipped — while security servers keep exchanging. Needs
//! `LIENTHONG_TEST_DATABASE_URL` (`.ci/run` sets it); without it each test
//! says why it skips.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_integration_tests::federation::{Federation, InformationSystem};
use lienthong_integration_tests::nodes::{
    RegistryNode, SharedStore, change_on, database_url, free_addresses, only, second_home, served,
};
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_security_server::conf_client::ConfClient;
use tokio::sync::watch;

/// The nodes' publisher lease: short, so a dead publisher is replaced soon.
const LEASE: Duration = Duration::from_secs(2);
/// Longest wait for anything these tests expect to happen.
const PATIENCE: Duration = Duration::from_secs(20);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_nodes_publish_one_sequence_of_versions_across_failover() {
    let Some(url) = database_url() else { return };
    let store = blocking(move || SharedStore::new(&url, "failover")).await;
    let home_a = tempfile::tempdir().unwrap();
    let done = {
        let (s, h) = (store.clone(), home_a.path().to_owned());
        blocking(move || s.init(&h, false)).await
    };
    let home_b = second_home(home_a.path());
    let start = |home: &std::path::Path| {
        let (s, h) = (store.clone(), home.to_owned());
        blocking(move || RegistryNode::start(&h, &s, LEASE).expect("node starts"))
    };
    let (anchor, token) = (done.anchor, done.officer_token);

    let a = start(home_a.path()).await;
    let b = start(home_b.path()).await;
    assert!(a.leads() && !b.leads(), "the first node started publishes");
    let (v0, bytes) = served(&anchor, a.addr).await;
    assert_eq!(served(&anchor, b.addr).await, (v0, bytes), "the same bytes");
    for (node, publishing) in [(&a, 1), (&b, 0)] {
        let metrics = node.metrics().await;
        for line in [
            format!("lienthong_registry_publishing {publishing}\n"),
            format!("lienthong_registry_configuration_version {v0}\n"),
        ] {
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
    }

    // A change made on the follower is published by the publisher and
    // served by the follower.
    let v1 = change_on(&anchor, &token, b.addr, "GOV").await;
    assert_eq!(v1, v0 + 1);
    assert_eq!(served(&anchor, b.addr).await.0, v1);

    a.kill();
    // The survivor keeps serving what the store holds at once...
    assert_eq!(served(&anchor, b.addr).await.0, v1);
    // ...and publishes a change made on it once the dead node's lease
    // expires (the reply waits for the version that includes it).
    let v2 = change_on(&anchor, &token, b.addr, "COM").await;
    assert_eq!(v2, v1 + 1, "no version skipped or repeated");
    // (A step the killed node's blocking thread was already running may
    // still finish — an in-process kill, unlike a real one — so the lease
    // is judged once it has had time to expire.)
    let deadline = std::time::Instant::now() + PATIENCE;
    while !b.leads() {
        assert!(std::time::Instant::now() < deadline, "the survivor leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.metrics()
            .await
            .contains("lienthong_registry_publishing 1\n")
    );

    // The dead node comes back and follows; the survivor stops as an
    // operator stops it (giving the lease up) and the other publishes.
    let a = start(home_a.path()).await;
    assert!(!a.leads(), "the lease is the survivor's");
    assert_eq!(served(&anchor, a.addr).await.0, v2);
    blocking(move || b.stop()).await;
    let v3 = change_on(&anchor, &token, a.addr, "NGO").await;
    assert_eq!(v3, v2 + 1);
    assert!(a.leads());
    assert_eq!(served(&anchor, a.addr).await.0, v3);
    blocking(move || store.assert_versions_contiguous_to(v3)).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_node_holding_other_keys_is_refused() {
    let Some(url) = database_url() else { return };
    let store = blocking(move || SharedStore::new(&url, "keys")).await;
    let home = tempfile::tempdir().unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let (s, h, x) = (
        store.clone(),
        home.path().to_owned(),
        stranger.path().to_owned(),
    );
    blocking(move || {
        s.init(&h, false);
        // A registry of the same instance name, with keys of its own.
        lienthong_central_registry::init::initialise(
            &x,
            &lienthong_central_registry::init::InitOptions::new("VN", "127.0.0.1:4400"),
        )
        .unwrap();
        let err = match RegistryNode::start(&x, &s, LEASE) {
            Ok(_) => panic!("a node with other keys must not start"),
            Err(e) => e,
        };
        for part in ["instance CA", "ca.pem", "records"] {
            assert!(err.contains(part), "{part} in: {err}");
        }
        // The registry's own keys start.
        drop(RegistryNode::start(&h, &s, LEASE).expect("node starts"));
    })
    .await;
}

/// Business asking population for a person on several tasks at once,
/// until [`finish`](Load::finish).
struct Load {
    progress: watch::Receiver<usize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(f: &Federation, workers: usize) -> Self {
        let (done, progress) = watch::channel(0usize);
        let done = Arc::new(done);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = f.business.server().consumer_addr();
        let tasks = (0..workers)
            .map(|_| {
                let (done, failures, stop) = (done.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .expect("valid")
                        .connect()
                        .await
                        .expect("consumer side reachable");
                    let is = InformationSystem { channel };
                    while !stop.load(Ordering::SeqCst) {
                        match is.business_gets_person().await {
                            Ok(_) => done.send_modify(|n| *n += 1),
                            Err(s) => failures.lock().unwrap().push(format!("{s:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            progress,
            failures,
            stop,
            tasks,
        }
    }

    /// Waits until `n` more exchanges succeeded.
    async fn exchanges(&mut self, n: usize) {
        let target = *self.progress.borrow() + n;
        tokio::time::timeout(PATIENCE, self.progress.wait_for(|done| *done >= target))
            .await
            .expect("exchanges keep succeeding")
            .expect("load running");
    }

    /// Stops the load; returns the failed exchanges.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task ends");
        }
        std::mem::take(&mut *self.failures.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_keep_exchanging_and_updating_when_the_publishing_registry_node_dies() {
    let Some(url) = database_url() else { return };
    let store = blocking(move || SharedStore::new(&url, "federation")).await;
    let [first, second] = free_addresses();
    let home_a = tempfile::tempdir().unwrap();
    let done = {
        let (s, h) = (store.clone(), home_a.path().to_owned());
        blocking(move || s.init_with(&h, true, &[first, second])).await
    };
    let home_b = second_home(home_a.path());
    let start = |home: &std::path::Path, listen| {
        let (s, h) = (store.clone(), home.to_owned());
        blocking(move || RegistryNode::start_on(&h, &s, LEASE, listen).expect("node starts"))
    };
    let a = start(home_a.path(), first).await;
    let b = start(home_b.path(), second).await;
    assert!(a.leads());
    // The servers' anchor names the publisher only; every configuration
    // names both nodes.
    let anchor = only(&done.anchor, a.addr);
    let f = Federation::start_with(TestRegistry {
        registry: None,
        publish_interval: lienthong_central_registry::publisher::DEFAULT_PUBLISH_INTERVAL,
        dir: home_a,
        anchor,
        officer_token: done.officer_token,
        addr: a.addr,
    })
    .await;

    // Every version each server installs, in order.
    let installed: Vec<_> = f
        .all()
        .map(|agency| {
            let mut rx = agency.server().conf().subscribe();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let keep = seen.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if let Some(v) = rx.borrow_and_update().as_ref() {
                        keep.lock().unwrap().push(v.version);
                    }
                }
            });
            seen
        })
        .collect();

    let mut load = Load::start(&f, 4);
    load.exchanges(50).await;

    let (before, _) = served(&f.registry.anchor, b.addr).await;
    a.kill();
    // Configurations keep coming: every server's next poll reaches the
    // survivor, which only the configuration names (the dead node's
    // address refuses at once).
    for agency in f.all() {
        agency
            .server()
            .conf()
            .refresh()
            .await
            .expect("the surviving node serves the configuration");
    }
    load.exchanges(50).await;

    // An officer's change made on the survivor is published by it, the
    // next version, and reaches every server within a few polls.
    let version = change_on(&done.anchor, &f.registry.officer_token, second, "NGO").await;
    assert_eq!(version, before + 1, "no version skipped or repeated");
    assert!(b.leads(), "the survivor publishes");
    for agency in f.all() {
        let mut rx = agency.server().conf().subscribe();
        tokio::time::timeout(
            PATIENCE,
            rx.wait_for(|v| v.as_ref().is_some_and(|v| v.version >= version)),
        )
        .await
        .expect("the new version reaches every server")
        .expect("configuration client running");
    }
    load.exchanges(50).await;
    // The servers' message-log checkpoints are witnessed by the survivor.
    f.checkpoint_all().await;

    let failures = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} exchanges failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for seen in &installed {
        let seen = seen.lock().unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "a server's versions only increase: {seen:?}"
        );
        assert!(seen.last().is_some_and(|v| *v >= version), "{seen:?}");
    }
    blocking(move || store.assert_versions_contiguous_to(version)).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_fails_over_to_a_registry_node_only_the_configuration_lists() {
    let Some(url) = database_url() else { return };
    let store = blocking(move || SharedStore::new(&url, "addresses")).await;
    let [first, second] = free_addresses();
    let home_a = tempfile::tempdir().unwrap();
    let done = {
        let (s, h) = (store.clone(), home_a.path().to_owned());
        blocking(move || s.init_with(&h, false, &[first, second])).await
    };
    let home_b = second_home(home_a.path());
    let start = |home: &std::path::Path, listen| {
        let (s, h) = (store.clone(), home.to_owned());
        blocking(move || RegistryNode::start_on(&h, &s, LEASE, listen).expect("node starts"))
    };
    let a = start(home_a.path(), first).await;
    let b = start(home_b.path(), second).await;

    // The server's anchor names the first node only; the configuration
    // names both.
    let dir = tempfile::tempdir().unwrap();
    let conf = ConfClient::new(
        only(&done.anchor, first),
        dir.path().join("configuration.bin"),
        ConfClient::empty_trust(),
    );
    assert!(conf.refresh().await.expect("the anchor's node answers"));
    assert_eq!(
        conf.registries().addresses(),
        [first.to_string(), second.to_string()]
    );

    a.kill();
    let version = change_on(&done.anchor, &done.officer_token, second, "GOV").await;
    assert!(
        conf.refresh()
            .await
            .expect("the configuration's other node answers"),
        "a newer version was installed"
    );
    assert_eq!(conf.view().unwrap().version, version);
    assert_eq!(
        conf.registries().addresses()[0],
        second.to_string(),
        "the node that answered is dialled first from now on"
    );
    drop(b);
}

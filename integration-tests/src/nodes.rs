//! Registry nodes sharing one PostgreSQL store: a fresh schema of the test
//! database (`LIENTHONG_TEST_DATABASE_URL`) per test, a first node's home
//! and a second node's (the same keys, as an operator installs them), and
//! nodes on runtimes of their own, so that a test can kill one.
//!
//! The `postgres` client is synchronous: call these helpers outside the
//! test's runtime (`spawn_blocking`), as the registry itself does.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use lienthong_central_registry::init::{self, InitOptions, Initialised};
use lienthong_central_registry::store::{Database, PgTarget};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_registry_client as client;
use prost::Message;

/// The test database's URL, or `None` after printing why the test skips.
pub fn database_url() -> Option<String> {
    match std::env::var("LIENTHONG_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            println!(
                "skipped: LIENTHONG_TEST_DATABASE_URL is not set (`.ci/run` starts PostgreSQL and sets it)"
            );
            None
        }
    }
}

/// One registry's store in a fresh schema of the test database.
#[derive(Debug, Clone)]
pub struct SharedStore {
    pub url: String,
    pub schema: String,
    pub database: Database,
}

/// Creates a new, empty schema of the test database at `url` and returns
/// its name: `prefix`, this process and a counter, so tests running at the
/// same millisecond in one process never collide. Blocking.
pub fn fresh_schema(url: &str, prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    postgres::Client::connect(url, postgres::NoTls)
        .expect("test database")
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("a schema of its own");
    schema
}

impl SharedStore {
    /// Creates the schema (`name` helps reading the database afterwards).
    pub fn new(url: &str, name: &str) -> Self {
        let schema = fresh_schema(url, &format!("nodes_{name}"));
        let target = PgTarget::parse(url)
            .expect("LIENTHONG_TEST_DATABASE_URL")
            .with_options(&format!("-c search_path={schema}"));
        SharedStore {
            url: url.to_owned(),
            schema,
            database: Database::Postgres(Box::new(target)),
        }
    }

    /// `registry init` of instance `VN` in `home`, the store here.
    pub fn init(&self, home: &Path, auto_approve: bool) -> Initialised {
        self.init_with(
            home,
            auto_approve,
            &["127.0.0.1:4400".parse().expect("valid")],
        )
    }

    /// [`init`](Self::init) naming the nodes' `addresses` (in the TLS
    /// certificate, the anchor and every configuration).
    pub fn init_with(
        &self,
        home: &Path,
        auto_approve: bool,
        addresses: &[SocketAddr],
    ) -> Initialised {
        let mut opts = InitOptions::new("VN", "127.0.0.1:4400");
        opts.addresses = addresses.iter().map(ToString::to_string).collect();
        opts.auto_approve = auto_approve;
        opts.database = self.database.clone();
        init::initialise(home, &opts).expect("registry init works")
    }

    /// Every version the store holds, oldest first, with the version its
    /// signed bytes carry (when it still keeps them).
    pub fn versions(&self) -> Vec<(u64, Option<u64>)> {
        let mut client =
            postgres::Client::connect(&self.url, postgres::NoTls).expect("test database");
        let rows = client
            .query(
                &format!(
                    "SELECT version, signed FROM {}.publications ORDER BY version",
                    self.schema
                ),
                &[],
            )
            .expect("publications");
        rows.iter()
            .map(|r| {
                let inside = r.get::<_, Option<Vec<u8>>>(1).map(|b| {
                    let signed =
                        SignedConfiguration::decode(b.as_slice()).expect("stored bytes decode");
                    GlobalConfiguration::decode(signed.configuration.as_slice())
                        .expect("signed configuration decodes")
                        .version
                });
                (r.get::<_, i64>(0) as u64, inside)
            })
            .collect()
    }

    /// Asserts that the store holds every version from its oldest kept to
    /// `last` once, in order, and that each version's bytes are that version.
    pub fn assert_versions_contiguous_to(&self, last: u64) {
        let stored = self.versions();
        let first = stored.first().expect("something was published").0;
        let numbers: Vec<u64> = stored.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            numbers,
            (first..=last).collect::<Vec<_>>(),
            "every version once, in order"
        );
        for (version, inside) in &stored {
            if let Some(inside) = inside {
                assert_eq!(version, inside, "the bytes recorded for {version}");
            }
        }
    }
}

/// `N` loopback addresses no one listens on now (for nodes to bind next),
/// all different: each is held until all are chosen, since the kernel may
/// hand a port it just released to the next `bind` (two nodes told the
/// same port, one fails with "address in use").
pub fn free_addresses<const N: usize>() -> [SocketAddr; N] {
    let held: [std::net::TcpListener; N] = std::array::from_fn(|_| {
        std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port")
    });
    held.map(|l| l.local_addr().expect("a bound address"))
}

/// The home of another node of the registry in `first`: its keys and TLS
/// identity (which names the host of every registry address), copied as
/// an operator installs them.
pub fn second_home(first: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("home mode");
    for f in [
        "ca.key",
        "ca.pem",
        "configuration-signing.key",
        "configuration-signing.pem",
        "tls.key",
        "tls.pem",
    ] {
        std::fs::copy(first.join(f), dir.path().join(f)).expect("key copied");
    }
    dir
}

/// A registry node on a runtime of its own: [`kill`](Self::kill) drops the
/// runtime, which ends its tasks and closes its sockets at once without
/// giving the publisher lease up, as a crash would.
pub struct RegistryNode {
    runtime: Option<tokio::runtime::Runtime>,
    registry: Option<Registry>,
    pub addr: SocketAddr,
}

impl RegistryNode {
    /// Starts a node of the registry in `home` on `store` on a fresh
    /// loopback port, reading the store every 50 ms, with a lease of
    /// `lease`. Blocking.
    pub fn start(home: &Path, store: &SharedStore, lease: Duration) -> Result<Self, String> {
        Self::start_on(home, store, lease, "127.0.0.1:0".parse().expect("valid"))
    }

    /// [`start`](Self::start) listening on `listen`.
    pub fn start_on(
        home: &Path,
        store: &SharedStore,
        lease: Duration,
        listen: SocketAddr,
    ) -> Result<Self, String> {
        let mut opts = RegistryOptions::new(home, listen);
        opts.database = store.database.clone();
        opts.admin_listen = Some("127.0.0.1:0".parse().expect("valid"));
        opts.follow_interval = Duration::from_millis(50);
        opts.lease = lease;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let registry = runtime
                .block_on(Registry::start(opts))
                .map_err(|e| e.to_string())?;
            Ok(RegistryNode {
                addr: registry.local_addr(),
                runtime: Some(runtime),
                registry: Some(registry),
            })
        })
        .join()
        .expect("node start does not panic")
    }

    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().expect("node is running")
    }

    /// The node's `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let addr = self.registry().admin_addr().expect("admin port served");
        let (status, body) = crate::federation::admin_request(addr, "GET", "/metrics", "").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Whether this node held the publisher lease when it last looked.
    pub fn leads(&self) -> bool {
        self.registry().publisher().leading()
    }

    /// Ends the node as a crash would: no lease given up, no goodbye.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the node as an operator does (the lease is given up).
    /// Blocking.
    pub fn stop(mut self) {
        let registry = self.registry.take().expect("node is running");
        if let Some(rt) = self.runtime.take() {
            std::thread::spawn(move || {
                rt.block_on(registry.shutdown());
                rt.shutdown_background();
            })
            .join()
            .expect("node stops");
        }
    }
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `anchor` naming only the node at `addr`.
pub fn only(anchor: &Anchor, addr: SocketAddr) -> Anchor {
    Anchor {
        registry_addresses: vec![addr.to_string()],
        ..anchor.clone()
    }
}

/// The version a node hands out, verified with the anchor.
pub async fn served(anchor: &Anchor, addr: SocketAddr) -> (u64, Vec<u8>) {
    let anchor = only(anchor, addr);
    let signed = client::configuration::download(&anchor, None, None)
        .await
        .expect("the node serves a configuration")
        .expect("a configuration is published");
    let conf = client::configuration::verify(&anchor, &signed, None, SystemTime::now())
        .expect("verifies with the anchor");
    (conf.version, signed.configuration)
}

/// An officer adds a member class on the node at `addr`; returns the
/// version that includes it, as the reply names it.
pub async fn change_on(anchor: &Anchor, token: &str, addr: SocketAddr, class: &str) -> u64 {
    let channel = client::connect(&only(anchor, addr), None)
        .await
        .expect("node reachable");
    client::operator_client(channel, token)
        .expect("token")
        .add_member_class(pb::AddMemberClassRequest {
            code: class.into(),
            description: format!("class {class}"),
        })
        .await
        .expect("the change is applied")
        .into_inner()
        .configuration_version
}

//! Two registry nodes on one PostgreSQL store, over real sockets: one
//! publishes, both serve the same bytes, the other takes over when the
//! publisher dies or stops, and versions never repeat or skip. A node
//! holding other keys is refused. Needs `LIENTHONG_TEST_DATABASE_URL`
//! (`.ci/run` sets it); without it each test says so and passes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::store::{Database, PgTarget};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_certs::conf::verify_configuration;
use lienthong_certs::net::TlsConnectorService;
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_proto::pb::registry::v1 as pb;
use pb::configuration_distribution_client::ConfigurationDistributionClient;
use pb::registry_operator_client::RegistryOperatorClient;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

/// The lease of the test nodes: short, so a dead publisher is replaced soon.
const LEASE: Duration = Duration::from_secs(2);

/// The test database's URL, or why the test is skipped.
fn database_url() -> Option<String> {
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

/// A fresh schema of the test database, as the store of one registry, and
/// its name.
fn scratch_database(url: &str, name: &str) -> (Database, String) {
    let schema = format!(
        "nodes_{name}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let target = PgTarget::parse(url)
        .unwrap()
        .with_options(&format!("-c search_path={schema}"));
    (Database::Postgres(Box::new(target)), schema)
}

/// The versions the store holds, oldest first, each with the version its
/// bytes say (when it still has them).
fn stored_versions(url: &str, schema: &str) -> Vec<(u64, Option<u64>)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query(
            &format!("SELECT version, signed FROM {schema}.publications ORDER BY version"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let signed: Option<Vec<u8>> = r.get(1);
            let inner = signed.map(|b| {
                let s = SignedConfiguration::decode(b.as_slice()).unwrap();
                GlobalConfiguration::decode(s.configuration.as_slice())
                    .unwrap()
                    .version
            });
            (r.get::<_, i64>(0) as u64, inner)
        })
        .collect()
}

/// The home directory of a second node: the first node's keys, copied as
/// an operator installs them (the TLS identity too: it names the host of
/// every registry address).
fn second_home(first: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for f in [
        "ca.key",
        "ca.pem",
        "configuration-signing.key",
        "configuration-signing.pem",
        "tls.key",
        "tls.pem",
    ] {
        std::fs::copy(first.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// A registry node on a runtime of its own, so that it can be killed:
/// dropping the runtime ends its tasks and closes its sockets at once,
/// without giving the lease up.
struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    registry: Option<Registry>,
    addr: SocketAddr,
}

impl Node {
    fn start(dir: &Path, database: &Database) -> Result<Node, String> {
        let mut opts = RegistryOptions::new(dir, "127.0.0.1:0".parse().unwrap());
        opts.database = database.clone();
        opts.follow_interval = Duration::from_millis(50);
        opts.lease = LEASE;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let registry = runtime
                .block_on(Registry::start(opts))
                .map_err(|e| e.to_string())?;
            Ok(Node {
                addr: registry.local_addr(),
                runtime: Some(runtime),
                registry: Some(registry),
            })
        })
        .join()
        .unwrap()
    }

    fn registry(&self) -> &Registry {
        self.registry.as_ref().unwrap()
    }

    fn leads(&self) -> bool {
        self.registry().publisher().leading()
    }

    /// Ends the node as a crash would: no lease given up, no goodbye.
    fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the node as an operator does.
    fn stop(mut self) {
        let registry = self.registry.take().unwrap();
        if let Some(rt) = self.runtime.take() {
            std::thread::spawn(move || {
                rt.block_on(registry.shutdown());
                rt.shutdown_background();
            })
            .join()
            .unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn channel(anchor: &Anchor, addr: SocketAddr) -> Channel {
    let ca = rustls_pki_types::CertificateDer::from(anchor.instance_ca_certificate.clone());
    let config = lienthong_certs::tls::registry_client_config(&ca, None).unwrap();
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(TlsConnectorService::new(Arc::new(config)))
        .await
        .unwrap()
}

/// The configuration a node hands out (verified with the anchor).
async fn download(anchor: &Anchor, addr: SocketAddr) -> (u64, SignedConfiguration) {
    let signed = ConfigurationDistributionClient::new(channel(anchor, addr).await)
        .get_configuration(pb::GetConfigurationRequest { if_newer_than: 0 })
        .await
        .unwrap()
        .into_inner()
        .configuration
        .unwrap();
    let conf = verify_configuration(anchor, &signed, None, std::time::SystemTime::now()).unwrap();
    (conf.version, signed)
}

/// An officer's change on the node at `addr`; returns the version that
/// includes it, as the reply names it.
async fn add_member_class(anchor: &Anchor, token: &str, addr: SocketAddr, code: &str) -> u64 {
    let mut op = RegistryOperatorClient::new(channel(anchor, addr).await);
    let mut request = tonic::Request::new(pb::AddMemberClassRequest {
        code: code.into(),
        description: format!("class {code}"),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    op.add_member_class(request)
        .await
        .unwrap()
        .into_inner()
        .configuration_version
}

#[test]
fn the_other_node_publishes_when_the_publisher_dies_or_stops() {
    let Some(url) = database_url() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (database, schema) = scratch_database(&url, "failover");
    let home_a = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("VN", "127.0.0.1:4400");
    opts.database = database.clone();
    let done = init::initialise(home_a.path(), &opts).unwrap();
    let home_b = second_home(home_a.path());
    let token = done.officer_token;
    let anchor = done.anchor;

    let a = Node::start(home_a.path(), &database).unwrap();
    let b = Node::start(home_b.path(), &database).unwrap();
    assert!(a.leads() && !b.leads(), "the first node started publishes");
    let (va, bytes_a) = rt.block_on(download(&anchor, a.addr));
    let (vb, bytes_b) = rt.block_on(download(&anchor, b.addr));
    assert_eq!((va, &bytes_a), (vb, &bytes_b), "both serve the same bytes");

    // A change made on the follower is published by the leader and served
    // by the follower.
    let v1 = rt.block_on(add_member_class(&anchor, &token, b.addr, "GOV"));
    assert_eq!(v1, va + 1);
    assert_eq!(rt.block_on(download(&anchor, b.addr)).0, v1);

    a.kill();
    // The survivor keeps serving what the store holds at once...
    assert_eq!(rt.block_on(download(&anchor, b.addr)).0, v1);
    // ...and publishes a change made on it once the dead node's lease
    // expires (the reply waits for the version that includes it).
    let v2 = rt.block_on(add_member_class(&anchor, &token, b.addr, "COM"));
    assert_eq!(v2, v1 + 1, "no version skipped or repeated");
    assert!(b.leads());

    // The dead node comes back: it follows; the survivor stops as an
    // operator stops it (giving the lease up), and the other publishes.
    let a = Node::start(home_a.path(), &database).unwrap();
    assert!(!a.leads(), "the lease is the survivor's");
    assert_eq!(rt.block_on(download(&anchor, a.addr)).0, v2);
    b.stop();
    let v3 = rt.block_on(add_member_class(&anchor, &token, a.addr, "NGO"));
    assert_eq!(v3, v2 + 1);
    assert!(a.leads());
    let (served, _) = rt.block_on(download(&anchor, a.addr));
    assert_eq!(served, v3);

    let stored = stored_versions(&url, &schema);
    let first = stored[0].0;
    let expected: Vec<u64> = (first..=v3).collect();
    assert_eq!(
        stored.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        expected,
        "every version once, in order: {stored:?}"
    );
    for (version, inside) in &stored {
        if let Some(inside) = inside {
            assert_eq!(version, inside, "the bytes of a version are that version");
        }
    }
    drop(a);
}

#[test]
fn a_node_holding_other_keys_is_refused() {
    let Some(url) = database_url() else { return };
    let (database, _) = scratch_database(&url, "keys");
    let home = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("VN", "127.0.0.1:4400");
    opts.database = database.clone();
    init::initialise(home.path(), &opts).unwrap();
    // Another registry of the same instance name, with keys of its own.
    let stranger = tempfile::tempdir().unwrap();
    init::initialise(stranger.path(), &InitOptions::new("VN", "127.0.0.1:4400")).unwrap();
    let err = match Node::start(stranger.path(), &database) {
        Ok(_) => panic!("a node with other keys must not start"),
        Err(e) => e,
    };
    for part in ["instance CA", "ca.pem", "records"] {
        assert!(err.contains(part), "{part} in: {err}");
    }
    // The right keys still start.
    drop(Node::start(home.path(), &database).unwrap());
}

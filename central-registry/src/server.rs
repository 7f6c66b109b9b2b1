//! Starting and stopping a registry: store, publisher, and its APIs
//! (operator, registration, distribution, checkpoint witness) on one TLS
//! listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lienthong_certs::ca::DEFAULT_CERT_VALIDITY;
use lienthong_certs::{net, tls};
use lienthong_database::HomeLock;
use lienthong_proto::pb::registry::v1::checkpoint_witness_server::CheckpointWitnessServer;
use lienthong_proto::pb::registry::v1::configuration_distribution_server::ConfigurationDistributionServer;
use lienthong_proto::pb::registry::v1::registration_server::RegistrationServer;
use lienthong_proto::pb::registry::v1::registry_operator_server::RegistryOperatorServer;
use lienthong_proto::pb::registry::v1::service_catalogue_server::ServiceCatalogueServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::distribution::Distribution;
use crate::error::{RegistryError, blocking};
use crate::init::{check_permissions_for, key_fingerprints, load};
use crate::operator::OperatorApi;
use crate::publisher::{
    DEFAULT_FOLLOW_INTERVAL, DEFAULT_LEASE, DEFAULT_PUBLISH_INTERVAL, Publisher, Timing, node_name,
};
use crate::refusals::Refusals;
use crate::registration::Registration;
use crate::store::{Database, Store};
use crate::throttle::{RefusalCounts, Throttle, ThrottleConfig, ThrottleLayer};
use crate::witness::{DEFAULT_MAX_CHECKPOINT_AGE, Witness};

/// Default port of a registry.
pub const DEFAULT_PORT: u16 = 4400;
/// How long one API call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The home directory made by `registry init`.
    pub dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// # Default
    /// 60 s ([`DEFAULT_PUBLISH_INTERVAL`]).
    pub publish_interval: Duration,
    /// How often this node reads the store for new versions, the publisher
    /// lease and changes made on other nodes.
    /// # Default
    /// 1 s ([`DEFAULT_FOLLOW_INTERVAL`]).
    pub follow_interval: Duration,
    /// How long the publisher lease lasts unless renewed: how long new
    /// versions stop when the publishing node dies.
    /// # Default
    /// 15 s ([`DEFAULT_LEASE`]).
    pub lease: Duration,
    /// This node's name in the lease and the logs.
    /// # Default
    /// the host name and `dir` ([`node_name`]).
    pub node: Option<String>,
    /// Lifetime of issued auth and signing certificates.
    /// # Default
    /// one year ([`DEFAULT_CERT_VALIDITY`]).
    pub cert_validity: Duration,
    /// How far in the past a submitted checkpoint may be dated.
    /// # Default
    /// 120 s ([`DEFAULT_MAX_CHECKPOINT_AGE`]: two checkpoint intervals).
    pub checkpoint_max_age: Duration,
    /// How sources that keep failing are slowed down and refused.
    pub throttle: ThrottleConfig,
    /// Where to serve the admin port (`GET /health`, `GET /metrics`:
    /// [`crate::admin`]); none by default.
    pub admin_listen: Option<SocketAddr>,
    /// Where the store is.
    /// # Default
    /// `registry.db` (SQLite) in `dir`.
    pub database: Database,
}

impl RegistryOptions {
    pub fn new(dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        RegistryOptions {
            dir: dir.into(),
            listen,
            publish_interval: DEFAULT_PUBLISH_INTERVAL,
            follow_interval: DEFAULT_FOLLOW_INTERVAL,
            lease: DEFAULT_LEASE,
            node: None,
            cert_validity: DEFAULT_CERT_VALIDITY,
            checkpoint_max_age: DEFAULT_MAX_CHECKPOINT_AGE,
            throttle: ThrottleConfig::default(),
            admin_listen: None,
            database: Database::Home,
        }
    }
}

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    addr: SocketAddr,
    refusals: Arc<RefusalCounts>,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
    shutdown: Option<oneshot::Sender<()>>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
    publishing: JoinHandle<()>,
    /// Held while the node runs; released when it drops.
    _home: HomeLock,
}

/// What two registries on one home directory would break.
const ONE_REGISTRY_PER_HOME: &str = "two registry processes on one home serve its store and keys twice; run another node from a home of its own (docs/registry.md, high availability)";

impl Registry {
    /// Opens the store, checks that this node holds the keys the store
    /// records, publishes a first configuration (a version above any
    /// published before) when this node holds the publisher lease — else
    /// distributes the newest version in the store — and starts serving.
    pub async fn start(opts: RegistryOptions) -> Result<Self, RegistryError> {
        check_permissions_for(&opts.dir, &opts.database)?;
        let home = HomeLock::take(&opts.dir, ONE_REGISTRY_PER_HOME)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let loaded = load(&opts.dir)?;
        let (db, dir) = (opts.database.clone(), opts.dir.clone());
        let store: Arc<dyn Store> = Arc::from(blocking(move || Ok(db.open(&dir)?)).await?);
        let settings = {
            let s = store.clone();
            blocking(move || Ok(s.settings()?)).await?
        };
        if settings.instance != *loaded.ca.instance() {
            return Err(RegistryError::invalid(format!(
                "the store is for instance {} but the CA for {}",
                settings.instance,
                loaded.ca.instance()
            )));
        }
        let keys = key_fingerprints(&opts.dir)?;
        {
            let s = store.clone();
            blocking(move || Ok(s.check_keys(&keys)?)).await?;
        }
        let ca = Arc::new(loaded.ca);
        let publisher = Arc::new(Publisher::new(
            store.clone(),
            loaded.conf_signer,
            ca.certificate().to_vec(),
            settings.clone(),
            Timing {
                interval: opts.publish_interval,
                follow: opts.follow_interval,
                lease: opts.lease,
            },
            opts.node.clone().unwrap_or_else(|| node_name(&opts.dir)),
        ));
        {
            let p = publisher.clone();
            blocking(move || p.start_up()).await?;
        }
        let publishing = tokio::spawn(publisher.clone().run());

        let tls_config =
            tls::server_config_optional_client_auth(&loaded.tls, &[ca.certificate().clone()])?;
        let listener = TcpListener::bind(opts.listen).await.map_err(|e| {
            RegistryError::Unavailable(format!("cannot listen on {}: {e}", opts.listen))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let incoming = net::tls_incoming(listener, Arc::new(tls_config));

        let operator = OperatorApi::new(
            store.clone(),
            ca.clone(),
            publisher.clone(),
            settings.instance.clone(),
            opts.cert_validity,
        );
        let registration = Registration::new(
            store.clone(),
            ca.clone(),
            publisher.clone(),
            settings.instance.clone(),
            settings.auto_approve,
            opts.cert_validity,
        );
        let distribution = Distribution::new(publisher.clone());
        let catalogue = crate::catalogue::Catalogue::new(
            store.clone(),
            publisher.clone(),
            settings.instance.clone(),
        );
        let witness = Witness::new(store.clone(), publisher.clone(), opts.checkpoint_max_age);
        let refusals = Arc::new(RefusalCounts::default());
        let throttle = ThrottleLayer(Arc::new(Throttle::new(
            opts.throttle,
            refusals.clone(),
            Arc::new(Refusals::new(store.clone())),
        )));
        let admin = match opts.admin_listen {
            Some(a) => Some(
                crate::admin::Admin::new(
                    refusals.clone(),
                    publisher.clone(),
                    store.clone(),
                    Duration::from_secs(settings.configuration_validity_secs.into()),
                )
                .start(a)
                .await
                .map_err(|e| {
                    RegistryError::Unavailable(format!("cannot serve the admin port on {a}: {e}"))
                })?,
            ),
            None => None,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .timeout(REQUEST_TIMEOUT)
                .layer(throttle)
                .add_service(RegistryOperatorServer::new(operator))
                .add_service(RegistrationServer::new(registration))
                .add_service(ConfigurationDistributionServer::new(distribution))
                .add_service(ServiceCatalogueServer::new(catalogue))
                .add_service(CheckpointWitnessServer::new(witness))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        tracing::info!(%addr, instance = %settings.instance, auto_approve = settings.auto_approve, "registry serving");
        Ok(Registry {
            addr,
            refusals,
            admin,
            store,
            publisher,
            shutdown: Some(tx),
            serving,
            publishing,
            _home: home,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store (for inspection by tests and tools on the registry host).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Refused calls by method and code (the registry's refusal metrics).
    pub fn refusals(&self) -> &Arc<RefusalCounts> {
        &self.refusals
    }

    /// Where the admin port (`/health`, `/metrics`) is served, if anywhere.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| *a)
    }

    /// The publisher.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// Stops accepting calls, lets running ones finish, stops publishing.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.serving).await;
        self.publishing.abort();
        // Another node takes over at its next look at the store, not when
        // the lease expires.
        let p = self.publisher.clone();
        if let Err(e) = blocking(move || p.release()).await {
            tracing::warn!(error = %e, "the publisher lease was not given up; it expires on its own");
        }
        if let Some((_, m)) = self.admin.take() {
            m.abort();
        }
    }

    /// Serves until the server fails or `signal` resolves.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) {
        tokio::select! {
            r = &mut self.serving => {
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "registry server failed");
                }
            }
            _ = signal => {}
        }
        self.shutdown().await;
    }
}

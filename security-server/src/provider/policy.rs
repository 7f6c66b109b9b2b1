//! What the server's operator decided: access rights, backend addresses
//! and the information systems' pinned certificates, read from the server's store and reloaded when they change
//! (the CLI changes them from another process; a running server picks the
//! change up within [`RELOAD_INTERVAL`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::SubsystemId;
use tonic::transport::{Channel, Endpoint};

use crate::access::AccessRule;
use crate::store::{Backend, ServerStore, StoreError};

/// How often the store is checked for changed rules or backends.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A backend and its connection.
#[derive(Debug, Clone)]
pub struct BackendConn {
    pub backend: Backend,
    pub channel: Channel,
}

/// Rules and backends at one moment.
#[derive(Debug, Default)]
pub struct Policy {
    pub version: u64,
    pub rules: Vec<AccessRule>,
    backends: HashMap<(SubsystemId, String), BackendConn>,
    /// Information systems' certificates pinned per client subsystem.
    client_pins: HashMap<Fingerprint, HashSet<SubsystemId>>,
    /// Subsystems whose exchanges' bodies are logged (encrypted).
    log_bodies: HashSet<SubsystemId>,
}

impl Policy {
    /// Whether `subsystem` opted in to having its exchanges' bodies logged.
    pub fn logs_bodies(&self, subsystem: &SubsystemId) -> bool {
        self.log_bodies.contains(subsystem)
    }

    /// Whether any subsystem pins the certificate `fp`.
    pub fn is_pinned(&self, fp: &Fingerprint) -> bool {
        self.client_pins.contains_key(fp)
    }

    /// Whether the certificate `fp` is pinned for `subsystem`.
    pub fn pinned_for(&self, fp: &Fingerprint, subsystem: &SubsystemId) -> bool {
        self.client_pins
            .get(fp)
            .is_some_and(|s| s.contains(subsystem))
    }

    pub fn backend(&self, provider: &SubsystemId, service: &str) -> Option<&BackendConn> {
        self.backends.get(&(provider.clone(), service.to_owned()))
    }
}

/// The current policy, replaceable.
#[derive(Debug, Clone)]
pub struct Policies {
    store: Arc<ServerStore>,
    current: Arc<RwLock<Arc<Policy>>>,
}

impl Policies {
    pub fn load(store: Arc<ServerStore>) -> Result<Self, StoreError> {
        let p = Policies {
            store,
            current: Arc::new(RwLock::new(Arc::new(Policy::default()))),
        };
        p.reload(None)?;
        Ok(p)
    }

    /// The store the policy is read from (in a cluster, the one the
    /// nodes share: the provider's replay check asks it too).
    pub fn store(&self) -> &Arc<ServerStore> {
        &self.store
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the store if its rules version moved (or always, with `None`).
    pub fn reload(&self, known: Option<u64>) -> Result<bool, StoreError> {
        let version = self.store.rules_version()?;
        if known == Some(version) {
            return Ok(false);
        }
        let old = self.current();
        let mut backends = HashMap::new();
        for b in self.store.backends()? {
            let key = (b.provider.clone(), b.service.clone());
            // Keep the connection of an unchanged backend.
            let channel = match old.backends.get(&key) {
                Some(c) if c.backend.url == b.url => c.channel.clone(),
                _ => connect(&b)?,
            };
            backends.insert(
                key,
                BackendConn {
                    backend: b,
                    channel,
                },
            );
        }
        let mut client_pins: HashMap<Fingerprint, HashSet<SubsystemId>> = HashMap::new();
        for (subsystem, fp) in self.store.client_pins()? {
            client_pins.entry(fp).or_default().insert(subsystem);
        }
        let policy = Policy {
            version,
            rules: self.store.rules()?,
            backends,
            client_pins,
            log_bodies: self.store.body_logging()?.into_iter().collect(),
        };
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(policy);
        Ok(true)
    }

    /// Reloads on change until dropped.
    pub async fn watch(self) {
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let known = self.current().version;
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload(Some(known))).await {
                Ok(Ok(true)) => tracing::info!("access rights and backends reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "reloading access rights failed"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }
}

fn connect(b: &Backend) -> Result<Channel, StoreError> {
    Ok(Endpoint::from_shared(b.url.clone())
        .map_err(|e| StoreError(format!("backend {}: {e}", b.url)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

//! Builds, signs and versions the global configuration.
//!
//! A new version is published after every change (writes wake the
//! publisher; bursts coalesce into one version) and at least every
//! [`DEFAULT_PUBLISH_INTERVAL`], so a configuration in circulation never
//! comes near its expiry while the registry is up.
//!
//! Several registry nodes may share one store; exactly one publishes: the
//! node holding the store's publisher lease. Each version is recorded with
//! its signed bytes in the transaction that checks the lease and that the
//! version follows the last one ([`Store::record_publication`]), and every
//! node — the publisher too — distributes only what it reads back from the
//! store, so versions never repeat, skip or go back when the lease moves.
//! Every node reads the store each [`Timing::follow`]: a follower picks up
//! new versions, takes the lease when it expires (a publisher that died),
//! and the publisher sees changes applied on other nodes.
//! [`build_configuration`] is the pure part.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_certs::conf::sign_configuration;
use lienthong_certs::signing::Signer;
use lienthong_proto::pb::globalconf::v1 as pb;
use lienthong_proto::pb::identifiers::v1 as idpb;
use prost::Message;
use tokio::sync::{Notify, watch};

use crate::error::RegistryError;
use crate::model::{InstanceSettings, Snapshot};
use crate::store::{PublicationRecord, Store, StoredPublication};

/// How often a configuration is republished without changes.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(60);
/// How often each node reads the store (new versions, the lease, changes
/// made on other nodes).
pub const DEFAULT_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How long the publisher lease lasts unless its holder renews it: how long
/// a dead publisher's versions stop before another node publishes.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// How long a configuration stays valid after creation.
pub const DEFAULT_CONFIGURATION_VALIDITY_SECS: u32 = 600;
/// How often security servers should poll.
pub const DEFAULT_POLL_INTERVAL_SECS: u32 = 60;
/// How long a write waits for the version that includes it.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// One published configuration.
#[derive(Debug)]
pub struct Publication {
    pub version: u64,
    /// The store change sequence number the configuration reflects.
    pub seq: u64,
    pub created_at_ms: i64,
    pub signed: pb::SignedConfiguration,
}

/// The global configuration for `snapshot`: pure, deterministic given its
/// inputs.
pub fn build_configuration(
    snapshot: &Snapshot,
    settings: &InstanceSettings,
    version: u64,
    now_ms: i64,
) -> pb::GlobalConfiguration {
    let validity_ms = i64::from(settings.configuration_validity_secs) * 1000;
    pb::GlobalConfiguration {
        instance: settings.instance.to_string(),
        version,
        created_at_unix_ms: now_ms,
        expires_at_unix_ms: now_ms + validity_ms,
        members: snapshot
            .members
            .iter()
            .map(|m| pb::Member {
                id: Some((&m.id).into()),
                name: m.name.clone(),
                subsystem_codes: m.subsystems.clone(),
                signing_certificates: m.signing_certs.clone(),
            })
            .collect(),
        security_servers: snapshot
            .servers
            .iter()
            .map(|s| pb::SecurityServer {
                id: Some((&s.id).into()),
                address: s.address.clone(),
                auth_certificate_sha256: s.auth_certs.iter().map(|f| f.0.to_vec()).collect(),
                clients: s.clients.iter().map(idpb::SubsystemId::from).collect(),
            })
            .collect(),
        services: snapshot
            .services
            .iter()
            .map(|s| pb::Service {
                id: Some((&s.id).into()),
                description: s.description.clone(),
                personal_data: s.personal_data,
                descriptor_set_sha256: s.descriptor_sha256.map(|d| d.to_vec()).unwrap_or_default(),
            })
            .collect(),
        global_groups: snapshot
            .groups
            .iter()
            .map(|g| pb::GlobalGroup {
                id: Some((&g.id).into()),
                description: g.description.clone(),
                subsystems: g.members.iter().map(idpb::SubsystemId::from).collect(),
            })
            .collect(),
        trusted_ca_certificates: snapshot.trusted_cas.clone(),
        revoked_certificate_sha256: snapshot.revoked.iter().map(|f| f.0.to_vec()).collect(),
        trace_portal: snapshot.trace_portal.as_ref().map(Into::into),
        settings: Some(pb::InstanceSettings {
            configuration_validity_seconds: settings.configuration_validity_secs,
            poll_interval_seconds: settings.poll_interval_secs,
            withholding_grants: snapshot
                .withholding_grants
                .iter()
                .map(|g| pb::WithholdingGrant {
                    group: Some((&g.group).into()),
                    max_duration_seconds: (g.max_duration_ms / 1000) as u64,
                    valid_from_unix_ms: g.valid_from_ms,
                    valid_until_unix_ms: g.valid_until_ms.unwrap_or(0),
                })
                .collect(),
            data_subject_formats: snapshot
                .data_subject_formats
                .iter()
                .map(|(name, mask)| pb::DataSubjectFormat {
                    name: name.clone(),
                    mask: mask.clone(),
                })
                .collect(),
        }),
        registry_addresses: settings.addresses.clone(),
    }
}

/// When a node publishes and reads the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Republish at least this often.
    /// # Default
    /// 60 s ([`DEFAULT_PUBLISH_INTERVAL`]).
    pub interval: Duration,
    /// Read the store this often.
    /// # Default
    /// 1 s ([`DEFAULT_FOLLOW_INTERVAL`]).
    pub follow: Duration,
    /// The publisher lease's length; its holder renews it every third of it.
    /// # Default
    /// 15 s ([`DEFAULT_LEASE`]).
    pub lease: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: DEFAULT_PUBLISH_INTERVAL,
            follow: DEFAULT_FOLLOW_INTERVAL,
            lease: DEFAULT_LEASE,
        }
    }
}

/// This node's name in the lease and the logs: the host and the registry's
/// home directory. A node restarted after a crash takes its own lease back
/// at once; two nodes never share a name unless they share a home (which
/// the store's version check still keeps from publishing one version twice).
pub fn node_name(home: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "registry".into());
    format!("{host}:{}", home.display())
}

/// Publishes configurations (on the node holding the lease) and hands out
/// the current one (on every node).
pub struct Publisher {
    store: Arc<dyn Store>,
    signer: Signer,
    /// The instance CA, always trusted in addition to external CAs.
    ca_der: Vec<u8>,
    settings: InstanceSettings,
    timing: Timing,
    node: String,
    current: watch::Sender<Option<Arc<Publication>>>,
    wake: Notify,
    /// Serialises this node's publications and lease renewals.
    publishing: Mutex<Lease>,
    /// Whether this node held the lease when it last looked.
    leading: AtomicBool,
}

/// What this node knows of its lease.
#[derive(Debug, Default)]
struct Lease {
    renewed: Option<Instant>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("instance", &self.settings.instance)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        store: Arc<dyn Store>,
        signer: Signer,
        ca_der: Vec<u8>,
        settings: InstanceSettings,
        timing: Timing,
        node: String,
    ) -> Self {
        Publisher {
            store,
            signer,
            ca_der,
            settings,
            timing,
            node,
            current: watch::Sender::new(None),
            wake: Notify::new(),
            publishing: Mutex::new(Lease::default()),
            leading: AtomicBool::new(false),
        }
    }

    /// The configuration being distributed, if one was published.
    pub fn current(&self) -> Option<Arc<Publication>> {
        self.current.borrow().clone()
    }

    /// This node's name in the lease.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node held the publisher lease when it last looked.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        match self.publishing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes or renews the lease when a third of it has passed since this
    /// node last did (a follower asks every time); gives it up when the
    /// store's schema is newer than this program. Blocking.
    fn hold_lease(&self, lease: &mut Lease) -> Result<bool, RegistryError> {
        if let Err(e) = self.store.schema_is_known() {
            // Another node was upgraded and migrated the store: this one
            // keeps serving what the store holds, and publishes nothing.
            lease.renewed = None;
            self.store.release_lease(&self.node)?;
            self.set_leading(false);
            return Err(e.into());
        }
        let fresh = lease
            .renewed
            .is_some_and(|at| at.elapsed() < self.timing.lease / 3);
        if fresh {
            return Ok(true);
        }
        let held = self.store.take_lease(&self.node, self.timing.lease)?;
        lease.renewed = held.then(Instant::now);
        self.set_leading(held);
        Ok(held)
    }

    fn set_leading(&self, now: bool) {
        let was = self.leading.swap(now, Ordering::SeqCst);
        match (was, now) {
            (false, true) => {
                tracing::info!(node = %self.node, "this registry node publishes the configuration now (publisher lease taken)")
            }
            (true, false) => {
                tracing::warn!(node = %self.node, "this registry node no longer holds the publisher lease; another node publishes")
            }
            _ => {}
        }
    }

    /// Builds, signs and records a new version, then distributes it as the
    /// store holds it. Refused when another node holds the lease. Blocking
    /// (store and signing): call from a blocking context.
    pub fn publish_now(&self) -> Result<Arc<Publication>, RegistryError> {
        let mut lease = self.lease();
        if !self.hold_lease(&mut lease)? {
            return Err(RegistryError::Unavailable(format!(
                "registry node {} does not hold the publisher lease; the node that does publishes",
                self.node
            )));
        }
        let mut snapshot = self.store.snapshot()?;
        if !snapshot.trusted_cas.contains(&self.ca_der) {
            snapshot.trusted_cas.insert(0, self.ca_der.clone());
        }
        let last = self.store.last_publication()?;
        let version = last.as_ref().map_or(1, |p| p.version + 1);
        // Never go back in time either, even if the clock did.
        let now = crate::store::now_ms().max(last.as_ref().map_or(0, |p| p.created_at_ms));
        let conf = build_configuration(&snapshot, &self.settings, version, now);
        let signed = sign_configuration(&conf, &self.signer)?;
        let record = PublicationRecord {
            version,
            created_at_ms: now,
            seq: snapshot.seq,
        };
        if let Err(e) = self
            .store
            .record_publication(&self.node, &record, &signed.encode_to_vec())
        {
            // The lease expired under us (or the store says so): follow.
            lease.renewed = None;
            self.set_leading(false);
            return Err(e.into());
        }
        tracing::info!(
            version,
            bytes = signed.configuration.len(),
            members = conf.members.len(),
            services = conf.services.len(),
            node = %self.node,
            "global configuration published"
        );
        drop(lease);
        self.follow_store()?;
        self.current()
            .filter(|p| p.version >= version)
            .ok_or_else(|| {
                RegistryError::Unavailable(format!(
                    "configuration version {version} was recorded but cannot be read back"
                ))
            })
    }

    /// At a node's start: publishes a first version (above any before) when
    /// this node holds the lease, else distributes the newest version in
    /// the store (none yet when the publishing node has not published).
    /// Blocking.
    pub fn start_up(&self) -> Result<(), RegistryError> {
        let leads = {
            let mut lease = self.lease();
            self.hold_lease(&mut lease)?
        };
        if leads {
            self.publish_now()?;
        } else {
            tracing::info!(node = %self.node, "another registry node publishes; this one distributes what it publishes");
            self.follow_store()?;
        }
        Ok(())
    }

    /// Distributes the newest version the store holds, if it is newer than
    /// the one distributed now. Blocking.
    pub fn follow_store(&self) -> Result<(), RegistryError> {
        let held = self.current().map_or(0, |p| p.version);
        let Some(StoredPublication { record, signed }) = self.store.publication_after(held)? else {
            return Ok(());
        };
        let signed = pb::SignedConfiguration::decode(signed.as_slice()).map_err(|e| {
            RegistryError::Unavailable(format!(
                "configuration version {} in the store does not decode: {e}",
                record.version
            ))
        })?;
        self.current.send_if_modified(|current| {
            // Another caller may have moved on meanwhile: never go back.
            if current
                .as_ref()
                .is_some_and(|c| c.version >= record.version)
            {
                return false;
            }
            *current = Some(Arc::new(Publication {
                version: record.version,
                seq: record.seq,
                created_at_ms: record.created_at_ms,
                signed,
            }));
            true
        });
        Ok(())
    }

    /// One round of [`run`](Self::run): holds the lease if it can and then
    /// publishes when the store changed since the version distributed (on
    /// any node) or that version is due; distributes the newest version in
    /// the store. Blocking.
    pub fn tick(&self) -> Result<(), RegistryError> {
        self.follow_store()?;
        let leads = {
            let mut lease = self.lease();
            self.hold_lease(&mut lease)?
        };
        if !leads {
            return Ok(());
        }
        let due = match self.current() {
            None => true,
            Some(p) => {
                let age_ms = crate::store::now_ms().saturating_sub(p.created_at_ms);
                self.store.seq()? > p.seq || age_ms >= self.timing.interval.as_millis() as i64
            }
        };
        if due {
            self.publish_now()?;
        }
        Ok(())
    }

    /// Gives the lease up (a node stopping), so another node publishes at
    /// its next look at the store. Blocking.
    pub fn release(&self) -> Result<(), RegistryError> {
        let mut lease = self.lease();
        self.store.release_lease(&self.node)?;
        lease.renewed = None;
        self.set_leading(false);
        Ok(())
    }

    /// Signs `digest` with the configuration key, which also countersigns
    /// the servers' message-log checkpoints (servers and portals trust it
    /// through the anchor).
    pub fn countersign(
        &self,
        digest: &[u8; 32],
    ) -> Result<lienthong_proto::pb::exchange::v1::Signature, RegistryError> {
        Ok(self.signer.sign_digest(digest)?)
    }

    /// Asks for a new version soon (after a change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until a version reflecting change `seq` is distributed (by
    /// this node, whichever node publishes it); returns its number (`None`
    /// if that takes longer than 30 s).
    pub async fn version_including(&self, seq: u64) -> Option<u64> {
        self.wake();
        let mut rx = self.current.subscribe();
        let wait = rx.wait_for(|p| p.as_ref().is_some_and(|p| p.seq >= seq));
        match tokio::time::timeout(PUBLISH_WAIT, wait).await {
            Ok(Ok(p)) => p.as_ref().map(|p| p.version),
            _ => None,
        }
    }

    /// Runs [`tick`](Self::tick) on every wake-up and every
    /// [`Timing::follow`], until the task is dropped. A failed round is
    /// retried at the next; servers keep the previous version meanwhile.
    /// A failure is logged when it starts, changes, or once a minute while
    /// it lasts (the store being down must not flood the log), and the
    /// recovery once.
    pub async fn run(self: Arc<Self>) {
        let mut failing = Failing::default();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.timing.follow.min(self.timing.interval)) => {}
            }
            let this = self.clone();
            let outcome = match tokio::task::spawn_blocking(move || this.tick()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(PublishError::Round(e)),
                Err(e) => Err(PublishError::Task(e)),
            };
            failing.log(&self.node, outcome);
        }
    }
}

/// How often a lasting failure is logged again.
const REPEAT_FAILURE: Duration = Duration::from_secs(60);

/// Why a publishing round failed.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Round(RegistryError),
    #[error("publisher task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// The publisher's failures as logged.
#[derive(Debug, Default)]
struct Failing {
    /// The failure logged last, and when.
    last: Option<(String, Instant)>,
}

impl Failing {
    /// Logs `outcome` if it is news (a failure that reads as the last one
    /// is not, for a minute); returns whether it did.
    fn log<E: std::fmt::Display>(&mut self, node: &str, outcome: Result<(), E>) -> bool {
        match (outcome.map_err(|e| e.to_string()), &self.last) {
            (Ok(()), None) => false,
            (Ok(()), Some(_)) => {
                tracing::info!(node, "publishing and reading the configuration work again");
                self.last = None;
                true
            }
            (Err(e), Some((same, at))) if *same == e && at.elapsed() < REPEAT_FAILURE => false,
            (Err(e), _) => {
                tracing::error!(error = %e, node, "publishing or reading the configuration failed; retrying at each look at the store");
                self.last = Some((e, Instant::now()));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;

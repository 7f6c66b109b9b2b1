//! Builds, signs and versions the global configuration.
//!
//! A new version is published after every change (writes wake the
//! publisher; bursts coalesce into one version) and at least every
//! [`DEFAULT_PUBLISH_INTERVAL`], so a configuration in circulation never
//! comes near its expiry while the registry is up. Each version is recorded
//! in the store *before* it is distributed, so versions keep increasing
//! across restarts. [`build_configuration`] is the pure part.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_certs::conf::sign_configuration;
use lienthong_certs::signing::Signer;
use lienthong_proto::pb::globalconf::v1 as pb;
use lienthong_proto::pb::identifiers::v1 as idpb;
use tokio::sync::{Notify, watch};

use crate::error::RegistryError;
use crate::model::{InstanceSettings, Snapshot};
use crate::store::{PublicationRecord, Store};

/// How often a configuration is republished without changes.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(60);
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

/// Publishes configurations and hands out the current one.
pub struct Publisher {
    store: Arc<dyn Store>,
    signer: Signer,
    /// The instance CA, always trusted in addition to external CAs.
    ca_der: Vec<u8>,
    settings: InstanceSettings,
    interval: Duration,
    current: watch::Sender<Option<Arc<Publication>>>,
    wake: Notify,
    /// Serialises publications so versions are assigned one at a time.
    publishing: Mutex<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("instance", &self.settings.instance)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        store: Arc<dyn Store>,
        signer: Signer,
        ca_der: Vec<u8>,
        settings: InstanceSettings,
        interval: Duration,
    ) -> Self {
        Publisher {
            store,
            signer,
            ca_der,
            settings,
            interval,
            current: watch::Sender::new(None),
            wake: Notify::new(),
            publishing: Mutex::new(()),
        }
    }

    /// The configuration being distributed, if one was published.
    pub fn current(&self) -> Option<Arc<Publication>> {
        self.current.borrow().clone()
    }

    /// Builds, signs, records and distributes a new version. Blocking (store
    /// and signing): call from a blocking context.
    pub fn publish_now(&self) -> Result<Arc<Publication>, RegistryError> {
        let _one_at_a_time = match self.publishing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
        self.store.record_publication(&PublicationRecord {
            version,
            created_at_ms: now,
            seq: snapshot.seq,
        })?;
        let publication = Arc::new(Publication {
            version,
            seq: snapshot.seq,
            created_at_ms: now,
            signed,
        });
        tracing::info!(
            version,
            bytes = publication.signed.configuration.len(),
            members = conf.members.len(),
            services = conf.services.len(),
            "global configuration published"
        );
        self.current.send_replace(Some(publication.clone()));
        Ok(publication)
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

    /// Waits until a version reflecting change `seq` is published; returns
    /// its number (`None` if that takes longer than 30 s).
    pub async fn version_including(&self, seq: u64) -> Option<u64> {
        self.wake();
        let mut rx = self.current.subscribe();
        let wait = rx.wait_for(|p| p.as_ref().is_some_and(|p| p.seq >= seq));
        match tokio::time::timeout(PUBLISH_WAIT, wait).await {
            Ok(Ok(p)) => p.as_ref().map(|p| p.version),
            _ => None,
        }
    }

    /// Publishes on every wake-up and every interval, until the task is
    /// dropped. A failed publication is logged and retried at the next tick;
    /// servers keep the previous version meanwhile.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.publish_now()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "publishing the configuration failed"),
                Err(e) => tracing::error!(error = %e, "publisher task failed"),
            }
        }
    }
}

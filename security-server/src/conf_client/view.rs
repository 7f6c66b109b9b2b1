//! The global configuration indexed for the data path: every question an
//! exchange asks of it is one hash lookup. Built once per version; the
//! identifiers are parsed here, and signing certificates verified here
//! (chain and key usage), so nothing on the data path parses certificates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::signing::VerifyingKey;
use lienthong_certs::tls::Trust;
use lienthong_certs::{CertError, Fingerprint, verify};
use lienthong_proto::catalogue::DescriptorSet;
use lienthong_proto::fields::{DataSubjectFormat, DataSubjectFormats, FieldError};
use lienthong_proto::id::{GlobalGroupId, IdError, Instance, MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::time::{unix_ms, unix_secs};
use rustls_pki_types::CertificateDer;

/// Why a verified configuration cannot be used at all (an unreadable
/// entry is skipped instead).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("configuration instance: {0}")]
    Instance(#[source] IdError),
    #[error("trusted CAs: {0}")]
    TrustedCas(#[source] CertError),
    #[error("data-subject formats: {0}")]
    SubjectFormats(#[source] FieldError),
}

/// One security server as the configuration lists it.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    pub id: ServerId,
    pub address: String,
    pub auth_certs: Vec<Fingerprint>,
    pub clients: HashSet<SubsystemId>,
}

/// A service whose protobuf descriptor set the catalogue holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub provider: SubsystemId,
    /// The gRPC service name.
    pub service: String,
    /// SHA-256 of its descriptor set.
    pub sha256: [u8; 32],
}

/// A member's signing certificate, checked once.
#[derive(Debug, Clone)]
pub struct SigningCert {
    pub member: MemberId,
    pub key: VerifyingKey,
    /// Validity window, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The configuration, indexed.
#[derive(Debug, Clone)]
pub struct ConfView {
    pub instance: Instance,
    pub version: u64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub poll_interval_secs: u32,
    pub registry_addresses: Vec<String>,
    pub trace_portal: Option<SubsystemId>,
    withholding: Vec<crate::withholding::Grant>,
    subject_formats: DataSubjectFormats,
    /// Services whose calls must name a data subject.
    personal_data: HashSet<(SubsystemId, String)>,
    servers: HashMap<ServerId, ServerEntry>,
    server_by_cert: HashMap<Fingerprint, ServerId>,
    /// Which servers serve each subsystem, in configuration order.
    servers_of: HashMap<SubsystemId, Vec<ServerId>>,
    /// (provider subsystem, gRPC service name).
    services: HashSet<(SubsystemId, String)>,
    /// The services with a descriptor set in the catalogue.
    described: Vec<Described>,
    /// The catalogue's descriptor sets this server holds, by digest.
    descriptor_sets: Arc<BTreeMap<[u8; 32], DescriptorSet>>,
    signing: HashMap<Fingerprint, SigningCert>,
    groups_of: HashMap<SubsystemId, HashSet<GlobalGroupId>>,
    revoked: HashSet<Fingerprint>,
    trusted_cas: Vec<CertificateDer<'static>>,
    /// Entries that could not be read (logged once per version).
    pub skipped: Vec<String>,
}

impl ConfView {
    /// Indexes a verified configuration. Entries with unreadable identifiers
    /// or certificates are skipped (and listed in `skipped`) rather than
    /// failing the whole document: one bad entry must not stop an instance.
    pub fn build(conf: &GlobalConfiguration, now: SystemTime) -> Result<Self, ViewError> {
        let instance: Instance = conf.instance.parse().map_err(ViewError::Instance)?;
        let mut skipped = Vec::new();
        let trusted_cas: Vec<CertificateDer<'static>> = conf
            .trusted_ca_certificates
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let anchors = verify::anchors(&trusted_cas).map_err(ViewError::TrustedCas)?;
        let revoked: HashSet<Fingerprint> = conf
            .revoked_certificate_sha256
            .iter()
            .filter_map(|f| Fingerprint::from_slice(f))
            .collect();

        let mut signing = HashMap::new();
        for m in &conf.members {
            let Some(member) = m.id.as_ref().and_then(|i| MemberId::try_from(i).ok()) else {
                skipped.push("a member with an unreadable id".into());
                continue;
            };
            for der in &m.signing_certificates {
                let fp = Fingerprint::of(der);
                if revoked.contains(&fp) {
                    continue;
                }
                let cert = CertificateDer::from(der.as_slice());
                let checked = verify::verify_signing_cert(&cert, &anchors, now, Some(&member))
                    .and_then(|_| verify::parse(der))
                    .and_then(|info| Ok((info, VerifyingKey::from_cert(der)?)));
                match checked {
                    Ok((info, key)) => {
                        signing.insert(
                            fp,
                            SigningCert {
                                member: member.clone(),
                                key,
                                not_before: info.not_before,
                                not_after: info.not_after,
                            },
                        );
                    }
                    Err(e) => skipped.push(format!("signing certificate {fp} of {member}: {e}")),
                }
            }
        }

        let mut servers = HashMap::new();
        let mut server_by_cert = HashMap::new();
        let mut servers_of: HashMap<SubsystemId, Vec<ServerId>> = HashMap::new();
        for s in &conf.security_servers {
            let Some(id) = s.id.as_ref().and_then(|i| ServerId::try_from(i).ok()) else {
                skipped.push("a security server with an unreadable id".into());
                continue;
            };
            let auth_certs: Vec<Fingerprint> = s
                .auth_certificate_sha256
                .iter()
                .filter_map(|f| Fingerprint::from_slice(f))
                .filter(|f| !revoked.contains(f))
                .collect();
            for fp in &auth_certs {
                server_by_cert.insert(*fp, id.clone());
            }
            let clients: HashSet<SubsystemId> = s
                .clients
                .iter()
                .filter_map(|c| SubsystemId::try_from(c).ok())
                .collect();
            for c in &clients {
                servers_of.entry(c.clone()).or_default().push(id.clone());
            }
            servers.insert(
                id.clone(),
                ServerEntry {
                    id,
                    address: s.address.clone(),
                    auth_certs,
                    clients,
                },
            );
        }

        let mut services = HashSet::new();
        let mut personal_data = HashSet::new();
        let mut described = Vec::new();
        for s in &conf.services {
            let Some((p, provider)) =
                s.id.as_ref()
                    .and_then(|p| Some((p, SubsystemId::try_from(p.provider.as_ref()?).ok()?)))
            else {
                skipped.push("a service with an unreadable id".into());
                continue;
            };
            let key = (provider, p.service_code.clone());
            if s.personal_data {
                personal_data.insert(key.clone());
            }
            if !s.descriptor_set_sha256.is_empty() {
                match <[u8; 32]>::try_from(s.descriptor_set_sha256.as_slice()) {
                    Ok(sha256) => described.push(Described {
                        provider: key.0.clone(),
                        service: key.1.clone(),
                        sha256,
                    }),
                    Err(_) => skipped.push(format!(
                        "the descriptor set digest of {}/{} ({} bytes, not 32)",
                        key.0,
                        key.1,
                        s.descriptor_set_sha256.len()
                    )),
                }
            }
            services.insert(key);
        }

        let settings = conf.settings.clone().unwrap_or_default();
        let mut withholding = Vec::new();
        for g in &settings.withholding_grants {
            match crate::withholding::Grant::try_from(g) {
                Ok(g) => withholding.push(g),
                Err(e) => skipped.push(format!("a withholding grant: {e}")),
            }
        }
        // An instance's formats are all or nothing: a partial list would
        // refuse ids the registry meant to accept.
        let subject_formats = settings
            .data_subject_formats
            .iter()
            .map(|f| DataSubjectFormat::new(&f.name, &f.mask))
            .collect::<Result<Vec<_>, _>>()
            .and_then(DataSubjectFormats::new)
            .map_err(ViewError::SubjectFormats)?;

        let mut groups_of: HashMap<SubsystemId, HashSet<GlobalGroupId>> = HashMap::new();
        for g in &conf.global_groups {
            let Some(gid) = g.id.as_ref().and_then(|i| GlobalGroupId::try_from(i).ok()) else {
                continue;
            };
            for s in &g.subsystems {
                if let Ok(sub) = SubsystemId::try_from(s) {
                    groups_of.entry(sub).or_default().insert(gid.clone());
                }
            }
        }

        Ok(ConfView {
            instance,
            version: conf.version,
            created_at_ms: conf.created_at_unix_ms,
            expires_at_ms: conf.expires_at_unix_ms,
            poll_interval_secs: conf
                .settings
                .as_ref()
                .map_or(60, |s| s.poll_interval_seconds)
                .clamp(5, 3600),
            registry_addresses: conf.registry_addresses.clone(),
            trace_portal: conf
                .trace_portal
                .as_ref()
                .and_then(|p| SubsystemId::try_from(p).ok()),
            withholding,
            subject_formats,
            personal_data,
            servers,
            server_by_cert,
            servers_of,
            services,
            described,
            descriptor_sets: Arc::default(),
            signing,
            groups_of,
            revoked,
            trusted_cas,
            skipped,
        })
    }

    /// Every (provider subsystem, gRPC service name) the configuration
    /// offers, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &(SubsystemId, String)> {
        self.services.iter()
    }

    /// The services whose descriptor sets the configuration names, in
    /// configuration order.
    pub fn described(&self) -> &[Described] {
        &self.described
    }

    /// The descriptor set named `sha256`, when the configuration client
    /// holds it (downloaded and checked against the digest).
    pub fn descriptor_set(&self, sha256: &[u8; 32]) -> Option<&DescriptorSet> {
        self.descriptor_sets.get(sha256)
    }

    /// The digests the configuration names whose sets are not held, each
    /// once.
    pub fn missing_descriptor_sets(&self) -> Vec<[u8; 32]> {
        let mut missing: Vec<[u8; 32]> = self
            .described
            .iter()
            .map(|d| d.sha256)
            .filter(|d| !self.descriptor_sets.contains_key(d))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// This view holding `sets` (those of them that it names).
    pub fn with_descriptor_sets(mut self, sets: &BTreeMap<[u8; 32], DescriptorSet>) -> Self {
        let held: BTreeMap<[u8; 32], DescriptorSet> = self
            .described
            .iter()
            .filter_map(|d| Some((d.sha256, sets.get(&d.sha256)?.clone())))
            .collect();
        self.descriptor_sets = Arc::new(held);
        self
    }

    /// Whether the configuration may no longer be used at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_ms(now) >= self.expires_at_ms
    }

    /// Every withholding grant the instance has had, oldest first.
    pub fn withholding_grants(&self) -> &[crate::withholding::Grant] {
        &self.withholding
    }

    /// The accepted forms of a data subject's personal id.
    pub fn subject_formats(&self) -> &DataSubjectFormats {
        &self.subject_formats
    }

    /// Whether calls to `provider`'s `service` must name a data subject.
    pub fn handles_personal_data(&self, provider: &SubsystemId, service: &str) -> bool {
        self.personal_data
            .contains(&(provider.clone(), service.to_owned()))
    }

    /// Every security server of the instance.
    pub fn servers(&self) -> impl Iterator<Item = &ServerEntry> {
        self.servers.values()
    }

    pub fn server(&self, id: &ServerId) -> Option<&ServerEntry> {
        self.servers.get(id)
    }

    /// The server a TLS certificate belongs to (revoked ones belong to none).
    pub fn server_with_cert(&self, fp: &Fingerprint) -> Option<&ServerId> {
        self.server_by_cert.get(fp)
    }

    /// Whether `server` serves `subsystem` (as client and as provider).
    pub fn serves(&self, server: &ServerId, subsystem: &SubsystemId) -> bool {
        self.servers
            .get(server)
            .is_some_and(|s| s.clients.contains(subsystem))
    }

    /// Whether the subsystem appears anywhere in the configuration.
    pub fn knows_subsystem(&self, s: &SubsystemId) -> bool {
        self.servers_of.contains_key(s)
    }

    /// The servers that serve `provider`, in configuration order.
    pub fn servers_of(&self, provider: &SubsystemId) -> &[ServerId] {
        self.servers_of.get(provider).map_or(&[], Vec::as_slice)
    }

    /// Whether `provider` offers the gRPC service `service`.
    pub fn offers(&self, provider: &SubsystemId, service: &str) -> bool {
        self.services
            .contains(&(provider.clone(), service.to_owned()))
    }

    /// The signing certificate with fingerprint `fp`, if listed, unrevoked
    /// and valid at `now`.
    pub fn signing_cert(&self, fp: &Fingerprint, now: SystemTime) -> Option<&SigningCert> {
        let now = unix_secs(now);
        self.signing
            .get(fp)
            .filter(|c| c.not_before <= now && now <= c.not_after)
    }

    /// The global groups `subsystem` belongs to.
    /// The signing certificates the configuration holds for `member`.
    pub fn signing_certs_of<'a>(
        &'a self,
        member: &'a MemberId,
    ) -> impl Iterator<Item = (&'a Fingerprint, &'a SigningCert)> + 'a {
        self.signing
            .iter()
            .filter(move |(_, c)| &c.member == member)
    }

    pub fn groups_of(&self, subsystem: &SubsystemId) -> Option<&HashSet<GlobalGroupId>> {
        self.groups_of.get(subsystem)
    }

    pub fn is_revoked(&self, fp: &Fingerprint) -> bool {
        self.revoked.contains(fp)
    }

    /// What mutual TLS trusts under this configuration: its CAs, and the
    /// auth certificates of its servers (revoked ones excluded).
    pub fn trust(&self) -> Result<Trust, lienthong_certs::CertError> {
        Ok(
            Trust::new(&self.trusted_cas, self.server_by_cert.keys().copied())?
                .with_revoked(self.revoked.iter().copied()),
        )
    }
}

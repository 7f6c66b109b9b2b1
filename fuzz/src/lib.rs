//! What the fuzz targets share: a fixed instance (CA, registry key,
//! two members with signing keys, their servers) read from `fixtures/`,
//! its global configuration and anchor, and a small reader of fuzz input.
//!
//! The fixtures are committed so that seed inputs signed with them stay
//! valid; `cargo run --example seeds` makes them (if missing) and the seeds.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use lienthong_certs::signing::{Signer, VerifyingKey};
use lienthong_certs::{Fingerprint, PrivateKey};
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::{
    Anchor, GlobalConfiguration, Member, SecurityServer, Service,
};
use lienthong_security_server::conf_client::ConfView;
use lienthong_proto::time::unix_ms;
use rustls_pki_types::{CertificateDer, TrustAnchor};

/// The provider's member, server, subsystem and service.
pub const PROVIDER_MEMBER: &str = "VN/GOV/000102";
pub const PROVIDER_SERVER: &str = "VN/GOV/000102/ss1";
pub const PROVIDER: &str = "VN/GOV/000102/population";
pub const SERVICE: &str = "population.v1.PersonRegistry";
pub const METHOD: &str = "GetPerson";
/// The client's member, server and subsystem.
pub const CLIENT_MEMBER: &str = "VN/GOV/000305";
pub const CLIENT_SERVER: &str = "VN/GOV/000305/ss1";
pub const CLIENT: &str = "VN/GOV/000305/business";

/// The directory of the fixture files.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo run --example seeds` in fuzz/",
            path.display()
        )
    })
}

fn key(name: &str) -> PrivateKey {
    let pem = String::from_utf8(read(name)).expect("a PEM key is text");
    PrivateKey::from_pem(&pem).expect("fixture key")
}

/// The fixed instance.
pub struct Fixture {
    pub ca_cert: Vec<u8>,
    pub registry_cert: Vec<u8>,
    pub registry: Signer,
    /// P-256 signing key of the provider's member.
    pub provider_cert: Vec<u8>,
    pub provider: Signer,
    pub provider_key: VerifyingKey,
    /// Ed25519 signing key of the client's member.
    pub client_cert: Vec<u8>,
    pub client: Signer,
    pub client_key: VerifyingKey,
    /// Auth (TLS) certificate of the provider's server.
    pub auth_cert: Vec<u8>,
    pub anchor: Anchor,
    pub anchors: Vec<TrustAnchor<'static>>,
    pub provider_server: ServerId,
    pub client_server: ServerId,
    pub provider_id: SubsystemId,
    pub client_id: SubsystemId,
}

impl Fixture {
    fn load() -> Self {
        let ca_cert = read("ca.der");
        let registry_cert = read("registry.der");
        let provider_cert = read("provider.der");
        let client_cert = read("client.der");
        let anchors = lienthong_certs::verify::anchors(&[CertificateDer::from(ca_cert.clone())])
            .expect("fixture CA");
        Fixture {
            registry: Signer::new(&key("registry.key.pem"), &registry_cert).expect("signer"),
            provider: Signer::new(&key("provider.key.pem"), &provider_cert).expect("signer"),
            provider_key: VerifyingKey::from_cert(&provider_cert).expect("key"),
            client: Signer::new(&key("client.key.pem"), &client_cert).expect("signer"),
            client_key: VerifyingKey::from_cert(&client_cert).expect("key"),
            auth_cert: read("auth.der"),
            anchor: Anchor {
                instance: "VN".into(),
                registry_addresses: vec!["127.0.0.1:1".into()],
                configuration_signing_certificates: vec![registry_cert.clone()],
                instance_ca_certificate: ca_cert.clone(),
                generated_at_unix_ms: 0,
            },
            anchors,
            provider_server: PROVIDER_SERVER.parse().expect("id"),
            client_server: CLIENT_SERVER.parse().expect("id"),
            provider_id: PROVIDER.parse().expect("id"),
            client_id: CLIENT.parse().expect("id"),
            ca_cert,
            registry_cert,
            provider_cert,
            client_cert,
        }
    }

    /// The instance's configuration, valid for an hour from now.
    pub fn configuration(&self) -> GlobalConfiguration {
        let now = unix_ms(SystemTime::now());
        let member = |id: &str, cert: &[u8]| Member {
            id: Some((&id.parse::<MemberId>().expect("id")).into()),
            name: id.into(),
            subsystem_codes: vec!["population".into(), "business".into()],
            signing_certificates: vec![cert.to_vec()],
        };
        let server = |id: &ServerId, client: &SubsystemId, auth: &[u8]| SecurityServer {
            id: Some(id.into()),
            address: "127.0.0.1:1".into(),
            auth_certificate_sha256: vec![Fingerprint::of(auth).0.to_vec()],
            clients: vec![client.into()],
        };
        GlobalConfiguration {
            instance: "VN".into(),
            version: 7,
            created_at_unix_ms: now - 1000,
            expires_at_unix_ms: now + 3_600_000,
            members: vec![
                member(PROVIDER_MEMBER, &self.provider_cert),
                member(CLIENT_MEMBER, &self.client_cert),
            ],
            security_servers: vec![
                server(&self.provider_server, &self.provider_id, &self.auth_cert),
                server(&self.client_server, &self.client_id, &self.client_cert),
            ],
            services: vec![Service {
                id: Some(lienthong_proto::pb::identifiers::v1::ServiceId {
                    provider: Some((&self.provider_id).into()),
                    service_code: SERVICE.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            trusted_ca_certificates: vec![self.ca_cert.clone()],
            trace_portal: Some((&self.client_id).into()),
            registry_addresses: vec!["127.0.0.1:1".into()],
            ..Default::default()
        }
    }

    /// The configuration indexed, as a server holds it.
    pub fn view(&self) -> ConfView {
        ConfView::build(&self.configuration(), SystemTime::now()).expect("fixture configuration")
    }
}

/// The fixed instance, loaded once.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(Fixture::load)
}

/// Reads fuzz input front to back; past the end, zeros and empty slices.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

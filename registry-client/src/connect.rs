//! Dialling the registry: TLS pinned to the anchor's instance CA, each
//! known address in turn. [`connect`] knows the anchor's addresses alone;
//! [`Registries`] also knows those of the newest verified configuration
//! (where a registry with several nodes, or one that moved, lists them)
//! and tries first the address that answered last.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_certs::net::TlsConnectorService;
use lienthong_certs::tls::{self, Identity};
use lienthong_proto::pb::globalconf::v1::Anchor;
use rustls_pki_types::CertificateDer;
use tonic::transport::{Channel, Endpoint};

use crate::{ClientError, error_chain};

/// How long connecting to one registry address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the first reachable registry address of the anchor. The
/// registry must present a certificate of the anchor's CA naming the host
/// dialled; `identity` (a security server's auth certificate) is presented
/// when given.
pub async fn connect(anchor: &Anchor, identity: Option<&Identity>) -> Result<Channel, ClientError> {
    connect_to(anchor, &anchor.registry_addresses, identity)
        .await
        .map(|(channel, _)| channel)
}

/// Connects to the first reachable of `addresses`, as [`connect`] does;
/// returns the channel and the address that answered.
async fn connect_to(
    anchor: &Anchor,
    addresses: &[String],
    identity: Option<&Identity>,
) -> Result<(Channel, String), ClientError> {
    let ca = CertificateDer::from(anchor.instance_ca_certificate.clone());
    let config = Arc::new(tls::registry_client_config(&ca, identity)?);
    let mut last = String::from("no address");
    let mut mismatch = None;
    for address in addresses {
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(e) => {
                last = format!("{address}: {e}");
                continue;
            }
        };
        let connector = TlsConnectorService::new(config.clone()).with_timeout(CONNECT_TIMEOUT);
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => return Ok((channel, address.clone())),
            Err(e) => {
                let chain = error_chain(&e);
                if is_foreign_certificate(&chain) {
                    mismatch = Some((address.clone(), chain.clone()));
                }
                last = format!("{address}: {chain}");
                tracing::warn!(%address, error = %last, "registry address unreachable");
            }
        }
    }
    if let Some((address, detail)) = mismatch {
        return Err(ClientError::NotThisRegistry { address, detail });
    }
    Err(ClientError::Unreachable {
        addresses: addresses.to_vec(),
        last,
    })
}

/// The order in which to dial a registry (pure): the address that
/// answered last, while either list still names it; then the anchor's
/// addresses; then those only the configuration lists. Each once.
pub fn dial_order(
    last_good: Option<&str>,
    anchor: &[String],
    configuration: &[String],
) -> Vec<String> {
    let known = |a: &str| anchor.iter().chain(configuration).any(|k| k == a);
    let mut order: Vec<String> = last_good
        .filter(|a| known(a))
        .map(str::to_owned)
        .into_iter()
        .collect();
    for a in anchor.iter().chain(configuration) {
        if !order.contains(a) {
            order.push(a.clone());
        }
    }
    order
}

/// Every address a party knows its registry at, for calls that must fail
/// over between a registry's nodes: the anchor's, and those of the newest
/// configuration it verified ([`learn`](Self::learn)). The address that
/// answered last is dialled first next time, so a dead node costs its
/// connect timeout once, not at every call.
#[derive(Debug)]
pub struct Registries {
    anchor: Anchor,
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    configuration: Vec<String>,
    last_good: Option<String>,
}

impl Registries {
    /// The registry of `anchor`, known by the anchor's addresses until a
    /// configuration names more.
    pub fn new(anchor: Anchor) -> Self {
        Registries {
            anchor,
            known: Mutex::new(Known::default()),
        }
    }

    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        match self.known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes the registry addresses of a configuration verified against
    /// the anchor (its signature makes them as trustworthy as the anchor's;
    /// TLS is pinned to the anchor's CA either way).
    pub fn learn(&self, addresses: &[String]) {
        self.known().configuration = addresses.to_vec();
    }

    /// The addresses in the order the next call dials them.
    pub fn addresses(&self) -> Vec<String> {
        let k = self.known();
        dial_order(
            k.last_good.as_deref(),
            &self.anchor.registry_addresses,
            &k.configuration,
        )
    }

    /// Connects to the first reachable address, as [`connect`] does, and
    /// remembers it.
    pub async fn connect(&self, identity: Option<&Identity>) -> Result<Channel, ClientError> {
        let (channel, address) = connect_to(&self.anchor, &self.addresses(), identity).await?;
        self.known().last_good = Some(address);
        Ok(channel)
    }
}

/// Whether a connection failed because the server's certificate does not
/// chain to the anchor's CA (rustls names it so), not for lack of a server.
fn is_foreign_certificate(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
        && ["BadSignature", "UnknownIssuer", "NotValidForName"]
            .iter()
            .any(|r| chain.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_certificate_of_another_ca_or_name_is_foreign() {
        assert!(is_foreign_certificate(
            "transport error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_foreign_certificate(
            "invalid peer certificate: NotValidForName"
        ));
        assert!(!is_foreign_certificate("invalid peer certificate: Expired"));
        assert!(!is_foreign_certificate("Connection refused (os error 111)"));
    }

    fn list(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_last_address_that_answered_goes_first_then_the_anchor_then_the_configuration() {
        // (last good, anchor, configuration) → the order dialled
        type Case<'a> = (Option<&'a str>, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let table: &[Case<'_>] = &[
            (None, &["a:1"], &[], &["a:1"]),
            (
                None,
                &["a:1", "b:1"],
                &["b:1", "c:1"],
                &["a:1", "b:1", "c:1"],
            ),
            (Some("c:1"), &["a:1"], &["c:1"], &["c:1", "a:1"]),
            (Some("b:1"), &["a:1", "b:1"], &[], &["b:1", "a:1"]),
            // An address neither list names any more is forgotten.
            (Some("gone:1"), &["a:1"], &["c:1"], &["a:1", "c:1"]),
            (None, &["a:1", "a:1"], &["a:1"], &["a:1"]),
        ];
        for (last, anchor, conf, want) in table {
            assert_eq!(
                dial_order(*last, &list(anchor), &list(conf)),
                list(want),
                "last {last:?}, anchor {anchor:?}, configuration {conf:?}"
            );
        }
    }

    #[tokio::test]
    async fn with_no_listener_every_address_is_named_unreachable() {
        // A port just released by the kernel: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = lienthong_certs::PrivateKey::generate(lienthong_certs::KeyAlgorithm::EcdsaP256)
            .unwrap();
        let ca =
            lienthong_certs::InstanceCa::create("VN-TEST", key, lienthong_certs::Validity::days(1))
                .unwrap();
        let anchor = Anchor {
            instance: "VN-TEST".into(),
            registry_addresses: vec![format!("127.0.0.1:{port}"), "not an address".into()],
            instance_ca_certificate: ca.certificate().to_vec(),
            ..Default::default()
        };
        match connect(&anchor, None).await {
            Err(ClientError::Unreachable { addresses, last }) => {
                assert_eq!(addresses, anchor.registry_addresses);
                assert!(last.starts_with("not an address"), "{last}");
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
}

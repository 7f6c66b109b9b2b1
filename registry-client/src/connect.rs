//! Dialling the registry with only the anchor: TLS pinned to the anchor's
//! instance CA, each listed address in turn.

use std::sync::Arc;
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
    let ca = CertificateDer::from(anchor.instance_ca_certificate.clone());
    let config = Arc::new(tls::registry_client_config(&ca, identity)?);
    let mut last = String::from("no address");
    let mut mismatch = None;
    for address in &anchor.registry_addresses {
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(e) => {
                last = format!("{address}: {e}");
                continue;
            }
        };
        let connector = TlsConnectorService::new(config.clone()).with_timeout(CONNECT_TIMEOUT);
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => return Ok(channel),
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
        addresses: anchor.registry_addresses.clone(),
        last,
    })
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

//! Mutual TLS between two security-server identities over real loopback
//! sockets, with tonic on both ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_certs::net::{TlsConnectorService, tls_incoming};
use lienthong_certs::tls::{
    Identity, Trust, TrustStore, client_config, server_config, server_config_chained_clients,
};
use lienthong_certs::verify::auth_identity;
use lienthong_integration_tests::TestPki;
use lienthong_proto::id::ServerId;
use lienthong_proto::pb::registry::v1::configuration_distribution_client::ConfigurationDistributionClient;
use lienthong_proto::pb::registry::v1::configuration_distribution_server::{
    ConfigurationDistribution, ConfigurationDistributionServer,
};
use lienthong_proto::pb::registry::v1::{GetConfigurationReply, GetConfigurationRequest};
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

/// Records the server identity named by each caller's TLS certificate.
#[derive(Default, Clone)]
struct WhoCalls(Arc<Mutex<Vec<ServerId>>>);

#[tonic::async_trait]
impl ConfigurationDistribution for WhoCalls {
    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationReply>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty chain"))?;
        let id = auth_identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.0.lock().unwrap().push(id);
        Ok(Response::new(GetConfigurationReply::default()))
    }
}

struct Running {
    addr: std::net::SocketAddr,
    store: TrustStore,
    seen: WhoCalls,
}

async fn start_server(pki: &TestPki, identity: &Identity, pinned: Vec<Fingerprint>) -> Running {
    let store = TrustStore::new(Trust::new(&[pki.ca.certificate().clone()], pinned).unwrap());
    let cfg = server_config(identity, store.clone()).unwrap();
    serve(cfg, store).await
}

async fn serve(cfg: rustls::ServerConfig, store: TrustStore) -> Running {
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = WhoCalls::default();
    let svc = ConfigurationDistributionServer::new(seen.clone());
    tokio::spawn(
        Server::builder()
            .add_service(svc)
            .serve_with_incoming(tls_incoming(listener, cfg)),
    );
    Running { addr, store, seen }
}

/// Makes one call on a fresh connection (TLS 1.3 refuses client
/// certificates on the first call, not at connect).
async fn call(
    pki_ca: &TestPki,
    client: &Identity,
    server_pinned: Vec<Fingerprint>,
    addr: std::net::SocketAddr,
    expected: Option<ServerId>,
) -> Result<(), String> {
    let store =
        TrustStore::new(Trust::new(&[pki_ca.ca.certificate().clone()], server_pinned).unwrap());
    let cfg = Arc::new(client_config(client, store, expected).unwrap());
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_with_connector(TlsConnectorService::new(cfg))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ConfigurationDistributionClient::new(channel)
        .get_configuration(GetConfigurationRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("call: {s}"))
}

#[tokio::test]
async fn server_sees_the_clients_security_server_identity() {
    let pki = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    let (cli, cli_fp) = pki.server_identity("VN/GOV/000203/ss1");
    let running = start_server(&pki, &srv, vec![cli_fp]).await;
    let expected: ServerId = "VN/GOV/000102/ss1".parse().unwrap();
    call(&pki, &cli, vec![srv_fp], running.addr, Some(expected))
        .await
        .unwrap();
    assert_eq!(
        running.seen.0.lock().unwrap().as_slice(),
        &["VN/GOV/000203/ss1".parse::<ServerId>().unwrap()]
    );
}

#[tokio::test]
async fn client_unpinned_at_run_time_is_refused_on_its_next_connection() {
    let pki = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    let (cli, cli_fp) = pki.server_identity("VN/GOV/000203/ss1");
    let running = start_server(&pki, &srv, vec![cli_fp]).await;
    call(&pki, &cli, vec![srv_fp], running.addr, None)
        .await
        .unwrap();

    // The next configuration no longer lists the client's certificate.
    running
        .store
        .replace(Trust::new(&[pki.ca.certificate().clone()], []).unwrap());
    let err = call(&pki, &cli, vec![srv_fp], running.addr, None)
        .await
        .unwrap_err();
    assert!(err.contains("CertificateUnknown"), "{err}");
    assert_eq!(
        running.seen.0.lock().unwrap().len(),
        1,
        "refused call reached the service"
    );
}

#[tokio::test]
async fn client_from_a_second_ca_is_refused() {
    let pki = TestPki::new("VN");
    let other = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    // Same identity, same pinning, but issued by a CA the server does not trust.
    let (cli, cli_fp) = other.server_identity("VN/GOV/000203/ss1");
    let running = start_server(&pki, &srv, vec![cli_fp]).await;
    let err = call(&pki, &cli, vec![srv_fp], running.addr, None)
        .await
        .unwrap_err();
    // The foreign CA has the same name, so the chain's signature fails.
    assert!(
        err.contains("DecryptError") || err.contains("UnknownCA"),
        "{err}"
    );
    assert!(
        running.seen.0.lock().unwrap().is_empty(),
        "refused call reached the service"
    );
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_the_expected_one() {
    let pki = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    let (cli, cli_fp) = pki.server_identity("VN/GOV/000203/ss1");
    let running = start_server(&pki, &srv, vec![cli_fp]).await;
    let wanted: ServerId = "VN/GOV/000102/ss2".parse().unwrap();
    let err = call(&pki, &cli, vec![srv_fp], running.addr, Some(wanted))
        .await
        .unwrap_err();
    assert!(err.contains("connect"), "{err}");
    // And an unpinned server is refused too.
    let err = call(&pki, &cli, vec![], running.addr, None)
        .await
        .unwrap_err();
    assert!(err.contains("connect"), "{err}");
    assert!(running.seen.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    let now = time::OffsetDateTime::now_utc();
    let (cli, cli_fp) = pki.server_identity_with(
        "VN/GOV/000203/ss1",
        lienthong_certs::Validity {
            not_before: now - time::Duration::days(3),
            not_after: now - time::Duration::days(1),
        },
    );
    let running = start_server(&pki, &srv, vec![cli_fp]).await;
    let err = call(&pki, &cli, vec![srv_fp], running.addr, None)
        .await
        .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
    assert!(running.seen.0.lock().unwrap().is_empty());
}

/// The provider's handshake: any certificate of the instance's CA that is
/// not revoked gets through (the configuration's pins are checked per
/// request), so a server that joined since the last poll is not refused
/// where nothing could say why.
#[tokio::test]
async fn a_chained_handshake_admits_the_instances_unpinned_peers_but_not_revoked_or_foreign_ones() {
    let pki = TestPki::new("VN");
    let (srv, srv_fp) = pki.server_identity("VN/GOV/000102/ss1");
    let (joined, _) = pki.server_identity("VN/GOV/000203/ss1");
    let (revoked, revoked_fp) = pki.server_identity("VN/GOV/000203/ss2");
    let stranger_pki = TestPki::new("VN");
    let (stranger, _) = stranger_pki.server_identity("VN/GOV/000203/ss3");
    let store = TrustStore::new(
        Trust::new(&[pki.ca.certificate().clone()], [])
            .unwrap()
            .with_revoked([revoked_fp]),
    );
    let running = serve(
        server_config_chained_clients(&srv, store.clone()).unwrap(),
        store,
    )
    .await;
    call(&pki, &joined, vec![srv_fp], running.addr, None)
        .await
        .expect("an unpinned certificate of the instance's CA is admitted");
    let err = call(&pki, &revoked, vec![srv_fp], running.addr, None)
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let err = call(&pki, &stranger, vec![srv_fp], running.addr, None)
        .await
        .unwrap_err();
    // Another CA of the same name: its signature does not verify.
    assert!(
        ["UnknownCA", "UnknownIssuer", "DecryptError"]
            .iter()
            .any(|alert| err.contains(alert)),
        "{err}"
    );
    assert_eq!(running.seen.0.lock().unwrap().len(), 1);
}

//! Every refusal of the exchange, each in its own federation, each proving
//! the provider's backend was never called.

use std::time::Duration;

use lienthong_integration_tests::TestPki;
use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_integration_tests::wait::{PATIENCE, wait_until};
use lienthong_proto::pb::exchange::v1::RequestEnvelope;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_security_server::store::Backend;
use prost::Message;
use tonic::Code;

fn request(id: &str) -> PersonRequest {
    PersonRequest {
        personal_id: id.into(),
    }
}

/// Asserts a refusal's fault code and that the backend saw nothing.
fn refused(f: &Federation, result: Result<tonic::Response<Person>, tonic::Status>, fault: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(fault_of(&status), fault, "{status:?}");
    assert!(status.message().starts_with(fault), "{}", status.message());
    assert_eq!(f.backend_calls(), 0, "the backend must not be called");
}

// === the consumer side refuses ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client() {
    let f = Federation::start().await;
    let stranger = member("000999").subsystem("x").unwrap();
    let r = f
        .business
        .client()
        .await
        .unary("GetPerson", call_metadata(&stranger, &population()), "1")
        .await;
    refused(&f, r, "client.unknown_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_registered_on_another_server() {
    let f = Federation::start().await;
    let r = f
        .business
        .client()
        .await
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await;
    refused(&f, r, "client.client_not_on_this_server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service() {
    let f = Federation::start().await;
    let r = f
        .business
        .client()
        .await
        .unary("GetPerson", call_metadata(&business(), &tax()), "1")
        .await;
    refused(&f, r, "client.unknown_service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message() {
    let f = Federation::start().await;
    let big = "9".repeat(5 * 1024 * 1024);
    let r = f
        .business
        .client()
        .await
        .unary("GetPerson", call_metadata(&business(), &population()), &big)
        .await;
    refused(&f, r, "client.message_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_metadata() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let mut m = call_metadata(&business(), &population());
    m.insert("lt-client", "not/a/subsystem/id/at/all".parse().unwrap());
    refused(
        &f,
        is.unary("GetPerson", m, "1").await,
        "client.bad_request",
    );
    let mut m = call_metadata(&business(), &population());
    m.remove("lt-service");
    refused(
        &f,
        is.unary("GetPerson", m, "1").await,
        "client.bad_request",
    );
    let mut m = call_metadata(&business(), &population());
    m.insert("lt-message-id", "has spaces".parse().unwrap());
    refused(
        &f,
        is.unary("GetPerson", m, "1").await,
        "client.bad_request",
    );
}

// === the provider side refuses ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied() {
    let f = Federation::start().await;
    let r = f
        .tax
        .client()
        .await
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await;
    refused(&f, r, "server.serverproxy.access_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_claiming_a_client_it_does_not_serve() {
    let f = Federation::start().await;
    // The tax server, authenticated as itself, calls for the business client.
    let peer = RawPeer::new(&f.registry, &f.tax, &f.population[0], None)
        .await
        .unwrap();
    let header = peer.header(&business(), &request("001099012345"));
    let envelope = peer.sign(header, &member("000201"));
    refused(
        &f,
        peer.send(Some(envelope), request("001099012345")).await,
        "server.serverproxy.client_not_owned",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca() {
    let f = Federation::start().await;
    // Same server id, same instance name, a CA the instance never trusted.
    let rogue = TestPki::new("VN");
    let (identity, _) = rogue.server_identity(&f.business.id.to_string());
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], Some(identity)).await;
    let result = match peer {
        Err(e) => Err(tonic::Status::unavailable(e)),
        Ok(p) => {
            let header = p.header(&business(), &request("001099012345"));
            let env = p.sign(header, &member("000305"));
            p.send(Some(env), request("001099012345")).await
        }
    };
    let status = result.expect_err("the handshake must fail");
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(f.backend_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let fp = auth_fingerprint(&f.business);
    f.registry
        .officer()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_sha256: fp.0.to_vec(),
            reason: "key compromised".into(),
        })
        .await
        .unwrap();
    f.refresh_all().await;
    let status = is
        .unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect_err("a revoked server is refused");
    assert_eq!(
        fault_of(&status),
        "server.clientproxy.provider_unreachable",
        "{status:?}"
    );
    assert_eq!(f.backend_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_altered_after_signing() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let header = peer.header(&business(), &request("001099012345"));
    let envelope = peer.sign(header, &member("000305"));
    refused(
        &f,
        peer.send(Some(envelope), request("001099099999")).await,
        "server.serverproxy.payload_mismatch",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_altered_after_signing() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let header = peer.header(&business(), &request("001099012345"));
    let signed = peer.sign(header, &member("000305"));
    let mut env = RequestEnvelope::decode(signed.as_slice()).unwrap();
    env.header.as_mut().unwrap().purpose = "something else entirely".into();
    refused(
        &f,
        peer.send(Some(env.encode_to_vec()), request("001099012345"))
            .await,
        "server.serverproxy.bad_signature",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_id() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let header = peer.header(&business(), &request("001099012345"));
    let envelope = peer.sign(header, &member("000305"));
    let first = peer
        .send(Some(envelope.clone()), request("001099012345"))
        .await;
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(f.backend_calls(), 1);
    let again = peer
        .send(Some(envelope), request("001099012345"))
        .await
        .unwrap_err();
    assert_eq!(fault_of(&again), "server.serverproxy.replay");
    assert_eq!(f.backend_calls(), 1, "the replay never reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_cache_sheds_and_forgets_nothing() {
    let mut f = Federation::start().await;
    f.population[0]
        .restart_with(|o| o.replay_capacity = 3)
        .await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let signed = |peer: &RawPeer| {
        let header = peer.header(&business(), &request("001099012345"));
        peer.sign(header, &member("000305"))
    };
    let first = signed(&peer);
    peer.send(Some(first.clone()), request("001099012345"))
        .await
        .unwrap();
    for _ in 0..2 {
        peer.send(Some(signed(&peer)), request("001099012345"))
            .await
            .unwrap();
    }
    assert_eq!(f.backend_calls(), 3);
    // Full: a new request is shed, not let in by forgetting an old id.
    let shed = peer
        .send(Some(signed(&peer)), request("001099012345"))
        .await
        .unwrap_err();
    assert_eq!(fault_of(&shed), "server.serverproxy.replay_capacity");
    // ... and the first is still remembered.
    let again = peer
        .send(Some(first), request("001099012345"))
        .await
        .unwrap_err();
    assert_eq!(fault_of(&again), "server.serverproxy.replay");
    assert_eq!(f.backend_calls(), 3, "neither reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_timestamp() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let mut header = peer.header(&business(), &request("001099012345"));
    header.created_at_unix_ms -= 10 * 60 * 1000;
    let envelope = peer.sign(header, &member("000305"));
    refused(
        &f,
        peer.send(Some(envelope), request("001099012345")).await,
        "server.serverproxy.stale_timestamp",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelope() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    refused(
        &f,
        peer.send(None, request("001099012345")).await,
        "server.serverproxy.bad_envelope",
    );
    refused(
        &f,
        peer.send(
            Some(b"\xff\xffnot protobuf".to_vec()),
            request("001099012345"),
        )
        .await,
        "server.serverproxy.bad_envelope",
    );
    // An envelope for another method than the path's.
    let mut header = peer.header(&business(), &request("001099012345"));
    header.method = "DeletePerson".into();
    let envelope = peer.sign(header, &member("000305"));
    refused(
        &f,
        peer.send(Some(envelope), request("001099012345")).await,
        "server.serverproxy.bad_envelope",
    );
}

// === the backend fails ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_or_slow_is_a_provider_fault() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let slow = is
        .unary("Slow", call_metadata(&business(), &population()), "1")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&slow),
        "server.serverproxy.service_timeout",
        "{slow:?}"
    );
    assert_eq!(slow.code(), Code::DeadlineExceeded);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for p in &f.population {
        p.server()
            .set_backend(&Backend {
                provider: population(),
                service: PERSON_REGISTRY.into(),
                url: format!("http://{closed}"),
                timeout: Duration::from_secs(1),
            })
            .unwrap();
    }
    // A backend that refuses connections is reported at once, not after
    // the backend's timeout or never (the patience only catches a hang).
    let down = tokio::time::timeout(
        PATIENCE,
        is.unary("GetPerson", call_metadata(&business(), &population()), "1"),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert_eq!(
        fault_of(&down),
        "server.serverproxy.service_unavailable",
        "{down:?}"
    );
}

// === the configuration expires ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_during_a_registry_outage_until_expiry() {
    let registry = TestRegistry::start_with(true, 3, Duration::from_millis(500)).await;
    let mut f = Federation::start_with(registry).await;
    let is = f.business.client().await;
    f.registry.stop().await;
    is.unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect("the registry is not on the data path");
    assert_eq!(f.backend_calls(), 1);

    // Once the configuration has expired (by the clock the server reads
    // too), exchanges are refused.
    let conf = f.business.server().conf().clone();
    wait_until(PATIENCE, "the configuration's expiry", || {
        conf.view()
            .is_some_and(|v| v.is_expired(std::time::SystemTime::now()))
    })
    .await;
    let expired = is
        .unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&expired),
        "server.clientproxy.conf_expired",
        "{expired:?}"
    );
    assert_eq!(f.backend_calls(), 1);
    // The first poll after the outage began says so (it may still be
    // under way on a slow machine).
    wait_until(
        PATIENCE,
        "the status to say the registry is unreachable",
        || conf.status().last_error.is_some(),
    )
    .await;
    assert!(
        f.business
            .server()
            .conf()
            .view()
            .unwrap()
            .is_expired(std::time::SystemTime::now())
    );

    // The registry comes back: traffic resumes without a restart.
    f.registry.restart().await;
    f.refresh_all().await;
    is.unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect("a fresh configuration lets traffic through again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_id_after_the_provider_restarts() {
    let mut f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let header = peer.header(&business(), &request("001099012345"));
    let envelope = peer.sign(header, &member("000305"));
    peer.send(Some(envelope.clone()), request("001099012345"))
        .await
        .unwrap();
    assert_eq!(f.backend_calls(), 1);
    f.population[0].stop();
    f.population[0].start().await;
    let again = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let status = again
        .send(Some(envelope), request("001099012345"))
        .await
        .unwrap_err();
    assert_eq!(fault_of(&status), "server.serverproxy.replay", "{status:?}");
    assert_eq!(f.backend_calls(), 1, "the replay never reached the backend");
}

//! Each stage of the provider side decided on its own, without sockets:
//! one signed configuration view (an instance CA, two members with their
//! servers, subsystems, services and signing certificates), envelopes
//! signed as a consumer's server signs them, and each stage's input state
//! built directly or by the stages before it.
//!
//! The exchange over real sockets is `integration-tests/tests/`.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use lienthong_certs::signing::Signer;
use lienthong_certs::{Fingerprint, InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};
use lienthong_proto::canonical;
use lienthong_proto::id::{GlobalGroupId, MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, RequestHeader};
use lienthong_proto::pb::globalconf::v1 as gc;
use lienthong_proto::pb::identifiers::v1::ServiceId;
use prost::Message;
use tonic::body::Body;

use super::envelope::Enveloped;
use super::peer::Peer;
use super::policy::Policy;
use super::signature::Verified;
use super::{access, envelope, freshness, payload, peer, replay, signature};
use crate::access::{AccessRule, Subject};
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::Fault;
use crate::message_log::{LogRecord, Phase, Role};
use crate::metadata::{self, Target};
use crate::refusal::Refusal;
use crate::replay::ReplayCache;
use lienthong_proto::time::unix_ms;

// === fixture ===

/// The consumer's server, and the subsystems it serves.
const SS1: &str = "VN/GOV/1001/ss1";
const TAX: &str = "VN/GOV/1001/tax";
/// In the investigators and withholders groups.
const AUDIT: &str = "VN/GOV/1001/audit";
/// The instance's trace portal.
const PORTAL: &str = "VN/GOV/1001/portal";
/// This (the provider's) server, and the subsystem it serves.
const SS2: &str = "VN/GOV/1002/ss2";
const POPULATION: &str = "VN/GOV/1002/population";
/// Another server of the provider's member, serving another subsystem.
const SS3: &str = "VN/GOV/1002/ss3";
const LAND: &str = "VN/GOV/1002/land";

const PERSONS: &str = "population.v1.PersonRegistry";
const HOUSEHOLDS: &str = "population.v1.Households";
const PARCELS: &str = "land.v1.Parcels";
const GET: &str = "Get";

const INVESTIGATORS: &str = "VN/investigators";
const WITHHOLDERS: &str = "VN/withholders";
const MAX_WITHHOLDING_DAYS: u64 = 30;

const SKEW_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The TLS certificate fingerprint the configuration registers for `fill`'s server.
fn auth_fp(fill: u8) -> Fingerprint {
    Fingerprint([fill; 32])
}

struct Fixture {
    /// The configuration the view indexes (version 7).
    conf: gc::GlobalConfiguration,
    view: Arc<ConfView>,
    /// The signing key of member VN/GOV/1001 (the clients' member).
    consumer_member: Signer,
    /// The signing key of member VN/GOV/1002 (the provider's member).
    provider_member: Signer,
    /// A key with a certificate for VN/GOV/1001 from a CA the
    /// configuration does not trust.
    stranger: Signer,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::build);

fn fx() -> &'static Fixture {
    &FIXTURE
}

fn sub(s: &str) -> SubsystemId {
    s.parse().expect("a subsystem id")
}

fn sid(s: &str) -> ServerId {
    s.parse().expect("a server id")
}

fn group(s: &str) -> GlobalGroupId {
    s.parse().expect("a group id")
}

fn instance_ca() -> InstanceCa {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a CA key");
    InstanceCa::create("VN", key, Validity::days(3650)).expect("a CA")
}

/// A signing key and certificate for `member`, issued by `ca`.
fn signing_pair(ca: &InstanceCa, member: &str) -> (Signer, Vec<u8>) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a signing key");
    let csr = csr::verify(&csr::create(&key, "test").expect("a CSR")).expect("a valid CSR");
    let member: MemberId = member.parse().expect("a member id");
    let cert = ca
        .issue_signing(&csr, &member, Validity::days(10))
        .expect("a signing certificate");
    let signer = Signer::new(&key, &cert).expect("the key is the certificate's");
    (signer, cert.to_vec())
}

impl Fixture {
    fn build() -> Self {
        let now = SystemTime::now();
        let ca = instance_ca();
        let (consumer_member, consumer_cert) = signing_pair(&ca, "VN/GOV/1001");
        let (provider_member, provider_cert) = signing_pair(&ca, "VN/GOV/1002");
        let (stranger, _) = signing_pair(&instance_ca(), "VN/GOV/1001");
        let member = |id: &str, codes: &[&str], cert: Vec<u8>| gc::Member {
            id: Some((&id.parse::<MemberId>().expect("a member id")).into()),
            name: id.into(),
            subsystem_codes: codes.iter().map(|c| (*c).into()).collect(),
            signing_certificates: vec![cert],
        };
        let server = |id: &str, fill: u8, clients: &[&str]| gc::SecurityServer {
            id: Some((&sid(id)).into()),
            address: format!("{fill}.example:5500"),
            auth_certificate_sha256: vec![auth_fp(fill).0.to_vec()],
            clients: clients.iter().map(|c| (&sub(c)).into()).collect(),
        };
        let service = |provider: &str, code: &str| gc::Service {
            id: Some(ServiceId {
                provider: Some((&sub(provider)).into()),
                service_code: code.into(),
                version: String::new(),
            }),
            ..Default::default()
        };
        let global_group = |id: &str, members: &[&str]| gc::GlobalGroup {
            id: Some((&group(id)).into()),
            description: String::new(),
            subsystems: members.iter().map(|m| (&sub(m)).into()).collect(),
        };
        let conf = gc::GlobalConfiguration {
            instance: "VN".into(),
            version: 7,
            created_at_unix_ms: unix_ms(now),
            expires_at_unix_ms: unix_ms(now) + DAY_MS,
            members: vec![
                member("VN/GOV/1001", &["tax", "audit", "portal"], consumer_cert),
                member("VN/GOV/1002", &["population", "land"], provider_cert),
            ],
            security_servers: vec![
                server(SS1, 1, &[TAX, AUDIT, PORTAL]),
                server(SS2, 2, &[POPULATION]),
                server(SS3, 3, &[LAND]),
            ],
            services: vec![
                service(POPULATION, PERSONS),
                service(POPULATION, HOUSEHOLDS),
                service(LAND, PARCELS),
            ],
            global_groups: vec![
                global_group(INVESTIGATORS, &[AUDIT]),
                global_group(WITHHOLDERS, &[AUDIT]),
            ],
            trusted_ca_certificates: vec![ca.certificate().to_vec()],
            trace_portal: Some((&sub(PORTAL)).into()),
            settings: Some(gc::InstanceSettings {
                withholding_grants: vec![gc::WithholdingGrant {
                    group: Some((&group(WITHHOLDERS)).into()),
                    max_duration_seconds: MAX_WITHHOLDING_DAYS * 86_400,
                    valid_from_unix_ms: 0,
                    valid_until_unix_ms: 0,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = ConfView::build(&conf, now).expect("the configuration indexes");
        assert!(view.skipped.is_empty(), "skipped: {:?}", view.skipped);
        Fixture {
            conf,
            view: Arc::new(view),
            consumer_member,
            provider_member,
            stranger,
        }
    }
}

// === requests ===

const PAYLOAD: &[u8] = b"\0\0\0\0\x05hello";

/// What `client`'s server signs for a call of `service`/`GET` of `target`
/// carrying `payload`.
fn header_for(client: &str, target: &Target, service: &str, payload: &[u8]) -> RequestHeader {
    RequestHeader {
        message_id: crate::consumer::new_message_id(),
        client: Some((&sub(client)).into()),
        service: Some(ServiceId {
            provider: match target {
                Target::Provider(p) => Some(p.into()),
                Target::Server(_) => None,
            },
            service_code: service.into(),
            version: String::new(),
        }),
        method: GET.into(),
        user_id: "officer 7".into(),
        purpose: "tax audit".into(),
        data_subject: "012345678901".into(),
        created_at_unix_ms: unix_ms(SystemTime::now()),
        payload_digest: lienthong_proto::sha256(payload).to_vec(),
        payload_size: payload.len() as u64,
        traceparent: String::new(),
        tracestate: String::new(),
        withheld_until_unix_ms: 0,
        target_server: match target {
            Target::Server(s) => Some(s.into()),
            Target::Provider(_) => None,
        },
    }
}

/// TAX calling POPULATION's person registry with [`PAYLOAD`].
fn header() -> RequestHeader {
    header_for(TAX, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD)
}

/// The path a header is for.
fn path_of(h: &RequestHeader) -> String {
    let service = h.service.as_ref().map_or("", |s| s.service_code.as_str());
    format!("/{service}/{}", h.method)
}

/// `header` signed by `signer` as the consumer's server signs it
/// (`consumer::sign`): the canonical request header's digest.
fn seal(signer: &Signer, header: RequestHeader) -> RequestEnvelope {
    let digest = canonical::digest(&canonical::request_header(&header));
    RequestEnvelope {
        header: Some(header),
        signature: Some(signer.sign_digest(&digest).expect("signs")),
    }
}

fn signed(header: RequestHeader) -> Vec<u8> {
    seal(&fx().consumer_member, header).encode_to_vec()
}

fn full(bytes: &'static [u8]) -> Body {
    Body::new(Full::new(Bytes::from_static(bytes)))
}

/// A body sending `chunks` one frame each.
fn chunked(chunks: &[&'static [u8]]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c))))
        .collect();
    Body::new(StreamBody::new(tokio_stream::iter(frames)))
}

fn request(path: &str, envelope: Option<&[u8]>, body: Body) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .body(body)
        .expect("a valid request");
    if let Some(e) = envelope {
        metadata::put_bin(r.headers_mut(), metadata::ENVELOPE, e);
    }
    r
}

/// A request from `server`, identified (stage 1) at `now`.
fn peer_at(server: &str, now: SystemTime) -> Peer {
    Peer {
        started: Instant::now(),
        now,
        span: tracing::Span::none(),
        view: fx().view.clone(),
        server: sid(server),
    }
}

fn peer() -> Peer {
    peer_at(SS1, SystemTime::now())
}

/// Stage 2 on this server (SS2) for a request from SS1.
fn open(path: &str, envelope: Option<&[u8]>, body: Body) -> Result<Enveloped, Refusal> {
    envelope::open(peer(), request(path, envelope, body), &sid(SS2))
}

/// Stages 2 and 3 for `header` signed by its client's member.
fn verify(header: RequestHeader, body: Body) -> Result<Verified, Refusal> {
    let path = path_of(&header);
    open(&path, Some(&signed(header)), body).and_then(signature::verify)
}

fn accepted<T>(r: Result<T, Refusal>) -> T {
    match r {
        Ok(t) => t,
        Err(r) => panic!("refused: {}", r.fault),
    }
}

fn refused<T>(r: Result<T, Refusal>) -> Refusal {
    match r {
        Ok(_) => panic!("accepted, but should have been refused"),
        Err(r) => r,
    }
}

/// Asserts `refusal` is `fault`, with a message saying `why`.
#[track_caller]
fn assert_refused(refusal: &Refusal, fault: Fault, why: &str) {
    assert_eq!(refusal.fault.fault, fault, "{}", refusal.fault);
    assert!(
        refusal.fault.message.contains(why),
        "{:?} does not say {why:?}",
        refusal.fault.message
    );
}

// === stage 1: peer ===

fn conf_client(view: Option<ConfView>) -> ConfClient {
    let client = ConfClient::new(
        gc::Anchor::default(),
        std::path::PathBuf::from("configuration.bin"),
        ConfClient::empty_trust(),
    );
    client.install_view(view.map(Arc::new));
    client
}

#[tokio::test]
async fn peer_is_a_server_the_configuration_registers() {
    let conf = conf_client(Some((*fx().view).clone()));
    let now = SystemTime::now();
    let none = tracing::Span::none;
    let known = accepted(peer::identify(&conf, Some(auth_fp(1)), now, none()).await);
    assert_eq!(known.server, sid(SS1));

    // Not in this configuration, and no newer one comes within the wait.
    let r = refused(peer::identify(&conf, Some(auth_fp(9)), now, none()).await);
    assert_refused(
        &r,
        Fault::UnknownPeer,
        "is not one configuration version 7 registers (asked the registry for a newer one)",
    );
    let r = refused(peer::identify(&conf, None, now, none()).await);
    assert_refused(&r, Fault::UnknownPeer, "presented no TLS certificate");
}

#[tokio::test]
async fn a_peer_that_joined_since_the_last_poll_is_found_in_the_next_configuration() {
    let conf = Arc::new(conf_client(Some((*fx().view).clone())));
    let now = SystemTime::now();
    // The registry has published version 8, with a server that joined.
    let mut next = fx().conf.clone();
    next.version = 8;
    next.security_servers.push(gc::SecurityServer {
        id: Some((&sid("VN/GOV/1001/ss9")).into()),
        address: "9.example:5500".into(),
        auth_certificate_sha256: vec![auth_fp(9).0.to_vec()],
        clients: vec![],
    });
    let next = Arc::new(ConfView::build(&next, now).expect("the configuration indexes"));
    // The poll the request asks for brings it.
    let polling = conf.clone();
    let installer = tokio::spawn(async move {
        let mut views = polling.subscribe();
        tokio::task::yield_now().await;
        polling.install_view(Some(next));
        let _ = views.changed().await;
    });
    let joined =
        accepted(peer::identify(&conf, Some(auth_fp(9)), now, tracing::Span::none()).await);
    assert_eq!(joined.server, sid("VN/GOV/1001/ss9"));
    assert_eq!(
        joined.view.version, 8,
        "the request is judged under the new one"
    );
    installer.await.unwrap();
}

#[tokio::test]
async fn peer_is_refused_without_a_current_configuration() {
    let now = SystemTime::now();
    let r = refused(
        peer::identify(
            &conf_client(None),
            Some(auth_fp(1)),
            now,
            tracing::Span::none(),
        )
        .await,
    );
    assert_refused(
        &r,
        Fault::ProviderConfExpired,
        "no global configuration yet",
    );

    let mut expired = (*fx().view).clone();
    expired.expires_at_ms = unix_ms(now);
    let r = refused(
        peer::identify(
            &conf_client(Some(expired)),
            Some(auth_fp(1)),
            now,
            tracing::Span::none(),
        )
        .await,
    );
    assert_refused(&r, Fault::ProviderConfExpired, "has expired");
}

// === stage 2: envelope ===

#[test]
fn envelope_addressed_here_opens() {
    let h = header();
    let id = h.message_id.clone();
    let e = accepted(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
    assert_eq!(e.client, sub(TAX));
    assert_eq!(e.target, Target::Provider(sub(POPULATION)));
    assert_eq!(e.envelope.header.as_ref().map(|h| &h.message_id), Some(&id));
    assert_eq!(e.parts.uri.path(), format!("/{PERSONS}/{GET}"));
}

#[test]
fn envelope_missing_is_refused() {
    let r = refused(open(&format!("/{PERSONS}/{GET}"), None, full(PAYLOAD)));
    assert_refused(&r, Fault::BadEnvelope, "carries no lt-envelope-bin");
}

#[test]
fn envelope_garbled_is_refused() {
    // A length-delimited field announcing more bytes than follow.
    let r = refused(open(
        &format!("/{PERSONS}/{GET}"),
        Some(&[0x0a, 0x05, 0x01]),
        full(PAYLOAD),
    ));
    assert_refused(&r, Fault::BadEnvelope, "does not decode");

    // Not base64 at all.
    let mut req = request(&format!("/{PERSONS}/{GET}"), None, full(PAYLOAD));
    req.headers_mut().insert(
        metadata::ENVELOPE,
        http::HeaderValue::from_static("!!not base64!!"),
    );
    let r = refused(envelope::open(peer(), req, &sid(SS2)));
    assert_refused(&r, Fault::BadEnvelope, "not base64");

    // Decodes, but says nothing.
    let empty = RequestEnvelope::default().encode_to_vec();
    let r = refused(open(
        &format!("/{PERSONS}/{GET}"),
        Some(&empty),
        full(PAYLOAD),
    ));
    assert_refused(&r, Fault::BadEnvelope, "no header");
}

#[test]
fn envelope_for_another_path_is_refused() {
    let env = signed(header());
    for path in [format!("/{PERSONS}/List"), format!("/{HOUSEHOLDS}/{GET}")] {
        let r = refused(open(&path, Some(&env), full(PAYLOAD)));
        assert_refused(&r, Fault::BadEnvelope, "the call is to");
    }
    let r = refused(open("/nope", Some(&env), full(PAYLOAD)));
    assert_refused(&r, Fault::BadEnvelope, "not a gRPC method path");
}

#[test]
fn envelope_naming_both_or_neither_target_is_refused() {
    let mut both = header();
    both.target_server = Some((&sid(SS2)).into());
    let mut neither = header();
    if let Some(s) = neither.service.as_mut() {
        s.provider = None;
    }
    for h in [both, neither] {
        let r = refused(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
        assert_refused(&r, Fault::BadEnvelope, "either a provider subsystem");
    }
}

#[test]
fn envelope_with_a_field_not_in_canonical_form_is_refused() {
    let mut h = header();
    h.data_subject = "not a citizen id".into();
    let r = refused(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
    assert_refused(&r, Fault::BadField, "data_subject");
}

#[test]
fn envelope_for_a_client_the_peer_does_not_serve_is_refused() {
    // LAND is served by SS3; SS1 may not call in its name.
    let h = header_for(LAND, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    let r = refused(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
    assert_refused(&r, Fault::ClientNotOwned, "does not serve VN/GOV/1002/land");

    // The same envelope from the server that does serve it is fine.
    let h = header_for(LAND, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    let req = request(&path_of(&h), Some(&signed(h)), full(PAYLOAD));
    accepted(envelope::open(
        peer_at(SS3, SystemTime::now()),
        req,
        &sid(SS2),
    ));
}

#[test]
fn envelope_for_a_service_not_served_here_is_refused() {
    let cases = [
        // A service the provider does not offer.
        (Target::Provider(sub(POPULATION)), "population.v1.Unknown"),
        // A provider another server serves.
        (Target::Provider(sub(LAND)), PARCELS),
        // A built-in service of another server.
        (Target::Server(sid(SS3)), crate::trace::SERVICE),
        // Not a built-in service.
        (Target::Server(sid(SS2)), PERSONS),
    ];
    for (target, service) in cases {
        let h = header_for(TAX, &target, service, PAYLOAD);
        let r = refused(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
        assert_refused(&r, Fault::ProviderUnknownService, "does not serve");
    }
    // This server's own built-in service is served here.
    let h = header_for(
        TAX,
        &Target::Server(sid(SS2)),
        crate::trace::SERVICE,
        PAYLOAD,
    );
    let e = accepted(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
    assert_eq!(e.target, Target::Server(sid(SS2)));
}

// === stage 3: signature ===

#[test]
fn signed_by_the_clients_member_verifies() {
    let h = header();
    let digest = canonical::digest(&canonical::request_header(&h));
    let v = accepted(verify(h.clone(), full(PAYLOAD)));
    assert_eq!(v.facts.header, h);
    assert_eq!(v.facts.client, sub(TAX));
    assert_eq!(v.facts.peer, sid(SS1));
    assert_eq!(v.facts.request_digest, digest);
}

#[test]
fn unsigned_is_refused() {
    let h = header();
    let env = RequestEnvelope {
        header: Some(h.clone()),
        signature: None,
    }
    .encode_to_vec();
    let r = refused(open(&path_of(&h), Some(&env), full(PAYLOAD)).and_then(signature::verify));
    assert_refused(&r, Fault::BadSignature, "not signed");
}

#[test]
fn signed_by_another_members_certificate_is_refused() {
    // The provider's member's certificate is current, but not TAX's member's.
    let h = header();
    let env = seal(&fx().provider_member, h.clone()).encode_to_vec();
    let r = refused(open(&path_of(&h), Some(&env), full(PAYLOAD)).and_then(signature::verify));
    assert_refused(&r, Fault::BadSignature, "of VN/GOV/1001");

    // A certificate for the right member from a CA the instance does not trust.
    let env = seal(&fx().stranger, h.clone()).encode_to_vec();
    let r = refused(open(&path_of(&h), Some(&env), full(PAYLOAD)).and_then(signature::verify));
    assert_refused(&r, Fault::BadSignature, "of VN/GOV/1001");
}

#[test]
fn signature_past_its_certificate_is_refused() {
    // The signing certificates are valid for ten days.
    let later = SystemTime::now() + Duration::from_secs(11 * 86_400);
    let h = header();
    let req = request(&path_of(&h), Some(&signed(h)), full(PAYLOAD));
    let e = accepted(envelope::open(peer_at(SS1, later), req, &sid(SS2)));
    let r = refused(signature::verify(e));
    assert_refused(&r, Fault::BadSignature, "current signing certificate");
}

#[test]
fn tampered_header_is_refused() {
    let h = header();
    let mut env = seal(&fx().consumer_member, h.clone());
    if let Some(h) = env.header.as_mut() {
        h.purpose = "curiosity".into();
    }
    let r = refused(
        open(&path_of(&h), Some(&env.encode_to_vec()), full(PAYLOAD)).and_then(signature::verify),
    );
    assert_refused(&r, Fault::BadSignature, "does not verify");
}

#[test]
fn withholding_needs_a_grant_in_force() {
    let now = unix_ms(SystemTime::now());
    // TAX is in no withholding group.
    let mut h = header();
    h.withheld_until_unix_ms = now + DAY_MS;
    let r = refused(verify(h, full(PAYLOAD)));
    assert_refused(&r, Fault::WithholdingRefused, "may not withhold");

    // AUDIT is, within the grant's maximum.
    let mut h = header_for(AUDIT, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    h.withheld_until_unix_ms = now + DAY_MS;
    let v = accepted(verify(h, full(PAYLOAD)));
    assert_eq!(v.facts.header.withheld_until_unix_ms, now + DAY_MS);

    // But not beyond it.
    let mut h = header_for(AUDIT, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    h.withheld_until_unix_ms = now + (MAX_WITHHOLDING_DAYS as i64 + 1) * DAY_MS;
    let r = refused(verify(h, full(PAYLOAD)));
    assert_refused(&r, Fault::WithholdingRefused, "maximum");
}

// === stage 4: freshness ===

#[test]
fn timestamps_outside_the_skew_are_refused() {
    let now = unix_ms(SystemTime::now());
    for (created, fresh) in [
        (now, true),
        (now - SKEW_MS + 5_000, true),
        (now + SKEW_MS - 5_000, true),
        (now - SKEW_MS - 5_000, false),
        (now + SKEW_MS + 5_000, false),
        (0, false),
    ] {
        let mut h = header();
        h.created_at_unix_ms = created;
        let v = accepted(verify(h, full(PAYLOAD)));
        match freshness::check(&v, SKEW_MS) {
            Ok(()) => assert!(fresh, "created {} ms from now accepted", created - now),
            Err(f) => {
                assert!(!fresh, "created {} ms from now refused: {f}", created - now);
                assert_eq!(f.fault, Fault::StaleTimestamp, "{f}");
            }
        }
    }
}

// === stage 5: payload ===

/// Reads back the frames of a received payload.
async fn frames(p: &crate::body::Chunks) -> Vec<Bytes> {
    let mut body = p.body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|never| match never {});
        out.extend(frame.into_data().ok());
    }
    out
}

const PARTS: [&[u8]; 3] = [b"\0\0\0\0\x0b", b"hello ", b"world"];

fn parts_header() -> RequestHeader {
    header_for(
        TAX,
        &Target::Provider(sub(POPULATION)),
        PERSONS,
        &PARTS.concat(),
    )
}

#[tokio::test]
async fn unaltered_payload_is_received_in_its_chunks() {
    let v = accepted(verify(parts_header(), chunked(&PARTS)));
    let received = accepted(payload::receive(v, 1024).await);
    assert_eq!(received.payload.len(), 16);
    assert_eq!(received.payload.to_bytes(), Bytes::from(PARTS.concat()));
    let sent: Vec<Bytes> = PARTS.iter().map(|p| Bytes::from_static(p)).collect();
    assert_eq!(
        frames(&received.payload).await,
        sent,
        "chunks kept as they came"
    );

    let v = accepted(verify(header(), full(PAYLOAD)));
    let received = accepted(payload::receive(v, PAYLOAD.len()).await);
    assert_eq!(received.payload.to_bytes(), PAYLOAD, "exactly the limit");
}

#[tokio::test]
async fn altered_payload_is_refused() {
    // Same size, one byte changed, in another chunking.
    let v = accepted(verify(
        parts_header(),
        chunked(&[b"\0\0\0\0\x0bhello", b" ", b"World"]),
    ));
    let r = refused(payload::receive(v, 1024).await);
    assert_refused(&r, Fault::PayloadMismatch, "not the one the client signed");

    // Cut short.
    let v = accepted(verify(parts_header(), chunked(&PARTS[..2])));
    let r = refused(payload::receive(v, 1024).await);
    assert_refused(&r, Fault::PayloadMismatch, "not the one the client signed");

    // Rechunked but unaltered passes.
    let v = accepted(verify(
        parts_header(),
        chunked(&[b"\0\0", b"\0\0\x0bhello w", b"orld"]),
    ));
    accepted(payload::receive(v, 1024).await);
}

#[tokio::test]
async fn payload_over_the_limit_is_refused() {
    let v = accepted(verify(parts_header(), chunked(&PARTS)));
    let r = refused(payload::receive(v, 15).await);
    assert_refused(&r, Fault::ProviderMessageTooLarge, "larger than 15 bytes");
}

#[tokio::test]
async fn payload_that_breaks_off_is_refused() {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(PARTS[0]))),
        Err(std::io::Error::other("connection reset")),
    ];
    let body = Body::new(StreamBody::new(tokio_stream::iter(frames)));
    let v = accepted(verify(parts_header(), body));
    let r = refused(payload::receive(v, 1024).await);
    assert_refused(&r, Fault::BadEnvelope, "could not be read");
}

// === stage 6: access ===

fn policy(rules: Vec<AccessRule>) -> Policy {
    let mut p = Policy::default();
    p.rules = rules;
    p
}

fn rule(subject: Subject, provider: &str, service: &str, method: Option<&str>) -> AccessRule {
    AccessRule {
        subject,
        provider: sub(provider),
        service: service.into(),
        method: method.map(Into::into),
    }
}

#[test]
fn access_is_decided_by_the_rules() {
    let view = &fx().view;
    let population = Target::Provider(sub(POPULATION));
    let rules = policy(vec![
        rule(Subject::Subsystem(sub(TAX)), POPULATION, PERSONS, Some(GET)),
        rule(
            Subject::Group(group(INVESTIGATORS)),
            POPULATION,
            HOUSEHOLDS,
            None,
        ),
    ]);
    let cases = [
        // A grant of one method.
        (TAX, PERSONS, GET, true),
        (TAX, PERSONS, "List", false),
        // Nothing granted.
        (TAX, HOUSEHOLDS, GET, false),
        (AUDIT, PERSONS, GET, false),
        // A whole service, through a group.
        (AUDIT, HOUSEHOLDS, GET, true),
        (AUDIT, HOUSEHOLDS, "List", true),
        (PORTAL, HOUSEHOLDS, GET, false),
    ];
    for (client, service, method, allowed) in cases {
        let decided = access::authorize(view, &rules, &sub(client), &population, service, method);
        match decided {
            Ok(()) => assert!(allowed, "{client} {service}/{method} allowed"),
            Err(f) => {
                assert!(!allowed, "{client} {service}/{method} denied: {f}");
                assert_eq!(f.fault, Fault::AccessDenied, "{f}");
            }
        }
    }
    // No rules, no access.
    let f = access::authorize(
        view,
        &Policy::default(),
        &sub(TAX),
        &population,
        PERSONS,
        GET,
    )
    .expect_err("denied by default");
    assert_eq!(f.fault, Fault::AccessDenied);
}

#[test]
fn access_trace_is_for_the_trace_portal_only() {
    let view = &fx().view;
    let here = Target::Server(sid(SS2));
    let none = Policy::default();
    let trace = crate::trace::SERVICE;
    access::authorize(view, &none, &sub(PORTAL), &here, trace, "Records")
        .expect("the trace portal may read the access trace");
    for client in [TAX, AUDIT] {
        let f = access::authorize(view, &none, &sub(client), &here, trace, "Records")
            .expect_err("only the trace portal");
        assert_eq!(f.fault, Fault::AccessDenied, "{f}");
        assert!(f.message.contains("trace portal"), "{f}");
    }
    // Operational data: any member, its own only.
    access::authorize(
        view,
        &none,
        &sub(TAX),
        &here,
        crate::operational::SERVICE,
        "Records",
    )
    .expect("anyone may ask for operational data");
}

#[test]
fn access_check_reads_the_verified_envelope() {
    let rules = policy(vec![rule(
        Subject::Subsystem(sub(TAX)),
        POPULATION,
        PERSONS,
        Some(GET),
    )]);
    let v = accepted(verify(header(), full(PAYLOAD)));
    access::check(&v, &rules).expect("TAX may Get");
    let v = accepted(verify(
        header_for(AUDIT, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD),
        full(PAYLOAD),
    ));
    let f = access::check(&v, &rules).expect_err("AUDIT may not");
    assert_eq!(f.fault, Fault::AccessDenied, "{f}");
}

// === stage 7: replay ===

#[test]
fn a_message_id_is_used_once_per_client() {
    let cache = ReplayCache::with_capacity(10);
    let h = header();
    let first = accepted(verify(h.clone(), full(PAYLOAD)));
    replay::check(&first, &cache, SKEW_MS).expect("first use");
    let again = accepted(verify(h.clone(), full(PAYLOAD)));
    let f = replay::check(&again, &cache, SKEW_MS).expect_err("a replay");
    assert_eq!(f.fault, Fault::Replay, "{f}");

    // The same id from another client is that client's own.
    let mut other = header_for(AUDIT, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    other.message_id = h.message_id;
    let other = accepted(verify(other, full(PAYLOAD)));
    replay::check(&other, &cache, SKEW_MS).expect("another client's id");
}

#[test]
fn a_full_replay_cache_sheds_new_requests() {
    let cache = ReplayCache::with_capacity(2);
    for _ in 0..2 {
        let v = accepted(verify(header(), full(PAYLOAD)));
        replay::check(&v, &cache, SKEW_MS).expect("room left");
    }
    let v = accepted(verify(header(), full(PAYLOAD)));
    let f = replay::check(&v, &cache, SKEW_MS).expect_err("full");
    assert_eq!(f.fault, Fault::ReplayCapacity, "{f}");
    assert_eq!(cache.len(), 2, "nothing forgotten to make room");
}

// === refusal records ===

/// Whether a record carries nothing the envelope says.
#[track_caller]
fn assert_bare(record: &LogRecord) {
    assert_eq!(record.role, Role::Provider);
    assert_eq!(record.client, "");
    assert_eq!(record.data_subject, "");
    assert_eq!(record.purpose, "");
    assert_eq!(record.user_id, "");
    assert_eq!(record.message_id, "");
    assert_eq!(record.envelope, Vec::<u8>::new());
    assert_eq!(record.withheld_until_ms, 0);
}

#[test]
fn refusals_before_the_signature_verifies_say_nothing_the_envelope_says() {
    // Well formed but for a client the peer does not serve.
    let h = header_for(LAND, &Target::Provider(sub(POPULATION)), PERSONS, PAYLOAD);
    let r = refused(open(&path_of(&h), Some(&signed(h)), full(PAYLOAD)));
    assert_eq!(r.fault.fault, Fault::ClientNotOwned);
    assert_bare(&r.record);

    // Signed in another member's name.
    let h = header();
    let env = seal(&fx().provider_member, h.clone()).encode_to_vec();
    let r = refused(open(&path_of(&h), Some(&env), full(PAYLOAD)).and_then(signature::verify));
    assert_eq!(r.fault.fault, Fault::BadSignature);
    assert_bare(&r.record);

    // Withholding without a grant: signed, but not vouched for.
    let mut h = header();
    h.withheld_until_unix_ms = unix_ms(SystemTime::now()) + DAY_MS;
    let r = refused(verify(h, full(PAYLOAD)));
    assert_eq!(r.fault.fault, Fault::WithholdingRefused);
    assert_bare(&r.record);
}

#[tokio::test]
async fn refusals_after_the_signature_verifies_say_what_it_vouches_for() {
    let h = parts_header();
    let env = signed(h.clone());
    let v =
        accepted(open(&path_of(&h), Some(&env), chunked(&PARTS[..1])).and_then(signature::verify));
    let r = refused(payload::receive(v, 1024).await);
    assert_eq!(r.fault.fault, Fault::PayloadMismatch);
    let record = &r.record;
    assert_eq!(record.role, Role::Provider);
    assert_eq!(record.phase, Phase::Fault);
    assert_eq!(record.client, TAX);
    assert_eq!(record.service, format!("{POPULATION}/{PERSONS}"));
    assert_eq!(record.method, GET);
    assert_eq!(record.message_id, h.message_id);
    assert_eq!(record.user_id, "officer 7");
    assert_eq!(record.purpose, "tax audit");
    assert_eq!(record.data_subject, "012345678901");
    assert_eq!(record.peer, SS1);
    assert_eq!(record.envelope, env, "the signed envelope as it came");
    assert_eq!(
        record.request_digest,
        canonical::digest(&canonical::request_header(&h)).to_vec()
    );

    // A stage that returns a bare fault is refused with the same facts.
    let mut stale = header();
    stale.created_at_unix_ms -= 10 * SKEW_MS;
    let v = accepted(verify(stale.clone(), full(PAYLOAD)));
    let f = freshness::check(&v, SKEW_MS).expect_err("stale");
    let r = v.facts.refused(f);
    assert_eq!(r.fault.fault, Fault::StaleTimestamp);
    assert_eq!(r.record.client, TAX);
    assert_eq!(r.record.message_id, stale.message_id);
    assert_eq!(r.record.data_subject, "012345678901");
}

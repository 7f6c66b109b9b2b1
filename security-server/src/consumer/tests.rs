//! Each stage of the consumer side decided on its own, without sockets:
//! one signed configuration view (an instance CA, two members with their
//! servers, subsystems, services and signing certificates), calls built as
//! an information system sends them, and provider responses signed as a
//! provider's server signs them, observed as `consumer::answer` observes
//! them.
//!
//! The exchange over real sockets is `integration-tests/tests/`.

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use lienthong_certs::signing::Signer;
use lienthong_certs::{Fingerprint, InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};
use lienthong_proto::canonical;
use lienthong_proto::id::{GlobalGroupId, MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::exchange::v1::{ResponseEnvelope, ResponseHeader};
use lienthong_proto::pb::globalconf::v1 as gc;
use lienthong_proto::pb::identifiers::v1::ServiceId;
use prost::Message;

use super::call::{self, Call};
use super::check::{self, Checked};
use super::sign;
use super::verify::{self, Expected};
use crate::batch::Signers;
use crate::body::Observation;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{FAULT_HEADER, Fault, FaultError};
use crate::message_log::{Phase, Role};
use crate::metadata::{self, CallMetadata, Target};
use crate::provider::policy::Policy;
use crate::refusal::Refusal;
use lienthong_proto::time::unix_ms;

// === fixture ===

/// This (the consumer's) server, and the subsystems it serves.
const SS1: &str = "VN/GOV/1001/ss1";
const TAX: &str = "VN/GOV/1001/tax";
/// In the withholders group.
const AUDIT: &str = "VN/GOV/1001/audit";
/// The provider's server, and the subsystem it serves.
const SS2: &str = "VN/GOV/1002/ss2";
const POPULATION: &str = "VN/GOV/1002/population";
/// A subsystem that offers a service but no server serves.
const ARCHIVE: &str = "VN/GOV/1002/archive";
/// In no configuration at all.
const GHOST: &str = "VN/GOV/1003/ghost";

const PERSONS: &str = "population.v1.PersonRegistry";
/// A service the registry marks as handling personal data.
const HOUSEHOLDS: &str = "population.v1.Households";
const RECORDS: &str = "archive.v1.Records";
const GET: &str = "Get";

const WITHHOLDERS: &str = "VN/withholders";
const DAY_MS: i64 = 86_400_000;
const MAX_MESSAGE: usize = 1024;

struct Fixture {
    view: Arc<ConfView>,
    /// The signing key of member VN/GOV/1001 (this server's clients' member).
    consumer_member: Signer,
    /// The signing key of member VN/GOV/1002 (the provider's member).
    provider_member: Signer,
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
        let ca_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a CA key");
        let ca = InstanceCa::create("VN", ca_key, Validity::days(3650)).expect("a CA");
        let (consumer_member, consumer_cert) = signing_pair(&ca, "VN/GOV/1001");
        let (provider_member, provider_cert) = signing_pair(&ca, "VN/GOV/1002");
        let member = |id: &str, codes: &[&str], cert: Vec<u8>| gc::Member {
            id: Some((&id.parse::<MemberId>().expect("a member id")).into()),
            name: id.into(),
            subsystem_codes: codes.iter().map(|c| (*c).into()).collect(),
            signing_certificates: vec![cert],
        };
        let server = |id: &str, fill: u8, clients: &[&str]| gc::SecurityServer {
            id: Some((&sid(id)).into()),
            address: format!("{fill}.example:5500"),
            auth_certificate_sha256: vec![vec![fill; 32]],
            clients: clients.iter().map(|c| (&sub(c)).into()).collect(),
        };
        let service = |provider: &str, code: &str, personal_data: bool| gc::Service {
            id: Some(ServiceId {
                provider: Some((&sub(provider)).into()),
                service_code: code.into(),
                version: String::new(),
            }),
            personal_data,
            ..Default::default()
        };
        let conf = gc::GlobalConfiguration {
            instance: "VN".into(),
            version: 7,
            created_at_unix_ms: unix_ms(now),
            expires_at_unix_ms: unix_ms(now) + DAY_MS,
            members: vec![
                member("VN/GOV/1001", &["tax", "audit"], consumer_cert),
                member("VN/GOV/1002", &["population", "archive"], provider_cert),
            ],
            security_servers: vec![server(SS1, 1, &[TAX, AUDIT]), server(SS2, 2, &[POPULATION])],
            services: vec![
                service(POPULATION, PERSONS, false),
                service(POPULATION, HOUSEHOLDS, true),
                service(ARCHIVE, RECORDS, false),
            ],
            global_groups: vec![gc::GlobalGroup {
                id: Some((&group(WITHHOLDERS)).into()),
                description: String::new(),
                subsystems: vec![(&sub(AUDIT)).into()],
            }],
            trusted_ca_certificates: vec![ca.certificate().to_vec()],
            settings: Some(gc::InstanceSettings {
                withholding_grants: vec![gc::WithholdingGrant {
                    group: Some((&group(WITHHOLDERS)).into()),
                    max_duration_seconds: 30 * 86_400,
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
            view: Arc::new(view),
            consumer_member,
            provider_member,
        }
    }
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

/// Asserts `fault` is `expected`, with a message saying `why`.
#[track_caller]
fn assert_fault(fault: &FaultError, expected: Fault, why: &str) {
    assert_eq!(fault.fault, expected, "{fault}");
    assert!(
        fault.message.contains(why),
        "{:?} does not say {why:?}",
        fault.message
    );
}

// === stage 1: call ===

const PAYLOAD: &[u8] = b"\0\0\0\0\x05hello";

/// An information system's call of `path` with Lienthong `metadata`.
fn request(path: &str, given: &[(&'static str, &str)]) -> Request<Full<Bytes>> {
    let mut r = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(PAYLOAD)))
        .expect("a valid request");
    for (name, value) in given {
        r.headers_mut().insert(
            *name,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    r
}

/// TAX calling POPULATION's person registry about a citizen.
fn tax_call() -> Request<Full<Bytes>> {
    request(
        &format!("/{PERSONS}/{GET}"),
        &[
            (metadata::CLIENT, TAX),
            (metadata::SERVICE, POPULATION),
            (metadata::USER_ID, "officer 7"),
            (metadata::PURPOSE, "tax audit"),
            (metadata::DATA_SUBJECT, "012345678901"),
            (metadata::MESSAGE_ID, "m-1"),
        ],
    )
}

fn parse(
    request: Request<Full<Bytes>>,
    cert: Option<Fingerprint>,
    pins: Option<&Policy>,
) -> Result<Call, Refusal> {
    call::parse(request, cert, pins, tracing::Span::none())
}

#[test]
fn call_parses_path_and_metadata() {
    let call = accepted(parse(tax_call(), None, None));
    assert_eq!(call.facts.service, PERSONS);
    assert_eq!(call.facts.method, GET);
    assert_eq!(call.facts.message_id(), "m-1");
    assert_eq!(call.meta.client, sub(TAX));
    assert_eq!(call.meta.target, Target::Provider(sub(POPULATION)));
    assert_eq!(call.meta.purpose, "tax audit");
    assert_eq!(call.meta.data_subject, "012345678901");

    // Without lt-message-id the server makes one.
    let call = accepted(parse(
        request(
            &format!("/{PERSONS}/{GET}"),
            &[(metadata::CLIENT, TAX), (metadata::SERVICE, POPULATION)],
        ),
        None,
        None,
    ));
    assert_eq!(call.meta.message_id, None);
    assert_eq!(call.facts.message_id().len(), 32);
    metadata::check_message_id(call.facts.message_id()).expect("a valid id");
}

#[test]
fn call_with_a_bad_path_is_refused() {
    for path in ["/nope", "/population.v1.PersonRegistry/Get.Thing", "/a//b"] {
        let r = refused(parse(
            request(
                path,
                &[(metadata::CLIENT, TAX), (metadata::SERVICE, POPULATION)],
            ),
            None,
            None,
        ));
        assert_fault(&r.fault, Fault::BadRequest, "not a gRPC method path");
    }
}

#[test]
fn call_with_bad_metadata_is_refused() {
    let path = format!("/{PERSONS}/{GET}");
    let cases: [(&[(&'static str, &str)], &str); 4] = [
        (&[(metadata::SERVICE, POPULATION)], "lt-client is missing"),
        (&[(metadata::CLIENT, TAX)], "lt-service is missing"),
        (
            &[
                (metadata::CLIENT, TAX),
                (metadata::SERVICE, POPULATION),
                (metadata::SERVER, SS2),
            ],
            "not both",
        ),
        (
            &[
                (metadata::CLIENT, TAX),
                (metadata::SERVICE, POPULATION),
                (metadata::MESSAGE_ID, "no spaces"),
            ],
            "message id",
        ),
    ];
    for (given, why) in cases {
        let r = refused(parse(request(&path, given), None, None));
        assert_fault(&r.fault, Fault::BadRequest, why);
    }
}

/// The operator's policy with the certificate `fp` pinned for `subsystem`.
fn pinned(subsystem: &str, fp: &Fingerprint) -> (tempfile::TempDir, Arc<Policy>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = crate::store::ServerStore::open(&dir.path().join("server.db")).expect("a store");
    store.pin_client(&sub(subsystem), fp).expect("pinned");
    let policies = crate::provider::Policies::load(Arc::new(store)).expect("the policy loads");
    (dir, policies.current())
}

#[test]
fn call_needs_a_pinned_certificate_when_pins_are_required() {
    let system = Fingerprint([7; 32]);
    // No certificate, or one no one pinned.
    let none = Policy::default();
    for cert in [None, Some(system)] {
        let r = refused(parse(tax_call(), cert, Some(&none)));
        assert_fault(
            &r.fault,
            Fault::ClientUnauthenticated,
            "not pinned for VN/GOV/1001/tax",
        );
    }
    // Pinned for another subsystem of the same member.
    let (_dir, audit_pin) = pinned(AUDIT, &system);
    let r = refused(parse(tax_call(), Some(system), Some(&audit_pin)));
    assert_fault(
        &r.fault,
        Fault::ClientUnauthenticated,
        "not pinned for VN/GOV/1001/tax",
    );
    // Pinned for the subsystem it calls as.
    let (_dir, tax_pin) = pinned(TAX, &system);
    let call = accepted(parse(tax_call(), Some(system), Some(&tax_pin)));
    assert_eq!(call.meta.client, sub(TAX));
    // Pins not required: no certificate needed.
    accepted(parse(tax_call(), None, None));
}

#[test]
fn refusals_before_the_call_is_checked_name_no_client() {
    let r = refused(parse(tax_call(), None, Some(&Policy::default())));
    assert_eq!(r.fault.fault, Fault::ClientUnauthenticated);
    let record = &r.record;
    assert_eq!(record.role, Role::Consumer);
    assert_eq!(record.phase, Phase::Fault);
    assert_eq!(record.message_id, "m-1");
    assert_eq!(record.service, PERSONS);
    assert_eq!(record.method, GET);
    assert_eq!(record.client, "");
    assert_eq!(record.user_id, "");
    assert_eq!(record.purpose, "");
    assert_eq!(record.data_subject, "");
}

// === stage 2: check ===

fn meta(client: &str, target: Target) -> CallMetadata {
    CallMetadata {
        client: sub(client),
        target,
        user_id: "officer 7".into(),
        purpose: "tax audit".into(),
        data_subject: "012345678901".into(),
        message_id: None,
        traceparent: String::new(),
        tracestate: String::new(),
        withheld_until_ms: 0,
    }
}

fn population() -> Target {
    Target::Provider(sub(POPULATION))
}

fn check_call(call: &CallMetadata, service: &str) -> Result<(), FaultError> {
    check::check_call(&fx().view, &sid(SS1), call, service)
}

#[test]
fn a_call_this_server_may_make_passes() {
    check_call(&meta(TAX, population()), PERSONS).expect("TAX may call the person registry");
    check_call(&meta(TAX, population()), HOUSEHOLDS).expect("with its data subject");
}

#[test]
fn an_unknown_client_is_refused() {
    let f = check_call(&meta(GHOST, population()), PERSONS).expect_err("unknown");
    assert_fault(&f, Fault::UnknownClient, "not a registered client");
}

#[test]
fn a_client_on_another_server_is_refused() {
    let f = check_call(&meta(POPULATION, population()), PERSONS).expect_err("on SS2");
    assert_fault(&f, Fault::ClientNotOnThisServer, "another security server");
}

#[test]
fn withholding_needs_a_grant() {
    let until = unix_ms(SystemTime::now()) + DAY_MS;
    let mut tax = meta(TAX, population());
    tax.withheld_until_ms = until;
    let f = check_call(&tax, PERSONS).expect_err("TAX has no grant");
    assert_fault(&f, Fault::WithholdingNotAllowed, "may not withhold");

    let mut audit = meta(AUDIT, population());
    audit.withheld_until_ms = until;
    check_call(&audit, PERSONS).expect("AUDIT is a withholder");
    audit.withheld_until_ms = until + 30 * DAY_MS;
    let f = check_call(&audit, PERSONS).expect_err("beyond the grant");
    assert_fault(&f, Fault::WithholdingNotAllowed, "maximum");
}

#[test]
fn an_unknown_service_is_refused() {
    let f = check_call(&meta(TAX, population()), "population.v1.Unknown").expect_err("not offered");
    assert_fault(&f, Fault::UnknownService, "does not offer");
    // Offered, but no server serves the provider.
    let f = check_call(&meta(TAX, Target::Provider(sub(ARCHIVE))), RECORDS).expect_err("no server");
    assert_fault(&f, Fault::UnknownService, "does not offer");
}

#[test]
fn builtin_services_go_to_a_known_server() {
    let trace = crate::trace::SERVICE;
    check_call(&meta(TAX, Target::Server(sid(SS2))), trace).expect("a built-in service of SS2");
    let f = check_call(&meta(TAX, Target::Server(sid(SS2))), PERSONS)
        .expect_err("not a built-in service");
    assert_fault(&f, Fault::UnknownService, "does not offer");
    let f = check_call(&meta(TAX, Target::Server(sid("VN/GOV/1002/ss9"))), trace)
        .expect_err("no such server");
    assert_fault(&f, Fault::UnknownService, "does not offer");
}

#[test]
fn the_data_subject_follows_the_instances_rules() {
    let mut call = meta(TAX, population());
    call.data_subject = String::new();
    let f = check_call(&call, HOUSEHOLDS).expect_err("personal data");
    assert_fault(&f, Fault::DataSubjectRequired, "handles personal data");
    check_call(&call, PERSONS).expect("not personal data: no subject needed");
    call.data_subject = "12345".into();
    let f = check_call(&call, PERSONS).expect_err("not a citizen id");
    assert_fault(&f, Fault::BadRequest, "lt-data-subject");
}

fn conf_client(view: Option<ConfView>) -> ConfClient {
    let client = ConfClient::new(
        gc::Anchor::default(),
        std::path::PathBuf::from("configuration.bin"),
        ConfClient::empty_trust(),
    );
    client.install_view(view.map(Arc::new));
    client
}

fn checked(request: Request<Full<Bytes>>) -> Result<Checked, Refusal> {
    let conf = conf_client(Some((*fx().view).clone()));
    check::against_configuration(accepted(parse(request, None, None)), &conf, &sid(SS1))
}

#[test]
fn calls_need_a_current_configuration() {
    let none = conf_client(None);
    let r = refused(check::against_configuration(
        accepted(parse(tax_call(), None, None)),
        &none,
        &sid(SS1),
    ));
    assert_fault(
        &r.fault,
        Fault::ConsumerConfExpired,
        "no global configuration",
    );

    let mut expired = (*fx().view).clone();
    expired.expires_at_ms = unix_ms(SystemTime::now());
    let r = refused(check::against_configuration(
        accepted(parse(tax_call(), None, None)),
        &conf_client(Some(expired)),
        &sid(SS1),
    ));
    assert_fault(&r.fault, Fault::ConsumerConfExpired, "expired");

    let ok = accepted(checked(tax_call()));
    assert_eq!(ok.view.version, 7);
}

#[test]
fn a_call_refused_by_the_configuration_is_recorded_without_its_client() {
    // POPULATION is a real client, of another server: nothing it says is
    // this server's to record.
    let r = refused(checked(request(
        &format!("/{PERSONS}/{GET}"),
        &[
            (metadata::CLIENT, POPULATION),
            (metadata::SERVICE, POPULATION),
            (metadata::PURPOSE, "curiosity"),
            (metadata::DATA_SUBJECT, "012345678901"),
            (metadata::MESSAGE_ID, "m-2"),
        ],
    )));
    assert_eq!(r.fault.fault, Fault::ClientNotOnThisServer);
    assert_eq!(r.record.message_id, "m-2");
    assert_eq!(r.record.client, "");
    assert_eq!(r.record.purpose, "");
    assert_eq!(r.record.data_subject, "");
}

// === stage 3: sign ===

#[tokio::test]
async fn signing_reads_a_bounded_request_for_a_member_it_holds_a_key_of() {
    // Over the limit: refused before any key is looked for.
    let r = refused(sign::sign(accepted(checked(tax_call())), &Signers::default(), 4).await);
    assert_fault(&r.fault, Fault::MessageTooLarge, "larger than 4 bytes");
    // Within it, but this server holds no key of the client's member. The
    // call was checked, so its record names the client now.
    let r = refused(
        sign::sign(
            accepted(checked(tax_call())),
            &Signers::default(),
            MAX_MESSAGE,
        )
        .await,
    );
    assert_fault(&r.fault, Fault::NoSigningKey, "VN/GOV/1001");
    assert_eq!(r.record.client, TAX);
    assert_eq!(r.record.purpose, "tax audit");
    assert_eq!(r.record.data_subject, "012345678901");
    assert_eq!(r.record.service, format!("{POPULATION}/{PERSONS}"));
}

// === stage 6: verify ===

const REQUEST_DIGEST: [u8; 32] = [0x42; 32];
const MESSAGE_ID: &str = "m-1";
const RESPONSE: &[u8] = b"\0\0\0\0\x03abc";

fn provider_member() -> MemberId {
    sub(POPULATION).member
}

/// What the provider's server signs for an OK answer of [`RESPONSE`].
fn response_header() -> ResponseHeader {
    ResponseHeader {
        message_id: MESSAGE_ID.into(),
        request_digest: REQUEST_DIGEST.to_vec(),
        created_at_unix_ms: unix_ms(SystemTime::now()),
        payload_digest: lienthong_proto::sha256(RESPONSE).to_vec(),
        payload_size: RESPONSE.len() as u64,
        grpc_status: 0,
    }
}

/// `header` signed by `signer` as the provider's server signs it.
fn seal(signer: &Signer, header: ResponseHeader) -> Vec<u8> {
    let digest = canonical::digest(&canonical::response_header(&header));
    ResponseEnvelope {
        header: Some(header),
        signature: Some(signer.sign_digest(&digest).expect("signs")),
    }
    .encode_to_vec()
}

/// Trailers with `status` and, if any, the response envelope.
fn trailers(status: i32, envelope: Option<&[u8]>) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(status));
    if let Some(e) = envelope {
        metadata::put_bin(&mut t, metadata::RESPONSE_ENVELOPE, e);
    }
    t
}

/// What arrived: [`RESPONSE`] and `trailers`.
fn observed(trailers: Option<HeaderMap>) -> Observation {
    Observation {
        digest: lienthong_proto::sha256(RESPONSE),
        size: RESPONSE.len() as u64,
        trailers,
        error: None,
        body: None,
        oversized: None,
    }
}

fn check_response(obs: &Observation) -> Result<Vec<u8>, FaultError> {
    check_response_to(obs, MESSAGE_ID, &REQUEST_DIGEST)
}

fn check_response_to(
    obs: &Observation,
    message_id: &str,
    request_digest: &[u8; 32],
) -> Result<Vec<u8>, FaultError> {
    let provider = provider_member();
    let expected = Expected {
        provider: &provider,
        message_id,
        request_digest,
    };
    verify::check_response(expected, &fx().view, obs, MAX_MESSAGE)
}

fn signed_ok() -> Vec<u8> {
    seal(&fx().provider_member, response_header())
}

#[test]
fn a_response_signed_by_the_provider_for_this_request_passes() {
    let envelope = signed_ok();
    let logged = check_response(&observed(Some(trailers(0, Some(&envelope))))).expect("valid");
    assert_eq!(logged, envelope, "the envelope is kept for the log");

    // A signed error status is the provider's answer too.
    let mut h = response_header();
    h.grpc_status = 5;
    let envelope = seal(&fx().provider_member, h);
    check_response(&observed(Some(trailers(5, Some(&envelope))))).expect("a signed NotFound");
}

#[test]
fn an_unsigned_response_is_refused() {
    let f = check_response(&observed(Some(trailers(0, None)))).expect_err("no envelope");
    assert_fault(&f, Fault::BadResponse, "carries no signed envelope");

    let unsigned = ResponseEnvelope {
        header: Some(response_header()),
        signature: None,
    }
    .encode_to_vec();
    let f = check_response(&observed(Some(trailers(0, Some(&unsigned))))).expect_err("unsigned");
    assert_fault(&f, Fault::BadResponse, "incomplete");

    let f = check_response(&observed(None)).expect_err("no trailers");
    assert_fault(&f, Fault::BadResponse, "without trailers");
}

#[test]
fn a_response_signed_by_another_member_is_refused() {
    // The client's own member's certificate is current, but not the provider's.
    let envelope = seal(&fx().consumer_member, response_header());
    let f = check_response(&observed(Some(trailers(0, Some(&envelope))))).expect_err("wrong");
    assert_fault(
        &f,
        Fault::BadResponse,
        "not signed by a current signing certificate of VN/GOV/1002",
    );
}

#[test]
fn a_tampered_response_header_is_refused() {
    let digest = canonical::digest(&canonical::response_header(&response_header()));
    let mut h = response_header();
    h.payload_size += 1;
    let envelope = ResponseEnvelope {
        header: Some(h),
        signature: Some(fx().provider_member.sign_digest(&digest).expect("signs")),
    }
    .encode_to_vec();
    let f = check_response(&observed(Some(trailers(0, Some(&envelope))))).expect_err("tampered");
    assert_fault(&f, Fault::BadResponse, "does not verify");
}

#[test]
fn a_response_bound_to_another_request_is_refused() {
    let obs = observed(Some(trailers(0, Some(&signed_ok()))));
    let f = check_response_to(&obs, MESSAGE_ID, &[0x43; 32]).expect_err("another request");
    assert_fault(&f, Fault::BadResponse, "does not verify");
    let f = check_response_to(&obs, "m-2", &REQUEST_DIGEST).expect_err("another message");
    assert_fault(&f, Fault::BadResponse, "answers another message");
}

#[test]
fn a_response_whose_payload_or_status_differs_is_refused() {
    let envelope = signed_ok();
    let mut altered = observed(Some(trailers(0, Some(&envelope))));
    altered.digest = lienthong_proto::sha256(b"\0\0\0\0\x03abd");
    let f = check_response(&altered).expect_err("payload altered");
    assert_fault(&f, Fault::BadResponse, "payload does not match");

    let mut longer = observed(Some(trailers(0, Some(&envelope))));
    longer.size += 1;
    let f = check_response(&longer).expect_err("payload size");
    assert_fault(&f, Fault::BadResponse, "payload does not match");

    // Signed OK, arrived as PermissionDenied.
    let f = check_response(&observed(Some(trailers(7, Some(&envelope))))).expect_err("status");
    assert_fault(&f, Fault::BadResponse, "status does not match");
}

#[test]
fn a_providers_fault_is_passed_on() {
    let mut t = trailers(Fault::AccessDenied.status() as i32, None);
    t.insert(
        FAULT_HEADER,
        HeaderValue::from_static(Fault::AccessDenied.code()),
    );
    let f = check_response(&observed(Some(t))).expect_err("the provider refused");
    assert_fault(&f, Fault::AccessDenied, Fault::AccessDenied.code());

    // Only a provider server's own faults: a code of another side, or none
    // of ours, is a bad response.
    for code in [Fault::UnknownClient.code(), "server.serverproxy.made_up"] {
        let mut t = trailers(7, None);
        t.insert(FAULT_HEADER, HeaderValue::from_static(code));
        let f = check_response(&observed(Some(t))).expect_err("not passed on");
        assert_fault(&f, Fault::BadResponse, code);
    }
}

#[test]
fn an_oversized_or_broken_response_is_refused() {
    let mut big = observed(Some(trailers(0, Some(&signed_ok()))));
    big.oversized = Some(5_000);
    let f = check_response(&big).expect_err("oversized");
    assert_fault(&f, Fault::ResponseTooLarge, "5000 bytes");

    let mut broken = observed(None);
    broken.error = Some("stream reset".into());
    let f = check_response(&broken).expect_err("broken off");
    assert_fault(&f, Fault::ProviderUnreachable, "stream reset");
}

// === message ids ===

#[test]
fn message_ids_are_unique_and_ordered_by_time() {
    use std::time::Duration;
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
    let a = super::message_id_at(t);
    let b = super::message_id_at(t);
    let later = super::message_id_at(t + Duration::from_millis(1));
    assert_eq!(a.len(), 32);
    assert!(crate::metadata::check_message_id(&a).is_ok());
    assert_ne!(a, b, "80 random bits");
    assert_eq!(a[..12], b[..12]);
    assert_eq!(&a[..12], format!("{:012x}", 1_795_000_000_123u64));
    assert!(later > a && later > b, "later ids sort after");
}

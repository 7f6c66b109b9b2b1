//! Makes the fixture instance (`fixtures/`, if missing) and the seed
//! corpora (`corpus/<target>/`): the inputs the unit tests use, in each
//! target's input format.
//!
//! Run from `fuzz/`: `cargo run --example seeds`.

use std::path::Path;

use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr, pem};
use lienthong_fuzz::{Fixture, fixture, fixtures_dir};
use lienthong_proto::pb::exchange::v1::{RequestHeader, ResponseHeader};
use lienthong_proto::pb::globalconf::v1::SignedConfiguration;
use lienthong_proto::pb::identifiers::v1::ServiceId;
use lienthong_proto::pb::operational::v1::OperationalQuery;
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessReply};
use lienthong_proto::pb::trace::v1::{
    FindUsageReply, FindUsageRequest, UsageRecord, WithheldCount,
};
use lienthong_proto::{canonical, merkle};
use lienthong_proto::time::unix_ms;
use lienthong_security_server::message_log::leaf::leaf_bytes;
use lienthong_security_server::message_log::{LogRecord, Phase, Role};
use prost::Message;

/// Twenty years: the fixtures outlive the repository's interest in them.
const FIXTURE_DAYS: u32 = 7300;

fn make_fixtures(dir: &Path) {
    if dir.join("ca.der").exists() {
        return;
    }
    std::fs::create_dir_all(dir).expect("fixtures dir");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("write");
    let validity = Validity::days(FIXTURE_DAYS);
    let ca = InstanceCa::create(
        "VN",
        PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key"),
        validity,
    )
    .expect("CA");
    write("ca.der", ca.certificate());
    let request = |alg| {
        let key = PrivateKey::generate(alg).expect("key");
        let csr = csr::verify(&csr::create(&key, "fuzz").expect("csr")).expect("verified");
        (key, csr)
    };
    let (key, csr) = request(KeyAlgorithm::EcdsaP256);
    let cert = ca
        .issue_configuration_signing(&csr, validity)
        .expect("issued");
    write("registry.der", &cert);
    write("registry.key.pem", key.to_pem().as_bytes());
    for (name, member, alg) in [
        (
            "provider",
            lienthong_fuzz::PROVIDER_MEMBER,
            KeyAlgorithm::EcdsaP256,
        ),
        (
            "client",
            lienthong_fuzz::CLIENT_MEMBER,
            KeyAlgorithm::Ed25519,
        ),
    ] {
        let (key, csr) = request(alg);
        let cert = ca
            .issue_signing(&csr, &member.parse().expect("id"), validity)
            .expect("issued");
        write(&format!("{name}.der"), &cert);
        write(&format!("{name}.key.pem"), key.to_pem().as_bytes());
    }
    let (_, csr) = request(KeyAlgorithm::EcdsaP256);
    let auth = ca
        .issue_auth(
            &csr,
            &lienthong_fuzz::PROVIDER_SERVER.parse().expect("id"),
            "127.0.0.1:1",
            validity,
        )
        .expect("issued");
    write("auth.der", &auth);
}

struct Corpus(std::path::PathBuf);

impl Corpus {
    fn new(target: &str) -> Self {
        let dir = fixtures_dir().join("../corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        Corpus(dir)
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(name), bytes).expect("write seed");
    }
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    [&[mode][..], rest].concat()
}

fn metadata_seeds() {
    let c = Corpus::new("metadata");
    let enc = |max: u16, pairs: &[(u8, &[u8])]| {
        let mut out = max.to_be_bytes().to_vec();
        for (name, value) in pairs {
            out.push(*name);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    };
    // Indexes into the target's NAMES.
    let (client, service, user, purpose, subject, id, server, withheld) = (0, 1, 2, 3, 4, 5, 6, 7);
    let (traceparent, envelope, timeout, path) = (8, 10, 11, 12);
    let call: Vec<(u8, &[u8])> = vec![
        (client, b"VN/GOV/000305/business"),
        (service, b"VN/GOV/000102/population"),
        (user, b"officer-7"),
        (purpose, "case 2026/114 – hồ sơ".as_bytes()),
        (subject, b"001099012345"),
        (id, b"m-1"),
        (
            traceparent,
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (timeout, b"250m"),
        (path, b"/population.v1.PersonRegistry/GetPerson"),
        (envelope, b"AAFoZWxsbw=="),
    ];
    c.put("call", &enc(100, &call));
    c.put(
        "builtin",
        &enc(
            16384,
            &[
                (client, b"VN/GOV/000305/business"),
                (server, b"VN/GOV/000102/ss1"),
                (withheld, b"1900000000000"),
                (timeout, b"1H"),
                (path, b"/lienthong.trace.v1.AccessTrace/FindUsage"),
            ],
        ),
    );
    c.put(
        "refused",
        &enc(
            3,
            &[
                (client, b"VN/GOV/000305"),
                (service, b"VN/GOV/0_1/x"),
                (id, b"has space"),
                (purpose, b"a\tb"),
                (timeout, b"123456789S"),
                (envelope, b"!!!"),
                (path, b"/a/b.c"),
            ],
        ),
    );
}

fn header(f: &Fixture) -> RequestHeader {
    let payload = b"\x00\x00\x00\x00\x02\x08\x01";
    RequestHeader {
        message_id: "m-1".into(),
        client: Some((&f.client_id).into()),
        service: Some(ServiceId {
            provider: Some((&f.provider_id).into()),
            service_code: lienthong_fuzz::SERVICE.into(),
            ..Default::default()
        }),
        method: lienthong_fuzz::METHOD.into(),
        user_id: "officer-7".into(),
        purpose: "case 2026/114".into(),
        data_subject: "001099012345".into(),
        created_at_unix_ms: 1_780_000_000_000,
        payload_digest: lienthong_proto::sha256(payload).to_vec(),
        payload_size: payload.len() as u64,
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ..Default::default()
    }
}

fn envelope_seeds(f: &Fixture) {
    let c = Corpus::new("envelope");
    let h = header(f);
    let signed = f
        .client
        .sign_request(h.clone())
        .expect("signs")
        .encode_to_vec();
    c.put("request", &[&[0, 0][..], &signed].concat());
    c.put("request-resigned", &[&[1, 0][..], &signed].concat());
    c.put("request-batch", &[&[2, 5][..], &signed].concat());
    let digest = canonical::digest(&canonical::request_header(&h));
    let digests = [digest, [1; 32], [2; 32]];
    let batch = f.client.sign_batch(&digests).expect("signs");
    let mut env = f.client.sign_request(h.clone()).expect("signs");
    env.signature = Some(batch[0].clone());
    c.put(
        "request-batched",
        &[&[0, 0][..], &env.encode_to_vec()].concat(),
    );
    let mut builtin = h.clone();
    builtin.service = Some(ServiceId {
        provider: None,
        service_code: "lienthong.trace.v1.AccessTrace".into(),
        ..Default::default()
    });
    builtin.method = "FindUsage".into();
    builtin.target_server = Some((&f.provider_server).into());
    let env = f.client.sign_request(builtin).expect("signs");
    c.put(
        "request-builtin",
        &[&[0, 0][..], &env.encode_to_vec()].concat(),
    );
    let response = f
        .provider
        .sign_response(ResponseHeader {
            message_id: "m-1".into(),
            request_digest: digest.to_vec(),
            created_at_unix_ms: 1_780_000_000_100,
            payload_digest: vec![3; 32],
            payload_size: 12,
            grpc_status: 0,
            ..Default::default()
        })
        .expect("signs");
    c.put(
        "response",
        &[&[0, 0][..], &response.encode_to_vec()].concat(),
    );
}

fn frames_seeds() {
    let c = Corpus::new("grpc_frames");
    let message = |len: usize| {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    };
    let head = |max: u16, capture: u16, cuts: &[u8]| {
        let mut h = max.to_be_bytes().to_vec();
        h.extend_from_slice(&capture.to_be_bytes());
        h.push(cuts.len() as u8);
        h.extend_from_slice(cuts);
        h
    };
    let fits = [message(10), message(0), message(100), message(3)].concat();
    c.put("fits", &[head(100, 1000, &[3, 7, 1]), fits].concat());
    let over = [message(10), message(101), message(1)].concat();
    c.put(
        "oversized",
        &[head(100, 1000, &[17]), over.clone()].concat(),
    );
    c.put(
        "oversized-split",
        &[head(8, 4, &[11]), [message(4), message(9)].concat()].concat(),
    );
    c.put(
        "unary",
        &[head(65535, 65535, &[]), vec![0, 0, 0, 0, 2, 0x08, 0x01]].concat(),
    );
}

fn conf_seeds(f: &Fixture) {
    let c = Corpus::new("signed_conf");
    let conf = f.configuration();
    let signed = lienthong_certs::conf::sign_configuration(&conf, &f.registry).expect("signs");
    c.put("signed", &[&[0, 3][..], &signed.encode_to_vec()].concat());
    c.put(
        "signed-no-held",
        &[&[0, 0][..], &signed.encode_to_vec()].concat(),
    );
    c.put(
        "configuration",
        &[&[1, 0][..], &conf.encode_to_vec()].concat(),
    );
    let unsigned = SignedConfiguration {
        configuration: conf.encode_to_vec(),
        signature: None,
        ..Default::default()
    };
    c.put(
        "unsigned",
        &[&[0, 0][..], &unsigned.encode_to_vec()].concat(),
    );
    c.put("anchor", &[&[2, 0][..], &f.anchor.encode_to_vec()].concat());
}

fn cert_seeds(f: &Fixture) {
    let c = Corpus::new("certificate");
    for (name, der) in [
        ("ca", &f.ca_cert),
        ("registry", &f.registry_cert),
        ("provider", &f.provider_cert),
        ("client", &f.client_cert),
        ("auth", &f.auth_cert),
    ] {
        c.put(name, der);
    }
    let chain =
        [f.auth_cert.clone(), f.ca_cert.clone()].map(rustls_pki_types::CertificateDer::from);
    c.put("chain.pem", pem::certs_to_pem(&chain).as_bytes());

    let c = Corpus::new("csr");
    for (name, alg) in [
        ("p256", KeyAlgorithm::EcdsaP256),
        ("ed25519", KeyAlgorithm::Ed25519),
    ] {
        let key = PrivateKey::generate(alg).expect("key");
        let der = csr::create(&key, "VN/GOV/000102/ss1").expect("csr");
        c.put(name, &der);
        if name == "p256" {
            c.put(
                "p256.pem",
                pem::encode("CERTIFICATE REQUEST", &der).as_bytes(),
            );
        }
    }
}

fn record(role: Role, phase: Phase, at: i64) -> LogRecord {
    LogRecord {
        role,
        phase,
        at_ms: at,
        message_id: "m-1".into(),
        client: lienthong_fuzz::CLIENT.into(),
        service: format!("{}/{}", lienthong_fuzz::PROVIDER, lienthong_fuzz::SERVICE),
        method: lienthong_fuzz::METHOD.into(),
        user_id: "officer-7".into(),
        purpose: "case 2026/114".into(),
        data_subject: "001099012345".into(),
        peer: lienthong_fuzz::CLIENT_SERVER.into(),
        request_digest: vec![1; 32],
        payload_digest: vec![2; 32],
        payload_size: 7,
        envelope: b"envelope".to_vec(),
        grpc_status: if phase == Phase::Fault { 7 } else { 0 },
        fault: if phase == Phase::Fault {
            "server.access_denied".into()
        } else {
            String::new()
        },
        withheld_until_ms: 0,
        duration_us: 1200,
        body: None,
    }
}

fn leaf_seeds() {
    let c = Corpus::new("log_leaf");
    let leaf = leaf_bytes(
        &record(Role::Provider, Phase::Request, 1_780_000_000_000),
        Some([9; 32]),
        None,
    );
    c.put("leaf", &with_mode(0, &leaf));
    let leaf = leaf_bytes(
        &record(Role::Consumer, Phase::Fault, 1_780_000_000_000),
        None,
        Some([4; 32]),
    );
    c.put("leaf-fault", &with_mode(0, &leaf));
    // A request-shaped record sealed and opened: the leaf above, then the
    // names and subject its envelope's header is made of.
    let names = b"VN/GOV/000305/business/VN/GOV/000102/population/population.v1.PersonRegistry/001099012345";
    let split = u16::try_from(leaf.len()).expect("a leaf is short");
    let sealed = [&split.to_be_bytes()[..], &[2], &leaf, names].concat();
    c.put("sealed-request", &with_mode(3, &sealed));
    let q = FindUsageRequest {
        data_subject: "001099012345".into(),
        page_size: 10,
        ..Default::default()
    };
    c.put("find-usage", &with_mode(1, &q.encode_to_vec()));
    let q = OperationalQuery {
        since_unix_ms: 1_780_000_000_000,
        until_unix_ms: 0,
        message_id: "m-1".into(),
        limit: 5,
        ..Default::default()
    };
    c.put(
        "operational",
        &with_mode(1, &q.encode_to_vec()),
    );
    c.put(
        "admin-query",
        &with_mode(2, b"since_hours=5&limit=10&message_id=m-1"),
    );
}

fn trace_seeds(f: &Fixture) {
    let c = Corpus::new("trace_reply");
    let now = unix_ms(std::time::SystemTime::now());
    let leaves: Vec<Vec<u8>> = [
        record(Role::Provider, Phase::Request, now - 2000),
        record(Role::Provider, Phase::Response, now - 1900),
        record(Role::Provider, Phase::Fault, now - 1000),
    ]
    .iter()
    .enumerate()
    .map(|(i, r)| {
        let mut r = r.clone();
        r.message_id = format!("m-{}", i / 2);
        leaf_bytes(&r, Some([5; 32]), None)
    })
    .collect();
    let hashes: Vec<merkle::Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let mut cp = Checkpoint {
        server: Some((&f.provider_server).into()),
        tree_size: hashes.len() as u64,
        root_hash: merkle::root(&hashes).to_vec(),
        created_at_unix_ms: now - 500,
        signature: None,
        ..Default::default()
    };
    let digest = canonical::digest(&canonical::checkpoint(&cp));
    cp.signature = Some(f.provider.sign_digest(&digest).expect("signs"));
    let reply = FindUsageReply {
        records: leaves
            .iter()
            .enumerate()
            .map(|(i, l)| UsageRecord {
                message_id: format!("m-{}", i / 2),
                leaf_index: i as u64,
                leaf: l.clone(),
                inclusion_proof: merkle::inclusion_proof(&hashes, i)
                    .expect("in range")
                    .iter()
                    .map(|h| h.to_vec())
                    .collect(),
                ..Default::default()
            })
            .collect(),
        withheld: vec![WithheldCount {
            until_unix_ms: now + 86_400_000,
            count: 2,
            ..Default::default()
        }],
        checkpoint: Some(cp),
        witness: Some(WitnessReply {
            countersignature: Some(f.registry.sign_digest(&digest).expect("signs")),
            witnessed_at_unix_ms: now - 400,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = reply.encode_to_vec();
    c.put("verified", &with_mode(0, &bytes));
    c.put("resigned", &with_mode(1, &bytes));
    c.put("rebuilt", &with_mode(2, &bytes));
    let mut unwitnessed = reply.clone();
    unwitnessed.witness = None;
    c.put("unwitnessed", &with_mode(0, &unwitnessed.encode_to_vec()));
}

fn main() {
    make_fixtures(&fixtures_dir());
    let f = fixture();
    metadata_seeds();
    envelope_seeds(f);
    frames_seeds();
    conf_seeds(f);
    cert_seeds(f);
    leaf_seeds();
    trace_seeds(f);
    println!("fixtures in {}, seeds in corpus/", fixtures_dir().display());
}

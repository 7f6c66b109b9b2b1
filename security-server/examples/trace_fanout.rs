//! How a citizen's trace grows with the number of security servers: the
//! trace portal's fan-out, verification and merge (`portal::fan_out`, the
//! code `lienthong trace` runs) against 10 → 500 simulated servers. Each
//! simulated server answers after a simulated round trip with what a real
//! one sends: its records about the citizen, their RFC 6962 inclusion
//! proofs in a log of `--log-size` records, its checkpoint signed with its
//! owner's (Ed25519) signing key and countersigned by the registry (P-256),
//! all certified by one instance CA through a real global configuration.
//!
//! What is not simulated is the bus itself: over the bus each server
//! asked is one exchange through the portal's security server and the
//! asked server's (see the bus benchmark for its cost).
//!
//! Run: `cargo run --release -p lienthong-security-server --example trace_fanout`
//! (`-- --servers 10,50,100,500 --records 4 --latency-ms 20 --log-size 4096 --runs 5`)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lienthong_certs::signing::Signer;
use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, Member, SecurityServer};
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessReply};
use lienthong_proto::pb::trace::v1::{FindUsageReply, LogLeaf, Phase, Side, UsageRecord};
use lienthong_proto::time::unix_ms;
use lienthong_proto::{canonical, merkle};
use lienthong_security_server::conf_client::ConfView;
use lienthong_security_server::trace::portal;
use prost::Message;

struct Args {
    servers: Vec<usize>,
    records: usize,
    latency: Duration,
    log_size: usize,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        servers: vec![10, 50, 100, 500],
        records: 4,
        latency: Duration::from_millis(20),
        log_size: 4096,
        runs: 5,
    };
    let given: Vec<String> = std::env::args().skip(1).collect();
    for pair in given.chunks(2) {
        let v = pair.get(1).expect("a value after each flag");
        let n = || v.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--servers" => a.servers = v.split(',').map(|s| s.parse().expect("N,N,…")).collect(),
            "--records" => a.records = n().max(2) & !1,
            "--latency-ms" => a.latency = Duration::from_millis(n() as u64),
            "--log-size" => a.log_size = n(),
            "--runs" => a.runs = n().max(1),
            other => panic!("unknown flag {other}"),
        }
    }
    a.log_size = a.log_size.max(a.records);
    a
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .map_or(0, |(u, s)| u.parse().unwrap_or(0) + s.parse().unwrap_or(0));
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One simulated server's answer: `records` of its `log_size` records are
/// about the citizen (request and response of `records / 2` exchanges).
fn answer(
    server: &ServerId,
    owner: &Signer,
    registry: &Signer,
    records: usize,
    log_size: usize,
    now_ms: i64,
) -> FindUsageReply {
    let leaves: Vec<Vec<u8>> = (0..log_size)
        .map(|i| {
            LogLeaf {
                side: Side::Provider as i32,
                phase: if i % 2 == 0 {
                    Phase::Request
                } else {
                    Phase::Response
                } as i32,
                at_unix_ms: now_ms - 60_000 + i as i64,
                message_id: format!("{:016x}{:016x}", server_hash(server), i / 2),
                client: "VN/GOV/000305/business".into(),
                service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
                method: "GetPerson".into(),
                user_id: "officer-7".into(),
                purpose: "business registration 2026-114".into(),
                data_subject_hash: vec![(i % 251) as u8; 32],
                peer: "VN/GOV/000305/ss1".into(),
                payload_size: 4096,
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let hashes: Vec<merkle::Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let root = merkle::root(&hashes);
    let mut checkpoint = Checkpoint {
        server: Some(server.into()),
        tree_size: log_size as u64,
        root_hash: root.to_vec(),
        created_at_unix_ms: now_ms - 1000,
        signature: None,
    };
    let digest = canonical::digest(&canonical::checkpoint(&checkpoint));
    checkpoint.signature = Some(owner.sign_digest(&digest).expect("signs"));
    let countersignature = registry.sign_digest(&digest).expect("signs");
    // The citizen's records are the newest ones.
    let records = (log_size - records..log_size)
        .rev()
        .map(|i| UsageRecord {
            message_id: LogLeaf::decode(leaves[i].as_slice())
                .expect("decodes")
                .message_id,
            leaf_index: i as u64,
            leaf: leaves[i].clone(),
            inclusion_proof: merkle::inclusion_proof(&hashes, i)
                .expect("in range")
                .iter()
                .map(|h| h.to_vec())
                .collect(),
            ..Default::default()
        })
        .collect();
    FindUsageReply {
        records,
        withheld: Vec::new(),
        checkpoint: Some(checkpoint),
        witness: Some(WitnessReply {
            countersignature: Some(countersignature),
            witnessed_at_unix_ms: now_ms - 500,
        }),
        next_page_token: String::new(),
        withheld_records: Vec::new(),
        retention_records: Vec::new(),
    }
}

fn server_hash(s: &ServerId) -> u64 {
    lienthong_proto::sha256(s.to_string().as_bytes())[..8]
        .iter()
        .fold(0, |a, b| a << 8 | u64::from(*b))
}

fn signer_for(
    ca: &InstanceCa,
    member: &MemberId,
    alg: KeyAlgorithm,
) -> (Signer, rustls_pki_types::CertificateDer<'static>) {
    let key = PrivateKey::generate(alg).expect("key");
    let csr = csr::verify(&csr::create(&key, "bench").expect("csr")).expect("verified");
    let cert = ca
        .issue_signing(&csr, member, Validity::days(30))
        .expect("issued");
    (Signer::new(&key, &cert).expect("signer"), cert)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let ca = InstanceCa::create(
        "VN",
        PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key"),
        Validity::days(30),
    )
    .expect("CA");
    let registry_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key");
    let registry_csr = csr::verify(&csr::create(&registry_key, "registry").expect("csr")).unwrap();
    let registry_cert = ca
        .issue_configuration_signing(&registry_csr, Validity::days(30))
        .expect("issued");
    let registry = Signer::new(&registry_key, &registry_cert).expect("signer");
    let anchor = Anchor {
        instance: "VN".into(),
        configuration_signing_certificates: vec![registry_cert.to_vec()],
        instance_ca_certificate: ca.certificate().to_vec(),
        ..Default::default()
    };

    println!(
        "| servers | wall time (median of {}) | portal CPU | CPU per server answer | records verified |",
        a.runs
    );
    println!("|---|---|---|---|---|");
    for &n in &a.servers {
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        let mut conf = GlobalConfiguration {
            instance: "VN".into(),
            version: 1,
            created_at_unix_ms: now_ms - 1000,
            expires_at_unix_ms: now_ms + 3_600_000,
            trusted_ca_certificates: vec![ca.certificate().to_vec()],
            ..Default::default()
        };
        let mut replies = HashMap::new();
        for i in 0..n {
            let member: MemberId = format!("VN/GOV/{:06}", 100_000 + i).parse().unwrap();
            let server = ServerId {
                owner: member.clone(),
                code: "ss1".parse().unwrap(),
            };
            let (owner, cert) = signer_for(&ca, &member, KeyAlgorithm::Ed25519);
            conf.members.push(Member {
                id: Some((&member).into()),
                name: format!("Agency {i}"),
                subsystem_codes: vec!["registry".into()],
                signing_certificates: vec![cert.to_vec()],
            });
            conf.security_servers.push(SecurityServer {
                id: Some((&server).into()),
                address: format!("ss1.agency{i}.gov.vn:5500"),
                auth_certificate_sha256: vec![lienthong_proto::sha256(&cert).to_vec()],
                clients: Vec::new(),
            });
            let reply = answer(&server, &owner, &registry, a.records, a.log_size, now_ms);
            replies.insert(server, reply);
        }
        let view = ConfView::build(&conf, now).expect("configuration");
        assert_eq!(view.servers().count(), n);
        let replies = Arc::new(replies);

        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        let mut verified = 0;
        for _ in 0..a.runs {
            let (cpu0, t0) = (cpu_time(), Instant::now());
            let answers = replies.clone();
            let latency = a.latency;
            let report = portal::fan_out(
                &view,
                &anchor,
                "001099012345",
                Duration::from_secs(60),
                move |server| {
                    let answers = answers.clone();
                    async move {
                        tokio::time::sleep(latency).await;
                        Ok::<_, std::convert::Infallible>(vec![answers[&server].clone()])
                    }
                },
            )
            .await
            .expect("fan-out");
            walls.push(t0.elapsed());
            cpus.push(cpu_time().saturating_sub(cpu0));
            assert!(report.failures.is_empty(), "{:?}", report.failures);
            assert!(report.unanswered.is_empty());
            assert_eq!(report.exchanges.len(), n * a.records / 2);
            verified = n * a.records;
        }
        let cpu = median(cpus);
        println!(
            "| {n} | {:.1?} | {:.1?} | {:.0?} | {verified} |",
            median(walls),
            cpu,
            cpu / n as u32
        );
    }
    println!(
        "\n(simulated round trip {:?}; {} records per server in a log of {}; CPU from /proc at 10 ms resolution)",
        a.latency, a.records, a.log_size
    );
}

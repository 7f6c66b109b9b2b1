//! `lienthong demo`: a local instance with three agencies.
//!
//! Sets up the instance PKI the way a real instance does it — every key made
//! where it will live, every certificate issued from a CSR with proof of
//! possession — then proves the two mechanisms every exchange rests on:
//! mutual TLS pinned to the instance's certificates, and a signed request
//! envelope whose response is bound to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use lienthong_certs::net::{TlsConnectorService, tls_incoming};
use lienthong_certs::signing::{Signer, VerifyingKey};
use lienthong_certs::tls::{Identity, Trust, TrustStore, client_config, server_config};
use lienthong_certs::{
    Fingerprint, InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr, pem, verify,
};
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::exchange::v1::{RequestHeader, ResponseHeader};
use tokio_stream::StreamExt;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for the instance's files; a fresh temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The demo's agencies: member, legal name, server code, subsystem.
const AGENCIES: &[(&str, &str, &str, &str)] = &[
    (
        "VN/GOV/000102",
        "Bộ Công an — Cục Cảnh sát QLHC về TTXH",
        "ss1",
        "population",
    ),
    (
        "VN/GOV/000305",
        "Sở Kế hoạch và Đầu tư Hà Nội",
        "ss1",
        "business",
    ),
    ("VN/GOV/000201", "Tổng cục Thuế", "ss1", "tax"),
];

struct Agency {
    name: &'static str,
    server: ServerId,
    subsystem: SubsystemId,
    tls: Identity,
    auth_fp: Fingerprint,
    signer: Signer,
    signing_cert: Vec<u8>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn run(args: DemoArgs) -> Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            std::env::temp_dir().join(format!("lienthong-demo-{stamp}"))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(play(&dir))
}

fn step(n: usize, text: &str) {
    println!("[{n}] {text}");
}

async fn play(dir: &Path) -> Result<()> {
    println!("Lienthong demo instance VN in {}", dir.display());
    step(1, "instance CA");
    let ca_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    pem::write_key(&dir.join("ca.key"), &ca_key)?;
    let ca = InstanceCa::create("VN", ca_key, Validity::days(3650))?;
    pem::write_certs(&dir.join("ca.pem"), std::slice::from_ref(ca.certificate()))?;
    println!("    CA fingerprint {}", Fingerprint::of(ca.certificate()));

    step(
        2,
        "each agency's security server makes its keys and sends CSRs; the CA issues",
    );
    let mut agencies = Vec::new();
    for (member, name, server, subsystem) in AGENCIES {
        agencies.push(enroll(dir, &ca, member, name, server, subsystem)?);
    }
    let [population, business, _tax] = &agencies[..] else {
        return Err("demo needs three agencies".into());
    };

    step(
        3,
        "mutual TLS between the business registry's and the population registry's servers",
    );
    let pinned: Vec<Fingerprint> = agencies.iter().map(|a| a.auth_fp).collect();
    let trust = || Trust::new(std::slice::from_ref(ca.certificate()), pinned.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let srv_cfg = Arc::new(server_config(&population.tls, TrustStore::new(trust()?))?);
    let mut incoming = tls_incoming(listener, srv_cfg);
    let accept = tokio::spawn(async move {
        let tls = incoming.next().await.ok_or("listener closed")??;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("peer sent no certificate")?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(verify::auth_identity(&peer)?)
    });
    let cli_cfg = client_config(
        &business.tls,
        TrustStore::new(trust()?),
        Some(population.server.clone()),
    )?;
    let started = Instant::now();
    let _stream = TlsConnectorService::new(Arc::new(cli_cfg))
        .connect("127.0.0.1", addr.port())
        .await?;
    let seen = accept.await?.map_err(|e| e.to_string())?;
    println!(
        "    {} reached {} at {addr}; it sees the caller as {seen} ({:.1} ms)",
        business.server,
        population.server,
        started.elapsed().as_secs_f64() * 1e3
    );

    step(4, "a signed request and a response bound to it");
    let payload = b"\x00\x00\x00\x00\x0e\x0a\x0c001203004567";
    let service = population
        .subsystem
        .service("population.v1.PersonRegistry", None)?;
    let header = RequestHeader {
        message_id: format!(
            "demo-{}",
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
        ),
        client: Some((&business.subsystem).into()),
        service: Some((&service).into()),
        method: "GetPerson".into(),
        user_id: "can.bo.dang.ky@hanoi.gov.vn".into(),
        purpose: "Đăng ký doanh nghiệp, hồ sơ 2026-DK-01234".into(),
        data_subject: "001203004567".into(),
        created_at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64,
        payload_digest: lienthong_proto::sha256(payload).to_vec(),
        payload_size: payload.len() as u64,
        ..Default::default()
    };
    let envelope = business.signer.sign_request(header)?;
    let verifier = VerifyingKey::from_cert(&business.signing_cert)?;
    let request_digest = verifier.verify_request(&envelope)?;
    println!(
        "    {} signed {service}/GetPerson; {} verified it ({})",
        business.name,
        population.name,
        hex::encode(&request_digest[..8])
    );
    let response = population.signer.sign_response(ResponseHeader {
        message_id: envelope
            .header
            .as_ref()
            .map(|h| h.message_id.clone())
            .unwrap_or_default(),
        request_digest: request_digest.to_vec(),
        created_at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64,
        ..Default::default()
    })?;
    VerifyingKey::from_cert(&population.signing_cert)?
        .verify_response(&response, &request_digest)?;
    println!(
        "    the response is signed by {} and bound to that request",
        population.name
    );
    let mut tampered = envelope.clone();
    if let Some(h) = tampered.header.as_mut() {
        h.purpose = "tò mò".into();
    }
    let refused = verifier.verify_request(&tampered).is_err();
    println!("    the same request with its purpose altered is refused: {refused}");

    println!();
    println!(
        "Instance files are in {}: ca.pem, ca.key and one folder per agency.",
        dir.display()
    );
    println!(
        "Inspect one with: lienthong ca inspect {}/000102/auth.pem --ca {}/ca.pem",
        dir.display(),
        dir.display()
    );
    if !refused {
        return Err("a tampered request verified".into());
    }
    Ok(())
}

fn enroll(
    dir: &Path,
    ca: &InstanceCa,
    member: &str,
    name: &'static str,
    server: &str,
    subsystem: &str,
) -> Result<Agency> {
    let member: MemberId = member.parse()?;
    let server = member.server(server)?;
    let subsystem = member.subsystem(subsystem)?;
    let home = dir.join(member.code.as_str());
    std::fs::create_dir_all(&home)?;

    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    let auth_csr = csr::verify(&csr::create(&auth_key, &server.to_string())?)?;
    let auth = ca.issue_auth(&auth_csr, &server, "127.0.0.1", Validity::days(365))?;
    let sign_key = PrivateKey::generate(KeyAlgorithm::Ed25519)?;
    let sign_csr = csr::verify(&csr::create(&sign_key, &member.to_string())?)?;
    let signing = ca.issue_signing(&sign_csr, &member, Validity::days(365))?;

    pem::write_key(&home.join("auth.key"), &auth_key)?;
    pem::write_certs(&home.join("auth.pem"), std::slice::from_ref(&auth))?;
    pem::write_key(&home.join("sign.key"), &sign_key)?;
    pem::write_certs(&home.join("sign.pem"), std::slice::from_ref(&signing))?;
    println!("    {:<20} {name}", server.to_string());
    println!(
        "      auth {}  signing {}",
        &Fingerprint::of(&auth).to_string()[..16],
        &Fingerprint::of(&signing).to_string()[..16]
    );
    Ok(Agency {
        name,
        signer: Signer::new(&sign_key, &signing)?,
        signing_cert: signing.to_vec(),
        auth_fp: Fingerprint::of(&auth),
        tls: Identity {
            chain: vec![auth],
            key: auth_key,
        },
        server,
        subsystem,
    })
}

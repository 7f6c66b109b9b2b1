//! Measures the global configuration at national scale: 10,000 members,
//! 50,000 services, 2,000 security servers (each with a real auth and
//! signing certificate from the registry's CA) and 10,000 client
//! registrations. Reports the median of several runs of
//!
//! * generating and signing a configuration (snapshot + build + sign +
//!   record), and its size;
//! * a security server downloading it over TLS and verifying it with only
//!   the anchor.
//!
//! Run: `cargo run --release -p lienthong-central-registry --example conf_scale`
//! (`-- --members N --services N --servers N --runs N` to change the scale).
//! With `LIENTHONG_TEST_DATABASE_URL` set (a PostgreSQL database, as the
//! tests use), the same is measured on a PostgreSQL store in a fresh
//! schema of it, in the same run, and the two are compared.

use std::time::{Duration, Instant, SystemTime};

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::model::*;
use lienthong_central_registry::store::{Database, PgTarget, Store};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, conf, csr, pem};
use lienthong_proto::id::{MemberClass, MemberId};
use lienthong_proto::pb::registry::v1::GetConfigurationRequest;
use lienthong_registry_client as client;

#[derive(Debug, Clone, Copy)]
struct Scale {
    members: usize,
    services: usize,
    servers: usize,
    runs: usize,
}

fn args() -> Scale {
    let mut s = Scale {
        members: 10_000,
        services: 50_000,
        servers: 2_000,
        runs: 7,
    };
    let a: Vec<String> = std::env::args().skip(1).collect();
    for pair in a.chunks(2) {
        let v = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("a number after each flag");
        match pair[0].as_str() {
            "--members" => s.members = v,
            "--services" => s.services = v,
            "--servers" => s.servers = v,
            "--runs" => s.runs = v,
            other => panic!("unknown flag {other}"),
        }
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fresh_csr() -> CsrFor {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let der = csr::create(&key, "bench").unwrap();
    CsrFor {
        public_key: csr::verify(&der).unwrap().public_key_der(),
        csr: der,
        member: None,
        consent: None,
    }
}

/// Fills the store through the same changes operators and servers make.
fn populate(store: &dyn Store, ca: &InstanceCa, s: &Scale) {
    let member = |i: usize| MemberId::new("VN", "GOV", &format!("{i:06}")).unwrap();
    let mut changes = vec![Change::AddMemberClass {
        code: MemberClass::new("GOV").unwrap(),
        description: "Government agencies".into(),
    }];
    for i in 0..s.members {
        changes.push(Change::AddMember {
            id: member(i),
            name: format!("Cơ quan nhà nước số {i}"),
        });
        changes.push(Change::AddSubsystem {
            id: member(i).subsystem("main").unwrap(),
        });
    }
    for j in 0..s.services {
        let provider = member(j % s.members).subsystem("main").unwrap();
        changes.push(Change::AddService {
            id: provider
                .service(&format!("registry.v1.Service{j}"), Some("v1"))
                .unwrap(),
            description: format!("Service number {j} of its agency"),
            personal_data: false,
        });
    }
    store.apply_all("bench", &changes).unwrap();

    let validity = Validity::days(365);
    let mut changes = Vec::new();
    let mut requests = Vec::new();
    for k in 0..s.servers {
        let owner = member(k * s.members / s.servers);
        let server = owner.server("ss1").unwrap();
        let token = lienthong_proto::sha256(format!("token {k}").as_bytes());
        changes.push(Change::CreateEnrollmentToken {
            server: server.clone(),
            token_hash: token,
            expires_at_ms: i64::MAX / 2,
        });
        let mut signing = fresh_csr();
        signing.member = Some(owner.clone());
        let req = NewRequest {
            kind: RequestKind::AuthCertificate,
            server,
            subsystem: None,
            address: Some(format!("ss{k}.gov.vn:5500")),
            auth_csr: Some(fresh_csr()),
            signing_csrs: vec![signing],
            enrollment_token: Some(token),
        };
        requests.push(req.clone());
        changes.push(Change::Submit(Box::new(req)));
    }
    let applied = store.apply_all("bench", &changes).unwrap();
    let ids: Vec<u64> = applied.iter().filter_map(|a| a.request_id).collect();
    let mut approvals = Vec::new();
    for (id, req) in ids.iter().zip(&requests) {
        let auth = req.auth_csr.as_ref().unwrap();
        let sign = &req.signing_csrs[0];
        let auth_der = ca
            .issue_auth(
                &csr::verify(&auth.csr).unwrap(),
                &req.server,
                req.address.as_deref().unwrap(),
                validity,
            )
            .unwrap();
        let sign_der = ca
            .issue_signing(
                &csr::verify(&sign.csr).unwrap(),
                &req.server.owner,
                validity,
            )
            .unwrap();
        approvals.push(Change::Approve {
            id: *id,
            note: String::new(),
            issued: Issued {
                auth: Some(IssuedCert {
                    der: auth_der.to_vec(),
                    public_key: auth.public_key.clone(),
                }),
                signing: vec![(
                    req.server.owner.clone(),
                    IssuedCert {
                        der: sign_der.to_vec(),
                        public_key: sign.public_key.clone(),
                    },
                )],
            },
        });
    }
    store.apply_all("bench", &approvals).unwrap();
    // Each server serves the subsystems of the members it is nearest to.
    let mut clients = Vec::new();
    for i in 0..s.members {
        let k = i * s.servers / s.members;
        let owner = member(k * s.members / s.servers);
        clients.push(Change::Submit(Box::new(NewRequest {
            kind: RequestKind::Client,
            server: owner.server("ss1").unwrap(),
            subsystem: Some(member(i).subsystem("main").unwrap()),
            address: None,
            auth_csr: None,
            signing_csrs: vec![],
            enrollment_token: None,
        })));
    }
    let applied = store.apply_all("bench", &clients).unwrap();
    let approvals: Vec<Change> = applied
        .iter()
        .filter_map(|a| a.request_id)
        .map(|id| Change::Approve {
            id,
            note: String::new(),
            issued: Issued::default(),
        })
        .collect();
    store.apply_all("bench", &approvals).unwrap();
}

/// The medians of one store's run.
struct Measured {
    publish: Duration,
    download: Duration,
    idle: Duration,
}

/// A fresh schema of the PostgreSQL test database, if one is named.
fn postgres_store() -> Option<Database> {
    let url = std::env::var("LIENTHONG_TEST_DATABASE_URL").ok()?;
    let schema = format!("conf_scale_{}", std::process::id());
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap()
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let target = PgTarget::parse(&url)
        .unwrap()
        .with_options(&format!("-c search_path={schema}"));
    Some(Database::Postgres(Box::new(target)))
}

async fn measure(s: &Scale, database: Database, name: &str) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (d, db) = (dir.path().to_owned(), database.clone());
    let done = tokio::task::spawn_blocking(move || {
        let mut opts = InitOptions::new("VN", "127.0.0.1:4400");
        opts.database = db;
        init::initialise(&d, &opts).unwrap()
    })
    .await
    .unwrap();
    let d = init::RegistryDir(dir.path().to_owned());
    let ca = InstanceCa::load(
        pem::read_cert(&d.ca_cert()).unwrap(),
        pem::read_key(&d.ca_key()).unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    let (home, db) = (dir.path().to_owned(), database.clone());
    let scale = *s;
    tokio::task::spawn_blocking(move || {
        let store = db.open(&home).unwrap();
        populate(store.as_ref(), &ca, &scale);
    })
    .await
    .unwrap();
    println!(
        "{name}: populated {} members, {} services, {} servers in {:.1?}",
        s.members,
        s.services,
        s.servers,
        t.elapsed()
    );

    let mut opts = RegistryOptions::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    opts.database = database;
    let registry = Registry::start(opts).await.unwrap();
    let publisher = registry.publisher().clone();
    let mut publish = Vec::new();
    for _ in 0..s.runs {
        let p = publisher.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || p.publish_now())
            .await
            .unwrap()
            .unwrap();
        publish.push(t.elapsed());
    }
    let current = publisher.current().unwrap();
    let size = current.signed.configuration.len();

    let mut anchor = done.anchor;
    anchor.registry_addresses = vec![registry.local_addr().to_string()];
    let channel = client::connect(&anchor, None).await.unwrap();
    let mut download = Vec::new();
    let mut decoded = None;
    for _ in 0..s.runs {
        let mut dist = client::distribution_client(channel.clone());
        let t = Instant::now();
        let reply = dist
            .get_configuration(GetConfigurationRequest { if_newer_than: 0 })
            .await
            .unwrap()
            .into_inner();
        let signed = reply.configuration.unwrap();
        let c = conf::verify_configuration(&anchor, &signed, None, SystemTime::now()).unwrap();
        download.push(t.elapsed());
        decoded = Some(c);
    }
    let c = decoded.unwrap();
    let mut idle = Vec::new();
    for _ in 0..s.runs {
        let mut dist = client::distribution_client(channel.clone());
        let t = Instant::now();
        let reply = dist
            .get_configuration(GetConfigurationRequest {
                if_newer_than: c.version,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.configuration.is_none());
        idle.push(t.elapsed());
    }
    registry.shutdown().await;

    println!(
        "{name}: configuration of {} members, {} services, {} servers, {} clients, {:.2} MiB",
        c.members.len(),
        c.services.len(),
        c.security_servers.len(),
        c.security_servers
            .iter()
            .map(|s| s.clients.len())
            .sum::<usize>(),
        size as f64 / (1024.0 * 1024.0)
    );
    Measured {
        publish: median(publish),
        download: median(download),
        idle: median(idle),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s = args();
    let mut runs = vec![("SQLite", measure(&s, Database::Home, "SQLite").await)];
    if let Some(pg) = tokio::task::spawn_blocking(postgres_store).await.unwrap() {
        runs.push(("PostgreSQL", measure(&s, pg, "PostgreSQL").await));
    }
    let header: Vec<&str> = runs.iter().map(|(n, _)| *n).collect();
    println!("| step (median of {}) | {} |", s.runs, header.join(" | "));
    println!("|---|{}", "---|".repeat(runs.len()));
    let row = |what: &str, f: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, m)| f(m)).collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    row("generate + sign + record (registry)", &|m| {
        format!("{:.0?}", m.publish)
    });
    row(
        "download over TLS + verify with the anchor (server)",
        &|m| format!("{:.0?}", m.download),
    );
    row("idle poll (\"newer than V\", nothing new)", &|m| {
        format!("{:.2?}", m.idle)
    });
    if let [(_, sqlite), (_, pg)] = runs.as_slice() {
        println!(
            "PostgreSQL / SQLite, generate + sign + record: {:.2} × (target: at most 2 ×)",
            pg.publish.as_secs_f64() / sqlite.publish.as_secs_f64()
        );
    }
}

//! The benchmark's instance: an echo backend, a registry (in this process:
//! it is not on the data path), and four security servers as processes —
//! a consumer and a provider with the message log, and a pair without.
//! Everything joins through the real registration workflow.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_registry_client as client;
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::join::{self, JoinState};
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::store::{Backend, ServerStore};
use tonic::metadata::MetadataMap;

use super::echo;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Clock ticks per second of `/proc/*/stat` (100 on every Linux we run on).
const CLK_TCK: f64 = 100.0;

/// A security server process.
pub struct Proc {
    pub name: String,
    child: Child,
    pub consumer: SocketAddr,
    log: PathBuf,
}

impl Proc {
    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (tick(11) + tick(12)) / CLK_TCK
    }

    /// Peak resident memory, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// The running instance.
pub struct Bus {
    pub backend: SocketAddr,
    /// consumer (log), provider (log), consumer (no log), provider (no log).
    procs: Vec<Proc>,
    registry: Registry,
    _backend_task: tokio::task::JoinHandle<()>,
}

fn member(code: &str) -> MemberId {
    MemberId::new("BENCH", "GOV", code).expect("valid member")
}

fn sub(code: &str, s: &str) -> SubsystemId {
    member(code).subsystem(s).expect("valid subsystem")
}

fn reserve() -> Result<(std::net::TcpListener, SocketAddr)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    Ok((l, a))
}

impl Bus {
    /// The metadata of a call through the logged (or unlogged) pair.
    pub fn metadata(&self, logged: bool) -> MetadataMap {
        let tag = if logged { "log" } else { "nolog" };
        let mut m = MetadataMap::new();
        let ascii = |s: String| s.parse().expect("identifiers are ASCII");
        m.insert(
            "lt-client",
            ascii(sub("1", &format!("client-{tag}")).to_string()),
        );
        m.insert(
            "lt-service",
            ascii(sub("2", &format!("echo-{tag}")).to_string()),
        );
        m.insert("lt-user-id", ascii("bench".into()));
        m.insert("lt-purpose", ascii("benchmark".into()));
        m.insert("lt-data-subject", ascii("001099012345".into()));
        m
    }

    /// (consumer, provider) of one pair.
    pub fn pair(&self, logged: bool) -> (&Proc, &Proc) {
        let i = if logged { 0 } else { 2 };
        (&self.procs[i], &self.procs[i + 1])
    }

    pub fn consumer_addr(&self, logged: bool) -> SocketAddr {
        self.pair(logged).0.consumer
    }

    pub fn peak_rss_kib(&self) -> [(String, u64); 4] {
        std::array::from_fn(|i| (self.procs[i].name.clone(), self.procs[i].peak_rss_kib()))
    }

    /// The logged pair's last group-commit statistics, from their logs.
    pub fn log_batches(&self) -> String {
        self.procs[..2]
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| l.contains("group commit"))
                    .map(|l| {
                        l.split("group commit")
                            .nth(1)
                            .unwrap_or("")
                            .trim()
                            .to_owned()
                    })
                    .unwrap_or_else(|| "no statistics".into());
                format!("{}: {last}", p.name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Publishes a configuration with `total` services (adding dummy
    /// agencies' services through the store, as an import would) and gives
    /// the servers time to download it.
    pub async fn grow_services(&self, total: usize) -> Result<()> {
        use lienthong_central_registry::model::Change;
        let store = self.registry.store();
        // The two echo services are the instance's own; the rest are filler.
        let filler = store.snapshot()?.services.len().saturating_sub(2);
        let wanted = total.saturating_sub(2);
        let mut changes = Vec::new();
        if filler == 0 && wanted > 0 {
            changes.push(Change::AddMember {
                id: member("9"),
                name: "Filler agency".into(),
            });
        }
        for j in filler..wanted {
            let provider = member("9").subsystem(&format!("s{}", j / 50))?;
            if j % 50 == 0 {
                changes.push(Change::AddSubsystem {
                    id: provider.clone(),
                });
            }
            changes.push(Change::AddService {
                id: provider.service(&format!("filler.v1.Service{j}"), None)?,
                description: "filler".into(),
                personal_data: false,
            });
        }
        store.apply_all("bench", &changes)?;
        let publisher = self.registry.publisher().clone();
        tokio::task::spawn_blocking(move || publisher.publish_now()).await??;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(())
    }

    pub fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        drop(self.registry);
    }
}

async fn join_server(
    dir: &Path,
    anchor: &lienthong_proto::pb::globalconf::v1::Anchor,
    op: &mut client::OperatorClient,
    server: &ServerId,
    client_sub: &SubsystemId,
    provider_addr: SocketAddr,
) -> Result<()> {
    let token = op
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some(server.into()),
            valid_seconds: 0,
        })
        .await?
        .into_inner()
        .token;
    join::submit_join(dir, anchor, server, &provider_addr.to_string(), &token).await?;
    if join::poll_join(dir).await? != JoinState::Approved {
        return Err("the benchmark registry did not approve a server".into());
    }
    let id = join::submit_client(dir, client_sub).await?;
    if join::poll_client(dir, id).await? != JoinState::Approved {
        return Err("the benchmark registry did not approve a client".into());
    }
    Ok(())
}

fn spawn(name: &str, dir: &Path, provider: std::net::TcpListener, logged: bool) -> Result<Proc> {
    let provider_addr = provider.local_addr()?;
    drop(provider);
    let (c, consumer) = reserve()?;
    drop(c);
    let log = dir.join("serve.log");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--log",
        "info",
        "server",
        "serve",
        "--dir",
        &dir.to_string_lossy(),
        "--consumer-listen",
        &consumer.to_string(),
        "--provider-listen",
        &provider_addr.to_string(),
        "--poll-interval",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    if !logged {
        cmd.arg("--dangerous-disable-message-log");
    }
    if let Ok(w) = std::env::var("LIENTHONG_WORKER_THREADS") {
        cmd.env("LIENTHONG_WORKER_THREADS", w);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    Ok(Proc {
        name: name.to_owned(),
        child,
        consumer,
        log,
    })
}

async fn wait_for(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("a security server did not start listening on {addr}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sets everything up under `dir`.
pub async fn start(dir: &Path) -> Result<Bus> {
    let (backend, backend_task) = echo::start().await?;
    let (reg_listener, reg_addr) = reserve()?;
    let mut opts = InitOptions::new("BENCH", &reg_addr.to_string());
    opts.auto_approve = true;
    let done = init::initialise(&dir.join("registry"), &opts)?;
    drop(reg_listener);
    let registry = Registry::start(RegistryOptions::new(dir.join("registry"), reg_addr)).await?;
    let anchor = done.anchor;
    let mut op =
        client::operator_client(client::connect(&anchor, None).await?, &done.officer_token)?;
    op.add_member_class(pb::AddMemberClassRequest {
        code: "GOV".into(),
        description: "Benchmark".into(),
    })
    .await?;
    for code in ["1", "2"] {
        op.add_member(pb::AddMemberRequest {
            id: Some((&member(code)).into()),
            name: format!("Agency {code}"),
        })
        .await?;
    }
    for tag in ["log", "nolog"] {
        for s in [
            sub("1", &format!("client-{tag}")),
            sub("2", &format!("echo-{tag}")),
        ] {
            op.add_subsystem(pb::AddSubsystemRequest {
                id: Some((&s).into()),
            })
            .await?;
        }
        op.add_service(pb::AddServiceRequest {
            id: Some((&sub("2", &format!("echo-{tag}")).service(echo::SERVICE, None)?).into()),
            description: "Echo".into(),
            personal_data: false,
        })
        .await?;
    }

    let mut procs = Vec::new();
    for (tag, logged) in [("log", true), ("nolog", false)] {
        let consumer_dir = dir.join(format!("consumer-{tag}"));
        let provider_dir = dir.join(format!("provider-{tag}"));
        let client_sub = sub("1", &format!("client-{tag}"));
        let echo_sub = sub("2", &format!("echo-{tag}"));
        let (cl, ca) = reserve()?;
        let (pl, pa) = reserve()?;
        join_server(
            &consumer_dir,
            &anchor,
            &mut op,
            &member("1").server(&format!("ss-{tag}"))?,
            &client_sub,
            ca,
        )
        .await?;
        join_server(
            &provider_dir,
            &anchor,
            &mut op,
            &member("2").server(&format!("ss-{tag}"))?,
            &echo_sub,
            pa,
        )
        .await?;
        let store = ServerStore::open(&ServerDir(provider_dir.clone()).store())?;
        store.set_backend(&Backend {
            provider: echo_sub.clone(),
            service: echo::SERVICE.into(),
            url: format!("http://{backend}"),
            timeout: Duration::from_secs(30),
        })?;
        store.grant(&AccessRule {
            subject: Subject::Subsystem(client_sub),
            provider: echo_sub,
            service: echo::SERVICE.into(),
            method: None,
        })?;
        procs.push(spawn(
            &format!("consumer server ({tag})"),
            &consumer_dir,
            cl,
            logged,
        )?);
        procs.push(spawn(
            &format!("provider server ({tag})"),
            &provider_dir,
            pl,
            logged,
        )?);
    }
    for p in &procs {
        wait_for(p.consumer).await?;
    }
    Ok(Bus {
        backend,
        procs,
        registry,
        _backend_task: backend_task,
    })
}

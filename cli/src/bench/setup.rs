//! The benchmark's instance: an echo backend, a registry (in this process:
//! it is not on the data path), and security servers as processes — a
//! consumer and a provider with the message log, a pair without, and, when
//! the server has the mode, a pair in pass-through mode (the floor).
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
use lienthong_security_server::message_log::cpu;
use lienthong_security_server::store::{Backend, ServerStore};
use tonic::metadata::MetadataMap;

use super::echo;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A security server process.
pub struct Proc {
    pub name: String,
    child: Child,
    pub consumer: SocketAddr,
    /// Its admin port (`GET /metrics`).
    admin: SocketAddr,
    log: PathBuf,
}

/// User + system CPU seconds a process spent so far (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu::process_seconds(pid)
}

/// Peak resident memory of a process, KiB (0 once it is gone).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// CPU seconds so far of the message log: its own threads, its writer
    /// (`message-log`) and its indexer (`message-log-index`), and the
    /// commits it made on the threads of calls awaiting them, which `/proc`
    /// counts as theirs (the server times those on its admin port). Gives
    /// (all of it, of which those commits).
    pub async fn log_cpu_seconds(&self) -> Result<(f64, f64)> {
        // Absent where the server keeps no log.
        let on_callers = scrape(self.admin, "lienthong_log_appender_commit_cpu_seconds_sum")
            .await?
            .unwrap_or(0.0);
        Ok((
            cpu::threads_seconds(self.pid(), cpu::THREADS) + on_callers,
            on_callers,
        ))
    }

    /// The last lines the server wrote to its log (for a failure report).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// The pairs of security servers the benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// Everything on, message log included.
    Log,
    /// The message log off (`--dangerous-disable-message-log`).
    NoLog,
    /// Pass-through mode (`--dangerous-pass-through`): mutual TLS and HTTP/2
    /// on both sides, no envelope, no log. A floor for the benchmark only.
    PassThrough,
}

impl Pair {
    fn tag(self) -> &'static str {
        match self {
            Pair::Log => "log",
            Pair::NoLog => "nolog",
            Pair::PassThrough => "pass",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Pair::Log => &[],
            Pair::NoLog => &["--dangerous-disable-message-log"],
            Pair::PassThrough => &[],
        }
    }
}

/// The flag of `server serve` that turns the pass-through mode on, if this
/// build has it (the mode is newer than the benchmark). The flag is hidden
/// from `--help`, so each spelling is tried before `--help`: clap refuses an
/// unknown flag before it prints help.
pub fn pass_through_flag() -> Option<&'static str> {
    let exe = std::env::current_exe().ok()?;
    ["--dangerous-pass-through", "--pass-through"]
        .into_iter()
        .find(|flag| {
            Command::new(&exe)
                .args(["server", "serve", flag, "--help"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The running instance.
pub struct Bus {
    pub backend: SocketAddr,
    /// (pair, consumer, provider), in the order of [`start`]'s `pairs`.
    procs: Vec<(Pair, Proc, Proc)>,
    /// Why the pass-through pair is not running, when it was asked for.
    pub pass_through_skipped: Option<String>,
    registry: Registry,
    _backend_task: tokio::task::JoinHandle<()>,
}

fn member(code: &str) -> MemberId {
    MemberId::new("BENCH", "GOV", code).expect("valid member")
}

fn sub(code: &str, s: &str) -> SubsystemId {
    member(code).subsystem(s).expect("valid subsystem")
}

/// One sample's value from a server's `GET /metrics` (Prometheus text),
/// if it has that sample.
async fn scrape(admin: SocketAddr, name: &str) -> Result<Option<f64>> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(admin).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let body = send
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    Ok(String::from_utf8_lossy(&body.to_bytes())
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()))
}

pub(super) fn reserve() -> Result<(std::net::TcpListener, SocketAddr)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    Ok((l, a))
}

impl Bus {
    /// The metadata of a call through one pair.
    pub fn metadata(&self, pair: Pair) -> MetadataMap {
        let tag = pair.tag();
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

    /// (consumer, provider) of one pair, if it runs.
    pub fn pair(&self, pair: Pair) -> Option<(&Proc, &Proc)> {
        self.procs
            .iter()
            .find(|(p, _, _)| *p == pair)
            .map(|(_, c, p)| (c, p))
    }

    /// Peak resident memory of every server, KiB.
    pub fn peak_rss_kib(&self) -> Vec<(String, u64)> {
        self.procs
            .iter()
            .flat_map(|(_, c, p)| [c, p])
            .map(|p| (p.name.clone(), peak_rss_kib(p.pid())))
            .collect()
    }

    /// The logged pair's last group-commit statistics, from their logs.
    pub fn log_batches(&self) -> String {
        self.pair(Pair::Log)
            .map(|(c, p)| [c, p])
            .into_iter()
            .flatten()
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
        // One echo service per pair is the instance's own; the rest are filler.
        let own = self.procs.len();
        let filler = store.snapshot()?.services.len().saturating_sub(own);
        let wanted = total.saturating_sub(own);
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
        for (_, c, p) in &mut self.procs {
            kill(c);
            kill(p);
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

fn spawn(name: &str, dir: &Path, provider: std::net::TcpListener, flags: &[&str]) -> Result<Proc> {
    let provider_addr = provider.local_addr()?;
    drop(provider);
    let (c, consumer) = reserve()?;
    drop(c);
    let (a, admin) = reserve()?;
    drop(a);
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
        &admin.to_string(),
    ]);
    cmd.args(flags);
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
        admin,
        log,
    })
}

/// Waits until a server listens on its consumer port; fails early if it exits.
async fn wait_for(p: &mut Proc) -> Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(p.consumer).await.is_err() {
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!("{} exited at start ({status})", p.name).into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{} did not start listening on {}", p.name, p.consumer).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn kill(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

/// A server the benchmark started does not outlive it, even on an error.
impl Drop for Proc {
    fn drop(&mut self) {
        kill(self);
    }
}

/// Sets everything up under `dir`, with one pair of servers for each of
/// `pairs`; a pass-through pair is started with `pass_through_flag`.
pub async fn start(dir: &Path, pairs: &[Pair], pass_through_flag: Option<&str>) -> Result<Bus> {
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
    for tag in pairs.iter().map(|p| p.tag()) {
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
    for &pair in pairs {
        let tag = pair.tag();
        let mut flags = pair.flags().to_vec();
        if pair == Pair::PassThrough {
            flags.extend(pass_through_flag);
        }
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
        procs.push((
            pair,
            spawn(
                &format!("consumer server ({tag})"),
                &consumer_dir,
                cl,
                &flags,
            )?,
            spawn(
                &format!("provider server ({tag})"),
                &provider_dir,
                pl,
                &flags,
            )?,
        ));
    }
    let mut pass_through_skipped = None;
    let mut running = Vec::new();
    let mut failed = None;
    for (pair, mut c, mut p) in procs {
        let started = match wait_for(&mut c).await {
            Ok(()) => wait_for(&mut p).await,
            e => e,
        };
        match (started, pair) {
            (Ok(()), _) => running.push((pair, c, p)),
            // The floor is a benchmark mode: without it the rest still runs.
            (Err(e), Pair::PassThrough) => {
                pass_through_skipped = Some(format!(
                    "{e}; the servers' logs end: {} | {}",
                    c.log_tail(),
                    p.log_tail()
                ));
                kill(&mut c);
                kill(&mut p);
            }
            (Err(e), _) => {
                kill(&mut c);
                kill(&mut p);
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        for (_, c, p) in &mut running {
            kill(c);
            kill(p);
        }
        return Err(e);
    }
    Ok(Bus {
        backend,
        procs: running,
        pass_through_skipped,
        registry,
        _backend_task: backend_task,
    })
}

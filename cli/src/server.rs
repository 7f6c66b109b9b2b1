//! `lienthong server …`: join an instance, run a security server, and
//! manage its clients, access rights and backends.

use lienthong_proto::fields::printable;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use lienthong_certs::{Fingerprint, pem, verify};
use lienthong_proto::id::{ServerId, ServiceId, SubsystemId};
use lienthong_registry_client as client;
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::admin::backends::{
    BackendChange, backend_of, detail as backend_detail,
};
use lienthong_security_server::conf_client::ConfClient;
use lienthong_security_server::consumer::DEFAULT_MAX_MESSAGE_BYTES;
use lienthong_security_server::consumer::tls::ConsumerTransport;
use lienthong_security_server::join::{self, JoinState};
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::keys::log_keys;
use lienthong_security_server::limits;
use lienthong_security_server::message_log::LogReader;
use lienthong_security_server::operational::DEFAULT_WINDOW as OPERATIONAL_WINDOW;
use lienthong_security_server::store::{
    ClusterDatabase, DEFAULT_BACKEND_TIMEOUT, ENV_DATABASE_PASSWORD, ServerStore,
};
use lienthong_security_server::{
    DEFAULT_CONSUMER_LISTEN, DEFAULT_PROVIDER_LISTEN, DEFAULT_RETENTION, SecurityServer,
    ServerOptions, server_id,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The PostgreSQL database a cluster's servers share (several servers of
/// one member): their access rights, backends, pinned information systems,
/// body-logging choices and the message ids they accepted. Each server
/// keeps its own keys, message log and identity in its directory.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Share this server's policy with the other servers of its cluster
    /// through PostgreSQL instead of keeping it in server.db:
    /// postgres://USER@HOST[:PORT][,HOST2[:PORT]...]/DATABASE[?OPTIONS],
    /// e.g. `?sslmode=require&sslrootcert=/etc/lienthong/db-ca.pem&target_session_attrs=read-write`.
    /// Recorded in the server's directory: later commands (`serve`, `acl`,
    /// `backend`, `clients`) use it without being told. Put no password in
    /// it: use --database-password-file or LIENTHONG_DATABASE_PASSWORD.
    #[arg(long, env = "LIENTHONG_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the database password (its first line); its path is
    /// recorded beside the URL, never the password.
    #[arg(
        long,
        env = "LIENTHONG_DATABASE_PASSWORD_FILE",
        requires = "database_url"
    )]
    database_password_file: Option<PathBuf>,
}

impl ClusterArgs {
    fn database(&self) -> Result<Option<ClusterDatabase>> {
        Ok(match &self.database_url {
            None => None,
            Some(url) => Some(ClusterDatabase::new(
                url,
                self.database_password_file.as_deref(),
            )?),
        })
    }
}

/// Records `db` as the cluster store of the server in `dir` (checked
/// reachable first) and says so, and what became of the policy the node
/// kept in `server.db` until now.
fn join_cluster(dir: &std::path::Path, db: &ClusterDatabase) -> Result<()> {
    let (store, report) = ServerStore::join_cluster(&ServerDir(dir.to_owned()).store(), db)?;
    let password = match db.password_file() {
        Some(f) => format!("password from {}", f.display()),
        None => format!("password from {ENV_DATABASE_PASSWORD}, if set"),
    };
    println!(
        "access rights, backends, pins and body logging are shared through {} ({password})",
        store.policy_location()
    );
    if !report.imported.is_empty() {
        println!(
            "carried over from server.db into the cluster's database, which had no policy yet:"
        );
        for entry in &report.imported {
            println!("  {entry}");
        }
    }
    if !report.differing.is_empty() {
        println!(
            "the cluster's policy stays in force; these entries of server.db differ from it and are not (kept in server.db; set them with `lienthong server acl|backend|clients` if the cluster should have them):"
        );
        for entry in &report.differing {
            println!("  {entry}");
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Join the instance: make the auth key and the owner's signing key,
    /// send their CSRs with the enrollment token, and wait for the
    /// registration officer's approval. A refused request (a bad or
    /// expired token) keeps nothing: run the same command with a new
    /// token. `--resume` keeps waiting for a request submitted before.
    ///
    /// Example: lienthong server init --dir /var/lib/lienthong/ss1 --anchor anchor.bin --server VN/GOV/000102/ss1 --address ss1.bocongan.gov.vn:5500 --token lt_…
    Init {
        /// The server's home directory; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The instance's anchor file (from the registry operator).
        #[arg(long, required_unless_present = "resume")]
        anchor: Option<PathBuf>,
        /// This server's identifier: INSTANCE/CLASS/MEMBER/SERVER.
        #[arg(long, required_unless_present = "resume")]
        server: Option<String>,
        /// Where other servers reach this server's provider side (host:port).
        #[arg(long, required_unless_present = "resume")]
        address: Option<String>,
        /// The one-time enrollment token from the registration officer.
        #[arg(
            long,
            env = "LIENTHONG_ENROLLMENT_TOKEN",
            hide_env_values = true,
            required_unless_present = "resume"
        )]
        token: Option<String>,
        /// Keep waiting for an approval requested before (by an `init`
        /// that stopped waiting); fetches the certificates once approved.
        #[arg(long)]
        resume: bool,
        /// How long to wait for the approval, in seconds.
        #[arg(long, default_value_t = 300)]
        wait: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run the security server.
    ///
    /// Example: lienthong server serve --dir /var/lib/lienthong/ss1
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// The information systems' side (h2c; keep it on loopback or a
        /// trusted network): ADDRESS:PORT or HOST:PORT (a host name is
        /// resolved at start; the address bound is printed).
        #[arg(long, default_value = DEFAULT_CONSUMER_LISTEN)]
        consumer_listen: String,
        /// The other security servers' side (mutual TLS): ADDRESS:PORT or
        /// HOST:PORT.
        #[arg(long, default_value = DEFAULT_PROVIDER_LISTEN)]
        provider_listen: String,
        /// Largest request, and largest response (each message, and all of
        /// its messages together: a provider holds a response whole until
        /// its record is durable), in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
        max_message_bytes: usize,
        /// Most message ids the provider side remembers against replay
        /// (about 56 bytes each; each is held for about the clock skew,
        /// 300 s). When full, new requests are refused with
        /// server.serverproxy.replay_capacity rather than an id forgotten.
        #[arg(long, default_value_t = lienthong_security_server::replay::DEFAULT_CAPACITY)]
        replay_capacity: usize,
        /// How information systems connect: h2c, tls (the server's auth
        /// certificate) or mtls (each system's certificate pinned with
        /// `server clients pin`).
        #[arg(long, default_value = "h2c")]
        consumer_transport: ConsumerTransport,
        /// Seconds between message-log checkpoints (when the log grew).
        #[arg(long, default_value_t = 60)]
        checkpoint_interval: u64,
        /// Days the message log keeps records' contents.
        #[arg(long, default_value_t = (DEFAULT_RETENTION.as_secs() / 86400) as u32)]
        retention_days: u32,
        /// Days of operational data answered on the admin port and over
        /// the bus (`lienthong.operational.v1.OperationalData`).
        #[arg(long, default_value_t = (OPERATIONAL_WINDOW.as_secs() / 86400) as u32)]
        operational_days: u32,
        /// Keep no message log. Only for measuring what logging costs
        /// (`lienthong bench`); never for real traffic.
        #[arg(long, hide = true)]
        dangerous_disable_message_log: bool,
        /// Be a bare mutual-TLS gateway: no envelope, signature, access
        /// check or message log. Only for measuring what the guarantees
        /// cost (`lienthong bench`); never for real traffic.
        #[arg(long, hide = true)]
        dangerous_pass_through: bool,
        /// Seconds between configuration downloads, instead of the
        /// instance's setting (60 s).
        #[arg(long)]
        poll_interval: Option<u64>,
        /// The admin port: GET /health, GET /metrics (Prometheus), and with
        /// an operator's token (`server operator add`) POST /maintenance
        /// (on|off) and the console's API (`lienthong console server`).
        /// `off` for none. Keep it on loopback or a
        /// management network. ADDRESS:PORT or HOST:PORT.
        #[arg(long, default_value = lienthong_security_server::admin::DEFAULT_ADMIN_LISTEN)]
        admin_listen: String,
        /// Most open connections on each listener; more are closed at once.
        #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Most open connections on each listener from one IP address.
        #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_PEER)]
        max_connections_per_peer: usize,
        /// Seconds a new connection has to send its first request's headers
        /// (TLS handshake and HTTP/2 preface included) before it is closed.
        #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT.as_secs())]
        header_timeout: u64,
        /// Most calls one calling security server may have in progress on
        /// the provider side; more are shed with
        /// server.serverproxy.too_many_calls.
        #[arg(long, default_value_t = limits::DEFAULT_MAX_CALLS_PER_PEER)]
        max_calls_per_peer: usize,
        /// Where the message log's keys are (log-subject.key,
        /// log-seal.key, log-seal-N.key): default the server's directory,
        /// never inside the log's own (DIR/messagelog). Back it up apart
        /// from the log; without it the log cannot be read.
        #[arg(long, env = "LIENTHONG_LOG_KEY_DIR")]
        log_key_dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Register another client subsystem on this server (a request the
    /// registration officer approves).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Grant, revoke and list access rights to the services this server
    /// provides. Deny by default.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Say where each provided service's backend is.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Publish the protobuf descriptor set of a service this server
    /// provides in the registry's service catalogue.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Show this server's operational data: what each exchange it took
    /// part in did — when, which side, client, service, method, peer,
    /// sizes, status, fault, duration — from its message log. Payloads and
    /// personal IDs are never shown.
    ///
    /// Example: lienthong server log --dir /var/lib/lienthong/ss1 --since-hours 24
    /// Example: lienthong server log --dir /var/lib/lienthong/ss1 --message-id 3f2a…
    /// Example: lienthong server log rotate-key --dir /var/lib/lienthong/ss1
    #[command(args_conflicts_with_subcommands = true)]
    Log {
        #[command(subcommand)]
        action: Option<LogAction>,
        /// The server's home directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where the message log's keys are (as for `serve`).
        #[arg(long, env = "LIENTHONG_LOG_KEY_DIR")]
        log_key_dir: Option<PathBuf>,
        /// Only the last N hours.
        #[arg(long, default_value_t = 24)]
        since_hours: u32,
        /// Only the records of one exchange.
        #[arg(long)]
        message_id: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Operators of this server's console and admin port: each gets a
    /// token (shown once, kept hashed) with a role — `admin` changes
    /// access rights and maintenance mode, `observer` reads.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Show the server's identity, certificates, configuration and log.
    ///
    /// Example: lienthong server status --dir /var/lib/lienthong/ss1 --check
    Status {
        #[arg(long)]
        dir: PathBuf,
        /// Also try to download a newer configuration now.
        #[arg(long)]
        check: bool,
    },
}

/// Maintenance of the message log.
#[derive(Subcommand, Debug)]
pub enum LogAction {
    /// Start a new log sealing key (log-seal-N.key beside the others).
    /// Segments the server starts from its next start on are sealed under
    /// it; the older keys stay, for reading what they sealed — keep them
    /// (and back them up) for as long as the log holds such records.
    ///
    /// Example: lienthong server log rotate-key --dir /var/lib/lienthong/ss1
    RotateKey {
        #[arg(long)]
        dir: PathBuf,
        /// Where the message log's keys are (as for `serve`).
        #[arg(long, env = "LIENTHONG_LOG_KEY_DIR")]
        log_key_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// Pin an information system's certificate (PEM) for SUBSYSTEM, for
    /// `serve --consumer-transport mtls`.
    ///
    /// Example: lienthong server clients pin --dir ss1 VN/GOV/000305/business --cert business-is.pem
    Pin {
        #[arg(long)]
        dir: PathBuf,
        subsystem: String,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Log the bodies of SUBSYSTEM's exchanges on this server, sealed
    /// (AEAD) in the message log; `--off` stops it. Off by default.
    ///
    /// Example: lienthong server clients log-bodies --dir ss1 VN/GOV/000102/population
    LogBodies {
        #[arg(long)]
        dir: PathBuf,
        subsystem: String,
        #[arg(long)]
        off: bool,
    },
    /// Remove a pin.
    ///
    /// Example: lienthong server clients unpin --dir ss1 VN/GOV/000305/business --cert business-is.pem
    Unpin {
        #[arg(long)]
        dir: PathBuf,
        subsystem: String,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Ask to serve SUBSYSTEM here and wait for the approval (`--wait 0`:
    /// submit only; `--resume ID` later to fetch the outcome).
    ///
    /// Example: lienthong server clients add --dir /var/lib/lienthong/ss1 VN/GOV/000102/population
    Add {
        #[arg(long)]
        dir: PathBuf,
        subsystem: String,
        /// Seconds to wait for the approval.
        #[arg(long, default_value_t = 300)]
        wait: u64,
        /// Wait for a request submitted before instead of submitting one.
        #[arg(long)]
        resume: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Make a token for NAME (replacing the one NAME had) and print it once.
    ///
    /// Example: lienthong server operator add --dir /var/lib/lienthong/ss1 lan.nguyen --role admin
    Add {
        #[arg(long)]
        dir: PathBuf,
        name: String,
        /// admin or observer.
        #[arg(long, default_value = "observer")]
        role: String,
    },
    /// Remove NAME's token.
    ///
    /// Example: lienthong server operator remove --dir /var/lib/lienthong/ss1 lan.nguyen
    Remove {
        #[arg(long)]
        dir: PathBuf,
        name: String,
    },
    /// List the operators and their roles.
    ///
    /// Example: lienthong server operator list --dir /var/lib/lienthong/ss1
    List {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GrantRevoke {
    Grant,
    Revoke,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Allow SUBJECT (a subsystem, or `group:INSTANCE/GROUP`) to call SERVICE
    /// (PROVIDER_SUBSYSTEM/grpc.Service), or only --method of it.
    ///
    /// Example: lienthong server acl grant --dir ss1 VN/GOV/000305/business VN/GOV/000102/population/population.v1.PersonRegistry --method GetPerson
    ///
    /// The service must be one this server provides by the global
    /// configuration: its provider subsystem a client of this server and
    /// the service registered for it (a newer configuration is downloaded
    /// when the cached one does not say so).
    Grant {
        #[arg(long)]
        dir: PathBuf,
        subject: String,
        service: String,
        #[arg(long)]
        method: Option<String>,
        /// Grant even when the configuration does not list SERVICE as
        /// provided by this server: to prepare access rights before the
        /// registry publishes the service or this server's client
        /// registration (the grant is inert until it does).
        #[arg(long)]
        force: bool,
    },
    /// Remove a grant made with the same arguments.
    ///
    /// Example: lienthong server acl revoke --dir ss1 VN/GOV/000305/business VN/GOV/000102/population/population.v1.PersonRegistry --method GetPerson
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        subject: String,
        service: String,
        #[arg(long)]
        method: Option<String>,
    },
    /// List the grants.
    ///
    /// Example: lienthong server acl list --dir /var/lib/lienthong/ss1
    List {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServicesCommand {
    /// Publish (or replace) SERVICE's descriptor set in the registry's
    /// service catalogue, as this server (mutual TLS with its auth
    /// certificate; SERVICE must be of a subsystem it serves): every
    /// server's consumer port then lists and describes it (gRPC
    /// reflection), and AllowedMethods names its methods.
    ///
    /// Example: lienthong server services describe --dir ss1 VN/GOV/000102/population/population.v1.PersonRegistry --proto population/v1/population.proto --import-path proto
    /// Example: lienthong server services describe --dir ss1 VN/GOV/000102/population/population.v1.PersonRegistry --descriptor population.binpb
    Describe {
        #[arg(long)]
        dir: PathBuf,
        service: String,
        /// The service's descriptor set (`protoc --include_imports
        /// --descriptor_set_out=FILE.binpb …` or `buf build -o FILE.binpb`;
        /// at most 1 MiB).
        #[arg(
            long,
            value_name = "FILE.binpb",
            conflicts_with = "proto",
            required_unless_present = "proto"
        )]
        descriptor: Option<PathBuf>,
        /// Instead of --descriptor: the service's .proto files, compiled
        /// here with every import (no protoc needed), relative to an
        /// --import-path.
        #[arg(long, value_name = "FILE.proto")]
        proto: Vec<PathBuf>,
        /// Where --proto files and their imports are found (repeatable;
        /// default: the current directory).
        #[arg(long, value_name = "DIR", requires = "proto")]
        import_path: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Set where SERVICE (PROVIDER_SUBSYSTEM/grpc.Service) is served.
    ///
    /// Example: lienthong server backend set --dir ss1 VN/GOV/000102/population/population.v1.PersonRegistry http://127.0.0.1:9000
    Set {
        #[arg(long)]
        dir: PathBuf,
        service: String,
        /// http://host:port (h2c).
        url: String,
        /// How long the backend may take to answer, in milliseconds.
        #[arg(long, default_value_t = DEFAULT_BACKEND_TIMEOUT.as_millis() as u64)]
        timeout_ms: u64,
    },
    /// List the backends.
    ///
    /// Example: lienthong server backend list --dir /var/lib/lienthong/ss1
    List {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Worker threads of a security server (`LIENTHONG_WORKER_THREADS`).
/// # Default
/// the number of CPUs.
pub const ENV_WORKER_THREADS: &str = "LIENTHONG_WORKER_THREADS";

/// The server a command runs, for spans' `service.instance.id`: `serve`'s
/// server, read from its directory (none if it holds no server yet).
pub fn instance_id(cmd: &ServerCommand) -> Option<String> {
    let ServerCommand::Serve { dir, .. } = cmd else {
        return None;
    };
    let store = ServerDir(dir.clone()).store();
    if !store.exists() {
        return None;
    }
    let store = ServerStore::open(&store).ok()?;
    lienthong_security_server::server_id(&store)
        .ok()
        .map(|id| id.to_string())
}

pub fn run(cmd: ServerCommand) -> Result<()> {
    let workers = match std::env::var(ENV_WORKER_THREADS) {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| {
                format!("{ENV_WORKER_THREADS}={v:?} is not a number of threads (1..=256)")
            })?,
        Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

/// An access change as the admin port's audit log writes it.
fn rule_detail(action: &str, r: &AccessRule) -> String {
    format!(
        "{action} {} {}/{}{}",
        r.subject,
        r.provider,
        r.service,
        r.method
            .as_deref()
            .map(|m| format!("/{m}"))
            .unwrap_or_default()
    )
}

/// Writes a change made here into the server's operators' audit log, as
/// the admin port writes the console's (the actor is `cli:` and the Unix
/// user), and passes the outcome on.
fn audited<T, E: std::fmt::Display + Into<Box<dyn std::error::Error>>>(
    store: &ServerStore,
    action: &str,
    detail: String,
    outcome: std::result::Result<T, E>,
) -> Result<T> {
    use lienthong_security_server::admin::operators;
    if let Err(e) = operators::audit_cli(store, action, detail, &outcome) {
        return Err(format!(
            "{action}: {} but the operators' audit log cannot be written: {e}",
            match &outcome {
                Ok(_) => "done".to_owned(),
                Err(why) => format!("refused ({why})"),
            }
        )
        .into());
    }
    outcome.map_err(Into::into)
}

fn open_store(dir: &std::path::Path) -> Result<ServerStore> {
    let d = ServerDir(dir.to_owned());
    if !d.store().exists() {
        return Err(format!(
            "{} holds no security server; run `lienthong server init` first",
            dir.display()
        )
        .into());
    }
    Ok(ServerStore::open(&d.store())?)
}

/// `PROVIDER_SUBSYSTEM/grpc.Service` → provider and service name.
fn provided(service: &str) -> Result<(SubsystemId, String)> {
    let id: ServiceId = service.parse()?;
    if id.version.is_some() {
        return Err("give the service without a version: PROVIDER_SUBSYSTEM/grpc.Service".into());
    }
    Ok((id.provider, id.service.to_string()))
}

fn rule(subject: &str, service: &str, method: Option<String>) -> Result<AccessRule> {
    let (provider, service) = provided(service)?;
    if let Some(m) = &method
        && (m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(format!("method {m:?} is not a gRPC method name").into());
    }
    Ok(AccessRule {
        subject: subject.parse::<Subject>()?,
        provider,
        service,
        method,
    })
}

/// A listen flag's value: an address, or a host name resolved now (the
/// first address it resolves to is taken, and said).
pub async fn resolve_listen(flag: &str, value: &str) -> Result<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "give ADDRESS:PORT or HOST:PORT, e.g. 127.0.0.1:5500 or localhost:5500";
    let mut addrs = tokio::net::lookup_host(value)
        .await
        .map_err(|e| format!("{flag} {value:?}: {e} ({hint})"))?;
    let addr = addrs
        .next()
        .ok_or_else(|| format!("{flag} {value:?}: the name resolves to no address ({hint})"))?;
    eprintln!(
        "{flag} {}: the name resolves to {addr}; listening there",
        printable(value)
    );
    Ok(addr)
}

/// Polls until approved (true), or until `wait` seconds passed (false:
/// still pending; with `--wait 0` that is the expected outcome).
async fn wait_for(
    what: &str,
    wait: u64,
    resume: &str,
    mut poll: impl AsyncFnMut() -> std::result::Result<JoinState, join::JoinError>,
) -> Result<bool> {
    let started = Instant::now();
    let mut told = false;
    loop {
        match poll().await? {
            JoinState::Approved => {
                println!("{what}: approved");
                return Ok(true);
            }
            JoinState::Rejected { note } => {
                return Err(format!("{what} was rejected: {note}").into());
            }
            JoinState::Pending { request } => {
                if !told {
                    println!(
                        "{what} is request {request}, pending; ask the registration officer to approve it"
                    );
                    told = true;
                }
                if wait == 0 {
                    println!(
                        "not waiting (--wait 0); once request {request} is approved, run the command again with {}",
                        resume.replace("{id}", &request.to_string())
                    );
                    return Ok(false);
                }
                if started.elapsed() >= Duration::from_secs(wait) {
                    return Err(format!(
                        "{what} (request {request}) is still pending; run the command again with --resume to keep waiting"
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn run_async(cmd: ServerCommand) -> Result<()> {
    match cmd {
        ServerCommand::Init {
            dir,
            anchor,
            server,
            address,
            token,
            resume,
            wait,
            cluster,
        } => {
            let cluster = cluster.database()?;
            if let Some(db) = &cluster {
                // Before the registry is asked anything: a wrong URL or
                // password must not leave a request behind.
                ServerStore::check_database(db)?;
            }
            if !resume {
                let (Some(anchor), Some(server), Some(address), Some(token)) =
                    (anchor, server, address, token)
                else {
                    return Err("--anchor, --server, --address and --token are required".into());
                };
                let anchor = client::read_anchor(&anchor)?;
                let server: ServerId = server.parse()?;
                let id = join::submit_join(&dir, &anchor, &server, &address, &token).await?;
                println!("registration request {id} submitted for {server}");
            }
            if let Some(db) = &cluster {
                join_cluster(&dir, db)?;
            }
            let approved = wait_for("the registration", wait, "--resume", async || {
                join::poll_join(&dir).await
            })
            .await?;
            if !approved {
                return Ok(());
            }
            println!(
                "certificates written to {}; start with `lienthong server serve --dir {}`",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        ServerCommand::Serve {
            dir,
            consumer_listen,
            provider_listen,
            max_message_bytes,
            replay_capacity,
            consumer_transport,
            checkpoint_interval,
            retention_days,
            operational_days,
            dangerous_disable_message_log,
            dangerous_pass_through,
            poll_interval,
            admin_listen,
            max_connections,
            max_connections_per_peer,
            header_timeout,
            max_calls_per_peer,
            log_key_dir,
            cluster,
        } => {
            if let Some(db) = cluster.database()? {
                open_store(&dir)?;
                join_cluster(&dir, &db)?;
            }
            let mut opts = ServerOptions::new(dir);
            opts.log_key_dir = log_key_dir;
            opts.listener_limits.max_connections = max_connections.max(1);
            opts.listener_limits.max_connections_per_peer = max_connections_per_peer.max(1);
            opts.listener_limits.header_timeout = Duration::from_secs(header_timeout.max(1));
            opts.max_calls_per_peer = max_calls_per_peer.max(1);
            opts.consumer_transport = consumer_transport;
            opts.checkpoint_interval = Duration::from_secs(checkpoint_interval.max(1));
            opts.retention = Duration::from_secs(u64::from(retention_days.max(1)) * 86400);
            opts.operational_window =
                Duration::from_secs(u64::from(operational_days.max(1)) * 86400);
            opts.dangerous_disable_message_log = dangerous_disable_message_log;
            opts.dangerous_pass_through = dangerous_pass_through;
            opts.poll_interval = poll_interval.map(|s| Duration::from_secs(s.max(1)));
            opts.admin_listen = match admin_listen.as_str() {
                "off" => None,
                a => Some(resolve_listen("--admin-listen", a).await?),
            };
            opts.consumer_listen = resolve_listen("--consumer-listen", &consumer_listen).await?;
            opts.provider_listen = resolve_listen("--provider-listen", &provider_listen).await?;
            opts.max_message_bytes = max_message_bytes;
            opts.replay_capacity = replay_capacity.max(1);
            let server = SecurityServer::start(opts).await?;
            eprintln!(
                "security server {} serving: information systems on {}, other servers on {}, admin {}",
                server.id,
                server.consumer_addr(),
                server.provider_addr(),
                server
                    .admin_addr()
                    .map_or("off".to_string(), |a| a.to_string())
            );
            crate::shutdown_signal().await;
            server.shutdown();
            Ok(())
        }
        ServerCommand::Clients(ClientsCommand::Add {
            dir,
            subsystem,
            wait,
            resume,
        }) => {
            let subsystem: SubsystemId = subsystem.parse()?;
            let id = match resume {
                Some(id) => id,
                None => join::submit_client(&dir, &subsystem).await?,
            };
            wait_for(
                &format!("client {subsystem}"),
                wait,
                "--resume {id}",
                async || join::poll_client(&dir, id).await,
            )
            .await
            .map(|_| ())
        }
        ServerCommand::Clients(ClientsCommand::Pin {
            dir,
            subsystem,
            cert,
        }) => {
            let subsystem: SubsystemId = subsystem.parse()?;
            let fp = Fingerprint::of(&pem::read_cert(&cert)?);
            let store = open_store(&dir)?;
            let new = store.pin_client(&subsystem, &fp);
            let new = audited(&store, "pin client", format!("{subsystem} {fp}"), new)?;
            println!(
                "{} certificate {fp} for {subsystem}",
                if new { "pinned" } else { "already pinned:" }
            );
            Ok(())
        }
        ServerCommand::Clients(ClientsCommand::Unpin {
            dir,
            subsystem,
            cert,
        }) => {
            let subsystem: SubsystemId = subsystem.parse()?;
            let fp = Fingerprint::of(&pem::read_cert(&cert)?);
            let store = open_store(&dir)?;
            let done: Result<()> = match store.unpin_client(&subsystem, &fp) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("certificate {fp} was not pinned for {subsystem}").into()),
                Err(e) => Err(e.into()),
            };
            audited(&store, "unpin client", format!("{subsystem} {fp}"), done)?;
            println!("unpinned certificate {fp} for {subsystem}");
            Ok(())
        }
        ServerCommand::Clients(ClientsCommand::LogBodies {
            dir,
            subsystem,
            off,
        }) => {
            let subsystem: SubsystemId = subsystem.parse()?;
            let store = open_store(&dir)?;
            let done = store.set_body_logging(&subsystem, !off);
            let word = if off { "off" } else { "on" };
            audited(&store, "body logging", format!("{subsystem} {word}"), done)?;
            println!(
                "bodies of {subsystem}'s exchanges are {} logged",
                if off { "no longer" } else { "now" }
            );
            Ok(())
        }
        ServerCommand::Acl(cmd) => acl(cmd).await,
        ServerCommand::Backend(cmd) => backend(cmd),
        ServerCommand::Services(ServicesCommand::Describe {
            dir,
            service,
            descriptor,
            proto,
            import_path,
        }) => describe_service(&dir, &service, descriptor, &proto, &import_path).await,
        ServerCommand::Operator(cmd) => operator(cmd),
        ServerCommand::Status { dir, check } => status(&dir, check).await,
        ServerCommand::Log {
            action: Some(LogAction::RotateKey { dir, log_key_dir }),
            ..
        } => {
            let d = ServerDir(dir.clone());
            open_store(&dir)?;
            let n = lienthong_security_server::keys::rotate_log_key(&d, log_key_dir.as_deref())?;
            println!(
                "log key {n} started; segments are sealed under it from the server's next start (restart it); keep the older keys for reading"
            );
            Ok(())
        }
        ServerCommand::Log {
            action: None,
            dir,
            log_key_dir,
            since_hours,
            message_id,
            limit,
        } => operational_data(
            &dir.ok_or("the server's directory is missing: --dir DIR")?,
            log_key_dir.as_deref(),
            since_hours,
            message_id.as_deref(),
            limit,
        ),
    }
}

/// Publishes a provided service's descriptor set, as this server.
async fn describe_service(
    dir: &std::path::Path,
    service: &str,
    descriptor: Option<PathBuf>,
    proto: &[PathBuf],
    import_path: &[PathBuf],
) -> Result<()> {
    use lienthong_proto::pb::registry::v1::DescribeServiceRequest;
    use lienthong_proto::pb::registry::v1::service_catalogue_client::ServiceCatalogueClient;
    let id: ServiceId = service.parse()?;
    let set = match &descriptor {
        Some(path) => crate::registry::read_descriptor(path, &id)?,
        None => crate::registry::compile_protos(proto, import_path, &id)?,
    };
    let d = ServerDir(dir.to_owned());
    let identity = lienthong_security_server::keys::auth_identity(&d)?;
    let channel = client::connect(&client::read_anchor(&d.anchor())?, Some(&identity)).await?;
    let (digest, defines) = (hex::encode(set.sha256()), set.services().join(", "));
    let reply = ServiceCatalogueClient::new(channel)
        .describe_provided_service(DescribeServiceRequest {
            id: Some((&id).into()),
            descriptor_set: set.into_bytes(),
        })
        .await
        .map_err(|s| format!("the registry refused: {}", s.message()))?
        .into_inner();
    println!(
        "descriptor set of {id} in the service catalogue (sha256 {digest}, defines {defines}; audit record {}, configuration version {})",
        reply.audit_id, reply.configuration_version
    );
    Ok(())
}

/// Why this server does not provide `r`'s service by the configuration
/// (cached, or downloaded when the cached one does not list it); `None`
/// when it does.
async fn not_provided(dir: &std::path::Path, r: &AccessRule) -> Result<Option<String>> {
    let store = open_store(dir)?;
    let d = ServerDir(dir.to_owned());
    let server = server_id(&store)?;
    let conf = ConfClient::new(
        client::read_anchor(&d.anchor())?,
        d.configuration(),
        ConfClient::empty_trust(),
    );
    let why = |conf: &ConfClient| match conf.view() {
        None => Some("no global configuration is at hand to check it".to_string()),
        Some(v) if !v.serves(&server, &r.provider) => Some(format!(
            "{} is not a client of this server ({server}) in configuration version {}; add it with `lienthong server clients add --dir {} {}`",
            r.provider,
            v.version,
            dir.display(),
            r.provider
        )),
        Some(v) if !v.offers(&r.provider, &r.service) => Some(format!(
            "{} offers no service {} in configuration version {}; the registry operator registers it with `lienthong registry service add {}/{}`",
            r.provider, r.service, v.version, r.provider, r.service
        )),
        Some(_) => None,
    };
    // A damaged or missing cache is only a reason to ask the registry.
    let _ = conf.load_cached();
    if why(&conf).is_none() {
        return Ok(None);
    }
    if let Err(e) = conf.refresh().await
        && conf.view().is_none()
    {
        return Ok(Some(format!(
            "no global configuration is cached and the registry is unreachable ({}), so whether this server provides the service cannot be checked",
            printable(&e.to_string())
        )));
    }
    Ok(why(&conf))
}

async fn acl(cmd: AclCommand) -> Result<()> {
    match cmd {
        AclCommand::Grant {
            dir,
            subject,
            service,
            method,
            force,
        } => {
            let r = rule(&subject, &service, method)?;
            let detail = format!(
                "{}{}",
                rule_detail("grant", &r),
                if force { " (--force)" } else { "" }
            );
            let refusal = match not_provided(&dir, &r).await? {
                None => None,
                Some(why) if force => {
                    eprintln!(
                        "warning: granting anyway (--force): {why}; the grant takes effect once the configuration lists the service as provided here"
                    );
                    None
                }
                Some(why) => Some(format!(
                    "this server does not provide {}/{}: {why}. To prepare the grant before the configuration lists it, add --force",
                    r.provider, r.service
                )),
            };
            let store = open_store(&dir)?;
            let new: Result<bool> = match refusal {
                Some(why) => Err(why.into()),
                None => store.grant(&r).map_err(Into::into),
            };
            let new = audited(&store, "grant access", detail, new)?;
            println!("{}: {r}", if new { "granted" } else { "already granted" });
        }
        AclCommand::Revoke {
            dir,
            subject,
            service,
            method,
        } => {
            let r = rule(&subject, &service, method)?;
            let store = open_store(&dir)?;
            let done: Result<()> = match store.revoke(&r) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("no such grant: {r}").into()),
                Err(e) => Err(e.into()),
            };
            audited(&store, "revoke access", rule_detail("revoke", &r), done)?;
            println!("revoked: {r}");
        }
        AclCommand::List { dir } => {
            let rules = open_store(&dir)?.rules()?;
            if rules.is_empty() {
                println!("no grants: every call is refused");
            }
            for r in rules {
                println!("{r}");
            }
        }
    }
    Ok(())
}

fn operator(cmd: OperatorCommand) -> Result<()> {
    use lienthong_security_server::admin::operators;
    match cmd {
        OperatorCommand::Add { dir, name, role } => {
            let role: operators::Role = role.parse()?;
            let store = open_store(&dir)?;
            let token = operators::add_operator(&store, &name, role);
            let token = audited(&store, "add operator", format!("{name} ({role})"), token)?;
            eprintln!("operator {name} ({role}); the token is shown once, keep it secret:");
            println!("{token}");
        }
        OperatorCommand::Remove { dir, name } => {
            let store = open_store(&dir)?;
            let done: Result<()> = match operators::remove_operator(&store, &name) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("no operator {name}").into()),
                Err(e) => Err(e.into()),
            };
            audited(&store, "remove operator", name.clone(), done)?;
            println!("operator {name} removed");
        }
        OperatorCommand::List { dir } => {
            let list = operators::list_operators(&open_store(&dir)?)?;
            if list.is_empty() {
                println!("no operators: add one with `lienthong server operator add`");
            }
            for o in list {
                println!("{} ({})", o.name, o.role);
            }
        }
    }
    Ok(())
}

fn backend(cmd: BackendCommand) -> Result<()> {
    match cmd {
        BackendCommand::Set {
            dir,
            service,
            url,
            timeout_ms,
        } => {
            // The same rules as the console's (the admin port's) backend form.
            let change = BackendChange {
                service,
                url,
                timeout_ms: Some(timeout_ms),
            };
            let store = open_store(&dir)?;
            let set = backend_of(&change).and_then(|b| {
                store.set_backend(&b)?;
                Ok(b)
            });
            let b = audited(&store, "set backend", backend_detail(&change), set)?;
            println!("{}/{} is served by {}", b.provider, b.service, b.url);
        }
        BackendCommand::List { dir } => {
            for b in open_store(&dir)?.backends()? {
                println!(
                    "{}/{} -> {} (timeout {:?})",
                    b.provider, b.service, b.url, b.timeout
                );
            }
        }
    }
    Ok(())
}

async fn status(dir: &std::path::Path, check: bool) -> Result<()> {
    let store = open_store(dir)?;
    let d = ServerDir(dir.to_owned());
    let id = server_id(&store)?;
    println!("security server {id}");
    if store.is_clustered() {
        println!(
            "policy shared with the cluster through {}",
            store.policy_location()
        );
    }
    let anchor = client::read_anchor(&d.anchor())?;
    let now = SystemTime::now();
    match pem::read_certs(&d.auth_cert()) {
        Ok(chain) => {
            let info = verify::parse(&chain[0])?;
            println!(
                "auth certificate valid until {}",
                verify::fmt_time(info.not_after)
            );
        }
        Err(_) => println!("no auth certificate yet: the registration is not finished"),
    }
    let conf = ConfClient::new(anchor, d.configuration(), ConfClient::empty_trust());
    if let Err(e) = conf.load_cached() {
        println!("cached configuration unusable: {e}");
    }
    if check {
        match conf.refresh().await {
            Ok(true) => println!("downloaded a newer configuration"),
            Ok(false) => println!("the registry has nothing newer"),
            Err(e) => println!("the registry is unreachable: {}", printable(&e.to_string())),
        }
    }
    match conf.view() {
        None => println!("no configuration: exchanges fail until one is downloaded"),
        Some(v) => {
            let expires = verify::fmt_time(v.expires_at_ms / 1000);
            if v.is_expired(now) {
                println!(
                    "configuration version {} EXPIRED at {expires}: every exchange fails with *.conf_expired until the registry is reachable",
                    v.version
                );
            } else {
                println!("configuration version {} valid until {expires}", v.version);
            }
        }
    }
    if d.message_log().exists() {
        let owner = server_id(&open_store(dir)?)?.to_string();
        let key_dir = std::env::var_os("LIENTHONG_LOG_KEY_DIR").map(PathBuf::from);
        let reader = LogReader::open(&d.message_log(), log_keys(&d, key_dir.as_deref(), &owner)?)?;
        let size = reader.tree_size()?;
        match reader.latest_checkpoint()? {
            Some(c) => println!(
                "message log: {size} records; last witnessed checkpoint {} records at {}",
                c.tree_size,
                verify::fmt_time(c.witnessed_at_ms / 1000)
            ),
            None => println!("message log: {size} records; no witnessed checkpoint yet"),
        }
    }
    Ok(())
}

fn operational_data(
    dir: &std::path::Path,
    log_key_dir: Option<&std::path::Path>,
    since_hours: u32,
    message_id: Option<&str>,
    limit: u64,
) -> Result<()> {
    use lienthong_security_server::message_log::leaf::{phase_name, side_name};
    use lienthong_security_server::operational::{self, Selection, Viewer};
    let d = ServerDir(dir.to_owned());
    let owner = server_id(&open_store(dir)?)?.to_string();
    let reader = LogReader::open(&d.message_log(), log_keys(&d, log_key_dir, &owner)?)?;
    let now_ms = lienthong_proto::time::now_ms();
    // The owner at the server's files reads as far back as the log goes.
    let selection = Selection::within_window(
        now_ms - i64::from(since_hours) * 3_600_000,
        0,
        message_id.unwrap_or_default(),
        limit,
        now_ms,
        Duration::MAX,
    )?;
    let (records, truncated) = operational::select(&reader, &selection, &Viewer::Owner)?;
    println!(
        "{:>8}  {:<20}  {:<8}  {:<8}  {:<32}  {:<28}  {:<50}  {:<14}  {:>8}  {:>6}  {:>9}  fault",
        "record",
        "when (UTC)",
        "side",
        "phase",
        "message id",
        "client",
        "service/method",
        "peer",
        "bytes",
        "status",
        "µs"
    );
    for l in &records {
        let side = side_name(l.side);
        let phase = phase_name(l.phase);
        println!(
            "{:>8}  {:<20}  {side:<8}  {phase:<8}  {:<32}  {:<28}  {:<50}  {:<14}  {:>8}  {:>6}  {:>9}  {}",
            l.record,
            verify::fmt_time(l.at_unix_ms / 1000),
            printable(&l.message_id),
            printable(&l.client),
            printable(&format!("{}/{}", l.service, l.method)),
            printable(&l.peer),
            l.payload_size,
            l.grpc_status,
            l.duration_us,
            printable(&l.fault)
        );
    }
    if truncated {
        println!("(more records match: raise --limit or narrow --since-hours)");
    }
    Ok(())
}

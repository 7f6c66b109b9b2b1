//! `lienthong registry …`: run the central registry, and operate it.
//!
//! `init`, `serve`, `anchor` and `operator add` work on the registry's own
//! directory (run them on the registry host). Every other command is an
//! operator client: it reaches the registry named in an anchor file and
//! authenticates with an operator token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::model::Role;
use lienthong_central_registry::publisher::DEFAULT_CONFIGURATION_VALIDITY_SECS;
use lienthong_central_registry::store::Database;
use lienthong_central_registry::{DEFAULT_PORT, Registry, RegistryOptions};
use lienthong_certs::{Fingerprint, pem};
use lienthong_proto::catalogue::DescriptorSet;
use lienthong_proto::fields::printable;
use lienthong_proto::id::{GlobalGroupId, MemberClass, MemberId, ServerId, ServiceId, SubsystemId};
use lienthong_proto::pb::globalconf::v1 as pbconf;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::time::now_ms;
use lienthong_registry_client::{self as client, OperatorClient};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where the registry's store is: `registry.db` in `--dir` unless a
/// PostgreSQL database is named.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// Keep the store in PostgreSQL instead of `registry.db` in --dir:
    /// postgres://USER@HOST[:PORT][,HOST2[:PORT]...]/DATABASE[?OPTIONS],
    /// e.g. `?sslmode=require&sslrootcert=/etc/lienthong/db-ca.pem&target_session_attrs=read-write`.
    /// Put no password in it: use --database-password-file or
    /// LIENTHONG_DATABASE_PASSWORD.
    #[arg(long, env = "LIENTHONG_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the database password (its first line).
    #[arg(
        long,
        env = "LIENTHONG_DATABASE_PASSWORD_FILE",
        requires = "database_url"
    )]
    database_password_file: Option<PathBuf>,
}

impl DatabaseArgs {
    fn database(&self) -> Result<Database> {
        Ok(match &self.database_url {
            None => Database::Home,
            Some(url) => Database::postgres(url, self.database_password_file.as_deref())?,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Create a registry: instance CA, configuration-signing key, TLS
    /// identity, the store, and a first officer (`admin`) whose token is
    /// printed once.
    ///
    /// Example: lienthong registry init --dir /var/lib/lienthong/registry --instance VN --address registry.gov.vn:4400
    Init {
        /// The registry's home directory; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The instance identifier, e.g. VN or VN-TEST.
        #[arg(long)]
        instance: String,
        /// Address (host:port) servers and operators reach the registry at;
        /// repeat for several. The TLS certificate names each host.
        #[arg(long = "address", required = true)]
        addresses: Vec<String>,
        /// How long a configuration stays valid after creation, in seconds
        /// (at least 120: servers poll every 60 s).
        #[arg(long, default_value_t = DEFAULT_CONFIGURATION_VALIDITY_SECS,
              value_parser = clap::value_parser!(u32).range(120..))]
        configuration_validity: u32,
        /// Approve registration requests without an officer. For test
        /// instances only.
        #[arg(long)]
        dangerous_auto_approve: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Serve the operator, registration and configuration APIs.
    ///
    /// Example: lienthong registry serve --dir /var/lib/lienthong/registry
    Serve {
        /// The registry's home directory (from `registry init`).
        #[arg(long)]
        dir: PathBuf,
        /// Where to listen: ADDRESS:PORT or HOST:PORT (a host name is
        /// resolved at start, to its first address).
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)).to_string())]
        listen: String,
        /// Seconds between configuration publications when nothing changes.
        #[arg(long, default_value_t = 60)]
        publish_interval: u64,
        /// Seconds the publisher lease lasts unless renewed: with several
        /// nodes on one PostgreSQL store, how long new versions stop when
        /// the publishing node dies (the others keep serving the last).
        #[arg(long, default_value_t = 15)]
        lease: u64,
        /// Where to serve the admin port: `GET /health` (200, or 503 when
        /// the store is unreachable or the configuration served has
        /// expired) and `GET /metrics` (Prometheus); none unless given.
        /// Keep it on loopback or a management network.
        #[arg(long, alias = "metrics-listen")]
        admin_listen: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Write the anchor file security servers and operators start from.
    ///
    /// Example: lienthong registry anchor --dir /var/lib/lienthong/registry --out anchor.bin
    Anchor {
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the anchor.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// After restoring the store from a backup: make the next configuration
    /// version at least VERSION (on the registry host; a running registry
    /// publishes it at once).
    ///
    /// Security servers refuse versions older than the one they hold, and
    /// may hold versions published after the backup was taken: give one
    /// above the highest version `lienthong server status` shows on any
    /// of them.
    ///
    /// Example: lienthong registry version-floor 1500 --dir /var/lib/lienthong/registry
    VersionFloor {
        /// The lowest version the registry publishes next.
        version: u64,
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Move this registry's store from `registry.db` (SQLite) into an
    /// empty PostgreSQL database, where more nodes can share it (on the
    /// registry host, with the registry stopped).
    ///
    /// Every row is copied in one transaction — audit log, published
    /// versions with their signed bytes, operators, tokens, requests,
    /// checkpoints, alarms — and read back; `registry.db` is then renamed
    /// `registry.db.moved` (keep it as a backup). From then on serve the
    /// node with --database-url. A failure leaves the database empty and
    /// `registry.db` in place.
    ///
    /// Example: lienthong registry move-store --dir /var/lib/lienthong/registry --database-url postgres://lienthong@db1.gov.vn/registry --database-password-file /etc/lienthong/db-password
    MoveStore {
        #[arg(long)]
        dir: PathBuf,
        /// The PostgreSQL database to move into (it must hold no registry):
        /// postgres://USER@HOST[:PORT][,HOST2...]/DATABASE[?OPTIONS].
        #[arg(long, env = "LIENTHONG_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// A file holding the database password (its first line); else
        /// LIENTHONG_DATABASE_PASSWORD.
        #[arg(long, env = "LIENTHONG_DATABASE_PASSWORD_FILE")]
        database_password_file: Option<PathBuf>,
    },
    /// Manage operators (on the registry host).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Add a member class.
    ///
    /// Example: lienthong registry member-class GOV --description "Government agencies"
    MemberClass {
        code: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Add a member.
    ///
    /// Example: lienthong registry member VN/GOV/000102 --name "Bộ Công an"
    Member {
        id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Add a subsystem to a member.
    ///
    /// Example: lienthong registry subsystem VN/GOV/000102/population
    Subsystem {
        id: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Publish or withdraw a service, or publish its protobuf descriptor
    /// set in the service catalogue (`describe`, or `add --descriptor`):
    /// security servers then answer gRPC reflection for it, so that
    /// grpcurl lists and describes it with no .proto file at hand.
    ///
    /// Example: lienthong registry service add VN/GOV/000102/population/population.v1.PersonRegistry --description "Persons by personal ID" --descriptor population.binpb
    /// Example: lienthong registry service describe VN/GOV/000102/population/population.v1.PersonRegistry --descriptor population.binpb
    /// Example: lienthong registry service describe VN/GOV/000102/population/population.v1.PersonRegistry --proto population/v1/population.proto --import-path proto
    Service {
        #[arg(value_enum)]
        action: ServiceAction,
        id: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The service's descriptor set (`protoc --include_imports
        /// --descriptor_set_out=FILE.binpb …` or `buf build -o FILE.binpb`;
        /// at most 1 MiB). `describe` needs it or --proto.
        #[arg(long, value_name = "FILE.binpb", conflicts_with = "proto")]
        descriptor: Option<PathBuf>,
        /// Instead of --descriptor: the service's .proto files, compiled
        /// here into its descriptor set with every import (no protoc
        /// needed), relative to an --import-path.
        #[arg(long, value_name = "FILE.proto")]
        proto: Vec<PathBuf>,
        /// Where --proto files and their imports are found (repeatable;
        /// default: the current directory).
        #[arg(long, value_name = "DIR", requires = "proto")]
        import_path: Vec<PathBuf>,
        /// The service handles personal data: every call must name its
        /// data subject (lt-data-subject), or both servers refuse it.
        #[arg(long)]
        personal_data: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Create a global group, or add/remove a subsystem to/from one.
    ///
    /// Example: lienthong registry group add VN/investigators
    /// Example: lienthong registry group add VN/investigators --subsystem VN/GOV/000201/tax
    Group {
        #[arg(value_enum)]
        action: AddRemove,
        id: String,
        /// The subsystem to add or remove; without it, `add` creates the group.
        #[arg(long)]
        subsystem: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Name the instance's trace portal subsystem.
    ///
    /// Example: lienthong registry trace-portal VN/GOV/000001/portal
    TracePortal {
        subsystem: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Grant a global group's members the right to withhold exchanges from
    /// a data subject's trace, each for at most --max-days from the
    /// exchange. The grant starts now and ends the one in force; providers
    /// refuse a withholding that no grant covers.
    ///
    /// Example: lienthong registry withholding-group VN/investigators --max-days 365
    WithholdingGroup {
        group: String,
        /// Longest one exchange may stay withheld, in days.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=18250))]
        max_days: u32,
        /// The grant ends this many days from now; default: when another
        /// grant replaces it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36500))]
        valid_days: Option<u32>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Set the accepted forms of a data subject's personal id, as
    /// NAME=MASK (# a digit, @ a capital letter, A-Z 0-9 - themselves).
    /// With none, the default applies: VN-CCCD=############.
    ///
    /// Example: lienthong registry subject-formats VN-CCCD=############ passport=@#######
    SubjectFormats {
        formats: Vec<String>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// List refused message-log checkpoints (a server's log went back or
    /// its history changed).
    ///
    /// Example: lienthong registry alarms
    Alarms {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Trust an external CA (PEM certificate file).
    ///
    /// Example: lienthong registry trusted-ca partner-ca.pem
    TrustedCa {
        cert: PathBuf,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Create a one-time enrollment token for a security server; hand it to
    /// the agency out of band.
    ///
    /// Example: lienthong registry token VN/GOV/000102/ss1 --valid-hours 24
    Token {
        server: String,
        #[arg(long, default_value_t = 24)]
        valid_hours: u32,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// List the enrollment tokens still usable (unused, unexpired): the
    /// server each is for and when it expires — never a token or its hash.
    ///
    /// Example: lienthong registry tokens
    Tokens {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// List registration requests.
    ///
    /// Example: lienthong registry requests --state pending
    Requests {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Approve a pending request; its certificates are issued at once.
    ///
    /// Example: lienthong registry approve 7 --note "confirmed by phone"
    Approve {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Reject a pending request.
    ///
    /// Example: lienthong registry reject 7 --note "unknown server"
    Reject {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Revoke a certificate by its SHA-256 fingerprint (hex, colons allowed).
    ///
    /// Example: lienthong registry revoke 3fa2…c1 --reason "key compromised"
    Revoke {
        fingerprint: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Read the audit log.
    ///
    /// Example: lienthong registry audit --since-hours 24 --actor alice
    Audit {
        /// Only the last N hours.
        #[arg(long)]
        since_hours: Option<u32>,
        /// Only this operator.
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Summarise the configuration currently published.
    ///
    /// Example: LIENTHONG_ANCHOR=anchor.bin LIENTHONG_TOKEN=lt_… lienthong registry conf
    Conf {
        #[command(flatten)]
        op: OperatorArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Add an operator and print its token (shown once).
    ///
    /// Example: lienthong registry operator add --dir /var/lib/lienthong/registry alice --role officer
    Add {
        #[arg(long)]
        dir: PathBuf,
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceAction {
    Add,
    Remove,
    /// Publish (or replace) the descriptor set of a registered service.
    Describe,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AddRemove {
    Add,
    Remove,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    /// Reads and writes.
    Officer,
    /// Reads only.
    Observer,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Pending,
    Approved,
    Rejected,
}

/// How an operator command reaches and authenticates to the registry.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// The anchor file (from `registry anchor`).
    #[arg(long, env = "LIENTHONG_ANCHOR")]
    anchor: PathBuf,
    /// The operator token (prefer the environment variable: command lines
    /// are visible to other users).
    #[arg(long, env = "LIENTHONG_TOKEN", hide_env_values = true)]
    token: String,
}

impl OperatorArgs {
    async fn client(&self) -> Result<OperatorClient> {
        let anchor = client::read_anchor(&self.anchor)?;
        let channel = client::connect(&anchor, None).await?;
        Ok(client::operator_client(channel, &self.token)?)
    }
}

/// A refusal as a person reads it.
/// The descriptor set in `path`, checked as the registry will check it.
pub(crate) fn read_descriptor(path: &std::path::Path, id: &ServiceId) -> Result<DescriptorSet> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set = DescriptorSet::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    set.require_service(&id.service.to_string())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(set)
}

/// The descriptor set of `protos` (and every file they import), compiled
/// from the `.proto` sources found under `import_path` (default `.`).
pub(crate) fn compile_protos(
    protos: &[PathBuf],
    import_path: &[PathBuf],
    id: &ServiceId,
) -> Result<DescriptorSet> {
    use prost::Message;
    let includes: Vec<PathBuf> = if import_path.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        import_path.to_vec()
    };
    let compiled = protox::compile(protos, &includes).map_err(|e| format!("--proto: {e}"))?;
    let set =
        DescriptorSet::parse(compiled.encode_to_vec()).map_err(|e| format!("--proto: {e}"))?;
    set.require_service(&id.service.to_string())
        .map_err(|e| format!("--proto: {e}"))?;
    Ok(set)
}

fn refused(s: tonic::Status) -> Box<dyn std::error::Error> {
    format!("{:?}: {}", s.code(), s.message()).into()
}

fn done(what: &str, reply: pb::OperatorReply) {
    println!(
        "{what} (audit record {}, configuration version {})",
        reply.audit_id, reply.configuration_version
    );
}

pub fn run(cmd: RegistryCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Init {
            dir,
            instance,
            addresses,
            configuration_validity,
            dangerous_auto_approve,
            db,
        } => {
            let mut opts = InitOptions::new(&instance, &addresses[0]);
            opts.addresses = addresses;
            opts.configuration_validity_secs = configuration_validity;
            opts.auto_approve = dangerous_auto_approve;
            opts.database = db.database()?;
            // The store is reached synchronously (PostgreSQL's client must
            // not block a runtime thread).
            let done = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || init::initialise(&dir, &opts)).await??
            };
            let anchor_path = dir.join("anchor.bin");
            client::write_anchor(&anchor_path, &done.anchor)?;
            println!(
                "registry for instance {instance} created in {}",
                dir.display()
            );
            println!("anchor written to {}", anchor_path.display());
            println!(
                "officer `{}` token (shown once, keep it secret):",
                init::FIRST_OFFICER
            );
            println!("{}", done.officer_token);
            Ok(())
        }
        RegistryCommand::Serve {
            dir,
            listen,
            publish_interval,
            lease,
            admin_listen,
            db,
        } => {
            let listen = crate::server::resolve_listen("--listen", &listen).await?;
            let mut opts = RegistryOptions::new(dir, listen);
            opts.publish_interval = Duration::from_secs(publish_interval.max(1));
            // Renewed every third of it, read every second: at least 3 s.
            opts.lease = Duration::from_secs(lease.max(3));
            opts.admin_listen = match admin_listen {
                Some(a) => Some(crate::server::resolve_listen("--admin-listen", &a).await?),
                None => None,
            };
            opts.database = db.database()?;
            let registry = Registry::start(opts).await?;
            eprintln!("registry listening on {}", registry.local_addr());
            if let Some(admin) = registry.admin_addr() {
                eprintln!("admin port (health, metrics) on {admin}");
            }
            registry
                .run_until(async {
                    crate::shutdown_signal().await;
                })
                .await;
            Ok(())
        }
        RegistryCommand::Anchor { dir, out, db } => {
            let db = db.database()?;
            let anchor = tokio::task::spawn_blocking(move || init::anchor_in(&dir, &db)).await??;
            client::write_anchor(&out, &anchor)?;
            println!("anchor written to {}", out.display());
            Ok(())
        }
        RegistryCommand::VersionFloor { version, dir, db } => {
            let db = db.database()?;
            let next = tokio::task::spawn_blocking(move || {
                init::raise_version_floor_in(&dir, &db, version)
            })
            .await??;
            println!("the next configuration version published is {next}");
            Ok(())
        }
        RegistryCommand::MoveStore {
            dir,
            database_url,
            database_password_file,
        } => {
            let target = lienthong_central_registry::store::postgres_target(
                &database_url,
                database_password_file.as_deref(),
            )?;
            let moved = tokio::task::spawn_blocking(move || {
                lienthong_central_registry::store::to_postgres::move_to_postgres(&dir, &target)
                    .map(|m| (m, target.shown()))
            })
            .await??;
            let (moved, shown) = moved;
            for (table, rows) in &moved.copied.tables {
                println!("  {table:<22} {rows:>9} rows");
            }
            println!(
                "{} rows moved to {shown}; newest configuration version {}",
                moved.copied.rows(),
                moved
                    .version
                    .map_or_else(|| "none yet".to_owned(), |v| v.to_string())
            );
            println!(
                "{} is kept as a backup; serve every node with --database-url {shown}",
                moved.kept.display()
            );
            Ok(())
        }
        RegistryCommand::Operator(OperatorCommand::Add {
            dir,
            name,
            role,
            db,
        }) => {
            let role = match role {
                RoleArg::Officer => Role::Officer,
                RoleArg::Observer => Role::Observer,
            };
            let (db, who) = (db.database()?, name.clone());
            let token =
                tokio::task::spawn_blocking(move || init::add_operator_in(&dir, &db, &who, role))
                    .await??;
            println!("operator `{name}` ({}) token (shown once):", role.as_str());
            println!("{token}");
            Ok(())
        }
        other => operate(other).await,
    }
}

async fn operate(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::MemberClass {
            code,
            description,
            op,
        } => {
            MemberClass::new(code.clone())?;
            let r = op
                .client()
                .await?
                .add_member_class(pb::AddMemberClassRequest { code, description })
                .await
                .map_err(refused)?;
            done("member class added", r.into_inner());
        }
        RegistryCommand::Member { id, name, op } => {
            let id: MemberId = id.parse()?;
            let r = op
                .client()
                .await?
                .add_member(pb::AddMemberRequest {
                    id: Some((&id).into()),
                    name,
                })
                .await
                .map_err(refused)?;
            done(&format!("member {id} added"), r.into_inner());
        }
        RegistryCommand::Subsystem { id, op } => {
            let id: SubsystemId = id.parse()?;
            let r = op
                .client()
                .await?
                .add_subsystem(pb::AddSubsystemRequest {
                    id: Some((&id).into()),
                })
                .await
                .map_err(refused)?;
            done(&format!("subsystem {id} added"), r.into_inner());
        }
        RegistryCommand::Service {
            action,
            id,
            description,
            descriptor,
            proto,
            import_path,
            personal_data,
            op,
        } => {
            let id: ServiceId = id.parse()?;
            // Checked before anything is registered: a service is never
            // left published without the set its officer meant to give.
            let given = descriptor.is_some() || !proto.is_empty();
            let set = match &descriptor {
                _ if given && action == ServiceAction::Remove => {
                    return Err("`remove` takes no --descriptor or --proto".into());
                }
                Some(path) => Some(read_descriptor(path, &id)?),
                None if !proto.is_empty() => Some(compile_protos(&proto, &import_path, &id)?),
                None if action == ServiceAction::Describe => {
                    return Err(
                        "`describe` needs --descriptor FILE.binpb or --proto FILE.proto".into(),
                    );
                }
                None => None,
            };
            let mut c = op.client().await?;
            if action == ServiceAction::Add {
                let r = c
                    .add_service(pb::AddServiceRequest {
                        id: Some((&id).into()),
                        description,
                        personal_data,
                    })
                    .await
                    .map_err(refused)?;
                done(&format!("service {id} published"), r.into_inner());
            }
            if action == ServiceAction::Remove {
                let r = c
                    .remove_service(pb::RemoveServiceRequest {
                        id: Some((&id).into()),
                    })
                    .await
                    .map_err(refused)?;
                done(&format!("service {id} withdrawn"), r.into_inner());
            }
            if let Some(set) = set {
                let (digest, services) = (hex::encode(set.sha256()), set.services().join(", "));
                let r = c
                    .describe_service(pb::DescribeServiceRequest {
                        id: Some((&id).into()),
                        descriptor_set: set.into_bytes(),
                    })
                    .await
                    .map_err(refused)?;
                done(
                    &format!(
                        "descriptor set of {id} in the service catalogue (sha256 {digest}, defines {services})"
                    ),
                    r.into_inner(),
                );
            }
        }
        RegistryCommand::Group {
            action,
            id,
            subsystem,
            description,
            op,
        } => group(action, &id, subsystem, description, &op).await?,
        RegistryCommand::TracePortal { subsystem, op } => {
            let portal: SubsystemId = subsystem.parse()?;
            let r = op
                .client()
                .await?
                .set_trace_portal(pb::SetTracePortalRequest {
                    portal: Some((&portal).into()),
                })
                .await
                .map_err(refused)?;
            done(&format!("trace portal set to {portal}"), r.into_inner());
        }
        RegistryCommand::WithholdingGroup {
            group,
            max_days,
            valid_days,
            op,
        } => {
            let group: GlobalGroupId = group.parse()?;
            let valid_until_unix_ms =
                valid_days.map_or(0, |days| now_ms() + i64::from(days) * 86_400_000);
            let r = op
                .client()
                .await?
                .set_withholding_group(pb::SetWithholdingGroupRequest {
                    group: Some((&group).into()),
                    max_duration_seconds: u64::from(max_days) * 86_400,
                    valid_until_unix_ms,
                })
                .await
                .map_err(refused)?;
            done(
                &format!("{group} may withhold exchanges for up to {max_days} days"),
                r.into_inner(),
            );
        }
        RegistryCommand::SubjectFormats { formats, op } => {
            let formats = formats
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(name, mask)| pbconf::DataSubjectFormat {
                            name: name.into(),
                            mask: mask.into(),
                        })
                        .ok_or_else(|| format!("{f:?} is not NAME=MASK"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let r = op
                .client()
                .await?
                .set_data_subject_formats(pb::SetDataSubjectFormatsRequest { formats })
                .await
                .map_err(refused)?;
            done("data-subject formats set", r.into_inner());
        }
        RegistryCommand::Alarms { op } => {
            let alarms = op
                .client()
                .await?
                .list_alarms(pb::ListAlarmsRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .alarms;
            if alarms.is_empty() {
                println!("no alarms");
            }
            for a in alarms {
                let server = a
                    .server
                    .as_ref()
                    .and_then(|s| ServerId::try_from(s).ok())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                println!(
                    "{}  {server}  {}",
                    fmt_ms(a.at_unix_ms),
                    printable(&a.reason)
                );
            }
        }
        RegistryCommand::Tokens { op } => {
            let tokens = op
                .client()
                .await?
                .list_enrollment_tokens(pb::ListEnrollmentTokensRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .tokens;
            if tokens.is_empty() {
                println!("no usable enrollment tokens");
            }
            for t in tokens {
                let server = t
                    .server
                    .as_ref()
                    .and_then(|s| ServerId::try_from(s).ok())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                println!("{server}  expires {}", fmt_ms(t.expires_at_unix_ms));
            }
        }
        RegistryCommand::TrustedCa { cert, op } => {
            let der = pem::read_cert(&cert)?;
            let r = op
                .client()
                .await?
                .add_trusted_ca(pb::AddTrustedCaRequest {
                    certificate: der.to_vec(),
                })
                .await
                .map_err(refused)?;
            done(
                &format!("CA {} trusted", Fingerprint::of(&der)),
                r.into_inner(),
            );
        }
        RegistryCommand::Token {
            server,
            valid_hours,
            op,
        } => {
            let server: ServerId = server.parse()?;
            let r = op
                .client()
                .await?
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    server: Some((&server).into()),
                    valid_seconds: valid_hours.saturating_mul(3600),
                })
                .await
                .map_err(refused)?
                .into_inner();
            println!(
                "enrollment token for {server}, usable once until {} (hand it over out of band):",
                fmt_ms(r.expires_at_unix_ms)
            );
            println!("{}", r.token);
        }
        RegistryCommand::Requests { state, op } => requests(state, &op).await?,
        RegistryCommand::Approve { id, note, op } => {
            let r = op
                .client()
                .await?
                .approve_request(pb::DecideRequest { id, note })
                .await
                .map_err(refused)?;
            done(&format!("request {id} approved"), r.into_inner());
        }
        RegistryCommand::Reject { id, note, op } => {
            let r = op
                .client()
                .await?
                .reject_request(pb::DecideRequest { id, note })
                .await
                .map_err(refused)?;
            done(&format!("request {id} rejected"), r.into_inner());
        }
        RegistryCommand::Revoke {
            fingerprint,
            reason,
            op,
        } => {
            let bytes = hex::decode(fingerprint.replace(':', ""))
                .map_err(|e| format!("fingerprint is not hex: {e}"))?;
            let r = op
                .client()
                .await?
                .revoke_certificate(pb::RevokeCertificateRequest {
                    certificate_sha256: bytes,
                    reason,
                })
                .await
                .map_err(refused)?;
            done("certificate revoked", r.into_inner());
        }
        RegistryCommand::Audit {
            since_hours,
            actor,
            limit,
            op,
        } => audit(since_hours, actor, limit, &op).await?,
        RegistryCommand::Conf { op } => conf(&op).await?,
        RegistryCommand::Init { .. }
        | RegistryCommand::Serve { .. }
        | RegistryCommand::Anchor { .. }
        | RegistryCommand::VersionFloor { .. }
        | RegistryCommand::MoveStore { .. }
        | RegistryCommand::Operator(_) => unreachable!("handled in run_async"),
    }
    Ok(())
}

async fn group(
    action: AddRemove,
    id: &str,
    subsystem: Option<String>,
    description: String,
    op: &OperatorArgs,
) -> Result<()> {
    let group: GlobalGroupId = id.parse()?;
    let mut c = op.client().await?;
    let sub = subsystem.map(|s| s.parse::<SubsystemId>()).transpose()?;
    let r = match (action, &sub) {
        (AddRemove::Add, None) => c
            .add_global_group(pb::AddGlobalGroupRequest {
                id: Some((&group).into()),
                description,
            })
            .await
            .map_err(refused)?,
        (AddRemove::Add, Some(s)) => c
            .add_group_member(pb::GroupMemberRequest {
                group: Some((&group).into()),
                subsystem: Some(s.into()),
            })
            .await
            .map_err(refused)?,
        (AddRemove::Remove, Some(s)) => c
            .remove_group_member(pb::GroupMemberRequest {
                group: Some((&group).into()),
                subsystem: Some(s.into()),
            })
            .await
            .map_err(refused)?,
        (AddRemove::Remove, None) => {
            return Err("`group remove` needs --subsystem (groups themselves are kept)".into());
        }
    };
    done(&format!("group {group} updated"), r.into_inner());
    Ok(())
}

async fn requests(state: Option<StateArg>, op: &OperatorArgs) -> Result<()> {
    let state = match state {
        None => pb::RequestState::Unspecified,
        Some(StateArg::Pending) => pb::RequestState::Pending,
        Some(StateArg::Approved) => pb::RequestState::Approved,
        Some(StateArg::Rejected) => pb::RequestState::Rejected,
    };
    let list = op
        .client()
        .await?
        .list_requests(pb::ListRequestsRequest {
            state: state as i32,
        })
        .await
        .map_err(refused)?
        .into_inner()
        .requests;
    if list.is_empty() {
        println!("no requests");
    }
    for r in list {
        let server = r
            .server
            .as_ref()
            .and_then(|s| ServerId::try_from(s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let client = r
            .subsystem
            .as_ref()
            .and_then(|s| SubsystemId::try_from(s).ok())
            .map(|s| format!(" client {s}"))
            .unwrap_or_default();
        println!(
            "{:>5}  {:<10} {:<18} {server}{client}  submitted {}{}",
            r.id,
            pb::RequestState::try_from(r.state)
                .map(|s| s
                    .as_str_name()
                    .trim_start_matches("REQUEST_STATE_")
                    .to_lowercase())
                .unwrap_or_default(),
            pb::RequestKind::try_from(r.kind)
                .map(|k| k
                    .as_str_name()
                    .trim_start_matches("REQUEST_KIND_")
                    .to_lowercase())
                .unwrap_or_default(),
            fmt_ms(r.submitted_at_unix_ms),
            if r.decision_note.is_empty() {
                String::new()
            } else {
                format!("  note: {}", printable(&r.decision_note))
            },
        );
        for c in &r.csrs {
            println!("       {}", csr_line(c));
        }
    }
    Ok(())
}

/// One CSR of a request: what it is for, its key, and any consent.
fn csr_line(c: &pb::CsrSummary) -> String {
    let purpose = if c.auth {
        "auth key".to_owned()
    } else {
        let member = c
            .member
            .as_ref()
            .and_then(|m| MemberId::try_from(m).ok())
            .map(|m| m.to_string())
            .unwrap_or_else(|| "?".into());
        format!("signing key for {member}")
    };
    let consent = Fingerprint::from_slice(&c.consent_certificate_sha256)
        .map(|f| format!(", consented by certificate {f}"))
        .unwrap_or_default();
    format!(
        "{purpose}: {} sha256:{}{consent}",
        c.key_type,
        hex::encode(&c.public_key_sha256)
    )
}

async fn audit(
    since_hours: Option<u32>,
    actor: Option<String>,
    limit: u32,
    op: &OperatorArgs,
) -> Result<()> {
    let since = since_hours
        .map(|h| now_ms() - i64::from(h) * 3_600_000)
        .unwrap_or(0);
    let records = op
        .client()
        .await?
        .list_audit(pb::ListAuditRequest {
            since_unix_ms: since,
            until_unix_ms: 0,
            actor: actor.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(refused)?
        .into_inner()
        .records;
    for a in records {
        println!(
            "{:>6}  {}  {:<14} {:<22} {}  => {}",
            a.id,
            fmt_ms(a.at_unix_ms),
            printable(&a.actor),
            printable(&a.action),
            printable(&a.detail),
            printable(&a.result)
        );
    }
    Ok(())
}

async fn conf(op: &OperatorArgs) -> Result<()> {
    let c = op
        .client()
        .await?
        .get_current_configuration(pb::GetCurrentConfigurationRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    println!(
        "instance {} configuration version {}",
        printable(&c.instance),
        c.version
    );
    println!(
        "created {}, expires {}",
        fmt_ms(c.created_at_unix_ms),
        fmt_ms(c.expires_at_unix_ms)
    );
    println!(
        "{} members, {} security servers, {} services, {} global groups, {} trusted CAs, {} revoked certificates",
        c.members.len(),
        c.security_servers.len(),
        c.services.len(),
        c.global_groups.len(),
        c.trusted_ca_certificates.len(),
        c.revoked_certificate_sha256.len()
    );
    for s in &c.security_servers {
        if let Some(id) = s.id.as_ref().and_then(|i| ServerId::try_from(i).ok()) {
            println!(
                "  server {id} at {} ({} auth certificates, {} clients)",
                printable(&s.address),
                s.auth_certificate_sha256.len(),
                s.clients.len()
            );
        }
    }
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    lienthong_certs::verify::fmt_time(ms / 1000)
}

//! Starting a security server: its lock on its directory, its store,
//! keys, configuration, message log, and the two listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_certs::{CertError, tls};
use lienthong_proto::id::{IdError, ServerId};
use lienthong_registry_client::{self as client, ClientError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::AccessRule;
use crate::admin::{Admin, MeteredLog, Metrics};
use crate::allowed_methods::AllowedMethodsService;
use crate::batch::Signers;
use crate::builtin::BuiltIn;
use crate::checkpoint::CheckpointError;
use crate::checkpoint::{Checkpointer, DEFAULT_CHECKPOINT_INTERVAL};
use crate::conf_client::{ConfClient, ConfigurationError};
use crate::consumer::local::LocalServiceError;
use crate::consumer::tls::{self as consumer_tls, ConsumerTransport};
use crate::consumer::{Consumer, DEFAULT_MAX_MESSAGE_BYTES, LocalServices, ProviderPool, local};
use crate::faults::Fault;
use crate::keys::{KeyError, Keys, ServerDir, log_keys};
use crate::limits::{DEFAULT_MAX_CALLS_PER_PEER, ListenerLimits, PerPeerCalls};
use crate::listen::Listener;
use crate::message_log::audit::{AUDIT_INTERVAL, AuditReport, AuditStatus};
use crate::message_log::{
    DangerousDiscard, LogError, LogReader, MessageLog, SegmentLog, StoredCheckpoint,
};
use crate::operational::OperationalService;
use crate::provider::{Limits, Policies, Provider};
use crate::replay::DEFAULT_MAX_CLOCK_SKEW_MS;
use crate::store::{Backend, ServerStore, StoreError};
use crate::trace::TraceService;

/// Default address of the consumer side (the agency's information systems).
pub const DEFAULT_CONSUMER_LISTEN: &str = "127.0.0.1:8080";
/// Default address of the provider side (other security servers).
pub const DEFAULT_PROVIDER_LISTEN: &str = "0.0.0.0:5500";
/// Default retention of message-log contents.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(180 * 24 * 3600);
/// How often retention runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Settings key of the server's identity.
pub const SETTING_SERVER_ID: &str = "server_id";
/// The file in a server's home that a running server holds an exclusive
/// OS lock on, and writes its process id into: one process per directory
/// (two would write one message log and corrupt it).
pub use lienthong_database::LOCK_FILE;

/// What two servers on one directory would break.
const ONE_SERVER_PER_HOME: &str = "two servers on one directory corrupt its message log";

/// Why a home directory's server identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ServerIdError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this directory holds no security server; run `lienthong server init` first")]
    NotInitialised,
    #[error("stored server id: {0}")]
    Unreadable(#[source] IdError),
}

/// Why the lock on a server's home was not taken.
pub use lienthong_database::HomeLockError as LockError;

/// Why a security server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{} holds no security server; run `lienthong server init` first", .0.display())]
    NotInitialised(PathBuf),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ServerId(#[from] ServerIdError),
    #[error(transparent)]
    Anchor(#[from] ClientError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("no global configuration is cached and the download failed: {0}")]
    NoConfiguration(#[source] Box<ConfigurationError>),
    #[error(
        "the cached global configuration is unusable ({damaged}) and the download failed: {source}"
    )]
    UnusableConfiguration {
        damaged: Box<ConfigurationError>,
        #[source]
        source: Box<ConfigurationError>,
    },
    #[error("moving the message log into segments failed: {0}")]
    MigrateLog(#[source] LogError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    LocalServices(#[from] LocalServiceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A listener or the message log's directory refused an operation.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Why an audit asked for now did not finish.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// How to run a security server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The home directory made by `server init`.
    pub dir: PathBuf,
    /// # Default
    /// `127.0.0.1:8080` ([`DEFAULT_CONSUMER_LISTEN`]): h2c on loopback.
    pub consumer_listen: SocketAddr,
    /// # Default
    /// `0.0.0.0:5500` ([`DEFAULT_PROVIDER_LISTEN`]): mutual TLS.
    pub provider_listen: SocketAddr,
    /// Largest request, and largest response: each gRPC message of it,
    /// and all of them together at the provider, which holds a response
    /// whole until its record is durable (a response is cut off before
    /// it grows larger).
    /// # Default
    /// 4 MiB ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// # Default
    /// 5 minutes ([`DEFAULT_MAX_CLOCK_SKEW_MS`]).
    pub max_clock_skew: Duration,
    /// Most message ids the provider remembers against replay; beyond it
    /// new requests are shed (`server.serverproxy.replay_capacity`).
    /// # Default
    /// 1,000,000 ([`crate::replay::DEFAULT_CAPACITY`], about 56 MiB).
    pub replay_capacity: usize,
    /// How information systems connect.
    /// # Default
    /// plain h2c ([`ConsumerTransport::Plain`]).
    pub consumer_transport: ConsumerTransport,
    /// How often the message log is checkpointed (when it grew).
    /// # Default
    /// 60 s ([`DEFAULT_CHECKPOINT_INTERVAL`]).
    pub checkpoint_interval: Duration,
    /// How long records' contents are kept (their tree nodes stay, so
    /// proofs of younger records stay valid).
    /// # Default
    /// 180 days ([`DEFAULT_RETENTION`]).
    pub retention: Duration,
    /// How far back operational data is answered (admin port and the
    /// built-in `OperationalData` service).
    /// # Default
    /// 7 days ([`crate::operational::DEFAULT_WINDOW`]).
    pub operational_window: Duration,
    /// The admin port: health, Prometheus metrics, maintenance mode.
    /// # Default
    /// `None` in the library (`lienthong server serve` listens on
    /// `127.0.0.1:9095`, [`crate::admin::DEFAULT_ADMIN_LISTEN`]).
    pub admin_listen: Option<SocketAddr>,
    /// Keep no message log (benchmarks of what logging costs only).
    /// # Default
    /// `false`.
    pub dangerous_disable_message_log: bool,
    /// Be a bare mutual-TLS gateway: calls pass between the servers and to
    /// the backend as they came, with no envelope, signature, access check
    /// or log — the floor `lienthong bench` measures the guarantees
    /// against. Never for real traffic.
    /// # Default
    /// `false`.
    pub dangerous_pass_through: bool,
    /// Poll the registry at this interval instead of the configuration's.
    /// # Default
    /// `None`: the configuration's `poll_interval_seconds` (60 s).
    pub poll_interval: Option<Duration>,
    /// Bounds of each listener: open connections (per listener and per
    /// peer address), time to the first request, keep-alive pings.
    /// # Default
    /// [`ListenerLimits::default`]: 1,000 connections, 100 per address,
    /// 10 s to the first request, a ping after 30 s idle answered in 20 s.
    pub listener_limits: ListenerLimits,
    /// Most calls in progress per calling security server on the provider
    /// side; more are shed with `server.serverproxy.too_many_calls`.
    /// # Default
    /// 2,048 ([`DEFAULT_MAX_CALLS_PER_PEER`]).
    pub max_calls_per_peer: usize,
    /// Where the message log's keys are (`log-subject.key`,
    /// `log-seal.key`, `log-seal-N.key`); never inside the log's directory.
    /// # Default
    /// `None`: the server's directory.
    pub log_key_dir: Option<PathBuf>,
    /// Size at which the message log closes a segment and starts the next
    /// (retention deletes whole segments).
    /// # Default
    /// 64 MiB.
    pub log_segment_bytes: u64,
}

impl ServerOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            dir: dir.into(),
            consumer_listen: DEFAULT_CONSUMER_LISTEN.parse().expect("valid default"),
            provider_listen: DEFAULT_PROVIDER_LISTEN.parse().expect("valid default"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_clock_skew: Duration::from_millis(DEFAULT_MAX_CLOCK_SKEW_MS as u64),
            replay_capacity: crate::replay::DEFAULT_CAPACITY,
            consumer_transport: ConsumerTransport::Plain,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            retention: DEFAULT_RETENTION,
            operational_window: crate::operational::DEFAULT_WINDOW,
            admin_listen: None,
            dangerous_disable_message_log: false,
            dangerous_pass_through: false,
            poll_interval: None,
            listener_limits: ListenerLimits::default(),
            max_calls_per_peer: DEFAULT_MAX_CALLS_PER_PEER,
            log_key_dir: None,
            log_segment_bytes: crate::message_log::writer::Options::default().segment_bytes,
        }
    }
}

/// A running security server.
#[derive(Debug)]
pub struct SecurityServer {
    pub id: ServerId,
    consumer_addr: SocketAddr,
    provider_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    conf: Arc<ConfClient>,
    store: Arc<ServerStore>,
    policies: Policies,
    checkpointer: Checkpointer,
    reader: Arc<LogReader>,
    audit: Arc<AuditStatus>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// Held while the server runs; released when it drops.
    _lock: lienthong_database::HomeLock,
}

/// Reads the server id a home directory was initialised for.
pub fn server_id(store: &ServerStore) -> Result<ServerId, ServerIdError> {
    store
        .setting(SETTING_SERVER_ID)?
        .ok_or(ServerIdError::NotInitialised)?
        .parse()
        .map_err(ServerIdError::Unreadable)
}

impl SecurityServer {
    /// Starts serving. Refuses to start, saying why, without valid
    /// certificates or without any configuration (none cached and the
    /// registry unreachable).
    pub async fn start(opts: ServerOptions) -> Result<Self, StartError> {
        Self::start_on(opts, None).await
    }

    /// As [`start`](Self::start), serving the provider side on an already
    /// bound listener (its address is the one registered; binding it early
    /// keeps anyone else from taking the port meanwhile).
    pub async fn start_on(
        opts: ServerOptions,
        provider_listener: Option<std::net::TcpListener>,
    ) -> Result<Self, StartError> {
        let dir = ServerDir(opts.dir.clone());
        if !dir.store().exists() {
            return Err(StartError::NotInitialised(opts.dir.clone()));
        }
        let lock = lienthong_database::HomeLock::take(&opts.dir, ONE_SERVER_PER_HOME)?;
        let store = Arc::new(ServerStore::open(&dir.store())?);
        let id = server_id(&store)?;
        let anchor = client::read_anchor(&dir.anchor())?;
        let ca = anchor.instance_ca_certificate.clone();
        let keys = Arc::new(Keys::load(&dir, &id, &ca, SystemTime::now())?);

        let trust = ConfClient::empty_trust();
        let conf = Arc::new(
            ConfClient::new(anchor, dir.configuration(), trust.clone())
                .with_poll_interval(opts.poll_interval),
        );
        match conf.load_cached() {
            Ok(Some(_)) => {}
            Ok(None) => {
                conf.refresh()
                    .await
                    .map_err(|e| StartError::NoConfiguration(Box::new(e)))?;
            }
            // A damaged copy is only a cache: the registry has the original.
            Err(damaged) => {
                tracing::warn!(
                    error = %damaged,
                    "the cached global configuration is unusable; downloading a fresh one"
                );
                if let Err(e) = conf.refresh().await {
                    return Err(StartError::UnusableConfiguration {
                        damaged: Box::new(damaged),
                        source: Box::new(e),
                    });
                }
                tracing::warn!(
                    version = ?conf.view().map(|v| v.version),
                    "the unusable cached configuration was replaced by a fresh download"
                );
            }
        }

        let keys_for_log = log_keys(&dir, opts.log_key_dir.as_deref(), &id.to_string())?;
        let metrics = Arc::new(Metrics::default());
        let (raw_log, commit_stats, index_lag): (Arc<dyn MessageLog>, _, _) =
            if opts.dangerous_disable_message_log {
                tracing::warn!("the message log is DISABLED: exchanges leave no record");
                // Its reader answers from an empty log.
                std::fs::create_dir_all(dir.message_log())?;
                (Arc::new(DangerousDiscard), None, None)
            } else {
                crate::message_log::legacy::migrate(
                    &dir.legacy_message_log(),
                    &dir.message_log(),
                    &keys_for_log,
                )
                .map_err(StartError::MigrateLog)?;
                let l = SegmentLog::open_with(
                    &dir.message_log(),
                    keys_for_log.clone(),
                    crate::message_log::writer::Options {
                        segment_bytes: opts.log_segment_bytes,
                    },
                )?;
                let stats = l.stats_handle();
                stats.report_to(metrics.commit_histograms());
                let lag = l.lag_handle();
                (Arc::new(l), Some(stats), Some(lag))
            };
        let log: Arc<dyn MessageLog> = Arc::new(MeteredLog::new(raw_log, metrics.clone()));
        let retention_log = log.clone();
        let mut reader = LogReader::open(&dir.message_log(), keys_for_log)?;
        if let Some(writer) = &index_lag {
            reader = reader.following(writer.clone());
        }
        let reader = Arc::new(reader);
        let policies = Policies::load(store.clone())?;
        let signers = Arc::new(Signers::start(&keys));
        let shared = crate::Shared {
            keys: keys.clone(),
            conf: conf.clone(),
            log,
            policies: policies.clone(),
            signers,
        };
        let descriptor_sets = local::read_descriptor_sets(&dir.0.join(local::DESCRIPTORS_DIR))?;
        let mut consumer = Consumer::new(
            shared.clone(),
            ProviderPool::new(keys.clone(), trust.clone()),
            opts.max_message_bytes,
            opts.consumer_transport == ConsumerTransport::MutualTls,
            LocalServices::start(conf.subscribe(), &descriptor_sets)?,
        );
        let mut provider = Provider::new(
            shared,
            BuiltIn::new(
                TraceService::new(id.clone(), reader.clone()),
                OperationalService::new(id.owner.clone(), reader.clone(), opts.operational_window),
                AllowedMethodsService::new(id.clone(), conf.clone(), {
                    let policies = policies.clone();
                    move || policies.current().rules.clone()
                }),
            ),
            Limits {
                max_message: opts.max_message_bytes,
                max_skew_ms: opts.max_clock_skew.as_millis() as i64,
                replay_capacity: opts.replay_capacity,
            },
        );
        if opts.dangerous_pass_through {
            tracing::warn!(
                "pass-through mode: no envelope, signature, access check or message log; for measuring only, never for real traffic"
            );
            consumer = consumer.dangerous_pass_through();
            provider = provider.dangerous_pass_through();
        }
        let (consumer, provider) = (Arc::new(consumer), Arc::new(provider));
        if !opts.dangerous_disable_message_log {
            let window = 2 * opts.max_clock_skew.as_millis() as i64;
            let since = lienthong_proto::time::unix_ms(SystemTime::now()) - window;
            let accepted = reader.provider_requests_since(since)?;
            provider.remember_accepted(&accepted);
        }

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        let consumer_listener = bind(opts.consumer_listen).await?;
        let provider_listener = match provider_listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)?
            }
            None => bind(opts.provider_listen).await?,
        };
        // Every listener is bound, and everything that can fail is done,
        // before the first background task starts: a refused start leaves
        // no task behind to fail on its own as the runtime goes away.
        let admin_listener = match opts.admin_listen {
            None => None,
            Some(addr) => Some(bind(addr).await?),
        };
        let admin_addr = match &admin_listener {
            None => None,
            Some(l) => Some(l.local_addr()?),
        };
        let auth_not_after = lienthong_certs::verify::parse(&keys.auth.chain[0])?.not_after;
        let consumer_addr = consumer_listener.local_addr()?;
        let provider_addr = provider_listener.local_addr()?;
        // The handshake admits any certificate of the instance's CA that is
        // not revoked; whether the configuration pins it is the provider's
        // first check of every request (provider/peer.rs), which looks for a
        // server that joined since the last poll instead of refusing it.
        let tls_config = Arc::new(tls::server_config_chained_clients(&keys.auth, trust)?);

        let checkpointer =
            Checkpointer::new(reader.clone(), keys.clone(), conf.registries().clone());
        let consumer_tls =
            consumer_tls::server_config(opts.consumer_transport, &keys.auth, &policies)?;
        let (stop, stopping) = watch::channel(false);
        let consumer_side = Listener::new(
            "consumer",
            opts.listener_limits,
            metrics.consumer_listener.clone(),
            Fault::HeadersTooLarge,
            (Fault::ClientUnauthenticated, Fault::ClientTlsRefused),
        );
        let consumer_task = match consumer_tls {
            None => crate::listen::serve_h2c(
                consumer_listener,
                stopping.clone(),
                consumer_side,
                move |req| consumer.clone().handle(None, req),
            ),
            Some(cfg) => crate::listen::serve_tls(
                consumer_listener,
                Arc::new(cfg),
                stopping.clone(),
                consumer_side,
                move |system, req| consumer.clone().handle(system, req),
            ),
        };
        let provider_side = Listener::new(
            "provider",
            opts.listener_limits,
            metrics.provider_listener.clone(),
            Fault::ProviderHeadersTooLarge,
            (Fault::UnknownPeer, Fault::PeerTlsRefused),
        );
        let provider_calls = Arc::new(PerPeerCalls::new(
            opts.max_calls_per_peer,
            tower::service_fn(move |(peer, req)| {
                let provider = provider.clone();
                async move { Ok::<_, std::convert::Infallible>(provider.handle(peer, req).await) }
            }),
            metrics.calls_shed.clone(),
        ));
        let mut tasks = vec![
            consumer_task,
            crate::listen::serve_tls(
                provider_listener,
                tls_config,
                stopping,
                provider_side,
                move |peer, req| {
                    let calls = provider_calls.clone();
                    async move { calls.call((peer, req)).await }
                },
            ),
            tokio::spawn(conf.clone().run()),
            tokio::spawn(policies.clone().watch()),
            tokio::spawn(checkpointer.clone().run(opts.checkpoint_interval)),
            tokio::spawn(prune(reader.clone(), retention_log, opts.retention)),
        ];
        let audit = Arc::new(AuditStatus::default());
        if !opts.dangerous_disable_message_log {
            tasks.push(tokio::spawn(crate::message_log::audit::run(
                audit.clone(),
                reader.clone(),
                AUDIT_INTERVAL,
            )));
        }
        if let Some(listener) = admin_listener {
            let admin = Admin {
                metrics,
                conf: conf.clone(),
                store: store.clone(),
                reader: (!opts.dangerous_disable_message_log).then(|| reader.clone()),
                audit: (!opts.dangerous_disable_message_log).then(|| audit.clone()),
                commit_stats,
                index_lag,
                checkpoint_interval: opts.checkpoint_interval,
                operational_window: opts.operational_window,
                auth_not_after,
                maintenance: Default::default(),
                policies: Some(policies.clone()),
            };
            tasks.push(admin.serve(listener).await);
        }
        tracing::info!(server = %id, consumer = %consumer_addr, provider = %provider_addr, admin = ?admin_addr, "security server serving");
        Ok(SecurityServer {
            id,
            consumer_addr,
            provider_addr,
            admin_addr,
            conf,
            store,
            policies,
            checkpointer,
            reader,
            audit,
            tasks,
            stop,
            _lock: lock,
        })
    }

    /// Where information systems call.
    pub fn consumer_addr(&self) -> SocketAddr {
        self.consumer_addr
    }

    /// Where other security servers call.
    pub fn provider_addr(&self) -> SocketAddr {
        self.provider_addr
    }

    /// The admin port (health, metrics, maintenance), if one was asked for.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn conf(&self) -> &Arc<ConfClient> {
        &self.conf
    }

    /// Checkpoints the message log now and has the registry witness it.
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        self.checkpointer.checkpoint_now().await
    }

    /// The message log's reader.
    /// Audits the whole message log now (it is also audited in batches
    /// every few seconds) and reports what the audit has found so far.
    pub async fn audit_now(&self) -> Result<AuditReport, AuditError> {
        let (audit, reader) = (self.audit.clone(), self.reader.clone());
        let report = tokio::task::spawn_blocking(move || {
            audit.restart();
            audit.step(&reader, u64::MAX)?;
            Ok::<_, LogError>(audit.report())
        })
        .await??;
        Ok(report)
    }

    pub fn log_reader(&self) -> &Arc<LogReader> {
        &self.reader
    }

    /// Logs (or stops logging) `subsystem`'s bodies, in force at once.
    pub fn set_body_logging(
        &self,
        subsystem: &lienthong_proto::id::SubsystemId,
        on: bool,
    ) -> Result<(), StoreError> {
        self.store.set_body_logging(subsystem, on)?;
        self.policies.reload(None).map(|_| ())
    }

    /// Grants an access right, in force at once.
    pub fn grant(&self, rule: &AccessRule) -> Result<(), StoreError> {
        self.store.grant(rule)?;
        self.policies.reload(None).map(|_| ())
    }

    /// Pins an information system's certificate for `subsystem`, in force at once.
    pub fn pin_client(
        &self,
        subsystem: &lienthong_proto::id::SubsystemId,
        fp: &lienthong_certs::Fingerprint,
    ) -> Result<(), StoreError> {
        self.store.pin_client(subsystem, fp)?;
        self.policies.reload(None).map(|_| ())
    }

    /// Sets a backend, in force at once.
    pub fn set_backend(&self, backend: &Backend) -> Result<(), StoreError> {
        self.store.set_backend(backend)?;
        self.policies.reload(None).map(|_| ())
    }

    /// Stops listening and polling; open connections are shut down
    /// gracefully (calls in flight finish, peers go elsewhere for new ones).
    pub fn shutdown(self) {
        drop(self);
    }
}

/// Retention, hourly: deletes the oldest segments whose records are all
/// older than `retention` and released at least `retention` ago, each
/// after its marker is durable and a retention record naming it is in the
/// log ([`crate::message_log::retention`]).
async fn prune(reader: Arc<LogReader>, log: Arc<dyn MessageLog>, retention: Duration) {
    loop {
        match prune_once(&reader, log.as_ref(), retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "message log retention: segments pruned"),
            Err(Some(e)) => tracing::error!(error = %e, "message log retention failed"),
            // The runtime is going away (the server stops): nothing failed.
            Err(None) => return,
        }
        tokio::time::sleep(PRUNE_INTERVAL).await;
    }
}

async fn prune_once(
    reader: &Arc<LogReader>,
    log: &dyn MessageLog,
    retention: Duration,
) -> Result<u64, Option<String>> {
    let joined = |e: tokio::task::JoinError| (!e.is_cancelled()).then(|| e.to_string());
    let mut pruned = 0;
    loop {
        let now = lienthong_proto::time::unix_ms(SystemTime::now());
        let cutoff = now - retention.as_millis() as i64;
        let r = reader.clone();
        let Some(plan) = tokio::task::spawn_blocking(move || r.plan_prune(cutoff, now))
            .await
            .map_err(joined)?
            .map_err(|e| Some(e.to_string()))?
        else {
            return Ok(pruned);
        };
        log.append(plan.record(now))
            .await
            .map_err(|e| Some(e.to_string()))?;
        let r = reader.clone();
        pruned += tokio::task::spawn_blocking(move || r.prune(&plan.marker))
            .await
            .map_err(joined)?
            .map_err(|e| Some(e.to_string()))?;
    }
}

impl Drop for SecurityServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

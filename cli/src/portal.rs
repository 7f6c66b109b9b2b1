//! `lienthong portal serve`: the citizens' access-trace page on its own
//! listener, with OpenID Connect login; and `lienthong trace verify`: a
//! downloaded trace checked offline against the verifier's own anchor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use lienthong_portal_web::app::{Portal, router};
use lienthong_portal_web::bundle::{self, Bundle};
use lienthong_portal_web::dev_provider::{self, DevProvider, DevProviderConfig};
use lienthong_portal_web::http_client::HttpClient;
use lienthong_portal_web::oidc::{Oidc, OidcConfig};
use lienthong_portal_web::serve;
use lienthong_portal_web::source::BusSource;
use lienthong_portal_web::state::{self, Limits};
use lienthong_proto::fields::printable;
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_security_server::conf_client::ConfClient;
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::trace::pairing::Status;
use lienthong_security_server::trace::portal::{Outcome, TraceReport};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum PortalCommand {
    /// Serve the citizens' page: OpenID Connect login, then every access
    /// to the citizen's data across the bus, verified, with a download of
    /// the trace and its proofs.
    ///
    /// Runs beside the trace portal's security server (it asks through its
    /// consumer side, as the portal subsystem), on a listener of its own:
    /// HTTPS with --tls-cert/--tls-key, or plain HTTP on loopback behind a
    /// TLS front end.
    ///
    /// Example: lienthong portal serve --dir /var/lib/lienthong/portal-ss1 --portal VN/GOV/000001/portal --public-url https://tracuu.example.vn --issuer https://eid.example.vn --client-id lienthong-portal --client-secret-file /etc/lienthong/oidc-secret --personal-id-claim personal_id --acr http://eidas.europa.eu/LoA/substantial --acr http://eidas.europa.eu/LoA/high --listen 0.0.0.0:443 --tls-cert page.pem --tls-key page.key
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The home directory of the portal's security server (anchor,
    /// configuration, TLS identity).
    #[arg(long)]
    dir: PathBuf,
    /// The trace portal subsystem named in the configuration.
    #[arg(long)]
    portal: String,
    /// The consumer side of the portal's security server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    consumer: String,
    /// The page's own listener (apart from the bus's and the admin port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The URL citizens open (https://… in production); the login's
    /// redirect URI is this plus /auth/callback.
    #[arg(long, env = "LIENTHONG_PORTAL_PUBLIC_URL")]
    public_url: String,
    /// The page's TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The page's TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The OpenID provider's issuer URL (the country's eID).
    #[arg(long, env = "LIENTHONG_OIDC_ISSUER")]
    issuer: String,
    /// This page's client id at the provider.
    #[arg(long, env = "LIENTHONG_OIDC_CLIENT_ID")]
    client_id: String,
    /// A file holding the client secret (none: a public client, PKCE only).
    #[arg(long, env = "LIENTHONG_OIDC_CLIENT_SECRET_FILE")]
    client_secret_file: Option<PathBuf>,
    /// The ID-token claim with the verified personal id (one the provider
    /// asserts from identity proofing; never email or preferred_username).
    #[arg(long, env = "LIENTHONG_OIDC_PERSONAL_ID_CLAIM")]
    personal_id_claim: String,
    /// An accepted authentication level (`acr`): give the minimum and every
    /// level above it. Tokens with any other acr are refused.
    #[arg(long = "acr", required = true)]
    acr: Vec<String>,
    /// Scopes to ask for besides `openid`.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// How long an answer is reused, in seconds.
    #[arg(long, default_value_t = state::DEFAULT_CACHE_TTL.as_secs())]
    cache_secs: u64,
    /// Fresh answers per citizen per --rate-window-secs.
    #[arg(long, default_value_t = state::DEFAULT_TRACES_PER_WINDOW)]
    traces_per_window: usize,
    #[arg(long, default_value_t = state::DEFAULT_RATE_WINDOW.as_secs())]
    rate_window_secs: u64,
    /// How long a session lasts from login, in minutes.
    #[arg(long, default_value_t = state::DEFAULT_SESSION_TTL.as_secs() / 60)]
    session_minutes: u64,
    /// How long to wait for each security server, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

pub fn run(cmd: PortalCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cmd {
        PortalCommand::Serve(args) => rt.block_on(serve_page(args)),
    }
}

fn read_secret(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > 4096 {
        return Err(format!("{}: a client secret is at most 4096 bytes", path.display()).into());
    }
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .to_owned())
}

/// The trace source of the portal's security server in `dir`.
async fn bus_source(
    dir: &Path,
    portal: &str,
    consumer: &str,
    timeout: Duration,
) -> Result<(BusSource, Anchor)> {
    let portal_id: SubsystemId = portal.parse()?;
    let server_dir = ServerDir(dir.to_owned());
    let anchor = lienthong_registry_client::read_anchor(&server_dir.anchor())?;
    let cache = dir.join("portal-configuration.bin");
    // The portal keeps its own configuration copy current (as `lienthong
    // trace --serve` does); the server's copy serves while the registry is
    // out of reach.
    let conf = Arc::new(ConfClient::new(
        anchor.clone(),
        cache.clone(),
        ConfClient::empty_trust(),
    ));
    if let Err(e) = conf.load_cached() {
        tracing::warn!(error = %e, "the portal's configuration copy is unusable");
    }
    tokio::spawn(conf.run());
    let channel = Endpoint::from_shared(format!("http://{consumer}"))?.connect_lazy();
    let identity = match lienthong_security_server::keys::auth_identity(&server_dir) {
        Ok(i) => Some(Arc::new(i)),
        Err(e) => {
            eprintln!("warning: {}", printable(&e.to_string()));
            None
        }
    };
    Ok((
        BusSource::new(
            channel,
            portal_id,
            anchor.clone(),
            identity,
            timeout,
            vec![cache, server_dir.configuration()],
        ),
        anchor,
    ))
}

async fn serve_page(args: ServeArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(serve::tls_config(c, k)?),
        _ => None,
    };
    serve::check_listen(args.listen, tls.is_some())?;
    let public = args.public_url.trim_end_matches('/').to_owned();
    let client_secret = match &args.client_secret_file {
        Some(p) => Some(read_secret(p)?),
        None => None,
    };
    let oidc = Oidc::new(
        OidcConfig {
            issuer: args.issuer.clone(),
            client_id: args.client_id.clone(),
            client_secret,
            redirect_url: format!("{public}/auth/callback"),
            personal_id_claim: args.personal_id_claim.clone(),
            accepted_acr: args.acr.clone(),
            scopes: args.scopes.clone(),
        },
        HttpClient::new()?,
    )
    .map_err(|errors| errors.join("; "))?;
    let (source, _) = bus_source(
        &args.dir,
        &args.portal,
        &args.consumer,
        Duration::from_millis(args.timeout_ms),
    )
    .await?;
    let limits = Limits {
        session_ttl: Duration::from_secs(args.session_minutes.max(1) * 60),
        cache_ttl: Duration::from_secs(args.cache_secs),
        traces_per_window: args.traces_per_window,
        rate_window: Duration::from_secs(args.rate_window_secs),
        ..Limits::default()
    };
    let portal = Portal::new(
        oidc,
        Arc::new(source),
        limits,
        public.starts_with("https://"),
        None,
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "citizens' page on {} ({}), public URL {public}",
        args.listen,
        if tls.is_some() {
            "HTTPS"
        } else {
            "HTTP, loopback"
        }
    );
    serve::serve(
        listener,
        tls,
        router(Arc::new(portal)),
        crate::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// The demo's page: a development OpenID provider (which says on every
/// page that it is one) and the citizens' page, both on loopback. Returns
/// the page's URL.
pub async fn start_demo_page(
    portal_dir: &Path,
    portal: &SubsystemId,
    consumer: SocketAddr,
    founder_id: &str,
) -> Result<String> {
    let idp_listener = TcpListener::bind("127.0.0.1:0").await?;
    let page_listener = TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", idp_listener.local_addr()?);
    let public = format!("http://{}", page_listener.local_addr()?);
    let secret = state::random_token();
    let (claim, acr, client_id) = ("personal_id", "dev", "lienthong-demo-portal");
    let provider = DevProvider::new(DevProviderConfig {
        issuer: issuer.clone(),
        client_id: client_id.into(),
        client_secret: secret.clone(),
        redirect_uri: format!("{public}/auth/callback"),
        personal_id_claim: claim.into(),
        acr: acr.into(),
        suggested_personal_id: founder_id.into(),
    })?;
    tokio::spawn(serve::serve(
        idp_listener,
        None,
        provider.router(),
        std::future::pending(),
    ));
    let oidc = Oidc::new(
        OidcConfig {
            issuer,
            client_id: client_id.into(),
            client_secret: Some(secret),
            redirect_url: format!("{public}/auth/callback"),
            personal_id_claim: claim.into(),
            accepted_acr: vec![acr.into()],
            scopes: Vec::new(),
        },
        HttpClient::new()?,
    )
    .map_err(|errors| errors.join("; "))?;
    let (source, _) = bus_source(
        portal_dir,
        &portal.to_string(),
        &consumer.to_string(),
        Duration::from_secs(5),
    )
    .await?;
    let page = Portal::new(
        oidc,
        Arc::new(source),
        Limits::default(),
        false,
        Some(dev_provider::BANNER.to_owned()),
    );
    tokio::spawn(serve::serve(
        page_listener,
        None,
        router(Arc::new(page)),
        std::future::pending(),
    ));
    Ok(format!("{public}/"))
}

/// Check a downloaded access trace offline.
///
/// The file (from the citizens' page, "download with proofs") holds what
/// every security server answered and the signed global configuration.
/// Every proof is checked against ANCHOR — the verifier's own copy of the
/// instance's anchor, never one from the file: the configuration's
/// signature, each checkpoint's signature by its server's owner and the
/// registry's countersignature, each record's inclusion, and both ends of
/// every exchange.
///
/// Exit status: 0 when every exchange is verified at both ends and every
/// server answered; 1 when a proof fails or the ends disagree; 2 when the
/// trace is incomplete or the file cannot be checked.
///
/// Example: lienthong trace verify lienthong-trace-1780000000.json --anchor anchor.bin
#[derive(Parser, Debug)]
#[command(name = "lienthong trace verify")]
pub struct VerifyArgs {
    /// The downloaded trace file.
    file: PathBuf,
    /// The instance's anchor, from a source you trust.
    #[arg(long)]
    anchor: PathBuf,
}

/// `lienthong trace verify …` (`args` start after `verify`).
pub fn verify_main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = VerifyArgs::parse_from(
        std::iter::once(std::ffi::OsString::from("lienthong trace verify")).chain(args),
    );
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(VerifyFileError::Runtime)
        .and_then(|rt| rt.block_on(verify_file(&args)));
    match checked {
        Ok((subject, at_ms, report)) => {
            print_verified(&subject, at_ms, &report);
            ExitCode::from(match report.outcome() {
                Outcome::Complete => 0,
                Outcome::Failed => 1,
                Outcome::Incomplete => 2,
            })
        }
        Err(e) => {
            eprintln!("error: {}", printable(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

/// Why a trace file could not be checked.
#[derive(Debug, thiserror::Error)]
enum VerifyFileError {
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error(transparent)]
    Anchor(#[from] lienthong_registry_client::ClientError),
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {} bytes", .0.display(), bundle::MAX_BUNDLE_BYTES)]
    TooLarge(PathBuf),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

async fn verify_file(
    args: &VerifyArgs,
) -> std::result::Result<(String, i64, TraceReport), VerifyFileError> {
    let anchor = lienthong_registry_client::read_anchor(&args.anchor)?;
    let read = |source| VerifyFileError::Read {
        path: args.file.clone(),
        source,
    };
    let len = std::fs::metadata(&args.file).map_err(read)?.len();
    if len > bundle::MAX_BUNDLE_BYTES as u64 {
        return Err(VerifyFileError::TooLarge(args.file.clone()));
    }
    let bytes = std::fs::read(&args.file).map_err(read)?;
    let b = Bundle::from_json(&bytes)?;
    let report = bundle::verify(&b, &anchor, SystemTime::now()).await?;
    Ok((b.data_subject, b.traced_at_ms, report))
}

fn print_verified(subject: &str, at_ms: i64, r: &TraceReport) {
    println!(
        "Access trace of {} gathered at {}: {} exchanges, checked against the anchor given",
        printable(subject),
        lienthong_certs::verify::fmt_time(at_ms / 1000),
        r.exchanges.len()
    );
    for e in &r.exchanges {
        let verdict = match &e.status {
            Status::Verified | Status::NotDelivered(_) => "verified".to_string(),
            other => format!("NOT VERIFIED: {}", printable(other.problem())),
        };
        println!(
            "{}  {}  {}/{}  official {}  purpose {}  {verdict}",
            lienthong_certs::verify::fmt_time(e.at_ms / 1000),
            printable(&e.client),
            printable(&e.service),
            printable(&e.method),
            printable(&e.user_id),
            printable(&e.purpose),
        );
    }
    for (until, n) in &r.withheld {
        println!(
            "{n} records withheld until {}",
            lienthong_certs::verify::fmt_time(until / 1000)
        );
    }
    for (server, why) in &r.unanswered {
        println!("no answer from {server}: {}", printable(why));
    }
    for (server, why) in &r.failures {
        println!("VERIFICATION FAILED at {server}: {}", printable(why));
    }
    match r.outcome() {
        Outcome::Complete => println!("every exchange is verified at both ends"),
        Outcome::Incomplete => println!("the trace is INCOMPLETE"),
        Outcome::Failed => println!("VERIFICATION FAILED"),
    }
}

// Parsed once at start: the larger variant's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Serve the registry officers' console: sign in with an operator
    /// token (officer or observer), or as a person through an OpenID
    /// provider (--oidc-*: the role from a claim the provider asserts, the
    /// console acting with the operator token of that role and naming the
    /// person in each decision's note), see registration requests with their
    /// CSRs, approve or reject pending ones. Every action goes through the
    /// registry's operator API, checked and audited there as from the CLI.
    ///
    /// Bind it to the management network: HTTPS with --tls-cert/--tls-key,
    /// plain HTTP only on loopback.
    ///
    /// Example: lienthong console registry --anchor /etc/lienthong/anchor.bin --listen 127.0.0.1:4480
    Registry(RegistryConsoleArgs),
    /// Serve a security server's operator console: sign in with one of
    /// the server's operator tokens (`lienthong server operator add`), see
    /// its status, clients, services and access rights, grant and revoke
    /// access, switch maintenance mode, read its audit log. Every action
    /// goes through the server's admin port, checked and audited there.
    ///
    /// Bind it to the management network: HTTPS with --tls-cert/--tls-key,
    /// plain HTTP only on loopback.
    ///
    /// Example: lienthong console server --admin http://127.0.0.1:9095 --listen 127.0.0.1:4481
    Server(ServerConsoleArgs),
}

#[derive(Args, Debug)]
pub struct ServerConsoleArgs {
    /// The server's admin port (its --admin-listen), as http://ADDRESS:PORT.
    #[arg(long, default_value = "http://127.0.0.1:9095")]
    admin: String,
    /// The console's listener.
    #[arg(long, default_value = "127.0.0.1:4481")]
    listen: SocketAddr,
    /// The console's TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The console's TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RegistryConsoleArgs {
    /// The instance's anchor (where the registry is, which CA it uses).
    #[arg(long, env = "LIENTHONG_ANCHOR")]
    anchor: PathBuf,
    /// The console's listener.
    #[arg(long, default_value = "127.0.0.1:4480")]
    listen: SocketAddr,
    /// The console's TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The console's TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Officers also sign in as themselves through this OpenID provider
    /// (issuer URL; https, or http on loopback).
    #[arg(long, requires_all = ["oidc_client_id", "oidc_redirect_url", "oidc_person_claim", "officer_token_file", "observer_token_file"])]
    oidc_issuer: Option<String>,
    #[arg(long)]
    oidc_client_id: Option<String>,
    /// The client's secret (none: a public client, PKCE alone).
    #[arg(long, env = "LIENTHONG_CONSOLE_OIDC_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// Where the provider sends officers back: the console's public URL
    /// followed by /auth/callback.
    #[arg(long)]
    oidc_redirect_url: Option<String>,
    /// The ID-token claim naming the officer (one the provider asserts,
    /// never one a person edits such as email).
    #[arg(long)]
    oidc_person_claim: Option<String>,
    /// The ID-token claim holding the registry role: `officer` or
    /// `observer` (a string or a list).
    #[arg(long, default_value = "lienthong_registry_role")]
    oidc_role_claim: String,
    /// Authentication levels (`acr`) accepted, comma-separated.
    #[arg(long, default_value = "substantial,high")]
    oidc_acr: String,
    /// A file holding the registry operator token (officer role) the
    /// console acts with for officers signed in by OpenID Connect.
    #[arg(long)]
    officer_token_file: Option<PathBuf>,
    /// The same for observers (an observer-role operator token).
    #[arg(long)]
    observer_token_file: Option<PathBuf>,
}

/// The officers' sign-in by OpenID Connect, when configured.
fn officer_oidc(
    args: &RegistryConsoleArgs,
) -> Result<Option<lienthong_portal_web::console::OfficerOidc>> {
    let (
        Some(issuer),
        Some(client_id),
        Some(redirect_url),
        Some(person_claim),
        Some(officer),
        Some(observer),
    ) = (
        &args.oidc_issuer,
        &args.oidc_client_id,
        &args.oidc_redirect_url,
        &args.oidc_person_claim,
        &args.officer_token_file,
        &args.observer_token_file,
    )
    else {
        return Ok(None);
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let cfg = lienthong_portal_web::oidc::OidcConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: args.oidc_client_secret.clone(),
        redirect_url: redirect_url.clone(),
        personal_id_claim: person_claim.clone(),
        accepted_acr: args
            .oidc_acr
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        scopes: Vec::new(),
    };
    let oidc = lienthong_portal_web::oidc::Oidc::new(
        cfg,
        lienthong_portal_web::http_client::HttpClient::new()?,
    )
    .map_err(|errors| errors.join("; "))?;
    Ok(Some(lienthong_portal_web::console::OfficerOidc {
        oidc,
        role_claim: args.oidc_role_claim.clone(),
        officer_token: read(officer)?,
        observer_token: read(observer)?,
    }))
}

pub fn run_console(cmd: ConsoleCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cmd {
        ConsoleCommand::Registry(args) => rt.block_on(serve_registry_console(args)),
        ConsoleCommand::Server(args) => rt.block_on(serve_server_console(args)),
    }
}

async fn serve_registry_console(args: RegistryConsoleArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(serve::tls_config(c, k)?),
        _ => None,
    };
    serve::check_listen(args.listen, tls.is_some())?;
    let anchor = lienthong_registry_client::read_anchor(&args.anchor)?;
    let mut console = lienthong_portal_web::console::RegistryConsole::new(anchor, tls.is_some());
    if let Some(oidc) = officer_oidc(&args)? {
        console = console.with_oidc(oidc);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "registry officers' console on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        args.listen
    );
    serve::serve(
        listener,
        tls,
        lienthong_portal_web::console::router(Arc::new(console)),
        crate::shutdown_signal(),
    )
    .await?;
    Ok(())
}

async fn serve_server_console(args: ServerConsoleArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(serve::tls_config(c, k)?),
        _ => None,
    };
    serve::check_listen(args.listen, tls.is_some())?;
    let console =
        lienthong_portal_web::server_console::ServerConsole::new(&args.admin, tls.is_some())?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "security server operator's console on {}://{} (admin port {})",
        if tls.is_some() { "https" } else { "http" },
        args.listen,
        args.admin
    );
    serve::serve(
        listener,
        tls,
        lienthong_portal_web::server_console::router(Arc::new(console)),
        crate::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// A security server's operator console on loopback for the demo, over
/// the server's admin port at `admin`; returns its URL.
pub async fn start_demo_server_console(admin: SocketAddr) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let console = lienthong_portal_web::server_console::ServerConsole::new(
        &format!("http://{admin}"),
        false,
    )?;
    tokio::spawn(serve::serve(
        listener,
        None,
        lienthong_portal_web::server_console::router(Arc::new(console)),
        std::future::pending(),
    ));
    Ok(url)
}

/// The demo's registry officers' console on loopback; returns its URL.
pub async fn start_demo_console(anchor: Anchor) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let console = lienthong_portal_web::console::RegistryConsole::new(anchor, false);
    tokio::spawn(serve::serve(
        listener,
        None,
        lienthong_portal_web::console::router(Arc::new(console)),
        std::future::pending(),
    ));
    Ok(url)
}

//! `lienthong` — the operator's command for every part of a Lienthong
//! instance: the certificate authority, the central registry, security
//! servers, the demo federation and citizens' access traces.

mod bench;
mod ca;
mod demo;
mod portal;
mod registry;
mod server;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lienthong_security_server::telemetry;

/// Lienthong: a data exchange bus for government agencies.
///
/// Agencies query each other's registries through their security servers
/// over mutual TLS; every exchange is signed and logged at both ends, so
/// citizens can see who accessed their data, when and why.
#[derive(Parser, Debug)]
#[command(name = "lienthong", version, about, long_about)]
struct Cli {
    /// Log filter, e.g. `info` or `lienthong=debug` (also `RUST_LOG`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,

    /// Log format: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(
        long,
        global = true,
        env = "LIENTHONG_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the instance certificate authority and certificates on files.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Set up a local demo instance with four agencies and show mutual TLS
    /// and signed exchanges between them.
    ///
    /// Example: lienthong demo --dir /tmp/lienthong-demo
    Demo(demo::DemoArgs),
    /// Run the central registry, and operate it: members, subsystems,
    /// services, groups, registration requests, revocation, audit.
    ///
    /// Example: lienthong registry init --dir reg --instance VN --address 127.0.0.1:4400
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Join an instance and run a security server; manage its clients,
    /// access rights and backends.
    ///
    /// Example: lienthong server serve --dir /var/lib/lienthong/ss1
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Show who accessed a citizen's data, when and why (run as the trace
    /// portal). `lienthong trace verify FILE --anchor ANCHOR` checks a trace
    /// downloaded from the citizens' page offline.
    ///
    /// Example: lienthong trace 001099012345 --dir portal-ss1 --portal VN/GOV/000001/portal
    Trace(trace::TraceArgs),
    /// The citizens' page: OpenID Connect login, then every access to the
    /// citizen's data across the bus, verified, with a download of the
    /// trace and its proofs.
    ///
    /// Example: lienthong portal serve --dir portal-ss1 --portal VN/GOV/000001/portal --public-url https://tracuu.example.vn --issuer https://eid.example.vn --client-id portal --personal-id-claim personal_id --acr substantial
    #[command(subcommand)]
    Portal(portal::PortalCommand),
    /// Operators' consoles in the browser, behind their sign-in.
    ///
    /// Example: lienthong console registry --anchor anchor.bin --listen 127.0.0.1:4480
    #[command(subcommand)]
    Console(portal::ConsoleCommand),
    /// Measure what the bus costs against calling the backend directly
    /// (throughput, latency, CPU per exchange, memory), in one run.
    ///
    /// Example: lienthong bench --json bench.json
    Bench(bench::BenchArgs),
}

impl Command {
    /// The OpenTelemetry `service.name` of this process, unless
    /// `OTEL_SERVICE_NAME` says otherwise.
    fn service_name(&self) -> &'static str {
        match self {
            Command::Ca(_) => "lienthong-ca",
            Command::Demo(_) => "lienthong-demo",
            Command::Registry(_) => "lienthong-registry",
            Command::Server(_) => "lienthong-security-server",
            Command::Trace(_) => "lienthong-trace",
            Command::Portal(_) => "lienthong-portal",
            Command::Console(_) => "lienthong-console",
            Command::Bench(_) => "lienthong-bench",
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what service managers send to stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    // `lienthong trace verify FILE --anchor ANCHOR`: `trace` takes a
    // personal id where a subcommand would go, so `verify` is told apart
    // here (a personal id is never the word "verify").
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "trace") && args.get(2).is_some_and(|a| a == "verify") {
        return portal::verify_main(args[3..].to_vec());
    }
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    };
    // Spans are exported only when the standard OTEL_* variables ask.
    let mut otlp = telemetry::otlp_requested(|k| std::env::var(k).ok(), cli.command.service_name());
    if let (Some(otlp), Command::Server(cmd)) = (&mut otlp, &cli.command) {
        otlp.instance_id = server::instance_id(cmd);
    }
    // Held to the end: dropping it sends the spans still buffered.
    let _telemetry = match telemetry::install(format, &cli.log, otlp) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Server(cmd) => server::run(cmd),
        // Its exit code says whether the trace is complete and verified.
        Command::Trace(args) => return trace::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Portal(cmd) => portal::run(cmd),
        Command::Console(cmd) => portal::run_console(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote what a peer or a file said.
            eprintln!(
                "error: {}",
                lienthong_proto::fields::printable(&e.to_string())
            );
            ExitCode::FAILURE
        }
    }
}

//! `lienthong trace PERSONAL-ID`: who accessed a citizen's data, when and
//! why — asked of every security server through the trace portal's own
//! security server, every answer verified.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::trace::v1::Side;
use lienthong_proto::pb::trace::v1::trace_portal_server::TracePortalServer;
use lienthong_registry_client as client;
use lienthong_security_server::conf_client::ConfClient;
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::trace::pairing::Status;
use lienthong_security_server::trace::portal::{self, Outcome};
use lienthong_security_server::trace::portal_api::PortalApi;
use std::process::ExitCode;
use std::sync::Arc;
use tonic::transport::Endpoint;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Show who accessed a citizen's data, when and why.
///
/// Runs as the instance's trace portal: asks every security server (through
/// the portal's own server) for its records about PERSONAL-ID, verifies each
/// against the checkpoints the registry witnessed, and prints both sides of
/// every exchange, servers that did not answer, records that failed
/// verification, and how many records are withheld until when.
///
/// Exit status: 0 when every server answered and every exchange is
/// verified at both ends; 1 when a record failed verification or the ends
/// disagree (a discrepancy: one end has no record, or they differ); 2 when
/// the answer is incomplete (a server did not answer, an exchange is
/// unconfirmed or waits for a checkpoint) or could not be had at all.
///
/// With `--serve ADDR` it instead offers the same query as the gRPC
/// service `lienthong.trace.v1.TracePortal` for the portal's web page (bind
/// it to loopback, or put it behind the front end's authentication).
///
/// Example: lienthong trace 001099012345 --dir /var/lib/lienthong/portal-ss1 --portal VN/GOV/000001/portal
/// Example: lienthong trace --serve 127.0.0.1:8090 --dir /var/lib/lienthong/portal-ss1 --portal VN/GOV/000001/portal
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["personal_id", "serve"])))]
pub struct TraceArgs {
    /// The citizen's personal ID.
    personal_id: Option<String>,
    /// Serve `lienthong.trace.v1.TracePortal` on this address instead.
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// The home directory of the portal's security server (its anchor and
    /// cached configuration are read from there).
    #[arg(long)]
    dir: PathBuf,
    /// The trace portal subsystem named in the configuration.
    #[arg(long)]
    portal: String,
    /// The consumer side of the portal's security server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    consumer: String,
    /// How long to wait for each server, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Print the report as JSON (for programs) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Exit status when the trace is verified and complete.
const EXIT_COMPLETE: u8 = 0;
/// Exit status on a discrepancy or a failed verification.
const EXIT_FAILED: u8 = 1;
/// Exit status when the answer is incomplete (or none could be had).
const EXIT_INCOMPLETE: u8 = 2;

pub fn run(args: TraceArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|rt| rt.block_on(run_async(args)));
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(outcome)) => ExitCode::from(match outcome {
            Outcome::Complete => EXIT_COMPLETE,
            Outcome::Failed => EXIT_FAILED,
            Outcome::Incomplete => EXIT_INCOMPLETE,
        }),
        Err(e) => {
            eprintln!("error: {}", printable(&e.to_string()));
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

/// The trace's outcome, or `None` after serving.
async fn run_async(args: TraceArgs) -> Result<Option<Outcome>> {
    let portal_id: SubsystemId = args.portal.parse()?;
    let dir = ServerDir(args.dir.clone());
    let anchor = client::read_anchor(&dir.anchor())?;
    // A cache of its own: the portal's server keeps configuration.bin.
    let conf = Arc::new(ConfClient::new(
        anchor.clone(),
        args.dir.join("portal-configuration.bin"),
        ConfClient::empty_trust(),
    ));
    if conf.load_cached()?.is_none() && conf.refresh().await.is_err() {
        // The registry is unreachable: start from the server's copy.
        let server_copy = ConfClient::new(
            anchor.clone(),
            dir.configuration(),
            ConfClient::empty_trust(),
        );
        server_copy.load_cached()?;
        conf.install_view(server_copy.view());
    }
    let channel = Endpoint::from_shared(format!("http://{}", args.consumer))?.connect_lazy();
    let timeout = Duration::from_millis(args.timeout_ms);
    // As the portal's server, the registry tells which checkpoints it
    // witnessed last (without it, unwitnessed records stay pending).
    let identity = match lienthong_security_server::keys::auth_identity(&dir) {
        Ok(i) => Some(Arc::new(i)),
        Err(e) => {
            eprintln!("warning: {}", printable(&e.to_string()));
            None
        }
    };
    if let Some(addr) = args.serve {
        tokio::spawn(conf.clone().run());
        let api = PortalApi::new(channel, portal_id, conf, anchor, timeout, identity);
        eprintln!("trace portal API (lienthong.trace.v1.TracePortal) on {addr}");
        tonic::transport::Server::builder()
            .add_service(TracePortalServer::new(api))
            .serve_with_shutdown(addr, async {
                crate::shutdown_signal().await;
            })
            .await?;
        return Ok(None);
    }
    let subject = args.personal_id.unwrap_or_default();
    let view = conf
        .view()
        .ok_or("the portal's security server holds no configuration; is it joined and running?")?;
    let witnessed = match &identity {
        Some(i) => portal::Witnessed::ask(&anchor, i, &view).await,
        None => portal::Witnessed::unknown(),
    };
    let report = portal::trace(
        channel, &portal_id, &view, &anchor, &subject, timeout, &witnessed,
    )
    .await
    .map_err(|e| {
        format!(
            "{e} (is the portal's security server running at {}?)",
            args.consumer
        )
    })?;
    if args.json {
        println!("{}", json(&subject, &report));
    } else {
        print(&subject, &report);
    }
    Ok(Some(report.outcome()))
}

fn status_name(s: &Status) -> &'static str {
    match s {
        Status::Verified => "verified",
        Status::NotDelivered(_) => "not_delivered",
        Status::PendingCheckpoint => "pending_checkpoint",
        Status::Unconfirmed(_) => "unconfirmed",
        Status::Discrepancy(_) => "discrepancy",
        Status::Failed(_) => "failed",
    }
}

/// The report for programs. JSON strings escape every control character.
fn json(subject: &str, r: &portal::TraceReport) -> serde_json::Value {
    use serde_json::json;
    let problems = |list: &[(lienthong_proto::id::ServerId, String)]| {
        list.iter()
            .map(|(s, why)| json!({"server": s.to_string(), "reason": why}))
            .collect::<Vec<_>>()
    };
    json!({
        "data_subject": subject,
        "outcome": match r.outcome() {
            Outcome::Complete => "complete",
            Outcome::Incomplete => "incomplete",
            Outcome::Failed => "failed",
        },
        "exchanges": r.exchanges.iter().map(|e| json!({
            "message_id": e.message_id,
            "at_unix_ms": e.at_ms,
            "client": e.client,
            "service": e.service,
            "method": e.method,
            "purpose": e.purpose,
            "official": e.user_id,
            "grpc_status": e.grpc_status,
            "fault": e.fault,
            "logged_by": e.logged_by.iter().map(|(s, side)| json!({
                "server": s.to_string(),
                "side": side.as_str_name(),
            })).collect::<Vec<_>>(),
            "status": status_name(&e.status),
            "problem": e.status.problem(),
            "verified": e.verified,
        })).collect::<Vec<_>>(),
        "withheld": r.withheld.iter().map(|(until, n)| json!({
            "until_unix_ms": until,
            "count": n,
        })).collect::<Vec<_>>(),
        "unwitnessed": r.unwitnessed,
        "unanswered": problems(&r.unanswered),
        "failures": problems(&r.failures),
    })
}

fn print(subject: &str, r: &portal::TraceReport) {
    println!(
        "Access trace for {}: {} exchanges",
        printable(subject),
        r.exchanges.len()
    );
    if !r.exchanges.is_empty() {
        println!(
            "{:<20}  {:<28}  {:<52}  {:<18}  {:<12}  {:<24}  verified",
            "when (UTC)", "who", "service / method", "official", "result", "purpose"
        );
    }
    for e in &r.exchanges {
        let result = if !e.fault.is_empty() {
            e.fault.clone()
        } else if e.grpc_status == 0 {
            "OK".into()
        } else {
            format!("status {}", e.grpc_status)
        };
        let sides: Vec<&str> = e
            .logged_by
            .iter()
            .map(|(_, s)| match s {
                Side::Consumer => "consumer",
                Side::Provider => "provider",
                Side::Unspecified => "?",
            })
            .collect();
        let verdict = match &e.status {
            Status::Verified => "yes".to_string(),
            Status::NotDelivered(_) => "yes (not delivered)".to_string(),
            other => format!(
                "NO: {}",
                status_name(other).replace('_', " ").to_uppercase()
            ),
        };
        println!(
            "{:<20}  {:<28}  {:<52}  {:<18}  {:<12}  {:<24}  {verdict} ({})",
            fmt_time(e.at_ms / 1000),
            printable(&e.client),
            printable(&format!("{}/{}", e.service, e.method)),
            printable(&e.user_id),
            printable(&result),
            printable(&e.purpose),
            sides.join("+")
        );
        if !e.status.problem().is_empty() {
            println!("{:<20}  {}", "", printable(e.status.problem()));
        }
    }
    for (until, n) in &r.withheld {
        println!("{n} records withheld until {}", fmt_time(until / 1000));
    }
    if r.unwitnessed > 0 {
        println!(
            "{} records are newer than their server's last witnessed checkpoint (shown unverified)",
            r.unwitnessed
        );
    }
    for (server, why) in &r.unanswered {
        println!("no answer from {server}: {}", printable(why));
    }
    for (server, why) in &r.failures {
        println!("VERIFICATION FAILED at {server}: {}", printable(why));
    }
    let discrepancies = r
        .exchanges
        .iter()
        .filter(|e| matches!(e.status, Status::Discrepancy(_)))
        .count();
    if discrepancies > 0 {
        println!("{discrepancies} exchanges are a DISCREPANCY between their two ends (see above)");
    }
}

//! `lienthong trace PERSONAL-ID`: who accessed a citizen's data, when and
//! why — asked of every security server through the trace portal's own
//! security server, every answer verified.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lienthong_central_registry::client;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::trace::v1::Side;
use lienthong_security_server::conf_client::ConfClient;
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::trace::portal;
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
/// Example: lienthong trace 001099012345 --dir /var/lib/lienthong/portal-ss1 --portal VN/GOV/000001/portal
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The citizen's personal ID.
    personal_id: String,
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
}

pub fn run(args: TraceArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: TraceArgs) -> Result<()> {
    let portal_id: SubsystemId = args.portal.parse()?;
    let dir = ServerDir(args.dir.clone());
    let anchor = client::read_anchor(&dir.anchor())?;
    let conf = ConfClient::new(
        anchor.clone(),
        dir.configuration(),
        ConfClient::empty_trust(),
    );
    conf.load_cached()?;
    let _ = conf.refresh().await;
    let view = conf
        .view()
        .ok_or("the portal's server holds no configuration; is it joined and running?")?;
    let channel = Endpoint::from_shared(format!("http://{}", args.consumer))?
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the portal's security server at {}: {e}",
                args.consumer
            )
        })?;
    let report = portal::trace(
        channel,
        &portal_id,
        &view,
        &anchor,
        &args.personal_id,
        Duration::from_millis(args.timeout_ms),
    )
    .await?;
    print(&args.personal_id, &report);
    Ok(())
}

fn print(subject: &str, r: &portal::TraceReport) {
    println!(
        "Access trace for {subject}: {} exchanges",
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
        println!(
            "{:<20}  {:<28}  {:<52}  {:<18}  {:<12}  {:<24}  {} ({})",
            fmt_time(e.at_ms / 1000),
            e.client,
            format!("{}/{}", e.service, e.method),
            e.user_id,
            result,
            e.purpose,
            if e.verified { "yes" } else { "NO" },
            sides.join("+")
        );
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
        println!("no answer from {server}: {why}");
    }
    for (server, why) in &r.failures {
        println!("VERIFICATION FAILED at {server}: {why}");
    }
}

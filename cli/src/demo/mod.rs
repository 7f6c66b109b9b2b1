//! `lienthong demo`: a whole federation on this machine, and the scenario
//! the product exists for.
//!
//! A registry with its CA; four agencies — the population registry, the
//! Hanoi Department of Planning and Investment (business registration), the
//! tax department, and the national portal (the trace portal) — each with
//! a security server that joined through the real registration workflow,
//! and two backends with generated Vietnamese data. Then a founder
//! registers a business: the business registry *queries* the population and
//! tax records over the bus instead of asking her for paper copies; then
//! she reads her own access trace.

mod backends;
mod data;
mod instance;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::trace::v1::Side;
use lienthong_security_server::trace::portal;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use backends::population::PersonRequest;
use backends::population::person_registry_client::PersonRegistryClient;
use backends::tax::TaxStatusRequest;
use backends::tax::tax_registry_client::TaxRegistryClient;
use backends::{PERSON_REGISTRY, TAX_REGISTRY};
use data::FOUNDER_ID;
use instance::Instance;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Run a whole local federation and play the scenario, or (`demo
/// backend`) serve only the demo's backends, for an instance set up by hand.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    /// Directory for the instance's files; a fresh temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Exit after the scenario (status 0 only if every step succeeded)
    /// instead of staying up until Ctrl-C.
    #[arg(long)]
    once: bool,
}

#[derive(Subcommand, Debug)]
enum DemoCommand {
    /// Serve the demo's backends — the population registry
    /// (`population.v1.PersonRegistry`) and the tax registry
    /// (`tax.v1.TaxRegistry`) with the demo's generated citizens — as
    /// plain gRPC (h2c) on one address, until stopped: a backend for a
    /// security server set up by hand (`lienthong server backend set …
    /// http://ADDR`), as in docs/operator-guide.md.
    ///
    /// Example: lienthong demo backend --listen 127.0.0.1:9000
    Backend(BackendArgs),
}

#[derive(Args, Debug)]
struct BackendArgs {
    /// Address (or host name) and port to serve on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// How many citizens the registries hold (the first is always
    /// Nguyễn Thị Lan, CCCD 001190012345).
    #[arg(long, default_value_t = 60)]
    citizens: usize,
    /// Also write the services' `.proto` files and descriptor set
    /// (`demo.binpb`) under this directory.
    #[arg(long)]
    proto_dir: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if let Some(DemoCommand::Backend(backend)) = args.command {
        return serve_backends(backend);
    }
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            std::env::temp_dir().join(format!("lienthong-demo-{stamp}"))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(play(&dir, args.once))
}

/// `lienthong demo backend`: both registries on one address until
/// Ctrl-C or SIGTERM.
fn serve_backends(args: BackendArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listen = crate::server::resolve_listen("--listen", &args.listen).await?;
        let citizens = data::citizens(args.citizens.max(1));
        if let Some(root) = &args.proto_dir {
            let set = backends::write_protos(root)?;
            println!("the services' .proto files and descriptor set: {}", set.display());
        }
        let (addr, served) = backends::serve_all(listen, &citizens)
            .await
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        println!(
            "serving {PERSON_REGISTRY} and {TAX_REGISTRY} (h2c) on {addr} with {} citizens, e.g. {FOUNDER_ID}",
            citizens.len()
        );
        tokio::select! {
            r = served => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("backend stopped: {e}").into()),
                Err(e) => return Err(format!("backend stopped: {e}").into()),
            },
            () = crate::shutdown_signal() => {}
        }
        Ok(())
    })
}

fn step(n: usize, total: usize, text: &str, started: Instant) {
    println!(
        "[{n}/{total}] {text} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

async fn play(dir: &Path, once: bool) -> Result<()> {
    let started = Instant::now();
    println!(
        "Lienthong demo: a federation of four agencies in {}\n",
        dir.display()
    );
    let citizens = data::citizens(60);

    let (registry, anchor, officer_token, mut officer) = instance::registry(dir).await?;
    step(
        1,
        6,
        "central registry up: instance VN, its CA, the officer registered 4 members, their subsystems and 2 services",
        started,
    );

    let mut agencies = Vec::new();
    for (code, name, subsystem) in instance::AGENCIES {
        let (home, provider) =
            instance::join_agency(dir, &anchor, &mut officer, code, subsystem).await?;
        agencies.push((*code, *name, *subsystem, home, provider));
    }
    step(
        2,
        6,
        "4 security servers joined: keys made on each, CSRs sent with enrollment tokens, approved by the officer",
        started,
    );

    let population_backend = backends::serve_population(&citizens).await?;
    let tax_backend = backends::serve_tax(&citizens).await?;
    let protos = dir.join("proto");
    backends::write_protos(&protos)?;
    // Every server's consumer port describes them from the service
    // catalogue (the officer published their descriptor set with them).
    let business: SubsystemId = "VN/GOV/000305/business".parse()?;
    instance::provide(
        &agencies[0].3,
        &"VN/GOV/000102/population".parse()?,
        PERSON_REGISTRY,
        population_backend,
        (&business, "GetPerson"),
    )?;
    instance::provide(
        &agencies[2].3,
        &"VN/GOV/000201/tax".parse()?,
        TAX_REGISTRY,
        tax_backend,
        (&business, "GetTaxStatus"),
    )?;
    step(
        3,
        6,
        &format!(
            "backends up with {} citizens (their .proto files and descriptor set in {}); the population registry and the tax department granted the business registry access",
            citizens.len(),
            protos.display()
        ),
        started,
    );

    let mut inst = Instance {
        registry,
        registry_dir: dir.join("registry"),
        anchor,
        officer_token,
        agencies: Vec::new(),
    };
    for (code, name, subsystem, home, provider) in agencies {
        let server = instance::start(&home, provider).await?;
        inst.agencies.push(instance::Agency {
            name,
            subsystem: format!("VN/GOV/{code}/{subsystem}").parse()?,
            dir: home,
            server: Some(server),
        });
    }
    step(
        4,
        6,
        "security servers serving: mutual TLS between them, pinned to the signed global configuration",
        started,
    );
    for a in &inst.agencies {
        println!(
            "      {:<52} {:<28} information systems call {}",
            a.name,
            a.server().id.to_string(),
            a.server().consumer_addr()
        );
    }

    println!(
        "\n[5/6] Scenario: Chị Nguyễn Thị Lan (CCCD {FOUNDER_ID}) registers \"Công ty TNHH Cà phê Lan\" at the Hanoi DPI."
    );
    println!(
        "      The business registry checks her identity and tax standing itself — no paper copies asked.\n"
    );
    let ok = scenario(&inst).await;

    println!(
        "\n[6/6] Her access trace, asked through the national portal of every security server and verified:\n"
    );
    let traced = trace(&inst).await;
    let success = ok.is_ok() && traced.is_ok();
    if let Err(e) = &ok {
        println!("scenario failed: {e}");
    }
    if let Err(e) = &traced {
        println!("trace failed: {e}");
    }
    println!("\ncompleted in {:.1} s", started.elapsed().as_secs_f64());
    if once {
        inst.registry.shutdown().await;
        return if success {
            Ok(())
        } else {
            Err("the scenario did not succeed".into())
        };
    }
    let portal_agency = inst.agency("portal");
    match crate::portal::start_demo_page(
        &portal_agency.dir,
        &portal_agency.subsystem,
        portal_agency.server().consumer_addr(),
        FOUNDER_ID,
    )
    .await
    {
        Ok(url) => println!(
            "\nThe citizens' page — sign in as the founder through the development identity provider (her CCCD is filled in):\n\n  {url}"
        ),
        Err(e) => println!("\nthe citizens' page could not start: {e}"),
    }
    match crate::portal::start_demo_console(inst.anchor.clone()).await {
        Ok(url) => println!(
            "\nThe registry officers' console — sign in with the officer token below (LIENTHONG_TOKEN):\n\n  {url}"
        ),
        Err(e) => println!("\nthe registry console could not start: {e}"),
    }
    match server_console(inst.agency("population")).await {
        Ok((url, token)) => println!(
            "\nThe population registry's security server, operator's console — sign in with this admin token:\n\n  {url}\n  {token}"
        ),
        Err(e) => println!("\nthe security server's console could not start: {e}"),
    }
    print_try(&inst, &protos);
    crate::shutdown_signal().await;
    Ok(())
}

/// The operator's console of `agency`'s server, and an admin token for it.
async fn server_console(agency: &instance::Agency) -> Result<(String, String)> {
    use lienthong_security_server::admin::operators;
    let admin = agency
        .server()
        .admin_addr()
        .ok_or("the server has no admin port")?;
    let store = lienthong_security_server::store::ServerStore::open(
        &lienthong_security_server::keys::ServerDir(agency.dir.clone()).store(),
    )?;
    let token = operators::add_operator(&store, "demo.admin", operators::Role::Admin)?;
    let url = crate::portal::start_demo_server_console(admin).await?;
    Ok((url, token))
}

fn metadata(client: &str, provider: &str, purpose: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    let ascii = |s: &str| s.parse().expect("ASCII metadata");
    m.insert("lt-client", ascii(client));
    m.insert("lt-service", ascii(provider));
    m.insert("lt-user-id", ascii("chuyenvien.hoa"));
    m.insert("lt-purpose", ascii(purpose));
    m.insert("lt-data-subject", ascii(FOUNDER_ID));
    m
}

async fn channel(inst: &Instance, subsystem: &str) -> Result<Channel> {
    let addr = inst.agency(subsystem).server().consumer_addr();
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// A request carrying the Lienthong metadata.
fn request<T>(metadata: MetadataMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata;
    request
}

/// Times a call; returns its reply and how long it took.
async fn timed<T>(
    call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> (std::result::Result<T, tonic::Status>, Duration) {
    let started = Instant::now();
    let result = call.await.map(tonic::Response::into_inner);
    (result, started.elapsed())
}

/// A refusal as a person reads it (the bus's message starts with its code).
fn fault(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn scenario(inst: &Instance) -> Result<()> {
    let business = channel(inst, "business").await?;
    let purpose = "Dang ky doanh nghiep - ho so 2026-114";

    println!(
        "  → VN/GOV/000305/business asks VN/GOV/000102/population: {PERSON_REGISTRY}/GetPerson"
    );
    println!("    purpose \"{purpose}\", official chuyenvien.hoa");
    let (person, took) = timed(
        PersonRegistryClient::new(business.clone()).get_person(request(
            metadata(
                "VN/GOV/000305/business",
                "VN/GOV/000102/population",
                purpose,
            ),
            PersonRequest {
                personal_id: FOUNDER_ID.into(),
            },
        )),
    )
    .await;
    let person = person.map_err(|s| fault(&s))?;
    println!(
        "    ← OK in {:.1} ms: {}, {}, born {}, {}",
        took.as_secs_f64() * 1e3,
        person.full_name,
        person.gender,
        person.date_of_birth,
        person.permanent_address
    );
    println!("      signed by VN/GOV/000102, verified and logged by both security servers");

    println!("  → VN/GOV/000305/business asks VN/GOV/000201/tax: {TAX_REGISTRY}/GetTaxStatus");
    let (tax, took) = timed(
        TaxRegistryClient::new(business.clone()).get_tax_status(request(
            metadata("VN/GOV/000305/business", "VN/GOV/000201/tax", purpose),
            TaxStatusRequest {
                personal_id: FOUNDER_ID.into(),
            },
        )),
    )
    .await;
    let tax = tax.map_err(|s| fault(&s))?;
    println!(
        "    ← OK in {:.1} ms: tax code {}, outstanding {} VND, {}",
        took.as_secs_f64() * 1e3,
        tax.tax_code,
        tax.outstanding_vnd,
        if tax.in_good_standing {
            "in good standing"
        } else {
            "NOT in good standing"
        }
    );
    println!(
        "  ✓ identity and tax standing confirmed from the source registries: the business can be registered"
    );

    println!("\n  For contrast, the tax department asks the population registry without a grant:");
    let tax_channel = channel(inst, "tax").await?;
    let (denied, _) = timed(PersonRegistryClient::new(tax_channel).get_person(request(
        metadata("VN/GOV/000201/tax", "VN/GOV/000102/population", "curiosity"),
        PersonRequest {
            personal_id: FOUNDER_ID.into(),
        },
    )))
    .await;
    match denied {
        Err(s) => println!("    ← refused: {}", fault(&s)),
        Ok(_) => return Err("an ungranted call was allowed".into()),
    }
    Ok(())
}

async fn trace(inst: &Instance) -> Result<()> {
    for a in &inst.agencies {
        a.server().checkpoint_now().await?;
    }
    let portal_agency = inst.agency("portal");
    let view = portal_agency
        .server()
        .conf()
        .view()
        .ok_or("the portal has no configuration")?;
    let identity = lienthong_security_server::keys::auth_identity(
        &lienthong_security_server::keys::ServerDir(portal_agency.dir.clone()),
    )?;
    let witnessed = portal::Witnessed::ask(&inst.anchor, &identity, &view).await;
    let report = portal::trace(
        channel(inst, "portal").await?,
        &portal_agency.subsystem,
        &view,
        &inst.anchor,
        FOUNDER_ID,
        Duration::from_secs(5),
        &witnessed,
    )
    .await?;
    println!(
        "  {:<20} {:<24} {:<56} {:<16} {:<30} {:<8} verified",
        "when (UTC)", "who", "service / method", "official", "result", "logged by"
    );
    for e in &report.exchanges {
        let result = if e.fault.is_empty() {
            if e.grpc_status == 0 {
                "OK".to_owned()
            } else {
                format!("status {}", e.grpc_status)
            }
        } else {
            e.fault.clone()
        };
        let sides: Vec<&str> = e
            .logged_by
            .iter()
            .map(|(_, s)| {
                if *s == Side::Consumer {
                    "consumer"
                } else {
                    "provider"
                }
            })
            .collect();
        println!(
            "  {:<20} {:<24} {:<56} {:<16} {:<30} {:<8} {}",
            lienthong_certs::verify::fmt_time(e.at_ms / 1000),
            e.client,
            format!("{}/{}", e.service, e.method),
            e.user_id,
            result,
            sides.join("+"),
            if e.verified { "yes" } else { "NO" }
        );
    }
    for (server, why) in &report.unanswered {
        println!("  no answer from {server}: {why}");
    }
    for (server, why) in &report.failures {
        println!("  VERIFICATION FAILED at {server}: {why}");
    }
    for e in report.exchanges.iter().filter(|e| !e.verified) {
        println!(
            "  NOT VERIFIED {}: {}",
            e.message_id,
            lienthong_proto::fields::printable(e.status.problem())
        );
    }
    if report.outcome() != portal::Outcome::Complete {
        return Err("the trace is incomplete or failed verification".into());
    }
    println!(
        "  {} exchanges touched her data; every record is proven in a checkpoint the registry witnessed",
        report.exchanges.len()
    );
    Ok(())
}

fn print_try(inst: &Instance, protos: &Path) {
    let business = inst.agency("business").server().consumer_addr();
    let portal = inst.agency("portal");
    println!("\nThe federation stays up until Ctrl-C. Try:\n");
    println!(
        "  # what the business registry's security server offers its information systems (server reflection from the registry's service catalogue; no .proto needed)"
    );
    println!("  grpcurl -plaintext -H 'lt-client: VN/GOV/000305/business' {business} list");
    println!("  grpcurl -plaintext {business} describe {PERSON_REGISTRY}");
    println!("  grpcurl -plaintext {business} grpc.health.v1.Health/Check");
    println!(
        "\n  # ask the population registry as the business registry (-rpc-header: reflection itself stays local)"
    );
    println!(
        "  grpcurl -plaintext -rpc-header 'lt-client: VN/GOV/000305/business' -rpc-header 'lt-service: VN/GOV/000102/population' -rpc-header 'lt-purpose: demo' -rpc-header 'lt-data-subject: {FOUNDER_ID}' -d '{{\"personal_id\":\"{FOUNDER_ID}\"}}' {business} {PERSON_REGISTRY}/GetPerson"
    );
    println!(
        "  # the services' .proto files, for your own client's code generator: {}",
        protos.display()
    );
    println!("\n  # the founder's access trace again");
    println!(
        "  lienthong trace {FOUNDER_ID} --dir {} --portal {} --consumer {}",
        portal.dir.display(),
        portal.subsystem,
        portal.server().consumer_addr()
    );
    println!("\n  # the registry, as its officer");
    println!(
        "  LIENTHONG_ANCHOR={} LIENTHONG_TOKEN={} lienthong registry conf",
        inst.registry_dir.join("anchor.bin").display(),
        inst.officer_token
    );
    println!("\n  # a security server's state");
    println!(
        "  lienthong server status --dir {}",
        inst.agency("population").dir.display()
    );
}

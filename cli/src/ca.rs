//! `lienthong ca …`: the instance certificate authority on files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use lienthong_certs::verify::{self, Usage};
use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr, pem};
use lienthong_proto::id::{MemberId, ServerId};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new instance CA: a self-signed certificate and its key.
    ///
    /// Writes DIR/ca.pem (the certificate, public) and DIR/ca.key (the
    /// private key, mode 0600). Refuses to overwrite an existing key.
    ///
    /// Example: lienthong ca init --dir /etc/lienthong/ca --instance VN
    Init {
        /// Directory for ca.pem and ca.key; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The instance identifier, e.g. VN or VN-TEST.
        #[arg(long)]
        instance: String,
        /// Key algorithm of the CA: p256 (default) or ed25519.
        #[arg(long, default_value_t = KeyAlgorithm::EcdsaP256)]
        key_algorithm: KeyAlgorithm,
        /// Lifetime of the CA certificate in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Generate a key pair and a CSR for it (what a security server does).
    ///
    /// The key stays where it was made; only the CSR travels to the CA. Its
    /// self-signature proves possession of the key.
    ///
    /// Example: lienthong ca csr --key ss1-auth.key --out ss1-auth.csr --subject VN/GOV/000102/ss1
    Csr {
        /// Where to write the new private key (mode 0600; must not exist).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the CSR (PEM).
        #[arg(long)]
        out: PathBuf,
        /// The identity the key is for (informational; the CA decides the subject).
        #[arg(long)]
        subject: String,
        /// Key algorithm: p256 (default) or ed25519.
        #[arg(long, default_value_t = KeyAlgorithm::EcdsaP256)]
        key_algorithm: KeyAlgorithm,
    },
    /// Issue a certificate from a CSR, after checking its proof of possession.
    ///
    /// Example (auth): lienthong ca issue --dir ca --csr ss1-auth.csr --auth VN/GOV/000102/ss1 --address ss1.bocongan.gov.vn:5500 --out ss1-auth.pem
    /// Example (signing): lienthong ca issue --dir ca --csr sign.csr --signing VN/GOV/000102 --out sign.pem
    Issue(IssueArgs),
    /// Show a certificate: identity, role, validity, fingerprint; with --ca,
    /// also verify it against that CA now.
    ///
    /// Example: lienthong ca inspect ss1-auth.pem --ca ca/ca.pem
    Inspect {
        /// The certificate to show (PEM).
        cert: PathBuf,
        /// A CA certificate (PEM) to verify the chain, validity and key usage against.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["auth", "signing"])))]
pub struct IssueArgs {
    /// The CA directory made by `ca init` (ca.pem, ca.key).
    #[arg(long)]
    dir: PathBuf,
    /// The CSR to issue from (PEM).
    #[arg(long)]
    csr: PathBuf,
    /// Issue an auth (TLS) certificate for this security server, e.g. VN/GOV/000102/ss1.
    #[arg(long, requires = "address")]
    auth: Option<String>,
    /// The server's address (host or host:port), put in the certificate's SAN.
    #[arg(long)]
    address: Option<String>,
    /// Issue a signing certificate for this member, e.g. VN/GOV/000102.
    #[arg(long)]
    signing: Option<String>,
    /// Where to write the certificate (PEM).
    #[arg(long)]
    out: PathBuf,
    /// Lifetime in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn run(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init {
            dir,
            instance,
            key_algorithm,
            days,
        } => init(&dir, &instance, key_algorithm, days),
        CaCommand::Csr {
            key,
            out,
            subject,
            key_algorithm,
        } => make_csr(&key, &out, &subject, key_algorithm),
        CaCommand::Issue(args) => issue(args),
        CaCommand::Inspect { cert, ca } => inspect(&cert, ca.as_deref()),
    }
}

fn init(dir: &Path, instance: &str, alg: KeyAlgorithm, days: u32) -> Result<()> {
    let instance = lienthong_proto::id::Instance::new(instance)?;
    fs::create_dir_all(dir)?;
    let key_path = dir.join(CA_KEY_FILE);
    if key_path.exists() {
        return Err(format!(
            "{} already exists; refusing to replace a CA key",
            key_path.display()
        )
        .into());
    }
    let key = PrivateKey::generate(alg)?;
    let key_pem = key.to_pem();
    let ca = InstanceCa::create(instance.as_str(), key, Validity::days(days))?;
    pem::write_key(&key_path, &PrivateKey::from_pem(&key_pem)?)?;
    pem::write_certs(&dir.join(CA_CERT_FILE), &[ca.certificate().clone()])?;
    println!("created instance CA for {instance}");
    println!("  certificate  {}", dir.join(CA_CERT_FILE).display());
    println!(
        "  private key  {} (mode 0600; keep it offline or on the registry only)",
        key_path.display()
    );
    println!(
        "  fingerprint  {}",
        lienthong_certs::Fingerprint::of(ca.certificate())
    );
    Ok(())
}

fn make_csr(key_path: &Path, out: &Path, subject: &str, alg: KeyAlgorithm) -> Result<()> {
    let key = PrivateKey::generate(alg)?;
    let der = csr::create(&key, subject)?;
    pem::write_key(key_path, &key)?;
    pem::write_atomic(
        out,
        pem::encode("CERTIFICATE REQUEST", &der).as_bytes(),
        0o644,
    )?;
    println!("wrote key {} and CSR {}", key_path.display(), out.display());
    Ok(())
}

fn load_ca(dir: &Path) -> Result<InstanceCa> {
    let cert = pem::read_cert(&dir.join(CA_CERT_FILE))?;
    let key = pem::read_key(&dir.join(CA_KEY_FILE))?;
    Ok(InstanceCa::load(cert, key)?)
}

fn issue(a: IssueArgs) -> Result<()> {
    let ca = load_ca(&a.dir)?;
    let csr = csr::verify(&pem::read_csr(&a.csr)?)?;
    let validity = Validity::from_now(Duration::from_secs(u64::from(a.days) * 86_400));
    let (cert, what) = match (&a.auth, &a.signing) {
        (Some(server), None) => {
            let server: ServerId = server.parse()?;
            let address = a.address.as_deref().ok_or("--auth needs --address")?;
            (
                ca.issue_auth(&csr, &server, address, validity)?,
                format!("auth certificate for {server}"),
            )
        }
        (None, Some(member)) => {
            let member: MemberId = member.parse()?;
            (
                ca.issue_signing(&csr, &member, validity)?,
                format!("signing certificate for {member}"),
            )
        }
        _ => return Err("give exactly one of --auth or --signing".into()),
    };
    pem::write_certs(&a.out, std::slice::from_ref(&cert))?;
    println!("issued {what}");
    println!("  certificate  {}", a.out.display());
    println!("  fingerprint  {}", lienthong_certs::Fingerprint::of(&cert));
    Ok(())
}

fn inspect(path: &Path, ca: Option<&Path>) -> Result<()> {
    // A chain file (leaf first, as `server init` writes auth.pem) shows its leaf.
    let chain = pem::read_certs(path)?;
    let cert = chain
        .first()
        .cloned()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?;
    if chain.len() > 1 {
        println!("chain of {} certificates; showing the first", chain.len());
    }
    let info = verify::parse(&cert)?;
    let role = if info.is_ca {
        "certificate authority"
    } else if info.eku_client_auth || info.eku_server_auth {
        "auth (TLS) certificate of a security server"
    } else if !info.has_eku && info.digital_signature {
        "signing certificate of a member"
    } else {
        "unknown role"
    };
    println!("subject      {}", info.common_name);
    println!("role         {role}");
    println!("valid from   {}", verify::fmt_time(info.not_before));
    println!("valid until  {}", verify::fmt_time(info.not_after));
    println!("fingerprint  {}", lienthong_certs::Fingerprint::of(&cert));
    if let Some(ca_path) = ca {
        let ca_cert = pem::read_cert(ca_path)?;
        let anchors = verify::anchors(&[ca_cert])?;
        let usage = if info.has_eku {
            Usage::TlsClient
        } else {
            Usage::Signing
        };
        match verify::verify_cert(&cert, &anchors, SystemTime::now(), usage) {
            Ok(_) => println!("verified     ok against {}", ca_path.display()),
            Err(e) => {
                return Err(
                    format!("verification against {} failed: {e}", ca_path.display()).into(),
                );
            }
        }
    }
    Ok(())
}

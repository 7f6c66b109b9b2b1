//! Creating a registry's home directory, and reading it back.
//!
//! ```text
//! <dir>/ca.key, ca.pem                     the instance CA
//! <dir>/configuration-signing.key, .pem    the configuration signing key
//! <dir>/tls.key, tls.pem                   the registry's TLS identity
//! <dir>/registry.db                        the store (SQLite; none when the
//!                                          store is in PostgreSQL)
//! ```
//!
//! Keys are written 0600 and never overwritten; `initialise` refuses a
//! directory that already holds a registry.

use std::path::{Path, PathBuf};

use lienthong_certs::ca::DEFAULT_CA_VALIDITY;
use lienthong_certs::tls::Identity;
use lienthong_certs::{Fingerprint, InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr, pem};
use lienthong_proto::id::Instance;
use lienthong_proto::pb::globalconf::v1::Anchor;

use crate::auth;
use crate::error::RegistryError;
use crate::model::{Change, InstanceSettings, Role};
use crate::publisher::{DEFAULT_CONFIGURATION_VALIDITY_SECS, DEFAULT_POLL_INTERVAL_SECS};
use crate::store::{Database, KeyFingerprint, Store};

/// Shortest configuration validity accepted. Production instances want
/// well over the servers' poll interval (the CLI asks for at least 120 s);
/// tests of expiry use a few seconds.
pub const MIN_CONFIGURATION_VALIDITY_SECS: u32 = 2;

/// The name of the first officer created by `initialise`.
pub const FIRST_OFFICER: &str = "admin";
/// Lifetime of the registry's TLS and configuration-signing certificates.
pub const REGISTRY_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(5 * 365 * 24 * 3600);

/// The files of a registry home directory.
#[derive(Debug, Clone)]
pub struct RegistryDir(pub PathBuf);

impl RegistryDir {
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn conf_key(&self) -> PathBuf {
        self.0.join("configuration-signing.key")
    }
    pub fn conf_cert(&self) -> PathBuf {
        self.0.join("configuration-signing.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.0.join("tls.key")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.0.join("tls.pem")
    }
    pub fn database(&self) -> PathBuf {
        self.0.join("registry.db")
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        RegistryError::invalid(format!(
            "cannot set mode {mode:o} on {}: {e}",
            path.display()
        ))
    })
}

/// Why a file's mode is refused, if it is (pure): `mode` may grant nothing
/// to group or others.
pub fn private_mode_problem(path: &Path, mode: u32, wanted: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} has mode {:o}: the registry's store and home must be readable by its user alone; run `chmod {wanted:o} {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Refuses a home directory or store that group or others can read
/// (0700 and 0600 are expected); checked by [`crate::Registry::start`].
pub fn check_permissions(dir: &Path) -> Result<(), RegistryError> {
    check_permissions_for(dir, &Database::Home)
}

/// [`check_permissions`] for a registry whose store is `database` (the
/// SQLite files are checked only when the store is in them).
pub fn check_permissions_for(dir: &Path, database: &Database) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;
    let d = RegistryDir(dir.to_owned());
    let db = d.database();
    let wal = dir.join("registry.db-wal");
    let shm = dir.join("registry.db-shm");
    let files = [
        (dir, 0o700),
        (db.as_path(), 0o600),
        (wal.as_path(), 0o600),
        (shm.as_path(), 0o600),
    ];
    let checked = match database {
        Database::Home => &files[..],
        Database::Postgres(_) => &files[..1],
    };
    for &(path, wanted) in checked {
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path != dir && path != db => {
                continue;
            }
            Err(e) => {
                return Err(RegistryError::invalid(format!("{}: {e}", path.display())));
            }
        };
        if let Some(problem) = private_mode_problem(path, mode, wanted) {
            return Err(RegistryError::invalid(problem));
        }
    }
    Ok(())
}

/// What `registry init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub instance: String,
    /// Addresses (`host:port`) servers and operators reach the registry at;
    /// the TLS certificate names each host.
    pub addresses: Vec<String>,
    /// # Default
    /// 600 s ([`DEFAULT_CONFIGURATION_VALIDITY_SECS`]).
    pub configuration_validity_secs: u32,
    /// Approve registration requests without an officer. Off by default;
    /// for test instances only.
    pub auto_approve: bool,
    /// Where the store is.
    /// # Default
    /// `registry.db` (SQLite) in the home directory.
    pub database: Database,
}

impl InitOptions {
    pub fn new(instance: &str, address: &str) -> Self {
        InitOptions {
            instance: instance.to_owned(),
            addresses: vec![address.to_owned()],
            configuration_validity_secs: DEFAULT_CONFIGURATION_VALIDITY_SECS,
            auto_approve: false,
            database: Database::Home,
        }
    }
}

/// What `initialise` created.
#[derive(Debug)]
pub struct Initialised {
    /// The first officer's token, shown once.
    pub officer_token: String,
    pub anchor: Anchor,
}

fn cert_err(e: lienthong_certs::CertError) -> RegistryError {
    RegistryError::Certificate(e)
}

/// Creates a registry in `dir`: CA, configuration-signing and TLS keys and
/// certificates, the store with the instance settings, and a first officer.
pub fn initialise(dir: &Path, opts: &InitOptions) -> Result<Initialised, RegistryError> {
    let d = RegistryDir(dir.to_owned());
    let instance = Instance::new(opts.instance.clone())?;
    if opts.addresses.is_empty() {
        return Err(RegistryError::invalid(
            "at least one registry address is needed",
        ));
    }
    for a in &opts.addresses {
        crate::registration::check_address(a)?;
    }
    if opts.configuration_validity_secs < MIN_CONFIGURATION_VALIDITY_SECS {
        return Err(RegistryError::invalid(format!(
            "configuration validity must be at least {MIN_CONFIGURATION_VALIDITY_SECS} s"
        )));
    }
    if d.database().exists() || d.ca_key().exists() {
        return Err(RegistryError::invalid(format!(
            "{} already holds a registry; refusing to overwrite it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| RegistryError::invalid(format!("cannot create {}: {e}", dir.display())))?;
    // The registry's user alone reads its home (keys and store).
    set_mode(dir, 0o700)?;
    let settings = InstanceSettings {
        instance: instance.clone(),
        addresses: opts.addresses.clone(),
        configuration_validity_secs: opts.configuration_validity_secs,
        poll_interval_secs: DEFAULT_POLL_INTERVAL_SECS,
        auto_approve: opts.auto_approve,
    };
    // A shared database is reached (and refused if it holds a registry)
    // before any key is written, so a failed init leaves nothing behind.
    let store = match &opts.database {
        Database::Home => None,
        Database::Postgres(_) => Some(opts.database.create(dir, &settings)?),
    };

    let ca_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(cert_err)?;
    pem::write_key(&d.ca_key(), &ca_key).map_err(cert_err)?;
    let ca = InstanceCa::create(
        instance.as_str(),
        ca_key,
        Validity::from_now(DEFAULT_CA_VALIDITY),
    )
    .map_err(cert_err)?;
    pem::write_certs(&d.ca_cert(), &[ca.certificate().clone()]).map_err(cert_err)?;

    let validity = Validity::from_now(REGISTRY_CERT_VALIDITY);
    let conf_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(cert_err)?;
    let conf_csr = csr::verify(&csr::create(&conf_key, "configuration signing").map_err(cert_err)?)
        .map_err(cert_err)?;
    let conf_cert = ca
        .issue_configuration_signing(&conf_csr, validity)
        .map_err(cert_err)?;
    pem::write_key(&d.conf_key(), &conf_key).map_err(cert_err)?;
    pem::write_certs(&d.conf_cert(), &[conf_cert]).map_err(cert_err)?;

    let tls_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(cert_err)?;
    let tls_csr =
        csr::verify(&csr::create(&tls_key, "registry").map_err(cert_err)?).map_err(cert_err)?;
    let tls_cert = ca
        .issue_registry_tls(&tls_csr, &opts.addresses, validity)
        .map_err(cert_err)?;
    pem::write_key(&d.tls_key(), &tls_key).map_err(cert_err)?;
    pem::write_certs(&d.tls_cert(), &[tls_cert, ca.certificate().clone()]).map_err(cert_err)?;

    let store = match store {
        Some(s) => s,
        None => {
            let s = opts.database.create(dir, &settings)?;
            set_mode(&d.database(), 0o600)?;
            s
        }
    };
    let (officer_token, token_hash) = auth::new_token();
    store.apply(
        "registry init",
        &Change::AddOperator {
            name: FIRST_OFFICER.into(),
            role: Role::Officer,
            token_hash,
        },
    )?;
    // Recorded now, so a node started later with other keys is refused.
    store.check_keys(&key_fingerprints(dir)?)?;
    let anchor = anchor_with(dir, store.as_ref())?;
    Ok(Initialised {
        officer_token,
        anchor,
    })
}

/// The anchor of the registry in `dir`: instance, addresses, the
/// configuration-signing certificate and the CA that issued the registry's
/// TLS certificate.
pub fn anchor(dir: &Path) -> Result<Anchor, RegistryError> {
    anchor_in(dir, &Database::Home)
}

/// [`anchor`] of a registry whose store is `database`.
pub fn anchor_in(dir: &Path, database: &Database) -> Result<Anchor, RegistryError> {
    anchor_with(dir, database.open(dir)?.as_ref())
}

fn anchor_with(dir: &Path, store: &dyn Store) -> Result<Anchor, RegistryError> {
    let d = RegistryDir(dir.to_owned());
    let settings = store.settings()?;
    let conf_cert = pem::read_cert(&d.conf_cert()).map_err(cert_err)?;
    let ca_cert = pem::read_cert(&d.ca_cert()).map_err(cert_err)?;
    Ok(Anchor {
        instance: settings.instance.to_string(),
        registry_addresses: settings.addresses,
        configuration_signing_certificates: vec![conf_cert.to_vec()],
        instance_ca_certificate: ca_cert.to_vec(),
        generated_at_unix_ms: lienthong_proto::time::now_ms(),
    })
}

/// Adds an operator directly in the store (run on the registry host by its
/// administrator); returns the token, shown once.
pub fn add_operator(dir: &Path, name: &str, role: Role) -> Result<String, RegistryError> {
    add_operator_in(dir, &Database::Home, name, role)
}

/// [`add_operator`] for a registry whose store is `database`.
pub fn add_operator_in(
    dir: &Path,
    database: &Database,
    name: &str,
    role: Role,
) -> Result<String, RegistryError> {
    let name = crate::operator::check_text("operator name", name, 1, 64)?;
    let store = database.open(dir)?;
    let (token, token_hash) = auth::new_token();
    store.apply(
        "registry host administrator",
        &Change::AddOperator {
            name,
            role,
            token_hash,
        },
    )?;
    Ok(token)
}

/// The fingerprints of the keys every node of a registry holds: the
/// instance CA and the configuration-signing key (which also countersigns
/// the servers' checkpoints). Each node's TLS identity is its own.
pub fn key_fingerprints(dir: &Path) -> Result<Vec<KeyFingerprint>, RegistryError> {
    let d = RegistryDir(dir.to_owned());
    let ca = pem::read_cert(&d.ca_cert()).map_err(cert_err)?;
    let conf = pem::read_cert(&d.conf_cert()).map_err(cert_err)?;
    Ok(vec![
        KeyFingerprint {
            purpose: "instance CA",
            file: "ca.pem",
            sha256: Fingerprint::of(&ca),
        },
        KeyFingerprint {
            purpose: "configuration signing and countersigning",
            file: "configuration-signing.pem",
            sha256: Fingerprint::of(&conf),
        },
    ])
}

/// Makes the next configuration version at least `next`, directly in the
/// store (run on the registry host after restoring a backup: one above the
/// newest version any security server holds). Returns the next version.
pub fn raise_version_floor_in(
    dir: &Path,
    database: &Database,
    next: u64,
) -> Result<u64, RegistryError> {
    let store = database.open(dir)?;
    Ok(store.raise_version_floor("registry host administrator", next)?)
}

/// The registry's keys and certificates, loaded from `dir`.
pub struct Loaded {
    pub ca: InstanceCa,
    pub conf_signer: lienthong_certs::signing::Signer,
    pub tls: Identity,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Loads the CA, the configuration signer and the TLS identity.
pub fn load(dir: &Path) -> Result<Loaded, RegistryError> {
    let d = RegistryDir(dir.to_owned());
    let ca = InstanceCa::load(
        pem::read_cert(&d.ca_cert()).map_err(cert_err)?,
        pem::read_key(&d.ca_key()).map_err(cert_err)?,
    )
    .map_err(cert_err)?;
    let conf_cert = pem::read_cert(&d.conf_cert()).map_err(cert_err)?;
    let conf_signer = lienthong_certs::signing::Signer::new(
        &pem::read_key(&d.conf_key()).map_err(cert_err)?,
        &conf_cert,
    )
    .map_err(cert_err)?;
    let tls = Identity {
        chain: pem::read_certs(&d.tls_cert()).map_err(cert_err)?,
        key: pem::read_key(&d.tls_key()).map_err(cert_err)?,
    };
    Ok(Loaded {
        ca,
        conf_signer,
        tls,
    })
}

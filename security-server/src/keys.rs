//! The security server's home directory and the keys in it.
//!
//! ```text
//! <dir>/server.db                 settings, access rights, backends
//! <dir>/anchor.bin                the instance's anchor (copied at init)
//! <dir>/auth.key, auth.pem        the TLS identity (certificate + CA)
//! <dir>/signing/<member>.key|pem  one signing key per member served
//! <dir>/configuration.bin         the last good global configuration
//! <dir>/messagelog/               the message log (segments, index,
//!                                 checkpoints, retention markers)
//! <dir>/log-subject.key           the key data subjects are hashed under
//! <dir>/log-seal.key, log-seal-N.key  the log's sealing keys (or in
//!                                 `serve --log-key-dir`, never inside the
//!                                 log's directory)
//! ```
//!
//! Keys are made here and never leave; files are 0600 and never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::signing::Signer;
use lienthong_certs::tls::Identity;
use lienthong_certs::{CertError, pem, verify};
use lienthong_proto::id::{MemberId, ServerId};

/// Why a server's keys or certificates could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key or certificate file that is not readable or not usable.
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("no auth certificate ({0}); finish `lienthong server init` first")]
    NoAuthCertificate(#[source] CertError),
    #[error("{} holds no certificate", .0.display())]
    EmptyAuthChain(PathBuf),
    #[error("auth certificate {}: {source}", .path.display())]
    AuthCertificate {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("signing certificate {}: {source}", .path.display())]
    SigningCertificate {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("no signing certificate for the owner {0}; finish `lienthong server init` first")]
    NoOwnerCertificate(MemberId),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the log key directory {} is inside the message log's directory; keep the keys apart from the log",
        .0.display()
    )]
    KeyDirInsideLog(PathBuf),
    #[error("{} holds no log key yet; start the server once first", .0.display())]
    NoLogKey(PathBuf),
    #[error("{} is not a 32-byte key", .0.display())]
    NotAKey(PathBuf),
    #[error(
        "the message log in {} holds records, and its key {} is missing: restore the log key directory from its backup or escrow (--log-key-dir); a new key would leave those records unreadable",
        .log.display(),
        .key.display()
    )]
    LogKeyMissing { log: PathBuf, key: PathBuf },
    #[error("the system random number generator failed")]
    Random,
}

impl KeyError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| KeyError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The files of a security server's home directory.
#[derive(Debug, Clone)]
pub struct ServerDir(pub PathBuf);

impl ServerDir {
    pub fn store(&self) -> PathBuf {
        self.0.join("server.db")
    }
    pub fn anchor(&self) -> PathBuf {
        self.0.join("anchor.bin")
    }
    pub fn auth_key(&self) -> PathBuf {
        self.0.join("auth.key")
    }
    pub fn auth_cert(&self) -> PathBuf {
        self.0.join("auth.pem")
    }
    pub fn signing_dir(&self) -> PathBuf {
        self.0.join("signing")
    }
    /// `VN/GOV/000102` → `signing/VN_GOV_000102.key` (`_` never occurs in ids).
    pub fn signing_key(&self, member: &MemberId) -> PathBuf {
        self.signing_dir()
            .join(format!("{}.key", member.to_string().replace('/', "_")))
    }
    pub fn signing_cert(&self, member: &MemberId) -> PathBuf {
        self.signing_dir()
            .join(format!("{}.pem", member.to_string().replace('/', "_")))
    }
    pub fn configuration(&self) -> PathBuf {
        self.0.join("configuration.bin")
    }
    /// The message log's directory (segments, index, checkpoints).
    pub fn message_log(&self) -> PathBuf {
        self.0.join("messagelog")
    }
    /// The message log of the SQLite era, moved into [`Self::message_log`]
    /// when the server starts.
    pub fn legacy_message_log(&self) -> PathBuf {
        self.0.join("messagelog.db")
    }
}

/// The server's TLS identity and its members' signers.
pub struct Keys {
    pub server: ServerId,
    pub auth: Identity,
    signers: HashMap<MemberId, Arc<Signer>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("server", &self.server)
            .field("members", &self.signers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keys {
    /// Loads and checks the keys in `dir`: the auth certificate must chain
    /// to the instance CA (`ca`), be valid now and name `server`; each
    /// signing certificate likewise for its member. Says what is wrong.
    pub fn load(
        dir: &ServerDir,
        server: &ServerId,
        ca: &[u8],
        now: SystemTime,
    ) -> Result<Self, KeyError> {
        let ca = rustls_pki_types::CertificateDer::from(ca.to_vec());
        let anchors = verify::anchors(std::slice::from_ref(&ca))?;
        let chain = pem::read_certs(&dir.auth_cert()).map_err(KeyError::NoAuthCertificate)?;
        let key = pem::read_key(&dir.auth_key())?;
        let leaf = chain
            .first()
            .ok_or_else(|| KeyError::EmptyAuthChain(dir.auth_cert()))?;
        verify::verify_auth_cert(leaf, &anchors, now, verify::Usage::TlsServer, Some(server))
            .map_err(|source| KeyError::AuthCertificate {
                path: dir.auth_cert(),
                source,
            })?;
        let auth = Identity { chain, key };

        let mut signers = HashMap::new();
        let signing_dir = dir.signing_dir();
        let entries = std::fs::read_dir(&signing_dir).map_err(KeyError::io(&signing_dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let cert = pem::read_cert(&path)?;
            let member = verify::verify_signing_cert(&cert, &anchors, now, None)
                .map_err(|source| KeyError::SigningCertificate { path, source })?;
            let key = pem::read_key(&dir.signing_key(&member))?;
            let signer = Signer::new(&key, &cert)?;
            signers.insert(member, Arc::new(signer));
        }
        if !signers.contains_key(&server.owner) {
            return Err(KeyError::NoOwnerCertificate(server.owner.clone()));
        }
        Ok(Keys {
            server: server.clone(),
            auth,
            signers,
        })
    }

    /// Every member this server signs for, with its signer.
    pub fn signers(&self) -> impl Iterator<Item = (&MemberId, &Arc<Signer>)> {
        self.signers.iter()
    }

    /// The signer for `member`, if this server holds its key.
    pub fn signer(&self, member: &MemberId) -> Option<&Arc<Signer>> {
        self.signers.get(member)
    }
}

/// The message log's keys, created (0600) on first use.
/// The TLS identity of the server at `dir`, for what its operator asks
/// the registry as that server (the trace portal asking which checkpoints
/// were witnessed last). The registry checks it; nothing is checked here.
pub fn auth_identity(dir: &ServerDir) -> Result<Identity, KeyError> {
    Ok(Identity {
        chain: pem::read_certs(&dir.auth_cert()).map_err(KeyError::NoAuthCertificate)?,
        key: pem::read_key(&dir.auth_key())?,
    })
}

/// The message log's keys for the server `owner` at `dir`, from
/// `key_dir` (default: the server's directory, never the log's own):
/// `log-subject.key`, `log-seal.key` (key 1) and `log-seal-N.key` for each
/// key started since by [`rotate_log_key`]. Created (0600) on first use —
/// only while the server has no log yet: a log whose key is missing (a key
/// directory not mounted, not restored, or deleted) is refused, never
/// given a new key it cannot read with.
pub fn log_keys(
    dir: &ServerDir,
    key_dir: Option<&Path>,
    owner: &str,
) -> Result<crate::message_log::LogKeys, KeyError> {
    let key_dir = key_dir.unwrap_or(&dir.0);
    refuse_inside_log(dir, key_dir)?;
    std::fs::create_dir_all(key_dir).map_err(KeyError::io(key_dir))?;
    let has_log = has_log(dir)?;
    let key = |path: PathBuf| -> Result<Vec<u8>, KeyError> {
        if has_log && !path.exists() {
            return Err(KeyError::LogKeyMissing {
                log: dir.message_log(),
                key: path,
            });
        }
        secret_key(&path)
    };
    let as_key = |path: PathBuf| -> Result<[u8; 32], KeyError> {
        key(path.clone())?
            .try_into()
            .map_err(|_| KeyError::NotAKey(path))
    };
    let mut seal = vec![(1, as_key(key_dir.join("log-seal.key"))?)];
    for n in 2u32.. {
        let path = key_dir.join(format!("log-seal-{n}.key"));
        if !path.exists() {
            break;
        }
        seal.push((n, as_key(path)?));
    }
    Ok(crate::message_log::LogKeys {
        owner: owner.to_string(),
        subject_hash: key(key_dir.join("log-subject.key"))?,
        seal,
    })
}

/// Whether the server at `dir` has a log its keys must read: a log of
/// the SQLite era still to move, or anything in its message log's
/// directory but the writer's lock file — segments, an index, checkpoints,
/// markers (a partial restore with its segments missing counts: keys made
/// then would block restoring the real ones) — or a link where that
/// directory should be that leads nowhere (a volume not mounted).
fn has_log(dir: &ServerDir) -> Result<bool, KeyError> {
    if dir.legacy_message_log().exists() {
        return Ok(true);
    }
    let log = dir.message_log();
    let entries = match std::fs::read_dir(&log) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(std::fs::symlink_metadata(&log).is_ok());
        }
        Err(source) => return Err(KeyError::Io { path: log, source }),
    };
    for entry in entries {
        let entry = entry.map_err(KeyError::io(&log))?;
        if entry.file_name() != "LOCK" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses a key directory inside the message log's, however it is
/// spelled (relative, through `..` or a symbolic link).
fn refuse_inside_log(dir: &ServerDir, key_dir: &Path) -> Result<(), KeyError> {
    // The deepest part of each path that exists, resolved (links and
    // all), then what follows it taken part by part (none of it exists,
    // so none of it is a link).
    fn resolved(path: &Path) -> PathBuf {
        use std::path::Component;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let parts: Vec<Component<'_>> = absolute.components().collect();
        let (mut out, from) = (0..=parts.len())
            .rev()
            .find_map(|n| {
                let prefix: PathBuf = parts[..n].iter().collect();
                prefix.canonicalize().ok().map(|real| (real, n))
            })
            .unwrap_or_else(|| (PathBuf::from("/"), 0));
        for part in &parts[from..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                _ => {}
            }
        }
        out
    }
    if resolved(key_dir).starts_with(resolved(&dir.message_log())) {
        return Err(KeyError::KeyDirInsideLog(key_dir.to_owned()));
    }
    Ok(())
}

/// Starts a new log sealing key in `key_dir` (default: the server's
/// directory): segments started from the next server start on are sealed
/// under it; the older keys stay for reading. Returns the new key's id.
pub fn rotate_log_key(dir: &ServerDir, key_dir: Option<&Path>) -> Result<u32, KeyError> {
    let key_dir = key_dir.unwrap_or(&dir.0);
    refuse_inside_log(dir, key_dir)?;
    if !key_dir.join("log-seal.key").exists() {
        return Err(KeyError::NoLogKey(key_dir.to_owned()));
    }
    let n = (2u32..)
        .find(|n| !key_dir.join(format!("log-seal-{n}.key")).exists())
        .expect("a free key number");
    secret_key(&key_dir.join(format!("log-seal-{n}.key")))?;
    Ok(n)
}

/// Reads (or creates, 0600) a 32-byte secret key.
pub fn secret_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    if let Ok(k) = std::fs::read(path) {
        if k.len() == 32 {
            return Ok(k);
        }
        return Err(KeyError::NotAKey(path.to_owned()));
    }
    let mut key = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| KeyError::Random)?;
    pem::write_atomic(path, &key, 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_are_made_once_rotated_and_kept_apart_from_the_log() {
        let home = tempfile::tempdir().unwrap();
        let dir = ServerDir(home.path().to_owned());
        assert!(rotate_log_key(&dir, None).is_err(), "nothing to rotate yet");
        let first = log_keys(&dir, None, "VN/GOV/1/ss1").unwrap();
        assert_eq!(first.owner, "VN/GOV/1/ss1");
        assert_eq!(first.current().map(|(id, _)| id), Some(1));
        // Read again, the same keys (made once, 0600).
        let again = log_keys(&dir, None, "VN/GOV/1/ss1").unwrap();
        assert_eq!(again.seal, first.seal);
        assert_eq!(again.subject_hash, first.subject_hash);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("log-seal.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");

        assert_eq!(rotate_log_key(&dir, None).unwrap(), 2);
        assert_eq!(rotate_log_key(&dir, None).unwrap(), 3);
        let rotated = log_keys(&dir, None, "VN/GOV/1/ss1").unwrap();
        assert_eq!(rotated.current().map(|(id, _)| id), Some(3));
        assert_eq!(rotated.seal_key(1), first.seal_key(1), "old keys kept");
        assert_ne!(rotated.seal_key(3), rotated.seal_key(2));

        // Another key directory; never inside the log's own.
        let elsewhere = tempfile::tempdir().unwrap();
        let apart = log_keys(&dir, Some(elsewhere.path()), "VN/GOV/1/ss1").unwrap();
        assert_ne!(apart.seal_key(1), first.seal_key(1));
        assert!(elsewhere.path().join("log-seal.key").exists());
        let inside = dir.message_log().join("keys");
        let refused = log_keys(&dir, Some(&inside), "VN/GOV/1/ss1").unwrap_err();
        assert!(matches!(refused, KeyError::KeyDirInsideLog(_)), "{refused}");
        assert!(
            refused.to_string().contains("inside the message log"),
            "{refused}"
        );
        // However it is spelled: through `..`, or a link into the log.
        std::fs::create_dir_all(dir.message_log()).unwrap();
        let roundabout = home.path().join("elsewhere/../messagelog/keys");
        let refused = log_keys(&dir, Some(&roundabout), "VN/GOV/1/ss1").unwrap_err();
        assert!(matches!(refused, KeyError::KeyDirInsideLog(_)), "{refused}");
        let link = elsewhere.path().join("link");
        std::os::unix::fs::symlink(dir.message_log(), &link).unwrap();
        for refused in [
            log_keys(&dir, Some(&link.join("keys")), "VN/GOV/1/ss1").unwrap_err(),
            rotate_log_key(&dir, Some(&link)).unwrap_err(),
        ] {
            assert!(matches!(refused, KeyError::KeyDirInsideLog(_)), "{refused}");
        }
        assert!(!dir.message_log().join("keys").exists());
    }

    /// A log with records is never given new keys: a key directory not
    /// mounted, not restored or deleted is named, and nothing is created.
    #[test]
    fn a_log_whose_keys_are_missing_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let dir = ServerDir(home.path().to_owned());
        let keys = tempfile::tempdir().unwrap();
        log_keys(&dir, Some(keys.path()), "VN/GOV/1/ss1").unwrap();
        std::fs::create_dir_all(dir.message_log()).unwrap();
        std::fs::write(dir.message_log().join("00000000000000000000.seg"), b"").unwrap();
        let unmounted = tempfile::tempdir().unwrap();
        for (key_dir, missing) in [
            (unmounted.path(), "log-seal.key"),
            (keys.path(), "log-subject.key"),
        ] {
            if key_dir == keys.path() {
                std::fs::remove_file(keys.path().join(missing)).unwrap();
            }
            let refused = log_keys(&dir, Some(key_dir), "VN/GOV/1/ss1").unwrap_err();
            assert!(
                matches!(&refused, KeyError::LogKeyMissing { key, .. } if key.ends_with(missing)),
                "{refused}"
            );
            assert!(
                refused
                    .to_string()
                    .contains("restore the log key directory")
            );
            assert!(!key_dir.join(missing).exists(), "no new key was made");
        }
        // A log of the SQLite era still to move counts as records too.
        std::fs::remove_dir_all(dir.message_log()).unwrap();
        std::fs::write(dir.legacy_message_log(), b"").unwrap();
        assert!(matches!(
            log_keys(&dir, Some(unmounted.path()), "VN/GOV/1/ss1"),
            Err(KeyError::LogKeyMissing { .. })
        ));
        // So does what is left of a log without its segments (a partial
        // restore), and a link to a volume not mounted.
        std::fs::remove_file(dir.legacy_message_log()).unwrap();
        std::fs::create_dir_all(dir.message_log()).unwrap();
        std::fs::write(dir.message_log().join("index.db"), b"").unwrap();
        let partial = log_keys(&dir, Some(unmounted.path()), "VN/GOV/1/ss1");
        assert!(matches!(partial, Err(KeyError::LogKeyMissing { .. })));
        std::fs::remove_dir_all(dir.message_log()).unwrap();
        std::os::unix::fs::symlink(home.path().join("not-mounted"), dir.message_log()).unwrap();
        let dangling = log_keys(&dir, Some(unmounted.path()), "VN/GOV/1/ss1");
        assert!(matches!(dangling, Err(KeyError::LogKeyMissing { .. })));
        std::fs::remove_file(dir.message_log()).unwrap();
        // A server with no log yet (or only the writer's lock) gets its
        // keys made, and then opens with them.
        std::fs::create_dir_all(dir.message_log()).unwrap();
        std::fs::write(dir.message_log().join("LOCK"), b"").unwrap();
        let made = log_keys(&dir, Some(unmounted.path()), "VN/GOV/1/ss1").unwrap();
        assert!(unmounted.path().join("log-seal.key").exists());
        std::fs::write(dir.message_log().join("00000000000000000000.seg"), b"").unwrap();
        let again = log_keys(&dir, Some(unmounted.path()), "VN/GOV/1/ss1").unwrap();
        assert_eq!(again.seal, made.seal, "present keys are read, not refused");
    }
}

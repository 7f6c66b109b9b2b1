//! The security server's home directory and the keys in it.
//!
//! ```text
//! <dir>/server.db                 settings, access rights, backends
//! <dir>/anchor.bin                the instance's anchor (copied at init)
//! <dir>/auth.key, auth.pem        the TLS identity (certificate + CA)
//! <dir>/signing/<member>.key|pem  one signing key per member served
//! <dir>/configuration.bin         the last good global configuration
//! <dir>/messagelog.db             the message log
//! <dir>/log-subject.key           the key data subjects are hashed under
//! <dir>/log-seal.key              the key data subjects are sealed with
//! ```
//!
//! Keys are made here and never leave; files are 0600 and never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::signing::Signer;
use lienthong_certs::tls::Identity;
use lienthong_certs::{pem, verify};
use lienthong_proto::id::{MemberId, ServerId};

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
    pub fn message_log(&self) -> PathBuf {
        self.0.join("messagelog.db")
    }
    pub fn subject_key(&self) -> PathBuf {
        self.0.join("log-subject.key")
    }
    pub fn seal_key(&self) -> PathBuf {
        self.0.join("log-seal.key")
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
    ) -> Result<Self, String> {
        let ca = rustls_pki_types::CertificateDer::from(ca.to_vec());
        let anchors = verify::anchors(std::slice::from_ref(&ca)).map_err(|e| e.to_string())?;
        let chain = pem::read_certs(&dir.auth_cert()).map_err(|e| {
            format!("no auth certificate ({e}); finish `lienthong server init` first")
        })?;
        let key = pem::read_key(&dir.auth_key()).map_err(|e| e.to_string())?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{} holds no certificate", dir.auth_cert().display()))?;
        verify::verify_auth_cert(leaf, &anchors, now, verify::Usage::TlsServer, Some(server))
            .map_err(|e| format!("auth certificate {}: {e}", dir.auth_cert().display()))?;
        let auth = Identity { chain, key };

        let mut signers = HashMap::new();
        let entries = std::fs::read_dir(dir.signing_dir())
            .map_err(|e| format!("{}: {e}", dir.signing_dir().display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let cert = pem::read_cert(&path).map_err(|e| e.to_string())?;
            let member = verify::verify_signing_cert(&cert, &anchors, now, None)
                .map_err(|e| format!("signing certificate {}: {e}", path.display()))?;
            let key = pem::read_key(&dir.signing_key(&member)).map_err(|e| e.to_string())?;
            let signer = Signer::new(&key, &cert).map_err(|e| e.to_string())?;
            signers.insert(member, Arc::new(signer));
        }
        if !signers.contains_key(&server.owner) {
            return Err(format!(
                "no signing certificate for the owner {}; finish `lienthong server init` first",
                server.owner
            ));
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
pub fn auth_identity(dir: &ServerDir) -> Result<Identity, String> {
    Ok(Identity {
        chain: pem::read_certs(&dir.auth_cert()).map_err(|e| {
            format!("no auth certificate ({e}); finish `lienthong server init` first")
        })?,
        key: pem::read_key(&dir.auth_key()).map_err(|e| e.to_string())?,
    })
}

pub fn log_keys(dir: &ServerDir) -> Result<crate::message_log::LogKeys, String> {
    let seal = secret_key(&dir.seal_key())?;
    Ok(crate::message_log::LogKeys {
        subject_hash: secret_key(&dir.subject_key())?,
        seal: seal
            .try_into()
            .map_err(|_| "the sealing key is not 32 bytes".to_string())?,
    })
}

/// Reads (or creates, 0600) a 32-byte secret key.
pub fn secret_key(path: &Path) -> Result<Vec<u8>, String> {
    if let Ok(k) = std::fs::read(path) {
        if k.len() == 32 {
            return Ok(k);
        }
        return Err(format!("{} is not a 32-byte key", path.display()));
    }
    let mut key = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "the system random number generator failed".to_string())?;
    pem::write_atomic(path, &key, 0o600).map_err(|e| e.to_string())?;
    Ok(key)
}

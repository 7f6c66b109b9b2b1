//! Joining the instance: a new server's first registration request (with
//! the enrollment token), and later requests to serve more client
//! subsystems. Keys are generated here and never leave; the registry gets
//! CSRs, and the issued certificates are written next to the keys once an
//! officer approves.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lienthong_certs::signing::Signer;
use lienthong_certs::{CertError, KeyAlgorithm, PrivateKey, pem};
use lienthong_proto::id::{IdError, MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_registry_client::{self as client, ClientError, registration};
use rustls_pki_types::CertificateDer;

use crate::keys::{KeyError, Keys, ServerDir};
use crate::server::{SETTING_SERVER_ID, ServerIdError};
use crate::store::{ServerStore, StoreError};

/// Members' signing keys: Ed25519 (signing and verifying cost less than
/// P-256, and every exchange pays both twice). Auth (TLS) keys stay P-256
/// for the widest TLS support.
pub const SIGNING_KEY_ALGORITHM: KeyAlgorithm = KeyAlgorithm::Ed25519;

/// Settings key of the first registration request's id.
pub const SETTING_JOIN_REQUEST: &str = "join_request";
/// Settings key of the enrollment token (needed to ask about the request).
pub const SETTING_JOIN_TOKEN: &str = "join_token";
/// Settings key prefix of client requests (`client_request:<id>` → subsystem).
pub const SETTING_CLIENT_REQUEST_PREFIX: &str = "client_request:";

/// A registration request's outcome so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinState {
    Pending { request: u64 },
    Approved,
    Rejected { note: String },
}

/// Why a registration request could not be made, or asked about.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "{} already holds a joined server; start it with `lienthong server serve --dir {}`",
        .0.display(),
        .0.display()
    )]
    AlreadyJoined(PathBuf),
    #[error("{server} is not of the anchor's instance {instance}")]
    OtherInstance { server: ServerId, instance: String },
    /// The registry refused (or could not be asked about) the first
    /// request; the directory still holds the earlier request `earlier`.
    #[error(
        "{source}; nothing changed in {}: request {earlier} submitted before is still the one on record (wait for it with `lienthong server init --dir {} --resume`); with a new enrollment token from the registration officer, run `{retry}`",
        .home.display(),
        .home.display()
    )]
    RefusedKeepingEarlier {
        #[source]
        source: ClientError,
        home: PathBuf,
        earlier: u64,
        /// The command that retries with a new token.
        retry: String,
    },
    /// The registry refused (or could not be asked about) the first
    /// request; the directory holds only the anchor.
    #[error(
        "{source}; nothing was registered and {} holds no request (only the anchor); with a new enrollment token from the registration officer, run `{retry}`",
        .home.display()
    )]
    Refused {
        #[source]
        source: ClientError,
        home: PathBuf,
        retry: String,
    },
    #[error(
        "no registration request was submitted from {} (none was made, or it was refused), so there is nothing to resume; with an enrollment token from the registration officer, run `{init}`",
        .home.display()
    )]
    NothingToResume { home: PathBuf, init: String },
    #[error("no pending registration in {}", .0.display())]
    NoPendingRegistration(PathBuf),
    #[error("stored request id is unreadable")]
    UnreadableRequestId,
    #[error("the approval carries no signing certificate")]
    NoSigningCertificate,
    #[error("request {0} was not made from this server")]
    NotOurRequest(u64),
    #[error("stored subsystem: {0}")]
    StoredSubsystem(#[source] IdError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ServerId(#[from] ServerIdError),
}

fn store(dir: &ServerDir) -> Result<ServerStore, JoinError> {
    Ok(ServerStore::open(&dir.store())?)
}

/// The command that submits a first registration request for `home`.
fn init_command(home: &Path, anchor: &str, server: &str, address: &str) -> String {
    format!(
        "lienthong server init --dir {} --anchor {anchor} --server {server} --address {address} --token NEW_TOKEN",
        home.display()
    )
}

/// The first registration request submitted from `home` and not yet
/// approved, if any.
pub fn pending_join(home: &Path) -> Result<Option<u64>, JoinError> {
    let dir = ServerDir(home.to_owned());
    if !dir.store().exists() || dir.auth_cert().exists() {
        return Ok(None);
    }
    store(&dir)?
        .setting(SETTING_JOIN_REQUEST)?
        .map(|v| v.parse().map_err(|_| JoinError::UnreadableRequestId))
        .transpose()
}

/// Makes the auth key and the owner's signing key, submits the first
/// registration request with `token`, and only once the registry took it
/// writes the keys, the anchor and the request into the home directory
/// (created if missing). A refused request (a bad or expired token, an
/// unreachable registry) leaves the directory as it was, so the same
/// command with a new token is the retry. A new request replaces one
/// submitted before and not yet approved (a new token means the officer
/// expects a new request).
pub async fn submit_join(
    home: &Path,
    anchor: &Anchor,
    server: &ServerId,
    address: &str,
    token: &str,
) -> Result<u64, JoinError> {
    let dir = ServerDir(home.to_owned());
    if dir.auth_cert().exists() {
        return Err(JoinError::AlreadyJoined(home.to_owned()));
    }
    if server.owner.instance.as_str() != anchor.instance {
        return Err(JoinError::OtherInstance {
            server: server.clone(),
            instance: anchor.instance.clone(),
        });
    }
    let before = pending_join(home)?;
    if before.is_none() {
        // Kept even if the request is refused, so the retry can name it.
        create_dir_all(home)?;
        client::write_anchor(&dir.anchor(), anchor)?;
    }
    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    let owner_key = PrivateKey::generate(SIGNING_KEY_ALGORITHM)?;
    let req = client::first_request(server, address, token, &auth_key, &owner_key)?;
    let id = submit(anchor, None, req).await.map_err(|source| {
        let anchor_arg = dir.anchor().display().to_string();
        let retry = init_command(home, &anchor_arg, &server.to_string(), address);
        let home = home.to_owned();
        match before {
            Some(earlier) => JoinError::RefusedKeepingEarlier {
                source,
                home,
                earlier,
                retry,
            },
            None => JoinError::Refused {
                source,
                home,
                retry,
            },
        }
    })?;
    create_dir_all(&dir.signing_dir())?;
    client::write_anchor(&dir.anchor(), anchor)?;
    pem::write_key(&dir.auth_key(), &auth_key)?;
    pem::write_key(&dir.signing_key(&server.owner), &owner_key)?;
    let s = store(&dir)?;
    let set = |k: &str, v: &str| s.set_setting(k, v);
    set(SETTING_SERVER_ID, &server.to_string())?;
    set(SETTING_JOIN_REQUEST, &id.to_string())?;
    set(SETTING_JOIN_TOKEN, token)?;
    Ok(id)
}

/// Asks the registry about the first request; on approval writes the
/// certificates.
pub async fn poll_join(home: &Path) -> Result<JoinState, JoinError> {
    let dir = ServerDir(home.to_owned());
    if !dir.auth_cert().exists() && pending_join(home)?.is_none() {
        let anchor = if dir.anchor().exists() {
            dir.anchor().display().to_string()
        } else {
            "ANCHOR_FILE".to_string()
        };
        return Err(JoinError::NothingToResume {
            home: home.to_owned(),
            init: init_command(home, &anchor, "SERVER", "HOST:PORT"),
        });
    }
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let get = |k: &str| -> Result<String, JoinError> {
        s.setting(k)?
            .ok_or_else(|| JoinError::NoPendingRegistration(home.to_owned()))
    };
    if dir.auth_cert().exists() {
        return Ok(JoinState::Approved);
    }
    let id: u64 = get(SETTING_JOIN_REQUEST)?
        .parse()
        .map_err(|_| JoinError::UnreadableRequestId)?;
    let token = get(SETTING_JOIN_TOKEN)?;
    let anchor = client::read_anchor(&dir.anchor())?;
    let reply = ask(&anchor, None, id, token).await?;
    match pb::RequestState::try_from(reply.state) {
        Ok(pb::RequestState::Approved) => {
            let mut chain = vec![CertificateDer::from(reply.auth_certificate)];
            chain.extend(reply.ca_chain.into_iter().map(CertificateDer::from));
            let signing = reply
                .signing_certificates
                .first()
                .ok_or(JoinError::NoSigningCertificate)?;
            pem::write_certs(
                &dir.signing_cert(&server.owner),
                &[CertificateDer::from(signing.clone())],
            )?;
            // The auth certificate last: its presence marks the join done.
            pem::write_certs(&dir.auth_cert(), &chain)?;
            Ok(JoinState::Approved)
        }
        Ok(pb::RequestState::Rejected) => Ok(JoinState::Rejected {
            note: reply.decision_note,
        }),
        _ => Ok(JoinState::Pending { request: id }),
    }
}

/// Asks the registry to let this server serve `subsystem`. When the
/// subsystem's member has no signing key here yet, one is made and its CSR
/// travels with the request. Returns the request id.
pub async fn submit_client(home: &Path, subsystem: &SubsystemId) -> Result<u64, JoinError> {
    let dir = ServerDir(home.to_owned());
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let anchor = client::read_anchor(&dir.anchor())?;
    let keys = Keys::load(
        &dir,
        &server,
        &anchor.instance_ca_certificate,
        SystemTime::now(),
    )?;
    let owner = owner_signer(&dir, &server)?;
    let member = &subsystem.member;
    let new_key = if keys.signer(member).is_none() {
        let path = dir.signing_key(member);
        let key = match pem::read_key(&path) {
            Ok(k) => k,
            Err(_) => {
                let k = PrivateKey::generate(SIGNING_KEY_ALGORITHM)?;
                pem::write_key(&path, &k)?;
                k
            }
        };
        Some(key)
    } else {
        None
    };
    let req = client::client_request(
        &server,
        subsystem,
        new_key.as_ref().map(|k| (member, k)),
        &owner,
    )?;
    let id = submit(&anchor, Some(&keys.auth), req).await?;
    s.set_setting(
        &format!("{SETTING_CLIENT_REQUEST_PREFIX}{id}"),
        &subsystem.to_string(),
    )?;
    Ok(id)
}

/// Asks about a client request; on approval writes any new signing
/// certificate.
pub async fn poll_client(home: &Path, id: u64) -> Result<JoinState, JoinError> {
    let dir = ServerDir(home.to_owned());
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let subsystem: SubsystemId = s
        .setting(&format!("{SETTING_CLIENT_REQUEST_PREFIX}{id}"))?
        .ok_or(JoinError::NotOurRequest(id))?
        .parse()
        .map_err(JoinError::StoredSubsystem)?;
    let anchor = client::read_anchor(&dir.anchor())?;
    let keys = Keys::load(
        &dir,
        &server,
        &anchor.instance_ca_certificate,
        SystemTime::now(),
    )?;
    let reply = ask(&anchor, Some(&keys.auth), id, String::new()).await?;
    match pb::RequestState::try_from(reply.state) {
        Ok(pb::RequestState::Approved) => {
            if let Some(cert) = reply.signing_certificates.first() {
                write_member_cert(&dir, &subsystem.member, cert)?;
            }
            Ok(JoinState::Approved)
        }
        Ok(pb::RequestState::Rejected) => Ok(JoinState::Rejected {
            note: reply.decision_note,
        }),
        _ => Ok(JoinState::Pending { request: id }),
    }
}

/// Submits a registration request; returns its id.
async fn submit(
    anchor: &Anchor,
    identity: Option<&lienthong_certs::tls::Identity>,
    req: pb::SubmitRequest,
) -> Result<u64, ClientError> {
    registration::submit(anchor, identity, req).await
}

/// Asks the registry about request `id`.
async fn ask(
    anchor: &Anchor,
    identity: Option<&lienthong_certs::tls::Identity>,
    id: u64,
    enrollment_token: String,
) -> Result<pb::GetRequestReply, ClientError> {
    registration::request_state(anchor, identity, id, enrollment_token).await
}

fn write_member_cert(dir: &ServerDir, member: &MemberId, der: &[u8]) -> Result<(), CertError> {
    let path = dir.signing_cert(member);
    if path.exists() {
        return Ok(());
    }
    pem::write_certs(&path, &[CertificateDer::from(der.to_vec())])
}

fn owner_signer(dir: &ServerDir, server: &ServerId) -> Result<Signer, CertError> {
    let key = pem::read_key(&dir.signing_key(&server.owner))?;
    let cert = pem::read_cert(&dir.signing_cert(&server.owner))?;
    Signer::new(&key, &cert)
}

fn create_dir_all(path: &Path) -> Result<(), JoinError> {
    std::fs::create_dir_all(path).map_err(|source| JoinError::Io {
        path: path.to_owned(),
        source,
    })
}

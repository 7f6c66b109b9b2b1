//! Joining the instance: a new server's first registration request (with
//! the enrollment token), and later requests to serve more client
//! subsystems. Keys are generated here and never leave; the registry gets
//! CSRs, and the issued certificates are written next to the keys once an
//! officer approves.

use std::path::Path;
use std::time::SystemTime;

use lienthong_certs::signing::Signer;
use lienthong_certs::{KeyAlgorithm, PrivateKey, pem};
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_registry_client::{self as client, registration};
use rustls_pki_types::CertificateDer;

use crate::keys::{Keys, ServerDir};
use crate::server::SETTING_SERVER_ID;
use crate::store::ServerStore;

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

fn store(dir: &ServerDir) -> Result<ServerStore, String> {
    ServerStore::open(&dir.store()).map_err(|e| e.to_string())
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
pub fn pending_join(home: &Path) -> Result<Option<u64>, String> {
    let dir = ServerDir(home.to_owned());
    if !dir.store().exists() || dir.auth_cert().exists() {
        return Ok(None);
    }
    store(&dir)?
        .setting(SETTING_JOIN_REQUEST)
        .map_err(|e| e.to_string())?
        .map(|v| {
            v.parse()
                .map_err(|_| "stored request id is unreadable".to_string())
        })
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
) -> Result<u64, String> {
    let dir = ServerDir(home.to_owned());
    if dir.auth_cert().exists() {
        return Err(format!(
            "{} already holds a joined server; start it with `lienthong server serve --dir {}`",
            home.display(),
            home.display()
        ));
    }
    if server.owner.instance.as_str() != anchor.instance {
        return Err(format!(
            "{server} is not of the anchor's instance {}",
            anchor.instance
        ));
    }
    let before = pending_join(home)?;
    if before.is_none() {
        // Kept even if the request is refused, so the retry can name it.
        std::fs::create_dir_all(home).map_err(|e| e.to_string())?;
        client::write_anchor(&dir.anchor(), anchor).map_err(|e| e.to_string())?;
    }
    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(|e| e.to_string())?;
    let owner_key = PrivateKey::generate(SIGNING_KEY_ALGORITHM).map_err(|e| e.to_string())?;
    let req = client::first_request(server, address, token, &auth_key, &owner_key)
        .map_err(|e| e.to_string())?;
    let id = submit(anchor, None, req).await.map_err(|e| {
        let anchor_arg = dir.anchor().display().to_string();
        let retry = init_command(home, &anchor_arg, &server.to_string(), address);
        match before {
            Some(earlier) => format!(
                "{e}; nothing changed in {}: request {earlier} submitted before is still the one on record (wait for it with `lienthong server init --dir {} --resume`); with a new enrollment token from the registration officer, run `{retry}`",
                home.display(),
                home.display()
            ),
            None => format!(
                "{e}; nothing was registered and {} holds no request (only the anchor); with a new enrollment token from the registration officer, run `{retry}`",
                home.display()
            ),
        }
    })?;
    std::fs::create_dir_all(dir.signing_dir()).map_err(|e| e.to_string())?;
    client::write_anchor(&dir.anchor(), anchor).map_err(|e| e.to_string())?;
    pem::write_key(&dir.auth_key(), &auth_key).map_err(|e| e.to_string())?;
    pem::write_key(&dir.signing_key(&server.owner), &owner_key).map_err(|e| e.to_string())?;
    let s = store(&dir)?;
    let set = |k: &str, v: &str| s.set_setting(k, v).map_err(|e| e.to_string());
    set(SETTING_SERVER_ID, &server.to_string())?;
    set(SETTING_JOIN_REQUEST, &id.to_string())?;
    set(SETTING_JOIN_TOKEN, token)?;
    Ok(id)
}

/// Asks the registry about the first request; on approval writes the
/// certificates.
pub async fn poll_join(home: &Path) -> Result<JoinState, String> {
    let dir = ServerDir(home.to_owned());
    if !dir.auth_cert().exists() && pending_join(home)?.is_none() {
        let anchor = if dir.anchor().exists() {
            dir.anchor().display().to_string()
        } else {
            "ANCHOR_FILE".to_string()
        };
        return Err(format!(
            "no registration request was submitted from {} (none was made, or it was refused), so there is nothing to resume; with an enrollment token from the registration officer, run `{}`",
            home.display(),
            init_command(home, &anchor, "SERVER", "HOST:PORT")
        ));
    }
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let get = |k: &str| -> Result<String, String> {
        s.setting(k)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no pending registration in {}", home.display()))
    };
    if dir.auth_cert().exists() {
        return Ok(JoinState::Approved);
    }
    let id: u64 = get(SETTING_JOIN_REQUEST)?
        .parse()
        .map_err(|_| "stored request id is unreadable".to_string())?;
    let token = get(SETTING_JOIN_TOKEN)?;
    let anchor = client::read_anchor(&dir.anchor()).map_err(|e| e.to_string())?;
    let reply = ask(&anchor, None, id, token).await?;
    match pb::RequestState::try_from(reply.state) {
        Ok(pb::RequestState::Approved) => {
            let mut chain = vec![CertificateDer::from(reply.auth_certificate)];
            chain.extend(reply.ca_chain.into_iter().map(CertificateDer::from));
            let signing = reply
                .signing_certificates
                .first()
                .ok_or("the approval carries no signing certificate")?;
            pem::write_certs(
                &dir.signing_cert(&server.owner),
                &[CertificateDer::from(signing.clone())],
            )
            .map_err(|e| e.to_string())?;
            // The auth certificate last: its presence marks the join done.
            pem::write_certs(&dir.auth_cert(), &chain).map_err(|e| e.to_string())?;
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
pub async fn submit_client(home: &Path, subsystem: &SubsystemId) -> Result<u64, String> {
    let dir = ServerDir(home.to_owned());
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let anchor = client::read_anchor(&dir.anchor()).map_err(|e| e.to_string())?;
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
                let k = PrivateKey::generate(SIGNING_KEY_ALGORITHM).map_err(|e| e.to_string())?;
                pem::write_key(&path, &k).map_err(|e| e.to_string())?;
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
    )
    .map_err(|e| e.to_string())?;
    let id = submit(&anchor, Some(&keys.auth), req).await?;
    s.set_setting(
        &format!("{SETTING_CLIENT_REQUEST_PREFIX}{id}"),
        &subsystem.to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok(id)
}

/// Asks about a client request; on approval writes any new signing
/// certificate.
pub async fn poll_client(home: &Path, id: u64) -> Result<JoinState, String> {
    let dir = ServerDir(home.to_owned());
    let s = store(&dir)?;
    let server = crate::server::server_id(&s)?;
    let subsystem: SubsystemId = s
        .setting(&format!("{SETTING_CLIENT_REQUEST_PREFIX}{id}"))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("request {id} was not made from this server"))?
        .parse()
        .map_err(|e| format!("stored subsystem: {e}"))?;
    let anchor = client::read_anchor(&dir.anchor()).map_err(|e| e.to_string())?;
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
) -> Result<u64, String> {
    registration::submit(anchor, identity, req)
        .await
        .map_err(|e| e.to_string())
}

/// Asks the registry about request `id`.
async fn ask(
    anchor: &Anchor,
    identity: Option<&lienthong_certs::tls::Identity>,
    id: u64,
    enrollment_token: String,
) -> Result<pb::GetRequestReply, String> {
    registration::request_state(anchor, identity, id, enrollment_token)
        .await
        .map_err(|e| e.to_string())
}

fn write_member_cert(dir: &ServerDir, member: &MemberId, der: &[u8]) -> Result<(), String> {
    let path = dir.signing_cert(member);
    if path.exists() {
        return Ok(());
    }
    pem::write_certs(&path, &[CertificateDer::from(der.to_vec())]).map_err(|e| e.to_string())
}

fn owner_signer(dir: &ServerDir, server: &ServerId) -> Result<Signer, String> {
    let key = pem::read_key(&dir.signing_key(&server.owner)).map_err(|e| e.to_string())?;
    let cert = pem::read_cert(&dir.signing_cert(&server.owner)).map_err(|e| e.to_string())?;
    Signer::new(&key, &cert).map_err(|e| e.to_string())
}

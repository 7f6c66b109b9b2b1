//! The registration workflow, as X-Road's authCertReg and clientReg.
//!
//! 1. [`check_submission`] (pure) parses and bounds a `SubmitRequest`:
//!    identifiers, address, CSRs with their proof of possession.
//! 2. The caller is authenticated: a server's first request carries its
//!    one-time enrollment token and is signed by the owner's new signing key
//!    (the CSR's); later requests come over mutual TLS with the server's
//!    registered auth certificate and are signed by the owner's registered
//!    signing certificate.
//! 3. The request is stored as pending (the token is consumed in the same
//!    transaction); under `auto_approve` it is approved at once.
//! 4. On approval ([`approve`]) the CA issues the certificates and the
//!    request's effect (new server, new client, new address, removal) is
//!    applied in one transaction. The server fetches them with `GetRequest`.

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::key_policy::KeyPurpose;
use lienthong_certs::signing::VerifyingKey;
use lienthong_certs::{Fingerprint, InstanceCa, Validity, csr};
use lienthong_proto::canonical;
use lienthong_proto::id::{Instance, MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::registration_server::Registration as RegistrationApi;
use rustls_pki_types::CertificateDer;
use tonic::{Request, Response, Status};

use crate::auth::hash_token;
use crate::consent;
use crate::error::{RegistryError, blocking};
use crate::model::{
    Applied, Change, CsrFor, Issued, IssuedCert, MAX_ADDRESS_LEN, NewRequest, PublicKey,
    RequestKind, RequestState, StoredRequest,
};
use crate::publisher::Publisher;
use crate::refusals::Refusals;
use crate::store::Store;

/// Most signing CSRs one request may carry.
pub const MAX_SIGNING_CSRS: usize = 16;
/// Longest enrollment token looked at.
const MAX_TOKEN_LEN: usize = 128;
/// The actor recorded for approvals made by the `auto_approve` setting.
pub const AUTO_APPROVER: &str = "auto-approve";

/// Checks a `host:port` address: a DNS name or IP and a port in 1..=65535.
pub fn check_address(address: &str) -> Result<String, RegistryError> {
    let bad = |why: &str| RegistryError::invalid(format!("address {address:?}: {why}"));
    if address.len() > MAX_ADDRESS_LEN {
        return Err(bad("too long"));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("port must be 1..=65535")),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let dns = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ip && !dns {
        return Err(bad("host must be an IP address or a DNS name"));
    }
    Ok(address.to_owned())
}

fn parse_kind(code: i32) -> Result<RequestKind, RegistryError> {
    RequestKind::from_code(i64::from(code)).ok_or_else(|| {
        RegistryError::invalid(format!(
            "request kind {code} is not one of AUTH_CERTIFICATE, CLIENT, ADDRESS_CHANGE, SERVER_REMOVAL"
        ))
    })
}

fn check_csr(c: &pb::CertificateRequest, auth: bool) -> Result<CsrFor, RegistryError> {
    let purpose = if auth {
        KeyPurpose::Auth
    } else {
        KeyPurpose::Signing
    };
    let verified = csr::verify_for(&c.csr, purpose)?;
    let member = match (&c.member, auth) {
        (_, true) => None,
        (Some(m), false) => Some(MemberId::try_from(m)?),
        (None, false) => {
            return Err(RegistryError::invalid(
                "a signing CSR must name the member it signs for",
            ));
        }
    };
    Ok(CsrFor {
        csr: c.csr.clone(),
        public_key: verified.public_key_der(),
        member,
        consent: None,
    })
}

/// Refuses a request that uses one key for two certificates.
fn check_distinct_keys(req: &NewRequest) -> Result<(), RegistryError> {
    let keys: Vec<&PublicKey> = req
        .auth_csr
        .iter()
        .chain(&req.signing_csrs)
        .map(|c| &c.public_key)
        .collect();
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].contains(k) {
            return Err(RegistryError::invalid(
                "the request uses one key for two certificates; one key, one certificate: generate a key for each",
            ));
        }
    }
    Ok(())
}

/// Parses and bounds a submission (pure: no store, no clock).
pub fn check_submission(
    req: &pb::SubmitRequest,
    instance: &Instance,
) -> Result<NewRequest, RegistryError> {
    let kind = parse_kind(req.kind)?;
    let server = ServerId::try_from(
        req.server
            .as_ref()
            .ok_or_else(|| RegistryError::invalid("the request names no server"))?,
    )?;
    if &server.owner.instance != instance {
        return Err(RegistryError::invalid(format!(
            "server {server} is not of instance {instance}"
        )));
    }
    if req.signing_csrs.len() > MAX_SIGNING_CSRS {
        return Err(RegistryError::invalid(format!(
            "{} signing CSRs; at most {MAX_SIGNING_CSRS} per request",
            req.signing_csrs.len()
        )));
    }
    let signing_csrs = req
        .signing_csrs
        .iter()
        .map(|c| check_csr(c, false))
        .collect::<Result<Vec<_>, _>>()?;
    for c in &signing_csrs {
        if let Some(m) = &c.member
            && &m.instance != instance
        {
            return Err(RegistryError::invalid(format!(
                "member {m} is not of instance {instance}"
            )));
        }
    }
    let token = (!req.enrollment_token.is_empty()).then(|| hash_token(&req.enrollment_token));
    let mut out = NewRequest {
        kind,
        server: server.clone(),
        subsystem: None,
        address: None,
        auth_csr: None,
        signing_csrs,
        enrollment_token: token,
    };
    match kind {
        RequestKind::AuthCertificate => {
            let auth = req.auth_csr.as_ref().ok_or_else(|| {
                RegistryError::invalid("an auth-certificate request carries the auth key's CSR")
            })?;
            out.auth_csr = Some(check_csr(auth, true)?);
            out.address = Some(check_address(&req.address)?);
            if out.enrollment_token.is_none() {
                return Err(RegistryError::Unauthenticated(
                    "a server's first request must carry the enrollment token the registration officer issued"
                        .into(),
                ));
            }
            match out.signing_csrs.first() {
                Some(c) if c.member.as_ref() == Some(&server.owner) => {}
                _ => {
                    return Err(RegistryError::invalid(format!(
                        "the first signing CSR must be for the owner {}",
                        server.owner
                    )));
                }
            }
            if out
                .signing_csrs
                .iter()
                .any(|c| c.member.as_ref() != Some(&server.owner))
            {
                return Err(RegistryError::invalid(
                    "a new server may carry signing CSRs for its owner only; add client members with CLIENT requests",
                ));
            }
        }
        RequestKind::Client => {
            let sub =
                SubsystemId::try_from(req.subsystem.as_ref().ok_or_else(|| {
                    RegistryError::invalid("a client request names the subsystem")
                })?)?;
            if out
                .signing_csrs
                .iter()
                .any(|c| c.member.as_ref() != Some(&sub.member))
            {
                return Err(RegistryError::invalid(format!(
                    "signing CSRs of a client request must be for the client's member {}",
                    sub.member
                )));
            }
            out.subsystem = Some(sub);
        }
        RequestKind::AddressChange => out.address = Some(check_address(&req.address)?),
        RequestKind::ServerRemoval => {}
    }
    if kind != RequestKind::AuthCertificate && req.auth_csr.is_some() {
        return Err(RegistryError::invalid(
            "only auth-certificate requests carry an auth CSR",
        ));
    }
    check_distinct_keys(&out)?;
    Ok(out)
}

/// Which key must have signed a submission.
fn owner_key(
    store: &dyn Store,
    req: &NewRequest,
    signature: &lienthong_proto::pb::exchange::v1::Signature,
) -> Result<VerifyingKey, RegistryError> {
    if req.kind == RequestKind::AuthCertificate {
        // First contact: the owner's new signing key, proven by its CSR.
        let first = req.signing_csrs.first().ok_or_else(|| {
            RegistryError::invalid("the request carries no signing CSR of the owner")
        })?;
        return Ok(VerifyingKey::from_csr(&first.csr)?);
    }
    let fp = Fingerprint::from_slice(&signature.signer_certificate_sha256)
        .ok_or_else(|| RegistryError::invalid("the owner signature names no certificate"))?;
    let cert = store.certificate(&fp)?.filter(|c| !c.revoked);
    match cert {
        Some(c) if c.signing_member.as_ref() == Some(&req.server.owner) => {
            Ok(VerifyingKey::from_cert(&c.der)?)
        }
        _ => Err(RegistryError::PermissionDenied(format!(
            "the request must be signed with a registered, unrevoked signing certificate of the owner {}",
            req.server.owner
        ))),
    }
}

/// Whether the TLS peer is a registered, unrevoked auth certificate of `server`.
fn peer_is_server(
    store: &dyn Store,
    peer: Option<&CertificateDer<'_>>,
    server: &ServerId,
) -> Result<bool, RegistryError> {
    let Some(peer) = peer else { return Ok(false) };
    let cert = store.certificate(&Fingerprint::of(peer))?;
    Ok(cert.is_some_and(|c| !c.revoked && c.auth_server.as_ref() == Some(server)))
}

/// Issues the certificates of a pending request and applies it.
pub fn approve(
    store: &dyn Store,
    ca: &InstanceCa,
    validity: std::time::Duration,
    actor: &str,
    id: u64,
    note: &str,
) -> Result<Applied, RegistryError> {
    let stored = store
        .request(id)?
        .ok_or_else(|| crate::store::StoreError::Missing(format!("request {id} does not exist")))?;
    if stored.state != RequestState::Pending {
        return Err(crate::store::StoreError::Conflict(format!(
            "request {id} is {:?}, not pending",
            stored.state
        ))
        .into());
    }
    let req = &stored.request;
    let validity = Validity::from_now(validity);
    let mut issued = Issued::default();
    if let Some(auth) = &req.auth_csr {
        let v = csr::verify(&auth.csr)?;
        let address = req.address.as_deref().unwrap_or_default();
        let der = ca.issue_auth(&v, &req.server, address, validity)?;
        issued.auth = Some(IssuedCert {
            der: der.to_vec(),
            public_key: auth.public_key.clone(),
        });
    }
    for c in &req.signing_csrs {
        let member = c
            .member
            .clone()
            .ok_or_else(|| RegistryError::invalid("stored signing CSR names no member"))?;
        let v = csr::verify(&c.csr)?;
        let der = ca.issue_signing(&v, &member, validity)?;
        issued.signing.push((
            member,
            IssuedCert {
                der: der.to_vec(),
                public_key: c.public_key.clone(),
            },
        ));
    }
    let change = Change::Approve {
        id,
        note: note.to_owned(),
        issued,
    };
    Ok(store.apply(actor, &change)?)
}

/// The `Registration` service.
#[derive(Clone)]
pub struct Registration {
    store: Arc<dyn Store>,
    ca: Arc<InstanceCa>,
    publisher: Arc<Publisher>,
    instance: Instance,
    auto_approve: bool,
    cert_validity: std::time::Duration,
    refusals: Refusals,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("instance", &self.instance)
            .field("auto_approve", &self.auto_approve)
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<InstanceCa>,
        publisher: Arc<Publisher>,
        instance: Instance,
        auto_approve: bool,
        cert_validity: std::time::Duration,
    ) -> Self {
        Registration {
            refusals: Refusals::new(store.clone()),
            store,
            ca,
            publisher,
            instance,
            auto_approve,
            cert_validity,
        }
    }

    fn submit_blocking(
        &self,
        wire: pb::SubmitRequest,
        peer: Option<CertificateDer<'static>>,
    ) -> Result<(u64, RequestState, u64), RegistryError> {
        if wire.enrollment_token.len() > MAX_TOKEN_LEN {
            return Err(RegistryError::Unauthenticated(
                "the enrollment token is malformed".into(),
            ));
        }
        let mut req = check_submission(&wire, &self.instance)?;
        let store = self.store.as_ref();
        if req.kind != RequestKind::AuthCertificate
            && !peer_is_server(store, peer.as_ref(), &req.server)?
        {
            return Err(RegistryError::Unauthenticated(format!(
                "requests about a registered server come over mutual TLS with the auth certificate of {}",
                req.server
            )));
        }
        let signature = wire.owner_signature.as_ref().ok_or_else(|| {
            RegistryError::Unauthenticated("the request carries no owner signature".into())
        })?;
        let key = owner_key(store, &req, signature)?;
        let digest = canonical::digest(&canonical::registration_request(&wire));
        key.verify(signature, &digest).map_err(|e| {
            RegistryError::Unauthenticated(format!("the owner signature does not verify: {e}"))
        })?;
        // A signing certificate for another member needs that member's consent.
        for (c, on_wire) in req.signing_csrs.iter_mut().zip(&wire.signing_csrs) {
            let member = c
                .member
                .as_ref()
                .ok_or_else(|| RegistryError::invalid("a signing CSR names no member"))?;
            if member != &req.server.owner {
                c.consent = Some(consent::verify(
                    store,
                    &req.server,
                    member,
                    &c.csr,
                    on_wire.consent.as_ref(),
                )?);
            }
        }
        let actor = format!("server {}", req.server);
        let applied = store.apply(&actor, &Change::Submit(Box::new(req)))?;
        let id = applied
            .request_id
            .ok_or_else(|| RegistryError::invalid("the store assigned no request id"))?;
        if self.auto_approve {
            let done = approve(store, &self.ca, self.cert_validity, AUTO_APPROVER, id, "")?;
            return Ok((id, RequestState::Approved, done.seq));
        }
        Ok((id, RequestState::Pending, applied.seq))
    }

    fn get_blocking(
        &self,
        wire: pb::GetRequestRequest,
        peer: Option<CertificateDer<'static>>,
    ) -> Result<StoredRequest, RegistryError> {
        let denied = || {
            RegistryError::PermissionDenied(format!(
                "request {} is not yours: ask with the enrollment token it was submitted with, or over mutual TLS as its server",
                wire.id
            ))
        };
        let stored = self.store.request(wire.id)?.ok_or_else(denied)?;
        let by_token = !wire.enrollment_token.is_empty()
            && wire.enrollment_token.len() <= MAX_TOKEN_LEN
            && stored.request.enrollment_token == Some(hash_token(&wire.enrollment_token));
        if by_token || peer_is_server(self.store.as_ref(), peer.as_ref(), &stored.request.server)? {
            Ok(stored)
        } else {
            Err(denied())
        }
    }
}

/// What a submission asks for, for the audit log (no token, no key).
fn describe(r: &pb::SubmitRequest) -> String {
    let server = r
        .server
        .as_ref()
        .and_then(|s| ServerId::try_from(s).ok())
        .map_or_else(|| "no valid server".to_owned(), |s| s.to_string());
    let kind = pb::RequestKind::try_from(r.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("REQUEST_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("kind {}", r.kind));
    format!("{kind} for {server}")
}

fn state_code(s: RequestState) -> i32 {
    s.code() as i32
}

fn first_peer_cert<T>(request: &Request<T>) -> Option<CertificateDer<'static>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.clone().into_owned()))
}

#[tonic::async_trait]
impl RegistrationApi for Registration {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let peer = first_peer_cert(&request);
        let source = request.remote_addr();
        let wire = request.into_inner();
        let (token, what) = (wire.enrollment_token.clone(), describe(&wire));
        let this = self.clone();
        let peer2 = peer.clone();
        let (id, state, seq) = match blocking(move || this.submit_blocking(wire, peer2)).await {
            Ok(done) => done,
            Err(e) => {
                let status = Status::from(e);
                self.refusals
                    .record(
                        source,
                        peer,
                        Some(("enrollment", token)),
                        "Submit",
                        &what,
                        status.message(),
                    )
                    .await;
                return Err(status);
            }
        };
        if state == RequestState::Approved {
            self.publisher.version_including(seq).await;
        }
        Ok(Response::new(pb::SubmitReply {
            id,
            state: state_code(state),
        }))
    }

    async fn get_request(
        &self,
        request: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::GetRequestReply>, Status> {
        let peer = first_peer_cert(&request);
        let source = request.remote_addr();
        let wire = request.into_inner();
        let (token, what) = (
            wire.enrollment_token.clone(),
            format!("request {}", wire.id),
        );
        let this = self.clone();
        let peer2 = peer.clone();
        let stored = match blocking(move || this.get_blocking(wire, peer2)).await {
            Ok(s) => s,
            Err(e) => {
                let status = Status::from(e);
                self.refusals
                    .record(
                        source,
                        peer,
                        Some(("enrollment", token)),
                        "GetRequest",
                        &what,
                        status.message(),
                    )
                    .await;
                return Err(status);
            }
        };
        Ok(Response::new(pb::GetRequestReply {
            state: state_code(stored.state),
            auth_certificate: stored.issued_auth.unwrap_or_default(),
            signing_certificates: stored.issued_signing,
            ca_chain: vec![self.ca.certificate().to_vec()],
            decision_note: stored.decision_note,
        }))
    }
}

/// How long until `valid` ends, for enrollment tokens.
pub fn expiry_ms(now: SystemTime, valid_secs: u32) -> i64 {
    lienthong_proto::time::unix_ms(now) + i64::from(valid_secs) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:4400",
            "ss1.gov.vn:443",
            "[::1]:8443",
            "localhost:1",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:0",
            "host:70000",
            ":443",
            "bad host:443",
            "a..b:1",
            &format!("{}:1", "a".repeat(300)),
        ] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }
}

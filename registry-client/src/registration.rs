//! A security server's registration requests: building them (CSRs, never
//! keys; signed by the owner's signing key), submitting them, and asking
//! about them. The first request travels anonymously with the enrollment
//! token; later ones over mutual TLS as the server.

use lienthong_certs::signing::Signer;
use lienthong_certs::tls::Identity;
use lienthong_certs::{CertError, PrivateKey, csr};
use lienthong_proto::canonical;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1::registration_client::RegistrationClient;
use lienthong_proto::pb::registry::v1::{
    CertificateRequest, GetRequestReply, GetRequestRequest, RequestKind, SubmitRequest,
};

use crate::{ClientError, connect};

/// Signs a registration request as its owner.
pub fn sign_submission(mut req: SubmitRequest, owner: &Signer) -> Result<SubmitRequest, CertError> {
    req.owner_signature = None;
    let digest = canonical::digest(&canonical::registration_request(&req));
    req.owner_signature = Some(owner.sign_digest(&digest)?);
    Ok(req)
}

/// A server's first request: its auth key and its owner's signing key, both
/// as CSRs, signed by the new owner key, with the enrollment token.
pub fn first_request(
    server: &ServerId,
    address: &str,
    enrollment_token: &str,
    auth_key: &PrivateKey,
    owner_signing_key: &PrivateKey,
) -> Result<SubmitRequest, CertError> {
    let auth_csr = csr::create(auth_key, &server.to_string())?;
    let signing_csr = csr::create(owner_signing_key, &server.owner.to_string())?;
    let signer = Signer::for_csr(owner_signing_key, &signing_csr)?;
    let req = SubmitRequest {
        kind: RequestKind::AuthCertificate as i32,
        server: Some(server.into()),
        enrollment_token: enrollment_token.to_owned(),
        address: address.to_owned(),
        auth_csr: Some(CertificateRequest {
            csr: auth_csr,
            member: None,
            consent: None,
        }),
        signing_csrs: vec![CertificateRequest {
            csr: signing_csr,
            member: Some((&server.owner).into()),
            consent: None,
        }],
        ..Default::default()
    };
    sign_submission(req, &signer)
}

/// A request to serve `client` on `server`, with a signing CSR for the
/// client's member when it has no signing key on this server yet; signed
/// by the owner's registered signing key. Sent over mutual TLS.
pub fn client_request(
    server: &ServerId,
    client: &SubsystemId,
    member_signing_key: Option<(&MemberId, &PrivateKey)>,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let signing_csrs = match member_signing_key {
        Some((member, key)) => vec![CertificateRequest {
            csr: csr::create(key, &member.to_string())?,
            member: Some(member.into()),
            consent: None,
        }],
        None => Vec::new(),
    };
    let req = SubmitRequest {
        kind: RequestKind::Client as i32,
        server: Some(server.into()),
        subsystem: Some(client.into()),
        signing_csrs,
        ..Default::default()
    };
    sign_submission(req, owner)
}

/// A request to serve `client` on `server` with a new signing key of the
/// client's member, another member than the owner: the member consents with
/// its registered signing certificate (`member_signer`, see
/// [`crate::consent`]). Signed by the owner's registered key.
pub fn client_request_with_consent(
    server: &ServerId,
    client: &SubsystemId,
    member_key: &PrivateKey,
    member_signer: &Signer,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let member = &client.member;
    let csr = csr::create(member_key, &member.to_string())?;
    let consent = crate::consent::sign(server, member, &csr, member_signer)?;
    let req = SubmitRequest {
        kind: RequestKind::Client as i32,
        server: Some(server.into()),
        subsystem: Some(client.into()),
        signing_csrs: vec![CertificateRequest {
            csr,
            member: Some(member.into()),
            consent: Some(consent),
        }],
        ..Default::default()
    };
    sign_submission(req, owner)
}

/// A request to move `server` to `address`, or (with `None`) to remove it.
pub fn server_request(
    server: &ServerId,
    address: Option<&str>,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let req = SubmitRequest {
        kind: if address.is_some() {
            RequestKind::AddressChange
        } else {
            RequestKind::ServerRemoval
        } as i32,
        server: Some(server.into()),
        address: address.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    sign_submission(req, owner)
}

/// Submits a registration request (anonymously on first contact, else as
/// the server over mutual TLS with `identity`); returns its id.
pub async fn submit(
    anchor: &Anchor,
    identity: Option<&Identity>,
    req: SubmitRequest,
) -> Result<u64, ClientError> {
    let channel = connect(anchor, identity).await?;
    Ok(RegistrationClient::new(channel)
        .submit(req)
        .await
        .map_err(|s| ClientError::refused("the registry refused the request", &s))?
        .into_inner()
        .id)
}

/// Asks the registry about request `id` (with its enrollment token on first
/// contact, else as the server over mutual TLS with `identity`).
pub async fn request_state(
    anchor: &Anchor,
    identity: Option<&Identity>,
    id: u64,
    enrollment_token: String,
) -> Result<GetRequestReply, ClientError> {
    let channel = connect(anchor, identity).await?;
    Ok(RegistrationClient::new(channel)
        .get_request(GetRequestRequest {
            id,
            enrollment_token,
        })
        .await
        .map_err(|s| ClientError::refused("the registry refused", &s))?
        .into_inner())
}

#[cfg(test)]
mod tests;

//! A member's consent to a signing certificate in its name on another
//! member's security server.
//!
//! A security server may ask for signing certificates for its owner. A
//! signing CSR for any other member needs that member's consent in the same
//! request: a signature, with one of its registered and unrevoked signing
//! certificates, over [`consent_bytes`] — the server that will hold the key,
//! the member, and the CSR's SHA-256. Without it, a member could obtain a
//! certificate in another member's name for a key it holds itself.

use lienthong_certs::CertError;
use lienthong_certs::Fingerprint;
use lienthong_certs::signing::{Signer, VerifyingKey};
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::exchange::v1::Signature;
use lienthong_proto::sha256;

use crate::error::RegistryError;
use crate::store::Store;

/// The domain tag of consent signatures.
pub const CONSENT_DOMAIN: &str = "lienthong.registry.v1.SigningConsent";

fn field(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// The canonical bytes a consent signs: domain tag, server, member and
/// SHA-256 of the CSR, each as a `u32` big-endian length and the bytes
/// (the encoding of `lienthong_proto::canonical`).
pub fn consent_bytes(server: &ServerId, member: &MemberId, csr: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    field(&mut out, CONSENT_DOMAIN.as_bytes());
    field(&mut out, server.to_string().as_bytes());
    field(&mut out, member.to_string().as_bytes());
    field(&mut out, &sha256(csr));
    out
}

/// The digest a consent signature covers.
pub fn consent_digest(server: &ServerId, member: &MemberId, csr: &[u8]) -> [u8; 32] {
    sha256(&consent_bytes(server, member, csr))
}

/// `member`'s consent (signed with its signing certificate) to a signing
/// certificate for the key of `csr`, held on `server`.
pub fn sign(
    server: &ServerId,
    member: &MemberId,
    csr: &[u8],
    member_signer: &Signer,
) -> Result<Signature, CertError> {
    member_signer.sign_digest(&consent_digest(server, member, csr))
}

/// Checks the consent of `member` to a signing CSR on `server`; returns the
/// consenting certificate's fingerprint.
pub fn verify(
    store: &dyn Store,
    server: &ServerId,
    member: &MemberId,
    csr: &[u8],
    consent: Option<&Signature>,
) -> Result<Fingerprint, RegistryError> {
    let refused = |why: String| {
        RegistryError::PermissionDenied(format!(
            "a signing certificate for {member} on {server} (owned by {}) needs {member}'s consent: {why}",
            server.owner
        ))
    };
    if !store.member_exists(member)? {
        return Err(
            crate::store::StoreError::Missing(format!("member {member} does not exist")).into(),
        );
    }
    let consent = consent.ok_or_else(|| {
        refused(
            "the CSR carries no consent signature by a signing certificate of that member".into(),
        )
    })?;
    let fp = Fingerprint::from_slice(&consent.signer_certificate_sha256)
        .ok_or_else(|| refused("the consent names no certificate".into()))?;
    let cert = match store.certificate(&fp)? {
        Some(c) if c.signing_member.as_ref() == Some(member) && !c.revoked => c,
        Some(c) if c.signing_member.as_ref() == Some(member) => {
            return Err(refused(format!(
                "the consenting certificate {fp} is revoked"
            )));
        }
        _ => {
            return Err(refused(format!(
                "{fp} is not a registered signing certificate of {member}"
            )));
        }
    };
    VerifyingKey::from_cert(&cert.der)?
        .verify(consent, &consent_digest(server, member, csr))
        .map_err(|e| refused(format!("the consent signature does not verify: {e}")))?;
    Ok(fp)
}

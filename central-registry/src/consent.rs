//! Checking a member's consent to a signing certificate in its name on
//! another member's security server.
//!
//! A security server may ask for signing certificates for its owner. A
//! signing CSR for any other member needs that member's consent in the same
//! request: a signature, with one of its registered and unrevoked signing
//! certificates, over the server that will hold the key, the member, and
//! the CSR's SHA-256 ([`lienthong_registry_client::consent`] says how it
//! is encoded and signed). Without it, a member could obtain a certificate
//! in another member's name for a key it holds itself.

use lienthong_certs::Fingerprint;
use lienthong_certs::signing::VerifyingKey;
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::exchange::v1::Signature;
use lienthong_registry_client::consent::consent_digest;

use crate::error::RegistryError;
use crate::store::Store;

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

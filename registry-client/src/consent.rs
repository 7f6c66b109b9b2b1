//! A member's consent to a signing certificate in its name on another
//! member's security server: what it signs, and signing it. The registry
//! checks it against the member's registered signing certificates.
//!
//! A security server may ask for signing certificates for its owner. A
//! signing CSR for any other member needs that member's consent in the same
//! request: a signature, with one of its registered and unrevoked signing
//! certificates, over [`consent_bytes`] — the server that will hold the key,
//! the member, and the CSR's SHA-256. Without it, a member could obtain a
//! certificate in another member's name for a key it holds itself.

use lienthong_certs::CertError;
use lienthong_certs::signing::Signer;
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::exchange::v1::Signature;
use lienthong_proto::sha256;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerId {
        "VN/GOV/000102/ss1".parse().unwrap()
    }

    #[test]
    fn the_bytes_are_length_prefixed_fields_under_the_domain_tag() {
        let member: MemberId = "VN/GOV/000103".parse().unwrap();
        let bytes = consent_bytes(&server(), &member, b"csr");
        let mut expected = Vec::new();
        for f in [
            CONSENT_DOMAIN.as_bytes(),
            b"VN/GOV/000102/ss1".as_slice(),
            b"VN/GOV/000103".as_slice(),
            sha256(b"csr").as_slice(),
        ] {
            expected.extend_from_slice(&(f.len() as u32).to_be_bytes());
            expected.extend_from_slice(f);
        }
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_consent_binds_server_member_and_csr() {
        let member: MemberId = "VN/GOV/000103".parse().unwrap();
        let other: MemberId = "VN/GOV/000104".parse().unwrap();
        let base = consent_digest(&server(), &member, b"csr");
        assert_ne!(base, consent_digest(&server(), &other, b"csr"));
        assert_ne!(base, consent_digest(&server(), &member, b"csr2"));
        let ss2: ServerId = "VN/GOV/000102/ss2".parse().unwrap();
        assert_ne!(base, consent_digest(&ss2, &member, b"csr"));
    }
}

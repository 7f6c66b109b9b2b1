//! Signing and verifying the global configuration.
//!
//! The registry signs the exact serialized bytes of a `GlobalConfiguration`
//! with its configuration key; a security server accepts a document only if
//! a key named in its anchor signed it, it is for the anchor's instance, it
//! is newer than the one it holds, and it has not expired.

use std::time::{Duration, SystemTime};

use lienthong_proto::canonical;
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_proto::time::unix_ms;
use prost::Message;

use crate::signing::{Signer, VerifyingKey};
use crate::{CertError, Fingerprint};

/// Largest configuration accepted, in bytes (50,000 services fit in a few MiB).
pub const MAX_CONFIGURATION_BYTES: usize = 64 * 1024 * 1024;
/// How far in the future a configuration's creation time may lie (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("configuration is {0} bytes; at most {MAX_CONFIGURATION_BYTES} are accepted")]
    TooLarge(usize),
    #[error("configuration carries no signature")]
    Unsigned,
    #[error("configuration is signed by certificate {0}, which the anchor does not name")]
    UnknownSigner(String),
    #[error("configuration signature does not verify: {0}")]
    BadSignature(CertError),
    #[error("configuration cannot be decoded: {0}")]
    Decode(String),
    #[error("configuration is for instance {found:?}, but the anchor is for {expected:?}")]
    WrongInstance { expected: String, found: String },
    #[error(
        "configuration version {got} is not newer than the held version {held} (rollback refused)"
    )]
    NotNewer { held: u64, got: u64 },
    #[error("configuration version {version} expired at unix ms {expires_at} (now {now})")]
    Expired {
        version: u64,
        expires_at: i64,
        now: i64,
    },
    #[error(
        "configuration version {version} was created in the future (unix ms {created_at}, now {now}); check the clocks"
    )]
    FromTheFuture {
        version: u64,
        created_at: i64,
        now: i64,
    },
    #[error("anchor names no usable configuration signing certificate: {0}")]
    BadAnchor(String),
}

/// Signs a configuration with the registry's configuration key.
pub fn sign_configuration(
    conf: &GlobalConfiguration,
    signer: &Signer,
) -> Result<SignedConfiguration, CertError> {
    let bytes = conf.encode_to_vec();
    let digest = canonical::digest(&canonical::configuration(&bytes));
    Ok(SignedConfiguration {
        configuration: bytes,
        signature: Some(signer.sign_digest(&digest)?),
    })
}

/// Verifies a distributed configuration against the anchor.
///
/// `held_version` is the version the caller already trusts (none on first
/// download); the new one must be strictly newer.
pub fn verify_configuration(
    anchor: &Anchor,
    signed: &SignedConfiguration,
    held_version: Option<u64>,
    now: SystemTime,
) -> Result<GlobalConfiguration, ConfError> {
    let conf = verify_signature_and_decode(anchor, signed)?;
    check_current(anchor, &conf, held_version, now)?;
    Ok(conf)
}

/// Checks signature and decodes, without the freshness checks (used to read
/// a cached copy and report why it is unusable).
pub fn verify_signature_and_decode(
    anchor: &Anchor,
    signed: &SignedConfiguration,
) -> Result<GlobalConfiguration, ConfError> {
    if signed.configuration.len() > MAX_CONFIGURATION_BYTES {
        return Err(ConfError::TooLarge(signed.configuration.len()));
    }
    let sig = signed.signature.as_ref().ok_or(ConfError::Unsigned)?;
    let signer_fp = Fingerprint::from_slice(&sig.signer_certificate_sha256)
        .map(|f| f.to_string())
        .unwrap_or_else(|| hex::encode(&sig.signer_certificate_sha256));
    let key = anchor
        .configuration_signing_certificates
        .iter()
        .find(|c| Fingerprint::of(c).0.as_slice() == sig.signer_certificate_sha256.as_slice())
        .ok_or(ConfError::UnknownSigner(signer_fp))?;
    let key = VerifyingKey::from_cert(key).map_err(|e| ConfError::BadAnchor(e.to_string()))?;
    let digest = canonical::digest(&canonical::configuration(&signed.configuration));
    key.verify(sig, &digest).map_err(ConfError::BadSignature)?;
    GlobalConfiguration::decode(signed.configuration.as_slice())
        .map_err(|e| ConfError::Decode(e.to_string()))
}

/// The freshness rules: right instance, newer than held, created not in the
/// future, not expired.
pub fn check_current(
    anchor: &Anchor,
    conf: &GlobalConfiguration,
    held_version: Option<u64>,
    now: SystemTime,
) -> Result<(), ConfError> {
    if conf.instance != anchor.instance {
        return Err(ConfError::WrongInstance {
            expected: anchor.instance.clone(),
            found: conf.instance.clone(),
        });
    }
    if let Some(held) = held_version
        && conf.version <= held
    {
        return Err(ConfError::NotNewer {
            held,
            got: conf.version,
        });
    }
    let now = unix_ms(now);
    if conf.created_at_unix_ms > now + MAX_CLOCK_SKEW.as_millis() as i64 {
        return Err(ConfError::FromTheFuture {
            version: conf.version,
            created_at: conf.created_at_unix_ms,
            now,
        });
    }
    if conf.expires_at_unix_ms <= now {
        return Err(ConfError::Expired {
            version: conf.version,
            expires_at: conf.expires_at_unix_ms,
            now,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyAlgorithm;
    use crate::test_support::signing_pair;

    fn setup() -> (Signer, Anchor) {
        let (key, cert) = signing_pair(KeyAlgorithm::EcdsaP256, "VN/GOV/000001");
        let anchor = Anchor {
            instance: "VN".into(),
            configuration_signing_certificates: vec![cert.to_vec()],
            ..Default::default()
        };
        (Signer::new(&key, &cert).unwrap(), anchor)
    }

    fn conf(version: u64) -> GlobalConfiguration {
        let now = unix_ms(SystemTime::now());
        GlobalConfiguration {
            instance: "VN".into(),
            version,
            created_at_unix_ms: now,
            expires_at_unix_ms: now + 600_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_signed_current_configuration_verifies_with_only_the_anchor() {
        let (signer, anchor) = setup();
        let signed = sign_configuration(&conf(3), &signer).unwrap();
        let got = verify_configuration(&anchor, &signed, Some(2), SystemTime::now()).unwrap();
        assert_eq!(got.version, 3);
    }

    #[test]
    fn tampered_configuration_is_refused() {
        let (signer, anchor) = setup();
        let mut signed = sign_configuration(&conf(3), &signer).unwrap();
        let last = signed.configuration.len() - 1;
        signed.configuration[last] ^= 1;
        assert!(matches!(
            verify_configuration(&anchor, &signed, None, SystemTime::now()),
            Err(ConfError::BadSignature(_))
        ));
    }

    #[test]
    fn foreign_signer_is_refused() {
        let (signer, _) = setup();
        let (_, other_anchor) = setup();
        let signed = sign_configuration(&conf(3), &signer).unwrap();
        assert!(matches!(
            verify_configuration(&other_anchor, &signed, None, SystemTime::now()),
            Err(ConfError::UnknownSigner(_))
        ));
    }

    #[test]
    fn expired_older_and_foreign_instance_are_refused() {
        let (signer, anchor) = setup();
        let mut old = conf(3);
        old.expires_at_unix_ms = old.created_at_unix_ms - 1;
        let signed = sign_configuration(&old, &signer).unwrap();
        let err = verify_configuration(&anchor, &signed, None, SystemTime::now()).unwrap_err();
        assert!(
            matches!(err, ConfError::Expired { version: 3, .. }),
            "{err}"
        );

        let signed = sign_configuration(&conf(3), &signer).unwrap();
        let err = verify_configuration(&anchor, &signed, Some(3), SystemTime::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration version 3 is not newer than the held version 3 (rollback refused)"
        );

        let mut foreign = conf(4);
        foreign.instance = "VN-TEST".into();
        let signed = sign_configuration(&foreign, &signer).unwrap();
        assert!(matches!(
            verify_configuration(&anchor, &signed, None, SystemTime::now()),
            Err(ConfError::WrongInstance { .. })
        ));

        let mut future = conf(5);
        future.created_at_unix_ms += 3_600_000;
        future.expires_at_unix_ms += 3_600_000;
        let signed = sign_configuration(&future, &signer).unwrap();
        assert!(matches!(
            verify_configuration(&anchor, &signed, None, SystemTime::now()),
            Err(ConfError::FromTheFuture { .. })
        ));
    }

    #[test]
    fn unsigned_is_refused() {
        let (_, anchor) = setup();
        let unsigned = SignedConfiguration {
            configuration: conf(1).encode_to_vec(),
            signature: None,
        };
        assert!(matches!(
            verify_configuration(&anchor, &unsigned, None, SystemTime::now()),
            Err(ConfError::Unsigned)
        ));
    }
}

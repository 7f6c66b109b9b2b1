//! Certificate verification: chain to a trusted CA, validity window, key
//! usage, and the Lienthong identity the certificate names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_proto::id::{MemberId, ServerId};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::CertError;

/// DER value of the id-kp-serverAuth OID (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER value of the id-kp-clientAuth OID (1.3.6.1.5.5.7.3.2).
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Largest certificate accepted, in bytes.
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// What a certificate is being checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A security server accepting a TLS connection from a peer (the peer is a client).
    TlsClient,
    /// A security server connecting to a peer (the peer is a server).
    TlsServer,
    /// A member's message signature.
    Signing,
}

/// The fields of a certificate that Lienthong decides on.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub common_name: String,
    pub is_ca: bool,
    /// DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    pub digital_signature: bool,
    pub key_cert_sign: bool,
    /// Whether an extended-key-usage extension is present at all.
    pub has_eku: bool,
    pub eku_server_auth: bool,
    pub eku_client_auth: bool,
    pub not_before: i64,
    pub not_after: i64,
}

/// Parses the fields Lienthong needs; refuses trailing or oversized data.
pub fn parse(der: &[u8]) -> Result<CertInfo, CertError> {
    if der.len() > MAX_CERT_LEN {
        return Err(CertError::Malformed(format!(
            "{} bytes; at most {MAX_CERT_LEN} are accepted",
            der.len()
        )));
    }
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(
            "trailing bytes after the certificate".into(),
        ));
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let ku = cert
        .key_usage()
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let bc = cert
        .basic_constraints()
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    Ok(CertInfo {
        common_name,
        is_ca: bc.is_some_and(|b| b.value.ca),
        public_key_der: cert.public_key().raw.to_vec(),
        digital_signature: ku.as_ref().is_some_and(|k| k.value.digital_signature()),
        key_cert_sign: ku.as_ref().is_some_and(|k| k.value.key_cert_sign()),
        has_eku: eku.is_some(),
        eku_server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
        eku_client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Trust anchors from CA certificates.
pub fn anchors(cas: &[CertificateDer<'_>]) -> Result<Vec<TrustAnchor<'static>>, CertError> {
    cas.iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| CertError::Malformed(format!("CA certificate: {e}")))
        })
        .collect()
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

/// A Unix time in seconds as RFC 3339, for messages people read.
pub fn fmt_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix {secs}"))
}

/// Maps webpki's verdict to an error that names what is wrong.
fn map_webpki(e: webpki::Error, info: &CertInfo, now: SystemTime) -> CertError {
    let now_s = lienthong_proto::time::unix_secs(now);
    match e {
        webpki::Error::UnknownIssuer => CertError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertError::Expired {
            not_after: fmt_time(info.not_after),
            now: fmt_time(now_s),
        },
        webpki::Error::CertNotValidYet { .. } => CertError::NotYetValid {
            not_before: fmt_time(info.not_before),
            now: fmt_time(now_s),
        },
        #[allow(deprecated)]
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
            CertError::WrongKeyUsage(
                "the extended key usage does not allow TLS for this role".into(),
            )
        }
        webpki::Error::InvalidSignatureForPublicKey => CertError::BadCertificateSignature,
        webpki::Error::CaUsedAsEndEntity => {
            CertError::WrongKeyUsage("a CA certificate cannot be used as an end entity".into())
        }
        other => CertError::Chain(other.to_string()),
    }
}

/// Verifies `der` for `usage`: chain to one of `anchors`, validity at `now`,
/// and key usage. Returns the parsed certificate on success.
pub fn verify_cert(
    der: &CertificateDer<'_>,
    anchors: &[TrustAnchor<'_>],
    now: SystemTime,
    usage: Usage,
) -> Result<CertInfo, CertError> {
    let info = parse(der)?;
    if info.is_ca {
        return Err(CertError::WrongKeyUsage(
            "a CA certificate cannot be used as an end entity".into(),
        ));
    }
    if !info.digital_signature {
        return Err(CertError::WrongKeyUsage(
            "key usage lacks digitalSignature".into(),
        ));
    }
    let eku = match usage {
        Usage::TlsClient => KeyUsage::required(EKU_CLIENT_AUTH),
        Usage::TlsServer => KeyUsage::required(EKU_SERVER_AUTH),
        Usage::Signing => {
            if info.has_eku || info.key_cert_sign {
                return Err(CertError::WrongKeyUsage(
                    "a signing certificate must allow digital signature only (this one is a TLS or CA certificate)".into(),
                ));
            }
            KeyUsage::required_if_present(EKU_CLIENT_AUTH)
        }
    };
    let ee = EndEntityCert::try_from(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &[],
        unix(now),
        eku,
        None,
        None,
    )
    .map_err(|e| map_webpki(e, &info, now))?;
    Ok(info)
}

/// The security server an auth certificate names.
pub fn auth_identity(der: &[u8]) -> Result<ServerId, CertError> {
    let info = parse(der)?;
    info.common_name
        .parse()
        .map_err(|e| CertError::NoIdentity(format!("{:?}: {e}", info.common_name)))
}

/// The member a signing certificate names.
pub fn signing_identity(der: &[u8]) -> Result<MemberId, CertError> {
    let info = parse(der)?;
    info.common_name
        .parse()
        .map_err(|e| CertError::NoIdentity(format!("{:?}: {e}", info.common_name)))
}

/// `found`, unless it differs from `expected`.
fn expect_identity<T: PartialEq + std::fmt::Display>(
    found: T,
    expected: Option<&T>,
) -> Result<T, CertError> {
    match expected {
        Some(e) if e != &found => Err(CertError::WrongIdentity {
            expected: e.to_string(),
            found: found.to_string(),
        }),
        _ => Ok(found),
    }
}

/// Verifies a security server's auth certificate and returns the server it
/// names; `expected` additionally requires that identity.
pub fn verify_auth_cert(
    der: &CertificateDer<'_>,
    anchors: &[TrustAnchor<'_>],
    now: SystemTime,
    usage: Usage,
    expected: Option<&ServerId>,
) -> Result<ServerId, CertError> {
    verify_cert(der, anchors, now, usage)?;
    expect_identity(auth_identity(der)?, expected)
}

/// Verifies a member's signing certificate and returns the member it names;
/// `expected` additionally requires that identity.
pub fn verify_signing_cert(
    der: &CertificateDer<'_>,
    anchors: &[TrustAnchor<'_>],
    now: SystemTime,
    expected: Option<&MemberId>,
) -> Result<MemberId, CertError> {
    verify_cert(der, anchors, now, Usage::Signing)?;
    expect_identity(signing_identity(der)?, expected)
}

#[cfg(test)]
mod tests;

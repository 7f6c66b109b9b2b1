use crate::Fingerprint;

/// Why a key, CSR or certificate was refused. Each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what}: not valid PEM: {detail}")]
    BadPem { what: String, detail: String },
    #[error("{what}: no {label} block found (the file may be truncated or of another kind)")]
    NoPemBlock { what: String, label: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to overwrite existing key file {0}")]
    KeyFileExists(String),
    #[error("private key is not usable: {0}")]
    BadKey(String),
    #[error("certificate signing request is malformed: {0}")]
    BadCsr(String),
    #[error(
        "{purpose} key {found} is refused by the key policy: {purpose} keys must be {accepted}"
    )]
    KeyPolicy {
        purpose: String,
        found: String,
        accepted: &'static str,
    },
    #[error(
        "certificate signing request signature does not verify: no proof of possession of the key"
    )]
    CsrProofOfPossession,
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    #[error("certificate was not issued by a trusted CA (unknown issuer)")]
    UnknownIssuer,
    #[error(
        "certificate was not issued by a trusted CA (its signature does not verify against the trusted CA of the same name)"
    )]
    BadCertificateSignature,
    #[error("certificate expired at {not_after} (checked at {now})")]
    Expired { not_after: String, now: String },
    #[error("certificate is not valid until {not_before} (checked at {now})")]
    NotYetValid { not_before: String, now: String },
    #[error("certificate has the wrong key usage: {0}")]
    WrongKeyUsage(String),
    #[error("certificate identity {found} does not match the expected {expected}")]
    WrongIdentity { expected: String, found: String },
    #[error("certificate subject does not name a Lienthong identity: {0}")]
    NoIdentity(String),
    #[error("certificate {0} is not pinned by the global configuration (unknown or revoked)")]
    NotPinned(Fingerprint),
    #[error("certificate {0} is revoked by the global configuration")]
    Revoked(Fingerprint),
    #[error("certificate chain is invalid: {0}")]
    Chain(String),
    #[error("signature algorithm {0} does not match the key of the signer certificate")]
    AlgorithmMismatch(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("signature batch path is malformed: {0}")]
    BadBatch(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generate(e.to_string())
    }
}

//! The registry's errors and their one mapping to gRPC statuses.

use lienthong_certs::CertError;
use tonic::{Code, Status};

use crate::store::StoreError;

/// The registry's fault codes (`lt-fault`) and their statuses;
/// `docs/faults.md` lists them for people.
pub const REGISTRY_FAULTS: &[(&str, Code)] = &[
    (crate::throttle::FAULT_THROTTLED, Code::ResourceExhausted),
    (crate::throttle::FAULT_BAD_BODY, Code::InvalidArgument),
    (crate::witness::FAULT_ALARM, Code::FailedPrecondition),
    (crate::witness::FAULT_STALE_BASE, Code::FailedPrecondition),
];

/// Why a registry call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No or an unknown credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller without the right.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request itself is malformed (bad identifier, oversized field…).
    #[error("{0}")]
    Invalid(String),
    /// A certificate, CSR or signature was refused.
    #[error("{0}")]
    Certificate(#[from] CertError),
    /// The store refused the change or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry cannot serve right now (e.g. no configuration yet).
    #[error("{0}")]
    Unavailable(String),
}

impl RegistryError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        RegistryError::Invalid(msg.into())
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            RegistryError::Unauthenticated(_) => Code::Unauthenticated,
            RegistryError::PermissionDenied(_) => Code::PermissionDenied,
            RegistryError::Invalid(_) | RegistryError::Certificate(_) => Code::InvalidArgument,
            RegistryError::Store(StoreError::Duplicate(_)) => Code::AlreadyExists,
            RegistryError::Store(StoreError::Missing(_)) => Code::NotFound,
            RegistryError::Store(StoreError::Conflict(_)) => Code::FailedPrecondition,
            RegistryError::Store(StoreError::Internal(_)) => Code::Internal,
            RegistryError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<lienthong_proto::id::IdError> for RegistryError {
    fn from(e: lienthong_proto::id::IdError) -> Self {
        RegistryError::Invalid(e.to_string())
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Status {
        let code = e.code();
        if code == Code::Internal {
            // Store internals stay in the registry's log.
            tracing::error!(error = %e, "registry failure");
            return Status::internal("registry store failure; the registry's log has the details");
        }
        Status::new(code, e.to_string())
    }
}

/// Runs blocking store or signing work off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RegistryError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Store(StoreError::Internal(format!("worker failed: {e}"))))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_table_matches_the_documentation() {
        let doc = include_str!("../../docs/faults.md");
        for (code, status) in REGISTRY_FAULTS {
            let row = format!("| `{code}` | {status:?} |");
            assert!(doc.contains(&row), "docs/faults.md lacks {row}");
        }
    }

    #[test]
    fn status_table() {
        let table: Vec<(RegistryError, Code)> = vec![
            (
                RegistryError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (
                RegistryError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (RegistryError::invalid("x"), Code::InvalidArgument),
            (CertError::BadSignature.into(), Code::InvalidArgument),
            (
                StoreError::Duplicate("x".into()).into(),
                Code::AlreadyExists,
            ),
            (StoreError::Missing("x".into()).into(), Code::NotFound),
            (
                StoreError::Conflict("x".into()).into(),
                Code::FailedPrecondition,
            ),
            (
                StoreError::Internal("secret detail".into()).into(),
                Code::Internal,
            ),
            (RegistryError::Unavailable("x".into()), Code::Unavailable),
        ];
        for (err, code) in table {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("secret detail"));
        }
    }
}

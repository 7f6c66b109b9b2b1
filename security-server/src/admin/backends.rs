//! `POST /api/backends`: an admin sets where a provided service is served
//! (URL and timeout), by the same rules as `lienthong server backend set`
//! ([`backend_of`] serves both). The change is audited, and in force when
//! the answer comes back.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lienthong_proto::id::{IdError, ServiceId};
use serde::{Deserialize, Serialize};

use super::Admin;
use super::api::{ActionStatus, change, json_change};
use crate::store::{
    Backend, BackendUrlError, DEFAULT_BACKEND_TIMEOUT, StoreError, check_backend_url,
};

/// Longest backend timeout: ten minutes.
pub const MAX_BACKEND_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST /api/backends`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendChange {
    /// `PROVIDER_SUBSYSTEM/grpc.Service`.
    pub service: String,
    /// `http://host:port` (h2c).
    pub url: String,
    /// How long the backend may take to answer; none: 30 s.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why a backend change names no backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("service {given:?}: {source}")]
    Service {
        given: String,
        #[source]
        source: IdError,
    },
    #[error("give the service without a version: PROVIDER_SUBSYSTEM/grpc.Service")]
    Versioned,
    #[error(transparent)]
    Url(#[from] BackendUrlError),
    #[error("timeout {0} ms: 1 ms to 600,000 ms (ten minutes)")]
    Timeout(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ActionStatus for BackendError {
    fn status(&self) -> StatusCode {
        match self {
            BackendError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses a backend change into the backend to store.
pub fn backend_of(change: &BackendChange) -> Result<Backend, BackendError> {
    let id: ServiceId = change
        .service
        .trim()
        .parse()
        .map_err(|source| BackendError::Service {
            given: change.service.clone(),
            source,
        })?;
    if id.version.is_some() {
        return Err(BackendError::Versioned);
    }
    let url = change.url.trim().to_owned();
    check_backend_url(&url)?;
    let timeout = match change.timeout_ms {
        None => DEFAULT_BACKEND_TIMEOUT,
        Some(ms) if ms == 0 || Duration::from_millis(ms) > MAX_BACKEND_TIMEOUT => {
            return Err(BackendError::Timeout(ms));
        }
        Some(ms) => Duration::from_millis(ms),
    };
    Ok(Backend {
        provider: id.provider,
        service: id.service.to_string(),
        url,
        timeout,
    })
}

/// What the audit log says of a backend change.
pub fn detail(change: &BackendChange) -> String {
    format!(
        "{} -> {} (timeout {} ms)",
        change.service.trim(),
        change.url.trim(),
        change
            .timeout_ms
            .unwrap_or(DEFAULT_BACKEND_TIMEOUT.as_millis() as u64)
    )
}

impl Admin {
    /// Sets a backend; in force when it returns.
    fn set_backend(&self, change: &BackendChange) -> Result<String, BackendError> {
        let b = backend_of(change)?;
        self.store.set_backend(&b)?;
        if let Some(p) = &self.policies {
            p.reload(None)?;
        }
        Ok(format!(
            "{}/{} is served by {} (timeout {} ms)",
            b.provider,
            b.service,
            b.url,
            b.timeout.as_millis()
        ))
    }
}

pub(super) async fn set(
    State(a): State<Admin>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    change(
        a,
        headers,
        body,
        json_change,
        |a, op, change: BackendChange| {
            a.act(op, "set backend", detail(&change), || {
                a.set_backend(&change)
            })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(service: &str, url: &str, timeout_ms: Option<u64>) -> BackendChange {
        BackendChange {
            service: service.into(),
            url: url.into(),
            timeout_ms,
        }
    }

    #[test]
    fn backends_are_parsed_as_the_cli_parses_them() {
        let svc = "VN/GOV/000102/population/population.v1.PersonRegistry";
        let b = backend_of(&change(svc, " http://127.0.0.1:9000 ", Some(1500))).unwrap();
        assert_eq!(b.url, "http://127.0.0.1:9000");
        assert_eq!(b.service, "population.v1.PersonRegistry");
        assert_eq!(b.timeout, Duration::from_millis(1500));
        let b = backend_of(&change(svc, "http://10.0.0.1:80", None)).unwrap();
        assert_eq!(b.timeout, DEFAULT_BACKEND_TIMEOUT);
        let refused = [
            change("not a service", "http://127.0.0.1:9000", None),
            change(&format!("{svc}/v1"), "http://127.0.0.1:9000", None),
            change(svc, "https://127.0.0.1:9000", None),
            change(svc, "http://127.0.0.1:9000/path", None),
            change(svc, "<script>", None),
            change(svc, "http://127.0.0.1:9000", Some(0)),
            change(svc, "http://127.0.0.1:9000", Some(600_001)),
        ];
        for c in refused {
            assert!(backend_of(&c).is_err(), "{c:?}");
        }
    }
}

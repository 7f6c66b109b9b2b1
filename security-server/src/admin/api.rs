//! The operators' API on the admin port, behind a bearer token
//! (`Authorization: Bearer lts_…`, see [`super::operators`]): what the
//! server's console shows and does, as JSON.
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /api/whoami` | any | the token's operator and role |
//! | `GET /api/status` | any | identity, configuration, certificate, health checks, log |
//! | `GET /api/clients` | any | this server's client subsystems, pins, body logging |
//! | `GET /api/services` | any | backends, and whether the configuration lists each service here |
//! | `GET /api/access` | any | the access rights |
//! | `POST /api/backends` | admin | set a service's backend ([`super::backends::BackendChange`], JSON) |
//! | `GET /api/log` | any | the message log's self-audit and latest witnessed checkpoints |
//! | `POST /api/access` | admin | grant or revoke one ([`AccessChange`], JSON) |
//! | `GET /api/audit` | any | the operators' audit log, newest first |
//! | `POST /maintenance` | admin | `on` or `off` |
//!
//! A bearer token in a header is never sent by a browser on its own, so
//! these routes cannot be triggered cross-site. Every action of a known
//! operator is audited, refusals included; a grant is in force on return.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lienthong_proto::id::{IdError, ServiceId, SubsystemId};
use serde::{Deserialize, Serialize};

use super::Admin;
use super::operators::{self, AuditRecord, Operator, Role};
use crate::access::{AccessRule, Subject};
use crate::server::ServerIdError;
use crate::store::StoreError;
use lienthong_proto::time::unix_ms;

/// Why an access change does not name a rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("subject {given:?}: {source}")]
    Subject {
        given: String,
        #[source]
        source: IdError,
    },
    #[error("service {given:?}: {source}")]
    Service {
        given: String,
        #[source]
        source: IdError,
    },
    #[error("give the service without a version: PROVIDER_SUBSYSTEM/grpc.Service")]
    Versioned,
    #[error("method {0:?} is not a gRPC method name")]
    Method(String),
}

/// Why the server's own state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    ServerId(#[from] ServerIdError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an operator's action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("no global configuration to check the service against")]
    NoConfiguration,
    #[error(
        "{provider} is not a client of this server ({server}) in configuration version {version}"
    )]
    NotAClient {
        provider: Box<SubsystemId>,
        server: Box<lienthong_proto::id::ServerId>,
        version: u64,
    },
    #[error("{provider} offers no service {service} in configuration version {version}")]
    NotOffered {
        provider: Box<SubsystemId>,
        service: String,
        version: u64,
    },
    #[error("no such grant: {0}")]
    NoSuchGrant(Box<AccessRule>),
    #[error("action {0:?}: grant or revoke")]
    UnknownAction(String),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        ActionError::Read(ReadError::Store(e))
    }
}

/// A refused action's HTTP status.
pub(super) trait ActionStatus: std::fmt::Display {
    fn status(&self) -> StatusCode;
}

impl ActionStatus for ActionError {
    /// The HTTP status this refusal is answered with.
    fn status(&self) -> StatusCode {
        match self {
            ActionError::NoSuchGrant(_) => StatusCode::NOT_FOUND,
            ActionError::Read(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The configuration in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfSummary {
    pub version: u64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub expired: bool,
}

/// One health check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// `GET /api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub server: String,
    pub configuration: Option<ConfSummary>,
    /// The auth certificate's not-after, Unix seconds.
    pub auth_not_after: i64,
    pub checks: Vec<CheckView>,
    pub maintenance: bool,
}

/// One client subsystem of this server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientView {
    pub subsystem: String,
    /// Whether the configuration in force lists it on this server.
    pub registered: bool,
    /// Pinned information systems' certificates (SHA-256).
    pub pins: Vec<String>,
    pub bodies_logged: bool,
    /// Its member's signing certificates by the configuration in force.
    #[serde(default)]
    pub signing_certs: Vec<SigningCertView>,
}

/// A member's signing certificate, by the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningCertView {
    /// SHA-256 of the certificate, hex.
    pub sha256: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Revoked by the configuration in force.
    pub revoked: bool,
}

/// `GET /api/clients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientsView {
    pub server: String,
    /// Where other servers reach this one, by the configuration.
    pub address: String,
    /// Auth certificates the configuration pins for it (SHA-256).
    pub auth_certs: Vec<String>,
    pub clients: Vec<ClientView>,
}

/// One provided service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    /// `PROVIDER_SUBSYSTEM/grpc.Service`.
    pub service: String,
    pub backend_url: Option<String>,
    pub timeout_ms: Option<u64>,
    /// The configuration lists the service and this server serves its provider.
    pub provided_here: bool,
    pub personal_data: bool,
}

/// One access right.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    /// A subsystem, or `group:INSTANCE/GROUP`.
    pub subject: String,
    /// `PROVIDER_SUBSYSTEM/grpc.Service`.
    pub service: String,
    /// One method, or none for the whole service.
    pub method: Option<String>,
}

/// `POST /api/access`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessChange {
    /// `grant` or `revoke`.
    pub action: String,
    /// A subsystem, or `group:INSTANCE/GROUP`.
    pub subject: String,
    /// `PROVIDER_SUBSYSTEM/grpc.Service`.
    pub service: String,
    #[serde(default)]
    pub method: Option<String>,
}

/// A refusal's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

pub(super) fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(ApiError { error: why.into() })).into_response()
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Subsystem(s) => s.to_string(),
        Subject::Group(g) => format!("group:{g}"),
    }
}

/// Parses an access change into a rule (the same rules as
/// `lienthong server acl`).
pub fn rule_of(change: &AccessChange) -> Result<AccessRule, RuleError> {
    let subject: Subject = change
        .subject
        .trim()
        .parse()
        .map_err(|source| RuleError::Subject {
            given: change.subject.clone(),
            source,
        })?;
    let id: ServiceId = change
        .service
        .trim()
        .parse()
        .map_err(|source| RuleError::Service {
            given: change.service.clone(),
            source,
        })?;
    if id.version.is_some() {
        return Err(RuleError::Versioned);
    }
    let method = change
        .method
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    if let Some(m) = &method
        && !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(RuleError::Method(m.clone()));
    }
    Ok(AccessRule {
        subject,
        provider: id.provider,
        service: id.service.to_string(),
        method,
    })
}

impl Admin {
    /// The operator a request's bearer token names, or the 401 to answer.
    #[allow(clippy::result_large_err)]
    pub(super) fn operator(&self, headers: &HeaderMap) -> Result<Operator, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        match operators::authenticate(&self.store, token) {
            Ok(Some(op)) => Ok(op),
            Ok(None) => {
                tracing::info!(
                    given = !token.is_empty(),
                    "admin port: request without a known operator token"
                );
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "an operator token is required: Authorization: Bearer lts_… (lienthong server operator add)",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                Err(r)
            }
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    }

    /// An admin's action: refused (and audited) for an observer; `act`'s
    /// outcome audited otherwise.
    pub(super) fn act<E: ActionStatus>(
        &self,
        op: &Operator,
        action: &str,
        detail: String,
        act: impl FnOnce() -> Result<String, E>,
    ) -> Response {
        let (status, result, answer) = if op.role != Role::Admin {
            let why = format!("{} is an observer and may not {action}", op.name);
            (StatusCode::FORBIDDEN, why.clone(), why)
        } else {
            match act() {
                Ok(done) => (StatusCode::OK, "ok".to_owned(), done),
                Err(e) => (e.status(), e.to_string(), e.to_string()),
            }
        };
        let record = AuditRecord {
            at_unix_ms: unix_ms(SystemTime::now()),
            actor: op.name.clone(),
            action: action.to_owned(),
            detail,
            result,
        };
        if let Err(e) = operators::audit(&self.store, record) {
            // An action that cannot be audited is not done silently.
            tracing::error!(error = %e, "the operators' audit log cannot be written");
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("audit log: {e}"));
        }
        if status.is_success() {
            tracing::info!(operator = %op.name, action, "operator action");
            (status, Json(serde_json::json!({ "done": answer }))).into_response()
        } else {
            error(status, answer)
        }
    }

    fn status_view(&self) -> StatusView {
        let now = SystemTime::now();
        StatusView {
            server: crate::server_id(&self.store)
                .map_or_else(|e| e.to_string(), |id| id.to_string()),
            configuration: self.conf.view().map(|v| ConfSummary {
                version: v.version,
                created_at_ms: v.created_at_ms,
                expires_at_ms: v.expires_at_ms,
                expired: v.is_expired(now),
            }),
            auth_not_after: self.auth_not_after,
            checks: self
                .health()
                .into_iter()
                .map(|(name, (ok, detail))| CheckView {
                    name: name.to_owned(),
                    ok,
                    detail,
                })
                .collect(),
            maintenance: self.maintenance.load(Ordering::Relaxed),
        }
    }

    fn clients_view(&self) -> Result<ClientsView, ReadError> {
        let me = crate::server_id(&self.store)?;
        let view = self.conf.view();
        let entry = view.as_ref().and_then(|v| v.server(&me));
        let pins = self.store.client_pins()?;
        let bodies = self.store.body_logging()?;
        let mut names: BTreeSet<SubsystemId> = BTreeSet::new();
        if let Some(e) = entry {
            names.extend(e.clients.iter().cloned());
        }
        names.extend(pins.iter().map(|(s, _)| s.clone()));
        names.extend(bodies.iter().cloned());
        let signing_of = |s: &SubsystemId| -> Vec<SigningCertView> {
            let Some(v) = &view else { return Vec::new() };
            let mut certs: Vec<SigningCertView> = v
                .signing_certs_of(&s.member)
                .map(|(fp, c)| SigningCertView {
                    sha256: fp.to_string(),
                    not_before: c.not_before,
                    not_after: c.not_after,
                    revoked: v.is_revoked(fp),
                })
                .collect();
            certs.sort_by_key(|c| std::cmp::Reverse(c.not_after));
            certs
        };
        let clients = names
            .into_iter()
            .map(|s| ClientView {
                signing_certs: signing_of(&s),
                registered: entry.is_some_and(|e| e.clients.contains(&s)),
                pins: pins
                    .iter()
                    .filter(|(p, _)| *p == s)
                    .map(|(_, fp)| fp.to_string())
                    .collect(),
                bodies_logged: bodies.contains(&s),
                subsystem: s.to_string(),
            })
            .collect();
        Ok(ClientsView {
            server: me.to_string(),
            address: entry.map(|e| e.address.clone()).unwrap_or_default(),
            auth_certs: entry
                .map(|e| e.auth_certs.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            clients,
        })
    }

    fn services_view(&self) -> Result<Vec<ServiceView>, ReadError> {
        let me = crate::server_id(&self.store)?;
        let view = self.conf.view();
        let backends = self.store.backends()?;
        let rules = self.store.rules()?;
        let mut named: BTreeSet<(String, String)> = backends
            .iter()
            .map(|b| (b.provider.to_string(), b.service.clone()))
            .collect();
        named.extend(
            rules
                .iter()
                .map(|r| (r.provider.to_string(), r.service.clone())),
        );
        Ok(named
            .into_iter()
            .map(|(provider, service)| {
                let backend = backends
                    .iter()
                    .find(|b| b.provider.to_string() == provider && b.service == service);
                let id: Option<SubsystemId> = provider.parse().ok();
                let (provided_here, personal_data) = match (&view, &id) {
                    (Some(v), Some(p)) => (
                        v.serves(&me, p) && v.offers(p, &service),
                        v.handles_personal_data(p, &service),
                    ),
                    _ => (false, false),
                };
                ServiceView {
                    service: format!("{provider}/{service}"),
                    backend_url: backend.map(|b| b.url.clone()),
                    timeout_ms: backend.map(|b| b.timeout.as_millis() as u64),
                    provided_here,
                    personal_data,
                }
            })
            .collect())
    }

    fn rules_view(&self) -> Result<Vec<RuleView>, StoreError> {
        Ok(self
            .store
            .rules()?
            .iter()
            .map(|r| RuleView {
                subject: subject_text(&r.subject),
                service: format!("{}/{}", r.provider, r.service),
                method: r.method.clone(),
            })
            .collect())
    }

    /// Grants or revokes; a grant only for a service the configuration
    /// lists as provided here (as `lienthong server acl grant` without
    /// `--force`). In force when it returns.
    fn change_access(&self, change: &AccessChange) -> Result<String, ActionError> {
        let rule = rule_of(change)?;
        let done = match change.action.as_str() {
            "grant" => {
                let me = crate::server_id(&self.store).map_err(ReadError::from)?;
                match self.conf.view() {
                    None => return Err(ActionError::NoConfiguration),
                    Some(v) if !v.serves(&me, &rule.provider) => {
                        return Err(ActionError::NotAClient {
                            provider: Box::new(rule.provider),
                            server: Box::new(me),
                            version: v.version,
                        });
                    }
                    Some(v) if !v.offers(&rule.provider, &rule.service) => {
                        return Err(ActionError::NotOffered {
                            provider: Box::new(rule.provider),
                            service: rule.service,
                            version: v.version,
                        });
                    }
                    Some(_) => {}
                }
                let new = self.store.grant(&rule)?;
                format!(
                    "{}: {rule}",
                    if new { "granted" } else { "already granted" }
                )
            }
            "revoke" => {
                if !self.store.revoke(&rule)? {
                    return Err(ActionError::NoSuchGrant(Box::new(rule)));
                }
                format!("revoked: {rule}")
            }
            other => return Err(ActionError::UnknownAction(other.to_owned())),
        };
        if let Some(p) = &self.policies {
            p.reload(None)?;
        }
        Ok(done)
    }
}

fn json_or_500<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs `read` on a blocking thread (the store is SQLite) for a known operator.
pub(super) async fn read<T: Serialize + Send + 'static, E: std::fmt::Display>(
    admin: Admin,
    headers: HeaderMap,
    read: impl FnOnce(&Admin) -> Result<T, E> + Send + 'static,
) -> Response {
    let answer = tokio::task::spawn_blocking(move || match admin.operator(&headers) {
        Err(r) => r,
        Ok(_) => json_or_500(read(&admin)),
    })
    .await;
    answer.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// An operator's change, off the async threads: the caller is
/// authenticated, `parse` reads the request's body (what it refuses is a
/// 400 with its words), then `act` does the change, through
/// [`Admin::act`] (role checked, audited).
pub(super) async fn change<C: Send + 'static>(
    admin: Admin,
    headers: HeaderMap,
    body: axum::body::Bytes,
    parse: impl FnOnce(&[u8]) -> Result<C, String> + Send + 'static,
    act: impl FnOnce(&Admin, &Operator, C) -> Response + Send + 'static,
) -> Response {
    let answer = tokio::task::spawn_blocking(move || {
        let op = match admin.operator(&headers) {
            Ok(op) => op,
            Err(r) => return r,
        };
        match parse(&body) {
            Ok(c) => act(&admin, &op, c),
            Err(why) => error(StatusCode::BAD_REQUEST, why),
        }
    })
    .await;
    answer.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A change sent as JSON.
pub(super) fn json_change<C: serde::de::DeserializeOwned>(body: &[u8]) -> Result<C, String> {
    serde_json::from_slice(body).map_err(|e| format!("the change: {e}"))
}

pub(super) async fn whoami(State(a): State<Admin>, headers: HeaderMap) -> Response {
    let answer = tokio::task::spawn_blocking(move || match a.operator(&headers) {
        Ok(op) => Json(op).into_response(),
        Err(r) => r,
    })
    .await;
    answer.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn status(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, |a| {
        Ok::<_, std::convert::Infallible>(a.status_view())
    })
    .await
}

pub(super) async fn clients(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, Admin::clients_view).await
}

pub(super) async fn services(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, Admin::services_view).await
}

pub(super) async fn access(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, Admin::rules_view).await
}

pub(super) async fn audit(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, |a| operators::audit_log(&a.store)).await
}

pub(super) async fn change_access(
    State(a): State<Admin>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    change(
        a,
        headers,
        body,
        json_change,
        |a, op, change: AccessChange| {
            let detail = format!(
                "{} {} {}{}",
                change.action,
                change.subject,
                change.service,
                change
                    .method
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!("/{m}"))
                    .unwrap_or_default()
            );
            let action = if change.action == "revoke" {
                "revoke access"
            } else {
                "grant access"
            };
            a.act(op, action, detail, || a.change_access(&change))
        },
    )
    .await
}

pub(super) async fn maintenance(
    State(a): State<Admin>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parse = |body: &[u8]| match body {
        b"on" => Ok(true),
        b"off" => Ok(false),
        _ => Err("send `on` or `off`".to_owned()),
    };
    change(a, headers, body, parse, |a, op, on| {
        let word = if on { "on" } else { "off" };
        a.act(op, "maintenance", word.to_owned(), || {
            a.maintenance.store(on, Ordering::Relaxed);
            if on {
                tracing::warn!("maintenance mode on: health answers 503");
            } else {
                tracing::info!("maintenance mode off");
            }
            Ok::<_, ActionError>(format!("maintenance {word}"))
        })
    })
    .await
}

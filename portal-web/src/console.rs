//! The registry officers' console (first part): sign in with an operator
//! token, or as a person through the organisation's OpenID provider
//! ([`OfficerOidc`]), see registration requests with their CSRs' details,
//! approve or reject pending ones, read the audit log.
//!
//! Every action goes through the registry's operator API, as
//! `lienthong registry` does, so the registry checks the token's role
//! (an observer reads, only an officer decides) and writes its audit log.
//! The token stays on the server: the browser holds a session id in an
//! HttpOnly, SameSite=Strict cookie, and every form carries the session's
//! anti-forgery token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lienthong_proto::fields::printable;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use crate::console_common::{Session, Sessions, Shell, hex_of, sign_in_notice, style};
use crate::oidc::{Oidc, PendingLogin};
use crate::state::{random_token, same};

pub use crate::console_common::SESSION_TTL;

/// Per-person sign-in of officers by OpenID Connect.
///
/// The person comes from the configured claim (`personal_id_claim` of the
/// [`Oidc`] settings: a claim the provider asserts, never one a person
/// edits), the role from `role_claim`, verified with the ID token: its
/// value (a string, or a list of them) holds `officer` or `observer`.
/// The console then acts with the registry operator token of that role,
/// and writes the person's name into every decision's note, so that the
/// registry's audit log names who decided.
pub struct OfficerOidc {
    pub oidc: Oidc,
    /// The claim naming the role, e.g. `lienthong_registry_role`.
    pub role_claim: String,
    /// The registry operator token the console acts with for officers.
    pub officer_token: String,
    /// The one for observers.
    pub observer_token: String,
}

/// Most sign-ins under way at once.
const MAX_PENDING: usize = 1_000;
/// How long a sign-in at the provider may take.
const PENDING_TTL: Duration = Duration::from_secs(10 * 60);

/// The console's state.
pub struct RegistryConsole {
    anchor: Anchor,
    sessions: Sessions,
    shell: Shell,
    oidc: Option<OfficerOidc>,
    secure_cookies: bool,
    pending: std::sync::Mutex<std::collections::HashMap<String, PendingLogin>>,
}

impl RegistryConsole {
    pub fn new(anchor: Anchor, secure_cookies: bool) -> Self {
        RegistryConsole {
            anchor,
            sessions: Sessions::new("lt_console", secure_cookies),
            shell: Shell {
                product: "Lienthong registry".into(),
                role: "officers' console",
                nav: &[("/requests", "Requests"), ("/audit", "Audit log")],
                home: "/requests",
            },
            oidc: None,
            secure_cookies,
            pending: Default::default(),
        }
    }

    /// Officers may also sign in as themselves through `oidc`.
    pub fn with_oidc(mut self, oidc: OfficerOidc) -> Self {
        self.oidc = Some(oidc);
        self
    }

    fn login_cookie(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-lt_console_login"
        } else {
            "lt_console_login"
        }
    }

    /// Sessions last `ttl` instead of [`SESSION_TTL`].
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.sessions = self.sessions.with_ttl(ttl);
        self
    }

    async fn operator(
        &self,
        token: &str,
    ) -> Result<lienthong_registry_client::OperatorClient, RegistryCallError> {
        let channel = lienthong_registry_client::connect(&self.anchor, None)
            .await
            .map_err(RegistryCallError::Unreachable)?;
        lienthong_registry_client::operator_client(channel, token).map_err(RegistryCallError::Token)
    }

    fn refused(&self, status: StatusCode, title: &str, why: &str, s: Option<&Session>) -> Response {
        self.shell.refused(status, title, why, s)
    }
}

/// Why the console could not call the registry.
#[derive(Debug, thiserror::Error)]
enum RegistryCallError {
    #[error("the registry cannot be reached: {0}")]
    Unreachable(#[source] lienthong_registry_client::ClientError),
    /// The operator token is no header value.
    #[error(transparent)]
    Token(lienthong_registry_client::ClientError),
    /// The registry refused the call; its message.
    #[error("{}", .0.message())]
    Refused(Box<tonic::Status>),
    /// The registry refused a decision; its code and message.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Decision(Box<tonic::Status>),
    #[error("approve or reject")]
    UnknownDecision,
}

/// The console's routes.
pub fn router(console: Arc<RegistryConsole>) -> Router {
    Router::new()
        .route("/", get(sign_in_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/requests", get(requests))
        .route("/requests/decide", post(decide))
        .route("/oidc/start", get(oidc_start))
        .route("/auth/callback", get(oidc_callback))
        .route("/audit", get(audit))
        .route("/style.css", get(style))
        .layer(axum::middleware::map_response(crate::app::security_headers))
        .with_state(console)
}

#[derive(Deserialize)]
struct SignInQuery {
    #[serde(default)]
    expired: Option<String>,
}

async fn sign_in_page(
    State(c): State<Arc<RegistryConsole>>,
    Query(q): Query<SignInQuery>,
) -> Response {
    c.shell
        .page(
            "Sign in",
            None,
            html! {
                (sign_in_notice(q.expired.is_some()))
                @if c.oidc.is_some() {
                    p { a.button #oidc href="/oidc/start" { "Sign in with your organisation's account" } }
                    p { "Or with an operator token:" }
                }
                form method="post" action="/login" {
                    p {
                        label for="token" { "Operator token (officer or observer)" } br;
                        input #token type="password" name="token" autocomplete="off" required;
                    }
                    p { button type="submit" { "Sign in" } }
                }
            },
        )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(State(c): State<Arc<RegistryConsole>>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_owned();
    // The registry says whether the token is one of its operators'.
    let checked = async {
        c.operator(&token)
            .await?
            .list_requests(pb::ListRequestsRequest::default())
            .await
            .map_err(|s| RegistryCallError::Refused(Box::new(s)))
    };
    if let Err(why) = checked.await {
        tracing::info!(reason = %why, "console sign-in refused");
        return c.refused(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            &why.to_string(),
            None,
        );
    }
    match c
        .sessions
        .open(token, "a registry operator token".into(), None, "/requests")
    {
        Ok(r) => r,
        Err(why) => c.refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in failed",
            &why.to_string(),
            None,
        ),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => c.sessions.close(&s.id),
        Err(r) => r,
    }
}

fn kind(k: i32) -> &'static str {
    match pb::RequestKind::try_from(k).unwrap_or(pb::RequestKind::Unspecified) {
        pb::RequestKind::AuthCertificate => "new server",
        pb::RequestKind::Client => "client subsystem",
        pb::RequestKind::AddressChange => "address change",
        _ => "unknown",
    }
}

fn state(s: i32) -> &'static str {
    match pb::RequestState::try_from(s).unwrap_or(pb::RequestState::Unspecified) {
        pb::RequestState::Pending => "pending",
        pb::RequestState::Approved => "approved",
        pb::RequestState::Rejected => "rejected",
        _ => "unknown",
    }
}

fn request_markup(r: &pb::RequestSummary, csrf: &str) -> Markup {
    let server = r
        .server
        .as_ref()
        .and_then(|s| ServerId::try_from(s).ok())
        .map_or("?".to_owned(), |s| s.to_string());
    let subsystem = r
        .subsystem
        .as_ref()
        .and_then(|s| SubsystemId::try_from(s).ok())
        .map(|s| s.to_string());
    html! {
        article.access {
            h2 { "Request " (r.id) " · " (kind(r.kind)) " · " (state(r.state)) }
            dl {
                dt { "Server" } dd { (server) }
                @if let Some(s) = subsystem { dt { "Subsystem" } dd { (s) } }
                dt { "Submitted" } dd { (lienthong_certs::verify::fmt_time(r.submitted_at_unix_ms / 1000)) }
                @if !r.decision_note.is_empty() { dt { "Note" } dd { (printable(&r.decision_note)) } }
                @for csr in &r.csrs {
                    dt { @if csr.auth { "Auth key" } @else { "Signing key" } }
                    dd {
                        (printable(&csr.key_type)) ", SHA-256 " code { (hex_of(&csr.public_key_sha256)) }
                        @if let Some(m) = csr.member.as_ref().and_then(|m| MemberId::try_from(m).ok()) { ", for " (m.to_string()) }
                    }
                }
            }
            @if r.state == pb::RequestState::Pending as i32 {
                form method="post" action="/requests/decide" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="id" value=(r.id);
                    p {
                        label for=(format!("note{}", r.id)) { "Note for the audit log" } br;
                        input id=(format!("note{}", r.id)) name="note" required;
                    }
                    p {
                        button type="submit" name="decision" value="approve" { "Approve" } " "
                        button.secondary type="submit" name="decision" value="reject" { "Reject" }
                    }
                }
            }
        }
    }
}

async fn requests(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let session = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let listed = async {
        c.operator(&session.credential)
            .await?
            .list_requests(pb::ListRequestsRequest::default())
            .await
            .map(|r| r.into_inner().requests)
            .map_err(|s| RegistryCallError::Refused(Box::new(s)))
    };
    match listed.await {
        Ok(mut list) => {
            list.sort_by_key(|r| {
                (
                    r.state != pb::RequestState::Pending as i32,
                    std::cmp::Reverse(r.id),
                )
            });
            c.shell
                .page(
                    "Registration requests",
                    Some(&session),
                    html! {
                        @if list.is_empty() { p { "No requests." } }
                        @for r in &list { (request_markup(r, &session.csrf)) }
                    },
                )
                .into_response()
        }
        Err(why) => c.refused(
            StatusCode::BAD_GATEWAY,
            "The registry refused",
            &why.to_string(),
            Some(&session),
        ),
    }
}

#[derive(Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    note: String,
    #[serde(default)]
    decision: String,
}

async fn decide(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let session = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let note: String = f.note.chars().take(1000).collect();
    let req = pb::DecideRequest {
        id: f.id,
        note: match &session.person {
            Some(person) => format!("[{person}] {note}"),
            None => note,
        },
    };
    let decided = async {
        let mut op = c.operator(&session.credential).await?;
        let r = match f.decision.as_str() {
            "approve" => op.approve_request(req).await,
            "reject" => op.reject_request(req).await,
            _ => return Err(RegistryCallError::UnknownDecision),
        };
        r.map_err(|s| RegistryCallError::Decision(Box::new(s)))
    };
    match decided.await {
        Ok(_) => Redirect::to("/requests").into_response(),
        Err(why) => c.refused(
            StatusCode::FORBIDDEN,
            "The registry refused",
            &why.to_string(),
            Some(&session),
        ),
    }
}

/// The newest audit records, most recent first.
async fn audit(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let session = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let listed = async {
        c.operator(&session.credential)
            .await?
            .list_audit(pb::ListAuditRequest {
                limit: 200,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().records)
            .map_err(|s| RegistryCallError::Refused(Box::new(s)))
    };
    match listed.await {
        Ok(mut records) => {
            records.sort_by_key(|r| std::cmp::Reverse(r.id));
            c.shell.page(
                "Audit log",
                Some(&session),
                html! {
                    @for r in &records {
                        article.access {
                            h2 { (r.id) " · " (printable(&r.action)) " · " (printable(&r.result)) }
                            dl {
                                dt { "When (UTC)" } dd { (lienthong_certs::verify::fmt_time(r.at_unix_ms / 1000)) }
                                dt { "Who" } dd { (printable(&r.actor)) }
                                dt { "Detail" } dd { (printable(&r.detail)) }
                            }
                        }
                    }
                },
            )
            .into_response()
        }
        Err(why) => c.refused(
            StatusCode::BAD_GATEWAY,
            "The registry refused",
            &why.to_string(),
            Some(&session),
        ),
    }
}

// === sign-in as a person, by OpenID Connect ===

async fn oidc_start(State(c): State<Arc<RegistryConsole>>) -> Response {
    let Some(o) = &c.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (url, pending) = match o.oidc.begin().await {
        Ok(x) => x,
        Err(e) => {
            return c.refused(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                &e.to_string(),
                None,
            );
        }
    };
    let id = random_token();
    {
        let Ok(mut map) = c.pending.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        map.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            return c.refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "too many sign-ins under way",
                None,
            );
        }
        map.insert(id.clone(), pending);
    }
    let secure = if c.secure_cookies { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a cross-site navigation.
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age=600{secure}",
        c.login_cookie()
    );
    let mut r = Redirect::to(&url).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
}

/// The role `claims` give under `name`.
fn role_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'static str> {
    let has = |role: &str| match claims.get(name) {
        Some(serde_json::Value::String(s)) => s == role,
        Some(serde_json::Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(role)),
        _ => false,
    };
    if has("officer") {
        Some("officer")
    } else if has("observer") {
        Some("observer")
    } else {
        None
    }
}

async fn oidc_callback(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = &c.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refused = |why: &str| c.refused(StatusCode::BAD_REQUEST, "Sign-in refused", why, None);
    let pending = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == c.login_cookie())
        .and_then(|(_, id)| c.pending.lock().ok()?.remove(id));
    if let Some(e) = &q.error {
        return refused(&format!("the identity provider said: {e}"));
    }
    let Some(pending) = pending else {
        return refused("the sign-in is unknown or expired; start again");
    };
    if !same(&q.state, &pending.state) {
        return refused("the sign-in is not the one this browser started (state mismatch)");
    }
    let login = match o.oidc.finish(pending, &q.code).await {
        Ok(l) => l,
        Err(e) => {
            tracing::info!(error = %e, "officer sign-in refused");
            return refused(&e.to_string());
        }
    };
    let person = printable(&login.personal_id).into_owned();
    let Some(role) = role_of(&login.claims, &o.role_claim) else {
        tracing::info!(%person, "officer sign-in refused: no registry role");
        return c.refused(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!(
                "{person} holds no registry role: the identity provider's {:?} claim names neither officer nor observer",
                o.role_claim
            ),
            None,
        );
    };
    let token = if role == "officer" {
        o.officer_token.clone()
    } else {
        o.observer_token.clone()
    };
    tracing::info!(%person, role, "officer signed in");
    match c.sessions.open(
        token,
        format!("{person} ({role})"),
        Some(person),
        "/requests",
    ) {
        Ok(mut r) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
                c.login_cookie()
            )) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            r
        }
        Err(why) => c.refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in failed",
            &why.to_string(),
            None,
        ),
    }
}

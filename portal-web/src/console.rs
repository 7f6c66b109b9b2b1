//! The registry officers' console (first part): sign in with an operator
//! token, see registration requests with their CSRs' details, approve or
//! reject pending ones, read the audit log.
//!
//! Every action goes through the registry's operator API, as
//! `lienthong registry` does, so the registry checks the token's role
//! (an observer reads, only an officer decides) and writes its audit log.
//! The token stays on the server: the browser holds a session id in an
//! HttpOnly, SameSite=Strict cookie, and every form carries the session's
//! anti-forgery token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lienthong_proto::fields::printable;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::state::{random_token, same};

/// How long a console session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Most console sessions at once.
const MAX_SESSIONS: usize = 1_000;

struct Session {
    token: String,
    csrf: String,
    expires: Instant,
}

/// The console's state.
pub struct RegistryConsole {
    anchor: Anchor,
    secure_cookies: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

impl RegistryConsole {
    pub fn new(anchor: Anchor, secure_cookies: bool) -> Self {
        RegistryConsole {
            anchor,
            secure_cookies,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-lt_console"
        } else {
            "lt_console"
        }
    }

    fn cookie(&self, value: &str, clear: bool) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let age = if clear { "; Max-Age=0" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{age}{secure}",
            self.cookie_name()
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }

    /// The session's id, token and anti-forgery token.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String, String)> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie_name())
            .map(|(_, v)| v.to_owned())?;
        let mut map = self.sessions.lock().ok()?;
        match map.get(&id) {
            Some(s) if s.expires > Instant::now() => {
                Some((id.clone(), s.token.clone(), s.csrf.clone()))
            }
            Some(_) => {
                map.remove(&id);
                None
            }
            None => None,
        }
    }

    async fn operator(
        &self,
        token: &str,
    ) -> Result<lienthong_registry_client::OperatorClient, String> {
        let channel = lienthong_registry_client::connect(&self.anchor, None)
            .await
            .map_err(|e| format!("the registry cannot be reached: {e}"))?;
        lienthong_registry_client::operator_client(channel, token).map_err(|e| e.to_string())
    }
}

/// The console's routes.
pub fn router(console: Arc<RegistryConsole>) -> Router {
    Router::new()
        .route("/", get(sign_in_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/requests", get(requests))
        .route("/requests/decide", post(decide))
        .route("/audit", get(audit))
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    crate::pages::STYLE,
                )
            }),
        )
        .layer(axum::middleware::map_response(crate::app::security_headers))
        .with_state(console)
}

fn page(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Lienthong registry" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    p { strong { "Lienthong registry" } " · officers' console" }
                    @if let Some(csrf) = csrf {
                        nav aria-label="console" { a href="/requests" { "Requests" } " · " a href="/audit" { "Audit log" } }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

fn refused(status: StatusCode, title: &str, why: &str, csrf: Option<&str>) -> Response {
    (
        status,
        page(
            title,
            csrf,
            html! { p.error role="alert" { (printable(why)) } p { a href="/requests" { "Back" } } },
        ),
    )
        .into_response()
}

async fn sign_in_page() -> Response {
    page(
        "Sign in",
        None,
        html! {
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
            .map_err(|s| s.message().to_owned())
    };
    if let Err(why) = checked.await {
        tracing::info!(reason = %why, "console sign-in refused");
        return refused(StatusCode::UNAUTHORIZED, "Sign-in refused", &why, None);
    }
    let id = random_token();
    {
        let Ok(mut map) = c.sessions.lock() else {
            return refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "sessions",
                None,
            );
        };
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "too many sessions",
                None,
            );
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
    }
    let mut r = Redirect::to("/requests").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, c.cookie(&id, false));
    r
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
    let Some((id, _, csrf)) = c.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    if !same(&f.csrf, &csrf) {
        return refused(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form's anti-forgery token is missing or wrong",
            Some(&csrf),
        );
    }
    if let Ok(mut map) = c.sessions.lock() {
        map.remove(&id);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, c.cookie("", true));
    r
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

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn requests(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let Some((_, token, csrf)) = c.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let listed = async {
        c.operator(&token)
            .await?
            .list_requests(pb::ListRequestsRequest::default())
            .await
            .map(|r| r.into_inner().requests)
            .map_err(|s| s.message().to_owned())
    };
    match listed.await {
        Ok(mut list) => {
            list.sort_by_key(|r| {
                (
                    r.state != pb::RequestState::Pending as i32,
                    std::cmp::Reverse(r.id),
                )
            });
            page(
                "Registration requests",
                Some(&csrf),
                html! {
                    @if list.is_empty() { p { "No requests." } }
                    @for r in &list { (request_markup(r, &csrf)) }
                },
            )
            .into_response()
        }
        Err(why) => refused(
            StatusCode::BAD_GATEWAY,
            "The registry refused",
            &why,
            Some(&csrf),
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
    let Some((_, token, csrf)) = c.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    if !same(&f.csrf, &csrf) {
        return refused(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form's anti-forgery token is missing or wrong",
            Some(&csrf),
        );
    }
    let req = pb::DecideRequest {
        id: f.id,
        note: f.note.chars().take(1000).collect(),
    };
    let decided = async {
        let mut op = c.operator(&token).await?;
        let r = match f.decision.as_str() {
            "approve" => op.approve_request(req).await,
            "reject" => op.reject_request(req).await,
            _ => return Err("approve or reject".to_owned()),
        };
        r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    match decided.await {
        Ok(_) => Redirect::to("/requests").into_response(),
        Err(why) => refused(
            StatusCode::FORBIDDEN,
            "The registry refused",
            &why,
            Some(&csrf),
        ),
    }
}

/// The newest audit records, most recent first.
async fn audit(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let Some((_, token, csrf)) = c.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let listed = async {
        c.operator(&token)
            .await?
            .list_audit(pb::ListAuditRequest {
                limit: 200,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().records)
            .map_err(|s| s.message().to_owned())
    };
    match listed.await {
        Ok(mut records) => {
            records.sort_by_key(|r| std::cmp::Reverse(r.id));
            page(
                "Audit log",
                Some(&csrf),
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
        Err(why) => refused(
            StatusCode::BAD_GATEWAY,
            "The registry refused",
            &why,
            Some(&csrf),
        ),
    }
}

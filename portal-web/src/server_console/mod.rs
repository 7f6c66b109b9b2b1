//! A security server's operator console: sign in with one of the server's
//! operator tokens (`lienthong server operator add`), then
//!
//! - **Status**: the server's identity, the global configuration in force
//!   (version, creation, expiry), the auth certificate, every health check
//!   (message log appends, checkpoints, the log's self-audit, …), and
//!   maintenance mode to switch;
//! - **Clients**: the client subsystems the configuration lists on this
//!   server, their members' signing certificates, pinned information
//!   systems' certificates, body logging;
//! - **Services**: each service's backend and whether the configuration
//!   lists it as provided here, and the form to set a backend;
//! - **Access rights**: every grant, with the forms to grant and revoke;
//! - **Operations**: the exchanges of the last 24 hours from the message
//!   log (operational data: never payloads or personal IDs);
//! - **Message log**: the log's self-audit and its latest witnessed
//!   checkpoints;
//! - **Audit log**: what operators did here (at the console or with the
//!   command line on the server), refusals included.
//!
//! One module per page: [`status`], [`clients`], [`services`], [`access`],
//! [`operations`], [`log`], [`audit`].
//!
//! Every page and action is a call to the admin port's operators' API
//! ([`lienthong_security_server::admin::api`]) with the operator's token,
//! so the server checks the role (an observer reads, an admin acts) and
//! audits each action itself. The token stays on the console's server;
//! the browser holds a session id, and every form carries the session's
//! anti-forgery token.

mod access;
mod audit;
mod clients;
mod log;
mod operations;
mod services;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lienthong_security_server::admin::api::ApiError;
use lienthong_security_server::admin::operators::Operator;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::console_common::{Session, Sessions, Shell, both, sign_in_notice, style};
use crate::http_client::HttpClient;
use crate::i18n::console as w;

/// Why the server console could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerConsoleError {
    #[error("admin port {admin:?}: {source}")]
    AdminAddress {
        admin: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("admin port {0:?}: give http://ADDRESS:PORT (the server's --admin-listen)")]
    AdminNotHttp(String),
    #[error(transparent)]
    Tls(rustls::Error),
}

/// Why a call to the admin port got no answer.
#[derive(Debug, thiserror::Error)]
enum AdminCallError {
    /// The token or path make no request.
    #[error(transparent)]
    Request(#[from] http::Error),
    #[error("the admin port cannot be reached: {0}")]
    Unreachable(#[source] crate::http_client::HttpError),
}

/// The console's state.
pub struct ServerConsole {
    /// `http://ADDRESS:PORT` of the server's admin port.
    admin: String,
    http: HttpClient,
    sessions: Sessions,
    shell: Shell,
}

impl ServerConsole {
    /// A console for the admin port at `admin` (`http://host:port`).
    pub fn new(admin: &str, secure_cookies: bool) -> Result<Self, ServerConsoleError> {
        let uri: http::Uri = admin
            .parse()
            .map_err(|source| ServerConsoleError::AdminAddress {
                admin: admin.to_owned(),
                source,
            })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(ServerConsoleError::AdminNotHttp(admin.to_owned()));
        }
        Ok(ServerConsole {
            admin: admin.trim_end_matches('/').to_owned(),
            http: HttpClient::new().map_err(ServerConsoleError::Tls)?,
            sessions: Sessions::new("lt_server_console", secure_cookies),
            shell: Shell {
                product: "Lienthong security server".into(),
                role: w::OPERATORS_CONSOLE,
                nav: &[
                    ("/status", w::STATUS),
                    ("/clients", w::CLIENTS),
                    ("/services", w::BACKENDS),
                    ("/access", w::ACCESS),
                    ("/operations", w::OPERATIONS),
                    ("/log", w::MESSAGE_LOG),
                    ("/audit", w::AUDIT),
                ],
                home: "/status",
            },
        })
    }

    /// Sessions last `ttl` instead of [`crate::console_common::SESSION_TTL`].
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.sessions = self.sessions.with_ttl(ttl);
        self
    }

    /// One call to the admin port: the answer's status and body.
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(StatusCode, Vec<u8>), AdminCallError> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.admin))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)?;
        let resp = self
            .http
            .call(req)
            .await
            .map_err(AdminCallError::Unreachable)?;
        Ok((resp.status(), resp.into_body()))
    }

    /// A JSON answer, or the server's reason.
    async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, Refusal> {
        let (status, body) = self
            .call(token, "GET", path, Vec::new(), "application/json")
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, e.to_string()))?;
        if !status.is_success() {
            return Err(Refusal::of(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Refusal(
                StatusCode::BAD_GATEWAY,
                format!("the admin port's answer: {e}"),
            )
        })
    }

    /// An action; Ok with what was done.
    async fn post(
        &self,
        token: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<String, Refusal> {
        let (status, body) = self
            .call(token, "POST", path, body, content_type)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, e.to_string()))?;
        if !status.is_success() {
            return Err(Refusal::of(status, &body));
        }
        #[derive(Deserialize)]
        struct Done {
            done: String,
        }
        Ok(serde_json::from_slice::<Done>(&body)
            .map(|d| d.done)
            .unwrap_or_default())
    }

    fn refused(&self, r: Refusal, s: Option<&Session>) -> Response {
        let title = match r.0 {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::UNAUTHORIZED => "Sign-in refused",
            _ => "The server refused",
        };
        self.shell.refused(r.0, title, &r.1, s)
    }
}

/// The admin port's refusal: its status and reason.
struct Refusal(StatusCode, String);

impl Refusal {
    fn of(status: StatusCode, body: &[u8]) -> Self {
        let why = serde_json::from_slice::<ApiError>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        Refusal(status, why)
    }
}

/// The console's routes.
pub fn router(console: Arc<ServerConsole>) -> Router {
    Router::new()
        .route("/", get(sign_in_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/status", get(status::page))
        .route("/maintenance", post(status::maintenance))
        .route("/clients", get(clients::page))
        .route("/services", get(services::page))
        .route("/services/backend", post(services::set_backend))
        .route("/access", get(access::page))
        .route("/access/change", post(access::change))
        .route("/operations", get(operations::page))
        .route("/log", get(log::page))
        .route("/audit", get(audit::page))
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
    State(c): State<Arc<ServerConsole>>,
    Query(q): Query<SignInQuery>,
) -> Response {
    c.shell
        .page(
            &w::SIGN_IN.title(),
            None,
            html! {
                (sign_in_notice(q.expired.is_some()))
                form method="post" action="/login" {
                    p {
                        label for="token" { (both(w::SERVER_TOKEN)) } br;
                        input #token type="password" name="token" autocomplete="off" required;
                    }
                    p { button type="submit" { (both(w::SIGN_IN)) } }
                }
                p { "An operator token is made on the server with " code { "lienthong server operator add" } "." }
            },
        )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(State(c): State<Arc<ServerConsole>>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_owned();
    let op: Operator = match c.get(&token, "/api/whoami").await {
        Ok(op) => op,
        Err(r) => {
            tracing::info!(reason = %r.1, "server console sign-in refused");
            return c.refused(r, None);
        }
    };
    let who = format!("{} ({})", op.name, op.role);
    match c.sessions.open(token, who, None, "/status") {
        Ok(r) => r,
        Err(why) => c.refused(
            Refusal(StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
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
    State(c): State<Arc<ServerConsole>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => c.sessions.close(&s.id),
        Err(r) => r,
    }
}

/// A page that reads one thing from the admin port.
async fn read_page<T: DeserializeOwned>(
    c: &ServerConsole,
    headers: &HeaderMap,
    path: &str,
    title: &str,
    render: impl FnOnce(&T, &Session) -> Markup,
) -> Response {
    let session = match c.sessions.require(headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.get::<T>(&session.credential, path).await {
        Ok(v) => c
            .shell
            .page(title, Some(&session), render(&v, &session))
            .into_response(),
        Err(r) => c.refused(r, Some(&session)),
    }
}

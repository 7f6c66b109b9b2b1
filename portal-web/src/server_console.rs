//! A security server's operator console: sign in with one of the server's
//! operator tokens (`lienthong server operator add`), then
//!
//! - **Status**: the server's identity, the global configuration in force
//!   (version, creation, expiry), the auth certificate, every health check
//!   (message log appends, checkpoints, the log's self-audit, …), and
//!   maintenance mode to switch;
//! - **Clients**: the client subsystems the configuration lists on this
//!   server, pinned information systems' certificates, body logging;
//! - **Services**: each service's backend and whether the configuration
//!   lists it as provided here;
//! - **Access rights**: every grant, with the forms to grant and revoke;
//! - **Operations**: the exchanges of the last 24 hours from the message
//!   log (operational data: never payloads or personal IDs);
//! - **Audit log**: what operators did here, refusals included.
//!
//! Every page and action is a call to the admin port's operators' API
//! ([`lienthong_security_server::admin::api`]) with the operator's token,
//! so the server checks the role (an observer reads, an admin acts) and
//! audits each action itself. The token stays on the console's server;
//! the browser holds a session id, and every form carries the session's
//! anti-forgery token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::api::{
    AccessChange, ApiError, ClientsView, RuleView, ServiceView, StatusView,
};
use lienthong_security_server::admin::operators::{AuditRecord, Operator};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::console_common::{Session, Sessions, Shell, sign_in_notice, style};
use crate::http_client::HttpClient;

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
                role: "operator's console",
                nav: &[
                    ("/status", "Status"),
                    ("/clients", "Clients"),
                    ("/services", "Services"),
                    ("/access", "Access rights"),
                    ("/operations", "Operations"),
                    ("/audit", "Audit log"),
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
        .route("/status", get(status))
        .route("/maintenance", post(maintenance))
        .route("/clients", get(clients))
        .route("/services", get(services))
        .route("/access", get(access))
        .route("/access/change", post(change_access))
        .route("/operations", get(operations))
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
    State(c): State<Arc<ServerConsole>>,
    Query(q): Query<SignInQuery>,
) -> Response {
    c.shell
        .page(
            "Sign in",
            None,
            html! {
                (sign_in_notice(q.expired.is_some()))
                form method="post" action="/login" {
                    p {
                        label for="token" { "Operator token (admin or observer)" } br;
                        input #token type="password" name="token" autocomplete="off" required;
                    }
                    p { button type="submit" { "Sign in" } }
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

fn ok_mark(ok: bool) -> Markup {
    html! {
        @if ok { span.ok { "OK" } } @else { span.bad { "FAILING" } }
    }
}

fn status_markup(v: &StatusView, s: &Session) -> Markup {
    html! {
        article.access {
            h2 { "Server " (printable(&v.server)) }
            dl {
                dt { "Global configuration" }
                dd {
                    @match &v.configuration {
                        None => span.bad { "none downloaded: every exchange fails" },
                        Some(conf) => {
                            "version " (conf.version) ", made " (fmt_time(conf.created_at_ms / 1000))
                            ", " @if conf.expired { span.bad { "EXPIRED at " (fmt_time(conf.expires_at_ms / 1000)) } }
                            @else { "valid until " (fmt_time(conf.expires_at_ms / 1000)) }
                        }
                    }
                }
                dt { "Auth certificate" } dd { "valid until " (fmt_time(v.auth_not_after)) }
                dt { "Maintenance mode" }
                dd { @if v.maintenance { span.bad { "ON: health answers 503, load balancers drain" } } @else { "off" } }
            }
        }
        h2 { "Health checks" }
        table.checks {
            thead { tr { th scope="col" { "Check" } th scope="col" { "State" } th scope="col" { "Detail" } } }
            tbody {
                @for check in &v.checks {
                    tr {
                        th scope="row" { (printable(&check.name)) }
                        td { (ok_mark(check.ok)) }
                        td { (printable(&check.detail)) }
                    }
                }
            }
        }
        h2 { "Maintenance mode" }
        form method="post" action="/maintenance" {
            input type="hidden" name="csrf" value=(s.csrf);
            @if v.maintenance {
                input type="hidden" name="mode" value="off";
                button type="submit" { "Leave maintenance mode" }
            } @else {
                input type="hidden" name="mode" value="on";
                button.secondary type="submit" { "Enter maintenance mode (drain)" }
            }
        }
    }
}

async fn status(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(&c, &headers, "/api/status", "Status", status_markup).await
}

#[derive(Deserialize)]
struct MaintenanceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
}

async fn maintenance(
    State(c): State<Arc<ServerConsole>>,
    headers: HeaderMap,
    Form(f): Form<MaintenanceForm>,
) -> Response {
    let session = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mode = if f.mode == "on" { "on" } else { "off" };
    match c
        .post(
            &session.credential,
            "/maintenance",
            mode.as_bytes().to_vec(),
            "text/plain",
        )
        .await
    {
        Ok(_) => Redirect::to("/status").into_response(),
        Err(r) => c.refused(r, Some(&session)),
    }
}

fn clients_markup(v: &ClientsView, _: &Session) -> Markup {
    html! {
        dl {
            dt { "Server" } dd { (printable(&v.server)) }
            dt { "Address (provider side)" } dd { (printable(&v.address)) }
            @for fp in &v.auth_certs { dt { "Auth certificate" } dd { code { (printable(fp)) } } }
        }
        @if v.clients.is_empty() { p { "No client subsystems." } }
        @for cl in &v.clients {
            article.access {
                h2 { (printable(&cl.subsystem)) }
                dl {
                    dt { "Registered here" }
                    dd { @if cl.registered { span.ok { "yes" } } @else { span.bad { "not in the configuration in force" } } }
                    dt { "Bodies logged" } dd { @if cl.bodies_logged { "yes (sealed)" } @else { "no" } }
                    dt { "Pinned systems" }
                    dd {
                        @if cl.pins.is_empty() { "none" }
                        @for p in &cl.pins { code { (printable(p)) } br; }
                    }
                }
            }
        }
        p { "A client subsystem is added with " code { "lienthong server clients add" } " (the registry's officer approves it)." }
    }
}

async fn clients(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(&c, &headers, "/api/clients", "Clients", clients_markup).await
}

fn services_markup(v: &[ServiceView]) -> Markup {
    html! {
        @if v.is_empty() { p { "No services: set a backend with " code { "lienthong server backend set" } "." } }
        @for svc in v {
            article.access {
                h2 { (printable(&svc.service)) }
                dl {
                    dt { "Backend" }
                    dd {
                        @match &svc.backend_url {
                            Some(url) => { code { (printable(url)) } @if let Some(t) = svc.timeout_ms { " (timeout " (t) " ms)" } },
                            None => span.bad { "none set: calls fail" },
                        }
                    }
                    dt { "Provided here" }
                    dd { @if svc.provided_here { span.ok { "yes, by the configuration" } } @else { span.bad { "not by the configuration in force" } } }
                    dt { "Personal data" } dd { @if svc.personal_data { "yes: calls name a data subject" } @else { "no" } }
                }
            }
        }
    }
}

async fn services(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/services",
        "Services",
        |v: &Vec<ServiceView>, _| services_markup(v),
    )
    .await
}

fn rule_text(r: &RuleView) -> String {
    format!(
        "{} may call {}/{}",
        r.subject,
        r.service,
        r.method.as_deref().unwrap_or("*")
    )
}

fn access_markup(
    rules: &[RuleView],
    services: &[ServiceView],
    s: &Session,
    notice: Option<&str>,
) -> Markup {
    html! {
        @if let Some(n) = notice { p.notice role="status" { (printable(n)) } }
        @if rules.is_empty() { p { "No grants: every call is refused (deny by default)." } }
        @for (i, r) in rules.iter().enumerate() {
            article.access {
                h2 { (printable(&rule_text(r))) }
                form method="post" action="/access/change" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="action" value="revoke";
                    input type="hidden" name="subject" value=(r.subject);
                    input type="hidden" name="service" value=(r.service);
                    input type="hidden" name="method" value=(r.method.as_deref().unwrap_or_default());
                    button.secondary type="submit" id=(format!("revoke{i}")) { "Revoke" }
                }
            }
        }
        h2 { "Grant access" }
        form method="post" action="/access/change" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="action" value="grant";
            p {
                label for="subject" { "Client subsystem (INSTANCE/CLASS/MEMBER/SUBSYSTEM) or group:INSTANCE/GROUP" } br;
                input #subject name="subject" required size="40";
            }
            p {
                label for="service" { "Service" } br;
                select #service name="service" required {
                    @for svc in services.iter().filter(|svc| svc.provided_here) {
                        option value=(svc.service) { (printable(&svc.service)) }
                    }
                }
            }
            p {
                label for="method" { "Method (empty: the whole service)" } br;
                input #method name="method";
            }
            p { button type="submit" id="grant" { "Grant" } }
        }
    }
}

async fn access_page(c: &ServerConsole, session: &Session, notice: Option<&str>) -> Response {
    let read = async {
        let rules: Vec<RuleView> = c.get(&session.credential, "/api/access").await?;
        let services: Vec<ServiceView> = c.get(&session.credential, "/api/services").await?;
        Ok::<_, Refusal>((rules, services))
    };
    match read.await {
        Ok((rules, services)) => c
            .shell
            .page(
                "Access rights",
                Some(session),
                access_markup(&rules, &services, session, notice),
            )
            .into_response(),
        Err(r) => c.refused(r, Some(session)),
    }
}

async fn access(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    match c.sessions.require(&headers) {
        Ok(s) => access_page(&c, &s, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    method: String,
}

async fn change_access(
    State(c): State<Arc<ServerConsole>>,
    headers: HeaderMap,
    Form(f): Form<ChangeForm>,
) -> Response {
    let session = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let change = AccessChange {
        action: f.action,
        subject: f.subject,
        service: f.service,
        method: Some(f.method).filter(|m| !m.trim().is_empty()),
    };
    let body = match serde_json::to_vec(&change) {
        Ok(b) => b,
        Err(e) => return c.refused(Refusal(StatusCode::BAD_REQUEST, e.to_string()), None),
    };
    match c
        .post(&session.credential, "/api/access", body, "application/json")
        .await
    {
        Ok(done) => access_page(&c, &session, Some(&done)).await,
        Err(r) => c.refused(r, Some(&session)),
    }
}

fn audit_markup(records: &[AuditRecord]) -> Markup {
    html! {
        @if records.is_empty() { p { "No operator action yet." } }
        @for r in records {
            article.access {
                h2 { (printable(&r.action)) " · " (printable(&r.result)) }
                dl {
                    dt { "When (UTC)" } dd { (fmt_time(r.at_unix_ms / 1000)) }
                    dt { "Who" } dd { (printable(&r.actor)) }
                    dt { "Detail" } dd { (printable(&r.detail)) }
                }
            }
        }
    }
}

async fn audit(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/audit",
        "Audit log",
        |v: &Vec<AuditRecord>, _| audit_markup(v),
    )
    .await
}

/// One record of the admin port's operational data.
#[derive(Deserialize)]
struct OperationalRow {
    at_unix_ms: i64,
    side: String,
    phase: String,
    message_id: String,
    client: String,
    service: String,
    method: String,
    payload_size: u64,
    grpc_status: i32,
    fault: String,
    duration_us: u64,
}

fn operations_markup(rows: &[OperationalRow]) -> Markup {
    html! {
        p { "The exchanges of the last 24 hours, newest first, as the message log holds them (at most 200 records; never payloads or personal IDs). "
            code { "lienthong server log" } " reads further back." }
        @if rows.is_empty() { p { "No exchange in the last 24 hours." } }
        @else {
            table.operations {
                thead { tr {
                    th scope="col" { "When (UTC)" } th scope="col" { "Side" } th scope="col" { "Client" }
                    th scope="col" { "Service/method" } th scope="col" { "Bytes" } th scope="col" { "Result" } th scope="col" { "µs" }
                } }
                tbody {
                    @for r in rows {
                        tr title=(printable(&r.message_id)) {
                            td { (fmt_time(r.at_unix_ms / 1000)) }
                            td { (printable(&r.side)) " " (printable(&r.phase)) }
                            td { (printable(&r.client)) }
                            td { (printable(&r.service)) "/" (printable(&r.method)) }
                            td { (r.payload_size) }
                            td {
                                @if r.fault.is_empty() && r.grpc_status == 0 { span.ok { "OK" } }
                                @else { span.bad { (printable(&r.fault)) " (" (r.grpc_status) ")" } }
                            }
                            td { (r.duration_us) }
                        }
                    }
                }
            }
        }
    }
}

async fn operations(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/operational-data?since_hours=24&limit=200",
        "Operations",
        |v: &Vec<OperationalRow>, _| operations_markup(v),
    )
    .await
}

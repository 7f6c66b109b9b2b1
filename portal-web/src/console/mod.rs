//! The registry officers' console: sign in with an operator token, or as
//! a person through the organisation's OpenID provider ([`OfficerOidc`]),
//! then one page per thing an officer keeps, each in its module:
//!
//! - [`requests`]: registration requests with their CSRs, to approve or reject;
//! - [`members`]: members and their subsystems, to add;
//! - [`servers`]: security servers, their addresses, owners and certificates;
//! - [`services`]: services and the catalogue, global groups and their members;
//! - [`trust`]: the instance's CA and the trusted CAs;
//! - [`tokens`]: enrollment tokens, to issue (shown once) and see usable;
//! - [`alarms`]: checkpoints the witness refused (forks, rewritten history);
//! - [`audit`]: the registry's audit log.
//!
//! Every action goes through the registry's operator API, as
//! `lienthong registry` does, so the registry checks the token's role
//! (an observer reads, only an officer acts) and writes its audit log; an
//! officer signed in by OpenID Connect is named in every call
//! ([`lienthong_registry_client::ON_BEHALF_OF`]), so the audit record of
//! each action names the person. The token stays on the server: the
//! browser holds a session id in an HttpOnly, SameSite=Strict cookie, and
//! every form carries the session's anti-forgery token.

mod alarms;
mod audit;
mod members;
mod requests;
mod servers;
mod services;
mod sign_in_oidc;
mod tokens;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration};
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use crate::console_common::{Session, Sessions, Shell, both, sign_in_notice, style};
use crate::i18n::console as w;
use crate::oidc::{Oidc, PendingLogin};

pub use crate::console_common::SESSION_TTL;

/// Per-person sign-in of officers by OpenID Connect.
///
/// The person comes from the configured claim (`personal_id_claim` of the
/// [`Oidc`] settings: a claim the provider asserts, never one a person
/// edits), the role from `role_claim`, verified with the ID token: its
/// value (a string, or a list of them) holds `officer` or `observer`.
/// The console then acts with the registry operator token of that role,
/// naming the person in every call, so that the registry's audit log
/// names who acted.
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
pub(crate) const MAX_PENDING: usize = 1_000;
/// How long a sign-in at the provider may take.
pub(crate) const PENDING_TTL: Duration = Duration::from_secs(10 * 60);

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
                role: w::OFFICERS_CONSOLE,
                nav: &[
                    ("/requests", w::REQUESTS),
                    ("/members", w::MEMBERS),
                    ("/servers", w::SERVERS),
                    ("/services", w::SERVICES),
                    ("/trust", w::TRUSTED_CAS),
                    ("/tokens", w::TOKENS),
                    ("/alarms", w::ALARMS),
                    ("/audit", w::AUDIT),
                ],
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

    /// The registry's operator API as the session's operator, naming the
    /// person signed in (if any) in every call.
    async fn client(
        &self,
        s: &Session,
    ) -> Result<lienthong_registry_client::OperatorClient, RegistryCallError> {
        let channel = lienthong_registry_client::connect(&self.anchor, None)
            .await
            .map_err(RegistryCallError::Unreachable)?;
        lienthong_registry_client::operator_client_for(channel, &s.credential, s.person.as_deref())
            .map_err(RegistryCallError::Token)
    }

    /// The configuration the registry publishes now: what members,
    /// servers, services, groups and CAs the instance has.
    async fn configuration(&self, s: &Session) -> Result<GlobalConfiguration, RegistryCallError> {
        self.client(s)
            .await?
            .get_current_configuration(pb::GetCurrentConfigurationRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(RegistryCallError::refused)
    }

    /// The instance this registry serves, as the anchor names it.
    fn instance(&self) -> &str {
        &self.anchor.instance
    }

    fn refused(&self, status: StatusCode, title: &str, why: &str, s: Option<&Session>) -> Response {
        self.shell.refused(status, title, why, s)
    }

    /// The page saying why the registry did not do or answer something.
    fn failed(&self, why: &RegistryCallError, s: &Session) -> Response {
        self.refused(
            why.status(),
            "The registry refused",
            &why.to_string(),
            Some(s),
        )
    }

    /// A page of `title` around `body`, for the session.
    fn page(&self, title: &str, s: &Session, body: Markup) -> Response {
        self.shell.page(title, Some(s), body).into_response()
    }

    /// An officer's action from a form: the session of a form carrying its
    /// anti-forgery token, the call, and back to `then` when it was done.
    async fn act<F, Fut>(&self, headers: &HeaderMap, csrf: &str, then: &str, call: F) -> Response
    where
        F: FnOnce(lienthong_registry_client::OperatorClient, Session) -> Fut,
        Fut: std::future::Future<Output = Result<(), RegistryCallError>>,
    {
        let session = match self.sessions.require_form(headers, csrf, &self.shell) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let done = async {
            let op = self.client(&session).await?;
            call(op, session.clone()).await
        };
        match done.await {
            Ok(()) => Redirect::to(then).into_response(),
            Err(why) => {
                tracing::info!(who = %session.who, reason = %why, "console action refused");
                self.failed(&why, &session)
            }
        }
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
    /// The registry refused an action; its code and message.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Action(Box<tonic::Status>),
    #[error("approve or reject")]
    UnknownDecision,
    /// What the form names is no identifier.
    #[error(transparent)]
    Id(#[from] lienthong_proto::id::IdError),
    /// A form's field out of its range.
    #[error("{0}")]
    Form(String),
}

impl RegistryCallError {
    fn refused(s: tonic::Status) -> Self {
        RegistryCallError::Refused(Box::new(s))
    }

    fn action(s: tonic::Status) -> Self {
        RegistryCallError::Action(Box::new(s))
    }

    /// The console's HTTP status for it.
    fn status(&self) -> StatusCode {
        use tonic::Code;
        match self {
            RegistryCallError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            RegistryCallError::Refused(s) | RegistryCallError::Action(s) => match s.code() {
                Code::PermissionDenied => StatusCode::FORBIDDEN,
                Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                Code::InvalidArgument
                | Code::AlreadyExists
                | Code::NotFound
                | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            },
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The console's routes.
pub fn router(console: Arc<RegistryConsole>) -> Router {
    Router::new()
        .route("/", get(sign_in_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/requests", get(requests::page))
        .route("/requests/decide", post(requests::decide))
        .route("/members", get(members::page))
        .route("/members/add", post(members::add_member))
        .route("/members/subsystem", post(members::add_subsystem))
        .route("/servers", get(servers::page))
        .route("/services", get(services::page))
        .route("/groups/change", post(services::change_group))
        .route("/trust", get(trust::page))
        .route("/tokens", get(tokens::page).post(tokens::issue))
        .route("/alarms", get(alarms::page))
        .route("/oidc/start", get(sign_in_oidc::oidc_start))
        .route("/auth/callback", get(sign_in_oidc::oidc_callback))
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
    State(c): State<Arc<RegistryConsole>>,
    Query(q): Query<SignInQuery>,
) -> Response {
    c.shell
        .page(
            &w::SIGN_IN.title(),
            None,
            html! {
                (sign_in_notice(q.expired.is_some()))
                @if c.oidc.is_some() {
                    p { a.button #oidc href="/oidc/start" { (both(w::SIGN_IN_OIDC)) } }
                    p { (both(w::OR_TOKEN)) }
                }
                form method="post" action="/login" {
                    p {
                        label for="token" { (both(w::REGISTRY_TOKEN)) } br;
                        input #token type="password" name="token" autocomplete="off" required;
                    }
                    p { button type="submit" { (both(w::SIGN_IN)) } }
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

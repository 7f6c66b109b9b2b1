//! The routes: `/` (welcome), `/login` and `/auth/callback` (OpenID
//! Connect), `/trace` (the list), `/trace/access` (one access),
//! `/trace/download` (the file with proofs), `/logout` (POST, with the
//! session's anti-forgery token), `/style.css`.

#![allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, made once per request"
)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::i18n::Lang;
use crate::oidc::Oidc;
use crate::pages::{self, Filter, Frame};
use crate::source::{TraceSource, Traced};
use crate::state::{Answers, Limits, Pending, Refusal, Session, Sessions, same};

/// Everything the routes share.
pub struct Portal {
    pub oidc: Oidc,
    pub source: Arc<dyn TraceSource>,
    pub limits: Limits,
    /// Cookies get `Secure` (and the `__Host-` prefix) when the public URL
    /// is https.
    pub secure_cookies: bool,
    /// Shown on every page when the login is a development provider's.
    pub dev_banner: Option<String>,
    sessions: Sessions,
    answers: Answers,
    gathering: Semaphore,
}

impl Portal {
    pub fn new(
        oidc: Oidc,
        source: Arc<dyn TraceSource>,
        limits: Limits,
        secure_cookies: bool,
        dev_banner: Option<String>,
    ) -> Self {
        let gathering = Semaphore::new(limits.concurrent_traces.max(1));
        Portal {
            oidc,
            source,
            limits,
            secure_cookies,
            dev_banner,
            sessions: Sessions::default(),
            answers: Answers::default(),
            gathering,
        }
    }

    fn session_cookie(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-lt_session"
        } else {
            "lt_session"
        }
    }

    fn login_cookie(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-lt_login"
        } else {
            "lt_login"
        }
    }

    /// A cookie; without `max_age` it lasts while the browser runs (the
    /// server decides when a session ends, and says so).
    fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let age = max_age
            .map(|a| format!("; Max-Age={a}"))
            .unwrap_or_default();
        // Tokens are URL-safe base64: always a valid header value.
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}{secure}"
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }
}

/// The router.
pub fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/", get(welcome))
        .route("/style.css", get(style))
        .route("/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/trace", get(trace_list))
        .route("/trace/access", get(access))
        .route("/trace/download", get(download))
        .route("/logout", post(logout))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(portal)
}

/// On every answer: no framing, no sniffing, no referrer (a callback URL
/// carries a code), scripts nowhere, personal pages never cached.
pub(crate) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(Debug, Default, Deserialize)]
struct LangQuery {
    #[serde(default)]
    lang: String,
    #[serde(default)]
    expired: Option<String>,
}

fn lang_of(q: &str) -> Lang {
    Lang::parse(q).unwrap_or_default()
}

/// What a request's cookie says of its session.
enum Who {
    Citizen(String, Session),
    /// A session cookie for no live session.
    Expired,
    Nobody,
}

fn who(p: &Portal, headers: &HeaderMap) -> Who {
    match cookie(headers, p.session_cookie()) {
        Some(id) => match p.sessions.get(id) {
            Some(s) => Who::Citizen(id.to_owned(), s),
            None => Who::Expired,
        },
        None => Who::Nobody,
    }
}

fn html(status: StatusCode, m: maud::Markup) -> Response {
    (status, m).into_response()
}

fn frame<'a>(p: &'a Portal, lang: Lang, here: &'a str, s: Option<&'a Session>) -> Frame<'a> {
    Frame {
        lang,
        here,
        session: s.map(|s| (s.subject.as_str(), s.csrf.as_str())),
        dev_banner: p.dev_banner.as_deref(),
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLE,
    )
        .into_response()
}

async fn welcome(
    State(p): State<Arc<Portal>>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q.lang);
    if let Who::Citizen(..) = who(&p, &headers) {
        return Redirect::to(&format!("/trace?lang={}", lang.code())).into_response();
    }
    let notice = q.expired.is_some().then_some(lang.t().expired);
    html(
        StatusCode::OK,
        pages::landing(&frame(&p, lang, "/", None), notice),
    )
}

async fn login(State(p): State<Arc<Portal>>, Query(q): Query<LangQuery>) -> Response {
    let lang = lang_of(&q.lang);
    let t = lang.t();
    let (url, pending) = match p.oidc.begin().await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "login cannot start");
            return html(
                StatusCode::BAD_GATEWAY,
                pages::message(&frame(&p, lang, "/", None), t.login_failed, &e.to_string()),
            );
        }
    };
    let Some(id) = p.sessions.start_login(Pending {
        login: pending,
        lang,
    }) else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(
                &frame(&p, lang, "/", None),
                t.login_failed,
                "too many logins in progress",
            ),
        );
    };
    let mut r = Redirect::to(&url).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        p.cookie(
            p.login_cookie(),
            &id,
            Some(crate::state::LOGIN_TTL.as_secs()),
        ),
    );
    r
}

#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

async fn callback(
    State(p): State<Arc<Portal>>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let pending = cookie(&headers, p.login_cookie()).and_then(|id| p.sessions.take_login(id));
    let lang = pending.as_ref().map_or(Lang::default(), |x| x.lang);
    let refuse = |why: String| {
        tracing::info!(reason = %why, "citizen login refused");
        let mut r = html(
            StatusCode::BAD_REQUEST,
            pages::message(&frame(&p, lang, "/", None), lang.t().login_failed, &why),
        );
        r.headers_mut()
            .append(header::SET_COOKIE, p.cookie(p.login_cookie(), "", Some(0)));
        r
    };
    let Some(pending) = pending else {
        return refuse(crate::oidc::LoginError::Unknown.to_string());
    };
    if !same(&q.state, &pending.login.state) {
        return refuse(crate::oidc::LoginError::State.to_string());
    }
    if !q.error.is_empty() {
        let said = format!("{} {}", q.error, q.error_description);
        let said: String = said.trim().chars().take(200).collect();
        return refuse(crate::oidc::LoginError::Provider(said).to_string());
    }
    let login = match p.oidc.finish(pending.login, &q.code).await {
        Ok(l) => l,
        Err(e) => return refuse(e.to_string()),
    };
    let subject = match p.source.canonical_subject(&login.personal_id) {
        Ok(s) => s,
        Err(e) => return refuse(format!("the personal id from the identity provider: {e}")),
    };
    let Some((id, _)) = p.sessions.open(subject, p.limits.session_ttl) else {
        return refuse("too many sessions".into());
    };
    let mut r = Redirect::to(&format!("/trace?lang={}", lang.code())).into_response();
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, p.cookie(p.session_cookie(), &id, None));
    h.append(header::SET_COOKIE, p.cookie(p.login_cookie(), "", Some(0)));
    r
}

/// The signed-in citizen, or where to send the request instead.
fn citizen(p: &Portal, headers: &HeaderMap, lang: Lang) -> Result<(String, Session), Response> {
    match who(p, headers) {
        Who::Citizen(id, s) => Ok((id, s)),
        Who::Expired => {
            let mut r = Redirect::to(&format!("/?expired=1&lang={}", lang.code())).into_response();
            r.headers_mut().append(
                header::SET_COOKIE,
                p.cookie(p.session_cookie(), "", Some(0)),
            );
            Err(r)
        }
        Who::Nobody => Err(Redirect::to(&format!("/?lang={}", lang.code())).into_response()),
    }
}

/// The citizen's answer: cached, or fresh within the limits.
async fn answer(p: &Portal, s: &Session, lang: Lang, here: &str) -> Result<Arc<Traced>, Response> {
    if let Some(t) = p.answers.cached(&s.subject, p.limits.cache_ttl) {
        return Ok(t);
    }
    let t = lang.t();
    if let Err(Refusal::TooMany(wait)) = p.answers.admit(&s.subject, &p.limits) {
        let secs = wait.as_secs().max(1);
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::message(
                &frame(p, lang, here, Some(s)),
                t.too_many,
                &format!("{} {secs} s.", t.too_many),
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(r);
    }
    let gathered = match p.gathering.acquire().await {
        Ok(_permit) => p.source.trace(&s.subject).await,
        Err(_) => Err(crate::source::SourceError::ShuttingDown),
    };
    match gathered {
        Ok(traced) => {
            let traced = Arc::new(traced);
            p.answers
                .keep(&s.subject, traced.clone(), p.limits.cache_ttl);
            Ok(traced)
        }
        Err(e) => {
            tracing::warn!(error = %e, "trace could not be gathered");
            Err(html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message(
                    &frame(p, lang, here, Some(s)),
                    t.unavailable,
                    &e.to_string(),
                ),
            ))
        }
    }
}

/// The signed-in citizen and her answer, or the page to show instead
/// (sign-in, rate limit, unavailable).
async fn signed_in_answer(
    p: &Portal,
    headers: &HeaderMap,
    lang: Lang,
) -> Result<(Session, Arc<Traced>), Response> {
    let (_, s) = citizen(p, headers, lang)?;
    let traced = answer(p, &s, lang, "/trace").await?;
    Ok((s, traced))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    lang: String,
    #[serde(flatten)]
    filter: Filter,
}

async fn trace_list(
    State(p): State<Arc<Portal>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q.lang);
    match signed_in_answer(&p, &headers, lang).await {
        Ok((s, t)) => html(
            StatusCode::OK,
            pages::trace_list(&frame(&p, lang, "/trace", Some(&s)), &t, &q.filter),
        ),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
struct AccessQuery {
    #[serde(default)]
    lang: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    id: String,
}

async fn access(
    State(p): State<Arc<Portal>>,
    Query(q): Query<AccessQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q.lang);
    let (s, traced) = match signed_in_answer(&p, &headers, lang).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let f = frame(&p, lang, "/trace", Some(&s));
    match traced
        .report
        .exchanges
        .iter()
        .find(|e| e.message_id == q.id && e.client == q.client)
    {
        Some(e) => html(StatusCode::OK, pages::access_detail(&f, &traced, e)),
        None => html(
            StatusCode::NOT_FOUND,
            pages::message(&f, lang.t().not_found, lang.t().not_found),
        ),
    }
}

async fn download(
    State(p): State<Arc<Portal>>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q.lang);
    let traced = match signed_in_answer(&p, &headers, lang).await {
        Ok((_, t)) => t,
        Err(r) => return r,
    };
    let name = format!("lienthong-trace-{}.json", traced.at_ms / 1000);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        traced.bundle.to_json(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(p): State<Arc<Portal>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let lang = Lang::default();
    let (id, s) = match citizen(&p, &headers, lang) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !same(&f.csrf, &s.csrf) {
        return html(
            StatusCode::FORBIDDEN,
            pages::message(
                &frame(&p, lang, "/trace", Some(&s)),
                lang.t().forbidden,
                lang.t().forbidden,
            ),
        );
    }
    p.sessions.close(&id);
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        p.cookie(p.session_cookie(), "", Some(0)),
    );
    r
}

//! What the operators' consoles share: sessions that keep the operator's
//! credential on the server (the browser holds only a session id in an
//! HttpOnly, SameSite=Strict cookie), the anti-forgery token every form
//! carries, and the page around each console's content.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use lienthong_proto::fields::printable;
use maud::{DOCTYPE, Markup, html};

use crate::i18n::Both;
use crate::i18n::console as w;
use crate::state::{random_token, same};

/// How long a console session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Most console sessions at once.
const MAX_SESSIONS: usize = 1_000;

/// Why no session was opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// A thread panicked holding the sessions.
    #[error("sessions")]
    Poisoned,
    #[error("too many sessions")]
    TooMany,
}
/// Where an expired session is sent: the sign-in page, saying so.
pub const EXPIRED: &str = "/?expired=1";

struct Entry {
    credential: String,
    who: String,
    person: Option<String>,
    csrf: String,
    expires: Instant,
}

/// A signed-in operator's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// What the console acts with (an operator token).
    pub credential: String,
    /// Who signed in, as shown.
    pub who: String,
    /// The person, when signed in as one (OpenID Connect) rather than
    /// with a shared token: named in what the console does for them.
    pub person: Option<String>,
    pub csrf: String,
}

/// What a request's cookie leads to.
#[derive(Debug)]
pub enum Lookup {
    Active(Session),
    /// A session that was, and is over: back to sign-in, saying why.
    Expired,
    /// No session.
    None,
}

/// The sessions of one console.
pub struct Sessions {
    cookie: &'static str,
    secure: bool,
    ttl: Duration,
    map: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// `cookie` names the cookie (prefixed `__Host-` when `secure`).
    pub fn new(cookie: &'static str, secure: bool) -> Self {
        Sessions {
            cookie,
            secure,
            ttl: SESSION_TTL,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Sessions last `ttl` instead of [`SESSION_TTL`].
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn cookie_name(&self) -> String {
        if self.secure {
            format!("__Host-{}", self.cookie)
        } else {
            self.cookie.to_owned()
        }
    }

    /// The cookie that holds `value` (or clears it).
    pub fn cookie(&self, value: &str, clear: bool) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let age = if clear { "; Max-Age=0" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{age}{secure}",
            self.cookie_name()
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }

    /// The session the request's cookie names.
    pub fn lookup(&self, headers: &HeaderMap) -> Lookup {
        let name = self.cookie_name();
        let Some(id) = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
            .filter(|v| !v.is_empty())
        else {
            return Lookup::None;
        };
        let Ok(mut map) = self.map.lock() else {
            return Lookup::None;
        };
        match map.get(&id) {
            Some(s) if s.expires > Instant::now() => Lookup::Active(Session {
                id: id.clone(),
                credential: s.credential.clone(),
                who: s.who.clone(),
                person: s.person.clone(),
                csrf: s.csrf.clone(),
            }),
            Some(_) => {
                map.remove(&id);
                Lookup::Expired
            }
            // Unknown: expired and swept, or from before a restart.
            None => Lookup::Expired,
        }
    }

    /// The active session, or where to send the browser instead.
    #[allow(clippy::result_large_err)]
    pub fn require(&self, headers: &HeaderMap) -> Result<Session, Response> {
        match self.lookup(headers) {
            Lookup::Active(s) => Ok(s),
            Lookup::Expired => {
                let mut r = Redirect::to(EXPIRED).into_response();
                r.headers_mut()
                    .append(header::SET_COOKIE, self.cookie("", true));
                Err(r)
            }
            Lookup::None => Err(Redirect::to("/").into_response()),
        }
    }

    /// The active session of a form carrying its anti-forgery token.
    #[allow(clippy::result_large_err)]
    pub fn require_form(
        &self,
        headers: &HeaderMap,
        csrf: &str,
        shell: &Shell,
    ) -> Result<Session, Response> {
        let s = self.require(headers)?;
        if !same(csrf, &s.csrf) {
            tracing::info!(who = %s.who, "console form without its anti-forgery token refused");
            return Err(shell.refused(
                StatusCode::FORBIDDEN,
                "Refused",
                "the form's anti-forgery token is missing or wrong",
                Some(&s),
            ));
        }
        Ok(s)
    }

    /// Opens a session; the response to send carries its cookie.
    pub fn open(
        &self,
        credential: String,
        who: String,
        person: Option<String>,
        then: &str,
    ) -> Result<Response, SessionError> {
        let id = random_token();
        {
            let mut map = self.map.lock().map_err(|_| SessionError::Poisoned)?;
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                return Err(SessionError::TooMany);
            }
            map.insert(
                id.clone(),
                Entry {
                    credential,
                    who,
                    person,
                    csrf: random_token(),
                    expires: now + self.ttl,
                },
            );
        }
        let mut r = Redirect::to(then).into_response();
        r.headers_mut()
            .append(header::SET_COOKIE, self.cookie(&id, false));
        Ok(r)
    }

    /// Ends a session; the response clears its cookie.
    pub fn close(&self, id: &str) -> Response {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
        let mut r = Redirect::to("/").into_response();
        r.headers_mut()
            .append(header::SET_COOKIE, self.cookie("", true));
        r
    }
}

/// The page around a console's content: its name and its pages.
pub struct Shell {
    /// e.g. "Lienthong registry".
    pub product: String,
    /// e.g. "officers' console".
    pub role: Both,
    /// (path, label) of each page, shown when signed in.
    pub nav: &'static [(&'static str, Both)],
    /// Where "Back" leads.
    pub home: &'static str,
}

impl Shell {
    pub fn page(&self, title: &str, session: Option<&Session>, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="vi" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " — " (self.product) }
                    link rel="stylesheet" href="/style.css";
                }
                body {
                    a.skip href="#main" { (both(w::SKIP)) }
                    header {
                        p { strong { (self.product) } " · " (both(self.role)) }
                        @if let Some(s) = session {
                            nav.pages aria-label="console" {
                                @for (path, label) in self.nav { a href=(path) { (both(*label)) } }
                            }
                            form method="post" action="/logout" {
                                span { (both(w::SIGNED_IN_AS)) " " strong { (printable(&s.who)) } " " }
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.secondary type="submit" { (both(w::SIGN_OUT)) }
                            }
                        }
                    }
                    main #main { h1 { (title) } (body) }
                }
            }
        }
    }

    pub fn refused(
        &self,
        status: StatusCode,
        title: &str,
        why: &str,
        session: Option<&Session>,
    ) -> Response {
        (
            status,
            self.page(
                title,
                session,
                html! { p.error role="alert" { (printable(why)) } p { a href=(self.home) { (both(w::BACK)) } } },
            ),
        )
            .into_response()
    }
}

/// The shared stylesheet's route answer.
pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::pages::STYLE,
    )
        .into_response()
}

/// What the sign-in page says above its form.
pub fn sign_in_notice(expired: bool) -> Markup {
    html! {
        @if expired {
            p.notice role="status" { (both(w::SESSION_EXPIRED)) }
        }
    }
}

/// A console's word, Vietnamese first and English second, each marked
/// with its language for screen readers.
pub fn both(w: Both) -> Markup {
    html! { span lang="vi" { (w.vi) } " " span.en lang="en" { "(" (w.en) ")" } }
}

/// A certificate's validity as the consoles show it: from, until, and
/// whether it is in force now.
pub fn validity(not_before: i64, not_after: i64, now_secs: i64) -> Markup {
    use lienthong_certs::verify::fmt_time;
    html! {
        (fmt_time(not_before)) " – " (fmt_time(not_after))
        @if now_secs > not_after { " " span.bad { "EXPIRED" } }
        @else if now_secs < not_before { " " span.bad { "not yet valid" } }
    }
}

/// Lowercase hex.
pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

//! Enrollment tokens: an officer issues one for a server id (as
//! `lienthong registry token`), shown once on the answer to the form and
//! never again; the page lists the tokens still usable — the server each
//! is for and when it expires, never a token or its hash.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::{Session, both};
use crate::i18n::console as w;

/// Longest validity an officer may give (the registry's limit: 30 days).
const MAX_HOURS: u32 = 30 * 24;

/// A token just issued, for the one answer that shows it.
pub(super) struct Issued {
    pub server: String,
    pub token: String,
    pub expires_at_ms: i64,
}

pub(super) fn tokens_markup(
    conf: &GlobalConfiguration,
    usable: &[pb::EnrollmentTokenSummary],
    issued: Option<&Issued>,
    s: &Session,
) -> Markup {
    let members = super::members::sorted_members(conf);
    html! {
        @if let Some(t) = issued {
            section.access.notice role="status" {
                h2 { (both(w::ISSUE_TOKEN)) ": " (t.server) }
                p { (both(w::TOKEN_ONCE)) }
                p { code #token { (t.token) } }
                p { (both(w::EXPIRES)) ": " (fmt_time(t.expires_at_ms / 1000)) }
                p { "The agency runs " code { "lienthong server init --enrollment-token …" } "." }
            }
        }
        h2 { (both(w::OUTSTANDING)) }
        @if usable.is_empty() { p { (both(w::NONE)) } }
        @else {
            table.tokens {
                thead { tr { th scope="col" { (both(w::SERVER)) } th scope="col" { (both(w::EXPIRES)) } } }
                tbody {
                    @for t in usable {
                        tr {
                            td { (t.server.as_ref().and_then(|x| ServerId::try_from(x).ok()).map_or("?".to_owned(), |x| x.to_string())) }
                            td { (fmt_time(t.expires_at_unix_ms / 1000)) }
                        }
                    }
                }
            }
        }
        h2 { (both(w::ISSUE_TOKEN)) }
        form method="post" action="/tokens" {
            input type="hidden" name="csrf" value=(s.csrf);
            p {
                label for="member" { (both(w::OWNER)) } br;
                select #member name="member" required {
                    @for (id, m) in &members { option value=(id) { (id) " — " (printable(&m.name)) } }
                }
            }
            p {
                label for="server" { (both(w::SERVER_ID)) } br;
                input #server name="server" required placeholder="ss1" size="20";
            }
            p {
                label for="hours" { (both(w::VALID_HOURS)) } br;
                input #hours name="hours" type="number" min="1" max=(MAX_HOURS) value="24";
            }
            p { button #issue type="submit" { (both(w::ISSUE)) } }
        }
    }
}

async fn read(
    c: &RegistryConsole,
    s: &Session,
) -> Result<(GlobalConfiguration, Vec<pb::EnrollmentTokenSummary>), RegistryCallError> {
    let conf = c.configuration(s).await?;
    let usable = c
        .client(s)
        .await?
        .list_enrollment_tokens(pb::ListEnrollmentTokensRequest {})
        .await
        .map_err(RegistryCallError::refused)?
        .into_inner()
        .tokens;
    Ok((conf, usable))
}

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let s = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match read(&c, &s).await {
        Ok((conf, usable)) => c.page(
            &w::TOKENS.title(),
            &s,
            tokens_markup(&conf, &usable, None, &s),
        ),
        Err(e) => c.failed(&e, &s),
    }
}

#[derive(Deserialize)]
pub(super) struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    member: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    hours: String,
}

async fn create(
    c: &RegistryConsole,
    s: &Session,
    f: &IssueForm,
) -> Result<Issued, RegistryCallError> {
    let member: MemberId = f.member.trim().parse()?;
    let server = member.server(f.server.trim())?;
    let hours: u32 = match f.hours.trim() {
        "" => 24,
        h => h
            .parse()
            .ok()
            .filter(|h| (1..=MAX_HOURS).contains(h))
            .ok_or_else(|| RegistryCallError::Form(format!("valid for 1 to {MAX_HOURS} hours")))?,
    };
    let reply = c
        .client(s)
        .await?
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some((&server).into()),
            valid_seconds: hours * 3600,
        })
        .await
        .map_err(RegistryCallError::action)?
        .into_inner();
    Ok(Issued {
        server: server.to_string(),
        token: reply.token,
        expires_at_ms: reply.expires_at_unix_ms,
    })
}

/// Issues a token and shows it in this answer only (not a redirect: the
/// token is in no URL, no history entry, and the answer is `no-store`).
pub(super) async fn issue(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<IssueForm>,
) -> Response {
    let s = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let issued = match create(&c, &s, &f).await {
        Ok(i) => i,
        Err(e) => {
            tracing::info!(who = %s.who, reason = %e, "console action refused");
            return c.failed(&e, &s);
        }
    };
    match read(&c, &s).await {
        Ok((conf, usable)) => c.page(
            &w::TOKENS.title(),
            &s,
            tokens_markup(&conf, &usable, Some(&issued), &s),
        ),
        Err(e) => c.failed(&e, &s),
    }
}

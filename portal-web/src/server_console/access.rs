//! Access rights: every grant with a Revoke button, and the form to grant.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::api::{AccessChange, RuleView, ServiceView};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Refusal, ServerConsole};
use crate::console_common::{Session, both};
use crate::i18n::console as w;

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
        @if rules.is_empty() { p { (both(w::NO_GRANTS)) } }
        @for (i, r) in rules.iter().enumerate() {
            article.access {
                h2 { (printable(&rule_text(r))) }
                form method="post" action="/access/change" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="action" value="revoke";
                    input type="hidden" name="subject" value=(r.subject);
                    input type="hidden" name="service" value=(r.service);
                    input type="hidden" name="method" value=(r.method.as_deref().unwrap_or_default());
                    button.secondary type="submit" id=(format!("revoke{i}")) { (both(w::REVOKE)) }
                }
            }
        }
        h2 { (both(w::GRANT_ACCESS)) }
        form method="post" action="/access/change" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="action" value="grant";
            p {
                label for="subject" { (both(w::CLIENT_OR_GROUP)) " (INSTANCE/CLASS/MEMBER/SUBSYSTEM, group:INSTANCE/GROUP)" } br;
                input #subject name="subject" required size="40";
            }
            p {
                label for="service" { (both(w::SERVICE)) } br;
                select #service name="service" required {
                    @for svc in services.iter().filter(|svc| svc.provided_here) {
                        option value=(svc.service) { (printable(&svc.service)) }
                    }
                }
            }
            p {
                label for="method" { (both(w::METHOD)) } br;
                input #method name="method";
            }
            p { button type="submit" id="grant" { (both(w::GRANT)) } }
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
                &w::ACCESS.title(),
                Some(session),
                access_markup(&rules, &services, session, notice),
            )
            .into_response(),
        Err(r) => c.refused(r, Some(session)),
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    match c.sessions.require(&headers) {
        Ok(s) => access_page(&c, &s, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
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

pub(super) async fn change(
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

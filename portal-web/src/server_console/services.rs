//! Services and their backends; an admin sets a service's backend (URL
//! and timeout) as `lienthong server backend set` does, through the admin
//! port's `POST /api/backends`.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::api::ServiceView;
use lienthong_security_server::admin::backends::BackendChange;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Refusal, ServerConsole};
use crate::console_common::{Session, both};
use crate::i18n::console as w;

pub(super) fn services_markup(v: &[ServiceView], s: &Session, notice: Option<&str>) -> Markup {
    html! {
        @if let Some(n) = notice { p.notice role="status" { (printable(n)) } }
        @if v.is_empty() { p { "No services: set a backend below, or with " code { "lienthong server backend set" } "." } }
        @for svc in v {
            article.access {
                h2 { (printable(&svc.service)) }
                dl {
                    dt { (both(w::BACKEND)) }
                    dd {
                        @match &svc.backend_url {
                            Some(url) => { code { (printable(url)) } @if let Some(t) = svc.timeout_ms { " (timeout " (t) " ms)" } },
                            None => span.bad { "none set: calls fail" },
                        }
                    }
                    dt { (both(w::PROVIDED_HERE)) }
                    dd { @if svc.provided_here { span.ok { "yes, by the configuration" } } @else { span.bad { "not by the configuration in force" } } }
                    dt { (both(w::PERSONAL_DATA)) } dd { @if svc.personal_data { "yes: calls name a data subject" } @else { "no" } }
                }
            }
        }
        h2 { (both(w::SET_BACKEND)) }
        form method="post" action="/services/backend" {
            input type="hidden" name="csrf" value=(s.csrf);
            p {
                label for="service" { (both(w::SERVICE)) " (PROVIDER_SUBSYSTEM/grpc.Service)" } br;
                input #service name="service" required size="60" list="known-services";
                datalist #known-services {
                    @for svc in v { option value=(svc.service) {} }
                }
            }
            p {
                label for="url" { (both(w::BACKEND_URL)) " (http://host:port, h2c)" } br;
                input #url name="url" required size="40" placeholder="http://127.0.0.1:9000";
            }
            p {
                label for="timeout" { (both(w::TIMEOUT_MS)) } br;
                input #timeout name="timeout_ms" type="number" min="1" max="600000" value="30000";
            }
            p { button #set-backend type="submit" { (both(w::SAVE)) } }
        }
    }
}

async fn services_page(c: &ServerConsole, s: &Session, notice: Option<&str>) -> Response {
    match c
        .get::<Vec<ServiceView>>(&s.credential, "/api/services")
        .await
    {
        Ok(v) => c
            .shell
            .page(
                &w::BACKENDS.title(),
                Some(s),
                services_markup(&v, s, notice),
            )
            .into_response(),
        Err(r) => c.refused(r, Some(s)),
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    match c.sessions.require(&headers) {
        Ok(s) => services_page(&c, &s, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct BackendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    timeout_ms: String,
}

/// Sets a backend through the admin port, which checks the role, the
/// service and the URL (the CLI's rules) and audits the change.
pub(super) async fn set_backend(
    State(c): State<Arc<ServerConsole>>,
    headers: HeaderMap,
    Form(f): Form<BackendForm>,
) -> Response {
    let session = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let timeout_ms = match f.timeout_ms.trim() {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(ms) => Some(ms),
            Err(_) => {
                return c.refused(
                    Refusal(
                        StatusCode::BAD_REQUEST,
                        format!("timeout {t:?}: a number of milliseconds"),
                    ),
                    Some(&session),
                );
            }
        },
    };
    let change = BackendChange {
        service: f.service,
        url: f.url,
        timeout_ms,
    };
    let body = match serde_json::to_vec(&change) {
        Ok(b) => b,
        Err(e) => {
            return c.refused(
                Refusal(StatusCode::BAD_REQUEST, e.to_string()),
                Some(&session),
            );
        }
    };
    match c
        .post(
            &session.credential,
            "/api/backends",
            body,
            "application/json",
        )
        .await
    {
        Ok(done) => services_page(&c, &session, Some(&done)).await,
        Err(r) => c.refused(r, Some(&session)),
    }
}

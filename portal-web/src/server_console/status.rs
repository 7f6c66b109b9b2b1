//! Status: the server's identity, the configuration in force, the auth
//! certificate, every health check, and maintenance mode to switch.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::api::StatusView;
use maud::{Markup, html};
use serde::Deserialize;

use super::{ServerConsole, read_page};
use crate::console_common::{Session, both};
use crate::i18n::console as w;

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
                dt { (both(w::GLOBAL_CONF)) }
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
                dt { (both(w::AUTH_CERT)) } dd { "valid until " (fmt_time(v.auth_not_after)) }
                dt { (both(w::MAINTENANCE)) }
                dd { @if v.maintenance { span.bad { "ON: health answers 503, load balancers drain" } } @else { "off" } }
            }
        }
        h2 { (both(w::HEALTH)) }
        table.checks {
            thead { tr { th scope="col" { (both(w::CHECK)) } th scope="col" { (both(w::STATE)) } th scope="col" { (both(w::DETAIL)) } } }
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
        h2 { (both(w::MAINTENANCE)) }
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

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/status",
        &w::STATUS.title(),
        status_markup,
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct MaintenanceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
}

pub(super) async fn maintenance(
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

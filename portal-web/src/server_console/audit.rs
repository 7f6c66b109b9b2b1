//! What operators did on this server — at the console, over the admin
//! port, or with the command line on the server itself — newest first.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::operators::AuditRecord;
use maud::{Markup, html};

use super::{ServerConsole, read_page};
use crate::console_common::both;
use crate::i18n::console as w;

fn audit_markup(records: &[AuditRecord]) -> Markup {
    html! {
        @if records.is_empty() { p { (both(w::NO_ACTIONS)) } }
        @for r in records {
            article.access {
                h2 { (printable(&r.action)) " · " (printable(&r.result)) }
                dl {
                    dt { (both(w::WHEN)) } dd { (fmt_time(r.at_unix_ms / 1000)) }
                    dt { (both(w::WHO)) } dd { (printable(&r.actor)) }
                    dt { (both(w::DETAIL)) } dd { (printable(&r.detail)) }
                }
            }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/audit",
        &w::AUDIT.title(),
        |v: &Vec<AuditRecord>, _| audit_markup(v),
    )
    .await
}

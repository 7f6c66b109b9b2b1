//! The registry's audit log, newest first: who (the person, when a
//! console acts for one), what, the detail and the result.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lienthong_proto::fields::printable;
use lienthong_proto::pb::registry::v1 as pb;
use maud::html;

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::both;
use crate::i18n::console as w;

/// The newest audit records, most recent first.
pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let session = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let listed = async {
        c.client(&session)
            .await?
            .list_audit(pb::ListAuditRequest {
                limit: 200,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().records)
            .map_err(|s| RegistryCallError::Refused(Box::new(s)))
    };
    match listed.await {
        Ok(mut records) => {
            records.sort_by_key(|r| std::cmp::Reverse(r.id));
            c.shell.page(
                &w::AUDIT.title(),
                Some(&session),
                html! {
                    @for r in &records {
                        article.access {
                            h2 { (r.id) " · " (printable(&r.action)) " · " (printable(&r.result)) }
                            dl {
                                dt { (both(w::WHEN)) } dd { (lienthong_certs::verify::fmt_time(r.at_unix_ms / 1000)) }
                                dt { (both(w::WHO)) } dd { (printable(&r.actor)) }
                                dt { (both(w::DETAIL)) } dd { (printable(&r.detail)) }
                            }
                        }
                    }
                },
            )
            .into_response()
        }
        Err(why) => c.refused(
            StatusCode::BAD_GATEWAY,
            "The registry refused",
            &why.to_string(),
            Some(&session),
        ),
    }
}

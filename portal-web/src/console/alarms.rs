//! The witness's alarms: checkpoints the registry refused to countersign
//! because they contradict what a server submitted before (a fork, a log
//! that went back, rewritten history), per server, newest first — as
//! `lienthong registry alarms` lists them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_proto::id::ServerId;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::both;
use crate::i18n::console as w;

pub(super) fn alarms_markup(alarms: &[pb::CheckpointAlarm]) -> Markup {
    html! {
        @if alarms.is_empty() { p.ok { (both(w::NO_ALARMS)) } }
        @else {
            p.error role="alert" {
                (alarms.len()) " — a server's log contradicted what it submitted before: find out why before trusting its records."
            }
            table.alarms {
                thead { tr {
                    th scope="col" { (both(w::WHEN)) }
                    th scope="col" { (both(w::SERVER)) }
                    th scope="col" { (both(w::REASON)) }
                } }
                tbody {
                    @for a in alarms {
                        tr {
                            td { (fmt_time(a.at_unix_ms / 1000)) }
                            td { (a.server.as_ref().and_then(|x| ServerId::try_from(x).ok()).map_or("?".to_owned(), |x| x.to_string())) }
                            td { (printable(&a.reason)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let s = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let listed = async {
        c.client(&s)
            .await?
            .list_alarms(pb::ListAlarmsRequest {})
            .await
            .map(|r| r.into_inner().alarms)
            .map_err(RegistryCallError::refused)
    };
    match listed.await {
        Ok(alarms) => c.page(&w::ALARMS.title(), &s, alarms_markup(&alarms)),
        Err(e) => c.failed(&e, &s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_name_the_server_and_their_reason_is_text() {
        let quiet = alarms_markup(&[]).into_string();
        assert!(quiet.contains("No alarms"), "{quiet}");
        let server: ServerId = "VN/GOV/000102/ss1".parse().unwrap();
        let shown = alarms_markup(&[pb::CheckpointAlarm {
            server: Some((&server).into()),
            at_unix_ms: 1_700_000_000_000,
            reason: "tree size went back from 120 to 80 <script>x</script>".into(),
        }])
        .into_string();
        assert!(shown.contains("VN/GOV/000102/ss1"), "{shown}");
        assert!(shown.contains("role=\"alert\""), "{shown}");
        assert!(
            shown.contains("from 120 to 80 &lt;script&gt;x&lt;/script&gt;"),
            "{shown}"
        );
        assert!(!shown.contains("<script>"), "{shown}");
    }
}

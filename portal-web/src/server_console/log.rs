//! The message log: its self-audit (every record checked against the
//! Merkle tree, continuously) and its newest checkpoints as the registry
//! witnessed them — the evidence that the log is whole and its history
//! is anchored outside this server.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::log_view::LogView;
use maud::{Markup, html};

use super::{ServerConsole, read_page};
use crate::console_common::{Session, both};
use crate::i18n::console as w;

pub(super) fn log_markup(v: &LogView, _: &Session) -> Markup {
    html! {
        @if !v.kept { p.bad { "This server keeps no message log." } }
        @else {
            p { (both(w::RECORDS)) ": " (v.tree_size) }
            h2 { (both(w::SELF_AUDIT)) }
            @match &v.self_audit {
                None => p { "Not running on this server." },
                Some(a) => {
                    dl {
                        dt { "Records checked" } dd { (a.checked) }
                        dt { "Whole passes" } dd { (a.passes) }
                        dt { "Mismatches" }
                        dd {
                            @if a.found == 0 { span.ok { "none" } }
                            @else { span.bad { (a.found) } }
                        }
                    }
                    @if !a.mismatches.is_empty() {
                        ul.error role="alert" { @for m in &a.mismatches { li { (printable(m)) } } }
                    }
                }
            }
            h2 { (both(w::CHECKPOINTS)) }
            @if v.checkpoints.is_empty() { p { "None witnessed yet." } }
            @else {
                table.checkpoints {
                    thead { tr {
                        th scope="col" { (both(w::RECORDS)) }
                        th scope="col" { (both(w::ROOT)) }
                        th scope="col" { "Signed (UTC)" }
                        th scope="col" { (both(w::WITNESSED)) }
                    } }
                    tbody {
                        @for c in &v.checkpoints {
                            tr {
                                td { (c.tree_size) }
                                td { code { (printable(&c.root)) } }
                                td { (fmt_time(c.created_at_ms / 1000)) }
                                td { (fmt_time(c.witnessed_at_ms / 1000)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/log",
        &w::MESSAGE_LOG.title(),
        log_markup,
    )
    .await
}

#[cfg(test)]
mod tests {
    use lienthong_security_server::admin::log_view::{CheckpointView, SelfAuditView};

    use super::*;

    fn session() -> Session {
        Session {
            id: "s".into(),
            credential: "t".into(),
            who: "w".into(),
            person: None,
            csrf: "c".into(),
        }
    }

    #[test]
    fn checkpoints_are_listed_and_mismatches_alarm_as_text() {
        let view = LogView {
            kept: true,
            tree_size: 42,
            self_audit: Some(SelfAuditView {
                checked: 40,
                passes: 1,
                found: 1,
                mismatches: vec!["record 7: <b>index</b> differs".into()],
            }),
            checkpoints: vec![CheckpointView {
                tree_size: 40,
                root: "ab".repeat(32),
                created_at_ms: 1_700_000_000_000,
                witnessed_at_ms: 1_700_000_001_000,
            }],
        };
        let page = log_markup(&view, &session()).into_string();
        assert!(page.contains(&"ab".repeat(32)), "{page}");
        assert!(page.contains("<td>40</td>"), "{page}");
        assert!(
            page.contains("record 7: &lt;b&gt;index&lt;/b&gt; differs"),
            "{page}"
        );
        assert!(page.contains("class=\"bad\""), "{page}");
        let none = LogView {
            kept: false,
            tree_size: 0,
            self_audit: None,
            checkpoints: Vec::new(),
        };
        assert!(
            log_markup(&none, &session())
                .into_string()
                .contains("keeps no message log")
        );
    }
}

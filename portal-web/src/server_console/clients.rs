//! Clients: the server's address and auth certificates by the
//! configuration, each client subsystem with its member's signing
//! certificates (fingerprint and validity), pinned information systems'
//! certificates and body logging.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_proto::fields::printable;
use lienthong_security_server::admin::api::ClientsView;
use maud::{Markup, html};

use super::{ServerConsole, read_page};
use crate::console_common::{Session, both, validity};
use crate::i18n::console as w;

pub(super) fn clients_markup(v: &ClientsView, _: &Session) -> Markup {
    let now = lienthong_proto::time::now_ms() / 1000;
    html! {
        dl {
            dt { (both(w::SERVER)) } dd { (printable(&v.server)) }
            dt { (both(w::ADDRESS)) " (provider side)" } dd { (printable(&v.address)) }
            @for fp in &v.auth_certs { dt { (both(w::AUTH_CERTS)) } dd { code { (printable(fp)) } } }
        }
        @if v.clients.is_empty() { p { "No client subsystems." } }
        @for cl in &v.clients {
            article.access {
                h2 { (printable(&cl.subsystem)) }
                dl {
                    dt { (both(w::REGISTERED_HERE)) }
                    dd { @if cl.registered { span.ok { "yes" } } @else { span.bad { "not in the configuration in force" } } }
                    dt { (both(w::SIGNING_CERTS)) }
                    dd {
                        @if cl.signing_certs.is_empty() { span.bad { "none in the configuration: its calls cannot be signed" } }
                        @for c in &cl.signing_certs {
                            code { (printable(&c.sha256)) } br;
                            (validity(c.not_before, c.not_after, now))
                            @if c.revoked { " " span.bad { (both(w::REVOKED)) } }
                            br;
                        }
                    }
                    dt { (both(w::BODIES_LOGGED)) } dd { @if cl.bodies_logged { "yes (sealed)" } @else { "no" } }
                    dt { (both(w::PINNED)) }
                    dd {
                        @if cl.pins.is_empty() { "none" }
                        @for p in &cl.pins { code { (printable(p)) } br; }
                    }
                }
            }
        }
        p {
            "A client subsystem is added with " code { "lienthong server clients add" }
            " on the server (the registry's officer approves it). Not from this page: it makes the member's signing key in the server's key directory, which the admin port never writes to, and waits for the officer's decision."
        }
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/api/clients",
        &w::CLIENTS.title(),
        clients_markup,
    )
    .await
}

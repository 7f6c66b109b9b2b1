//! The certificate authorities the instance trusts: its own (from the
//! anchor) and the external CAs the configuration lists, each with its
//! name, fingerprint and validity.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::Fingerprint;
use lienthong_proto::fields::printable;
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use maud::{Markup, html};

use super::RegistryConsole;
use crate::console_common::{both, validity};
use crate::i18n::console as w;

fn ca_markup(der: &[u8], now: i64) -> Markup {
    html! {
        article.access {
            @match lienthong_certs::verify::parse(der) {
                Ok(info) => {
                    h3 { (printable(&info.common_name)) }
                    dl {
                        dt { (both(w::FINGERPRINT)) } dd { code { (Fingerprint::of(der).to_string()) } }
                        dt { (both(w::VALID)) } dd { (validity(info.not_before, info.not_after, now)) }
                    }
                }
                Err(e) => { p.bad { "unreadable certificate: " (printable(&e.to_string())) } }
            }
        }
    }
}

pub(super) fn trust_markup(instance_ca: &[u8], conf: &GlobalConfiguration) -> Markup {
    let now = lienthong_proto::time::now_ms() / 1000;
    html! {
        h2 { (both(w::INSTANCE_CA)) }
        (ca_markup(instance_ca, now))
        h2 { (both(w::TRUSTED_CAS)) }
        @if conf.trusted_ca_certificates.is_empty() { p { (both(w::NONE)) } }
        @for der in &conf.trusted_ca_certificates { (ca_markup(der, now)) }
        p { "An officer adds one with " code { "lienthong registry trusted-ca CERT.pem" } "." }
    }
}

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let s = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.configuration(&s).await {
        Ok(conf) => c.page(
            &w::TRUSTED_CAS.title(),
            &s,
            trust_markup(&c.anchor.instance_ca_certificate, &conf),
        ),
        Err(e) => c.failed(&e, &s),
    }
}

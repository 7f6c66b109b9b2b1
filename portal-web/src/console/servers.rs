//! The security servers: address, owner, the clients they serve, and their
//! auth certificates with validity (read from the certificates the
//! registry issued, by the fingerprints the configuration names).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_proto::fields::printable;
use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::{both, hex_of, validity};
use crate::i18n::console as w;

/// What the registry knows of an issued certificate: validity, revoked.
pub(super) struct Issued {
    pub not_before: i64,
    pub not_after: i64,
    pub revoked: bool,
}

pub(super) fn servers_markup(
    conf: &GlobalConfiguration,
    issued: &HashMap<Vec<u8>, Issued>,
) -> Markup {
    let now = lienthong_proto::time::now_ms() / 1000;
    let mut servers: Vec<(String, _)> = conf
        .security_servers
        .iter()
        .map(|s| {
            let id =
                s.id.as_ref()
                    .and_then(|i| ServerId::try_from(i).ok())
                    .map_or("?".to_owned(), |i| i.to_string());
            (id, s)
        })
        .collect();
    servers.sort_by(|a, b| a.0.cmp(&b.0));
    let name_of = |owner: &str| {
        conf.members
            .iter()
            .find(|m| super::members::member_text(m) == owner)
            .map(|m| m.name.clone())
            .unwrap_or_default()
    };
    html! {
        @if servers.is_empty() { p { (both(w::NONE)) } }
        @for (id, s) in &servers {
            @let owner = s.id.as_ref().and_then(|i| ServerId::try_from(i).ok()).map(|i| i.owner.to_string()).unwrap_or_default();
            article.access {
                h2 { (id) }
                dl {
                    dt { (both(w::OWNER)) } dd { (owner) " — " (printable(&name_of(&owner))) }
                    dt { (both(w::ADDRESS)) } dd { code { (printable(&s.address)) } }
                    dt { (both(w::CLIENTS)) }
                    dd {
                        @if s.clients.is_empty() { (both(w::NONE)) }
                        @for c in &s.clients {
                            @if let Ok(c) = SubsystemId::try_from(c) { code { (c.to_string()) } br; }
                        }
                    }
                    dt { (both(w::AUTH_CERTS)) }
                    dd {
                        @for fp in &s.auth_certificate_sha256 {
                            code { (hex_of(fp)) } br;
                            @match issued.get(fp) {
                                Some(i) => {
                                    (validity(i.not_before, i.not_after, now))
                                    @if i.revoked { " " span.bad { (both(w::REVOKED)) } }
                                }
                                None => { "not issued by this registry (an external CA's)" }
                            }
                            br;
                        }
                    }
                }
            }
        }
    }
}

async fn read(
    c: &RegistryConsole,
    s: &crate::console_common::Session,
) -> Result<(GlobalConfiguration, HashMap<Vec<u8>, Issued>), RegistryCallError> {
    let conf = c.configuration(s).await?;
    let wanted: Vec<Vec<u8>> = conf
        .security_servers
        .iter()
        .flat_map(|s| s.auth_certificate_sha256.iter().cloned())
        .take(MAX_FINGERPRINTS)
        .collect();
    let certificates = c
        .client(s)
        .await?
        .get_certificates(pb::GetCertificatesRequest {
            certificate_sha256: wanted,
        })
        .await
        .map_err(RegistryCallError::refused)?
        .into_inner()
        .certificates;
    let issued = certificates
        .into_iter()
        .filter_map(|c| {
            let info = lienthong_certs::verify::parse(&c.der).ok()?;
            Some((
                c.certificate_sha256,
                Issued {
                    not_before: info.not_before,
                    not_after: info.not_after,
                    revoked: c.revoked,
                },
            ))
        })
        .collect();
    Ok((conf, issued))
}

/// Most fingerprints one `GetCertificates` call may ask for (the
/// registry's `MAX_CERTIFICATES_ASKED`).
const MAX_FINGERPRINTS: usize = 1000;

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let s = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match read(&c, &s).await {
        Ok((conf, issued)) => c.page(&w::SERVERS.title(), &s, servers_markup(&conf, &issued)),
        Err(e) => c.failed(&e, &s),
    }
}

//! Members and their subsystems, with each member's signing certificates;
//! an officer adds a member (`lienthong registry member ID --name NAME`)
//! or a subsystem (`lienthong registry subsystem ID`) through the same
//! operator API calls.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::Fingerprint;
use lienthong_proto::fields::printable;
use lienthong_proto::id::MemberId;
use lienthong_proto::pb::globalconf::v1::{GlobalConfiguration, Member};
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::{Session, both, validity};
use crate::i18n::console as w;

/// A member's id as text ("?" when unreadable).
pub(super) fn member_text(m: &Member) -> String {
    m.id.as_ref()
        .and_then(|id| MemberId::try_from(id).ok())
        .map_or("?".to_owned(), |id| id.to_string())
}

/// The members, sorted by id.
pub(super) fn sorted_members(conf: &GlobalConfiguration) -> Vec<(String, &Member)> {
    let mut v: Vec<(String, &Member)> = conf.members.iter().map(|m| (member_text(m), m)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// One signing certificate: fingerprint and validity.
fn certificate_markup(der: &[u8], now: i64, revoked: &[Vec<u8>]) -> Markup {
    let fp = Fingerprint::of(der);
    let is_revoked = revoked.iter().any(|r| r.as_slice() == fp.0.as_slice());
    html! {
        code { (fp.to_string()) } br;
        @match lienthong_certs::verify::parse(der) {
            Ok(info) => { (validity(info.not_before, info.not_after, now)) }
            Err(e) => { span.bad { "unreadable: " (printable(&e.to_string())) } }
        }
        @if is_revoked { " " span.bad { (both(w::REVOKED)) } }
    }
}

pub(super) fn members_markup(conf: &GlobalConfiguration, s: &Session, instance: &str) -> Markup {
    let members = sorted_members(conf);
    let now = lienthong_proto::time::now_ms() / 1000;
    html! {
        @if members.is_empty() { p { (both(w::NONE)) } }
        @for (id, m) in &members {
            article.access {
                h2 { (printable(&m.name)) " · " (id) }
                dl {
                    dt { (both(w::SUBSYSTEMS)) }
                    dd {
                        @if m.subsystem_codes.is_empty() { (both(w::NONE)) }
                        @for code in &m.subsystem_codes { code { (id) "/" (printable(code)) } br; }
                    }
                    dt { (both(w::SIGNING_CERTS)) }
                    dd {
                        @if m.signing_certificates.is_empty() { (both(w::NONE)) }
                        @for der in &m.signing_certificates {
                            (certificate_markup(der, now, &conf.revoked_certificate_sha256)) br;
                        }
                    }
                }
            }
        }
        h2 { (both(w::ADD_MEMBER)) }
        form method="post" action="/members/add" {
            input type="hidden" name="csrf" value=(s.csrf);
            p {
                label for="class" { (both(w::MEMBER_CLASS)) } br;
                input #class name="class" required placeholder="GOV" size="12";
            }
            p {
                label for="code" { (both(w::MEMBER_CODE)) } br;
                input #code name="code" required placeholder="000102" size="20";
            }
            p {
                label for="name" { (both(w::MEMBER_NAME)) } br;
                input #name name="name" required size="40";
            }
            p { "Instance " code { (printable(instance)) } }
            p { button #add-member type="submit" { (both(w::ADD)) } }
        }
        h2 { (both(w::ADD_SUBSYSTEM)) }
        form method="post" action="/members/subsystem" {
            input type="hidden" name="csrf" value=(s.csrf);
            p {
                label for="member" { (both(w::MEMBER)) } br;
                select #member name="member" required {
                    @for (id, m) in &members { option value=(id) { (id) " — " (printable(&m.name)) } }
                }
            }
            p {
                label for="subsystem" { (both(w::SUBSYSTEM_CODE)) } br;
                input #subsystem name="subsystem" required placeholder="population" size="30";
            }
            p { button #add-subsystem type="submit" { (both(w::ADD)) } }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let s = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.configuration(&s).await {
        Ok(conf) => c.page(
            &w::MEMBERS.title(),
            &s,
            members_markup(&conf, &s, c.instance()),
        ),
        Err(e) => c.failed(&e, &s),
    }
}

#[derive(Deserialize)]
pub(super) struct AddMemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
}

pub(super) async fn add_member(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<AddMemberForm>,
) -> Response {
    let instance = c.instance().to_owned();
    c.act(&headers, &f.csrf, "/members", |mut op, _| async move {
        let id = MemberId::new(&instance, f.class.trim(), f.code.trim())?;
        op.add_member(pb::AddMemberRequest {
            id: Some((&id).into()),
            name: f.name.trim().to_owned(),
        })
        .await
        .map_err(RegistryCallError::action)?;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct AddSubsystemForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    member: String,
    #[serde(default)]
    subsystem: String,
}

pub(super) async fn add_subsystem(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<AddSubsystemForm>,
) -> Response {
    c.act(&headers, &f.csrf, "/members", |mut op, _| async move {
        let member: MemberId = f.member.trim().parse()?;
        let id = member.subsystem(f.subsystem.trim())?;
        op.add_subsystem(pb::AddSubsystemRequest {
            id: Some((&id).into()),
        })
        .await
        .map_err(RegistryCallError::action)?;
        Ok(())
    })
    .await
}

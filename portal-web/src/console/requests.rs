//! Registration requests, pending first, with every CSR's details; an
//! officer approves or rejects a pending one with a note for the audit log.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use lienthong_proto::fields::printable;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::{both, hex_of};
use crate::i18n::console as w;

fn kind(k: i32) -> &'static str {
    match pb::RequestKind::try_from(k).unwrap_or(pb::RequestKind::Unspecified) {
        pb::RequestKind::AuthCertificate => "new server",
        pb::RequestKind::Client => "client subsystem",
        pb::RequestKind::AddressChange => "address change",
        _ => "unknown",
    }
}

fn state(s: i32) -> &'static str {
    match pb::RequestState::try_from(s).unwrap_or(pb::RequestState::Unspecified) {
        pb::RequestState::Pending => "pending",
        pb::RequestState::Approved => "approved",
        pb::RequestState::Rejected => "rejected",
        _ => "unknown",
    }
}

fn request_markup(r: &pb::RequestSummary, csrf: &str) -> Markup {
    let server = r
        .server
        .as_ref()
        .and_then(|s| ServerId::try_from(s).ok())
        .map_or("?".to_owned(), |s| s.to_string());
    let subsystem = r
        .subsystem
        .as_ref()
        .and_then(|s| SubsystemId::try_from(s).ok())
        .map(|s| s.to_string());
    html! {
        article.access {
            h2 { "Request " (r.id) " · " (kind(r.kind)) " · " (state(r.state)) }
            dl {
                dt { (both(w::SERVER)) } dd { (server) }
                @if let Some(s) = subsystem { dt { (both(w::SUBSYSTEM)) } dd { (s) } }
                dt { (both(w::SUBMITTED)) } dd { (lienthong_certs::verify::fmt_time(r.submitted_at_unix_ms / 1000)) }
                @if !r.decision_note.is_empty() { dt { (both(w::NOTE)) } dd { (printable(&r.decision_note)) } }
                @for csr in &r.csrs {
                    dt { @if csr.auth { (both(w::AUTH_KEY)) } @else { (both(w::SIGNING_KEY)) } }
                    dd {
                        (printable(&csr.key_type)) ", SHA-256 " code { (hex_of(&csr.public_key_sha256)) }
                        @if let Some(m) = csr.member.as_ref().and_then(|m| MemberId::try_from(m).ok()) { ", for " (m.to_string()) }
                    }
                }
            }
            @if r.state == pb::RequestState::Pending as i32 {
                form method="post" action="/requests/decide" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="id" value=(r.id);
                    p {
                        label for=(format!("note{}", r.id)) { (both(w::NOTE_FOR_AUDIT)) } br;
                        input id=(format!("note{}", r.id)) name="note" required;
                    }
                    p {
                        button type="submit" name="decision" value="approve" { (both(w::APPROVE)) } " "
                        button.secondary type="submit" name="decision" value="reject" { (both(w::REJECT)) }
                    }
                }
            }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<RegistryConsole>>, headers: HeaderMap) -> Response {
    let session = match c.sessions.require(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let listed = async {
        c.client(&session)
            .await?
            .list_requests(pb::ListRequestsRequest::default())
            .await
            .map(|r| r.into_inner().requests)
            .map_err(|s| RegistryCallError::Refused(Box::new(s)))
    };
    match listed.await {
        Ok(mut list) => {
            list.sort_by_key(|r| {
                (
                    r.state != pb::RequestState::Pending as i32,
                    std::cmp::Reverse(r.id),
                )
            });
            c.shell
                .page(
                    &w::REQUESTS.title(),
                    Some(&session),
                    html! {
                        @if list.is_empty() { p { (both(w::NO_REQUESTS)) } }
                        @for r in &list { (request_markup(r, &session.csrf)) }
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

#[derive(Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    note: String,
    #[serde(default)]
    decision: String,
}

pub(super) async fn decide(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let session = match c.sessions.require_form(&headers, &f.csrf, &c.shell) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The person signed in (if any) is named by the call itself, in the
    // audit record's actor: the note is the officer's own words.
    let req = pb::DecideRequest {
        id: f.id,
        note: f.note.chars().take(1000).collect(),
    };
    let decided = async {
        let mut op = c.client(&session).await?;
        let r = match f.decision.as_str() {
            "approve" => op.approve_request(req).await,
            "reject" => op.reject_request(req).await,
            _ => return Err(RegistryCallError::UnknownDecision),
        };
        r.map_err(|s| RegistryCallError::Action(Box::new(s)))
    };
    match decided.await {
        Ok(_) => Redirect::to("/requests").into_response(),
        Err(why) => c.refused(
            StatusCode::FORBIDDEN,
            "The registry refused",
            &why.to_string(),
            Some(&session),
        ),
    }
}

//! Services (provider, description, personal data, whether the service
//! catalogue holds a descriptor set) and global groups with their
//! members; an officer adds a subsystem to a group or removes one
//! (`lienthong registry group add|remove GROUP --subsystem SUBSYSTEM`).

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_proto::fields::printable;
use lienthong_proto::id::{GlobalGroupId, ServiceId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::pb::registry::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::{RegistryCallError, RegistryConsole};
use crate::console_common::{Session, both, hex_of};
use crate::i18n::console as w;

pub(super) fn services_markup(conf: &GlobalConfiguration, s: &Session) -> Markup {
    let mut services: Vec<(String, _)> = conf
        .services
        .iter()
        .map(|svc| {
            let id = svc
                .id
                .as_ref()
                .and_then(|i| ServiceId::try_from(i).ok())
                .map_or("?".to_owned(), |i| i.to_string());
            (id, svc)
        })
        .collect();
    services.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<(String, _)> = conf
        .global_groups
        .iter()
        .map(|g| {
            let id =
                g.id.as_ref()
                    .and_then(|i| GlobalGroupId::try_from(i).ok())
                    .map_or("?".to_owned(), |i| i.to_string());
            (id, g)
        })
        .collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    html! {
        @if services.is_empty() { p { (both(w::NONE)) } }
        @else {
            table.services {
                thead { tr {
                    th scope="col" { (both(w::SERVICES)) }
                    th scope="col" { (both(w::DESCRIPTION)) }
                    th scope="col" { (both(w::PERSONAL_DATA)) }
                    th scope="col" { (both(w::IN_CATALOGUE)) }
                } }
                tbody {
                    @for (id, svc) in &services {
                        tr {
                            td { code { (id) } }
                            td { (printable(&svc.description)) }
                            td { @if svc.personal_data { (both(w::YES)) } @else { (both(w::NO)) } }
                            td {
                                @if svc.descriptor_set_sha256.is_empty() { (both(w::NO)) }
                                @else { (both(w::YES)) br; code title="SHA-256" { (hex_of(&svc.descriptor_set_sha256)[..16]) "…" } }
                            }
                        }
                    }
                }
            }
        }
        h2 #groups { (both(w::GROUPS)) }
        @if groups.is_empty() { p { (both(w::NONE)) } }
        @for (i, (id, g)) in groups.iter().enumerate() {
            article.access {
                h3 { (id) }
                @if !g.description.is_empty() { p { (printable(&g.description)) } }
                h4 { (both(w::GROUP_MEMBERS)) }
                @if g.subsystems.is_empty() { p { (both(w::NONE)) } }
                ul {
                    @for sub in g.subsystems.iter().filter_map(|x| SubsystemId::try_from(x).ok()) {
                        li {
                            form.inline method="post" action="/groups/change" {
                                code { (sub.to_string()) } " "
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="action" value="remove";
                                input type="hidden" name="group" value=(id);
                                input type="hidden" name="subsystem" value=(sub.to_string());
                                button.secondary type="submit" { (both(w::REMOVE)) }
                            }
                        }
                    }
                }
                form method="post" action="/groups/change" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="action" value="add";
                    input type="hidden" name="group" value=(id);
                    p {
                        label for=(format!("g{i}")) { (both(w::SUBSYSTEM)) " (INSTANCE/CLASS/MEMBER/SUBSYSTEM)" } br;
                        input id=(format!("g{i}")) name="subsystem" required size="40";
                    }
                    p { button type="submit" id=(format!("add-to-group{i}")) { (both(w::ADD_TO_GROUP)) } }
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
    match c.configuration(&s).await {
        Ok(conf) => c.page(&w::SERVICES.title(), &s, services_markup(&conf, &s)),
        Err(e) => c.failed(&e, &s),
    }
}

#[derive(Deserialize)]
pub(super) struct GroupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    subsystem: String,
}

pub(super) async fn change_group(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> Response {
    c.act(
        &headers,
        &f.csrf,
        "/services#groups",
        |mut op, _| async move {
            let group: GlobalGroupId = f.group.trim().parse()?;
            let subsystem: SubsystemId = f.subsystem.trim().parse()?;
            let req = pb::GroupMemberRequest {
                group: Some((&group).into()),
                subsystem: Some((&subsystem).into()),
            };
            match f.action.as_str() {
                "add" => op.add_group_member(req).await,
                "remove" => op.remove_group_member(req).await,
                _ => return Err(RegistryCallError::Form("add or remove".into())),
            }
            .map_err(RegistryCallError::action)?;
            Ok(())
        },
    )
    .await
}

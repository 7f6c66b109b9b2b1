//! Officers signing in as themselves through the organisation's OpenID
//! provider ([`super::OfficerOidc`]).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use lienthong_proto::fields::printable;
use serde::Deserialize;

use super::{MAX_PENDING, PENDING_TTL, RegistryConsole};
use crate::state::{random_token, same};

pub(super) async fn oidc_start(State(c): State<Arc<RegistryConsole>>) -> Response {
    let Some(o) = &c.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (url, pending) = match o.oidc.begin().await {
        Ok(x) => x,
        Err(e) => {
            return c.refused(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                &e.to_string(),
                None,
            );
        }
    };
    let id = random_token();
    {
        let Ok(mut map) = c.pending.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        map.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            return c.refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "too many sign-ins under way",
                None,
            );
        }
        map.insert(id.clone(), pending);
    }
    let secure = if c.secure_cookies { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a cross-site navigation.
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age=600{secure}",
        c.login_cookie()
    );
    let mut r = Redirect::to(&url).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(super) struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
}

/// The role `claims` give under `name`.
fn role_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'static str> {
    let has = |role: &str| match claims.get(name) {
        Some(serde_json::Value::String(s)) => s == role,
        Some(serde_json::Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(role)),
        _ => false,
    };
    if has("officer") {
        Some("officer")
    } else if has("observer") {
        Some("observer")
    } else {
        None
    }
}

pub(super) async fn oidc_callback(
    State(c): State<Arc<RegistryConsole>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = &c.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refused = |why: &str| c.refused(StatusCode::BAD_REQUEST, "Sign-in refused", why, None);
    let pending = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == c.login_cookie())
        .and_then(|(_, id)| c.pending.lock().ok()?.remove(id));
    if let Some(e) = &q.error {
        return refused(&format!("the identity provider said: {e}"));
    }
    let Some(pending) = pending else {
        return refused("the sign-in is unknown or expired; start again");
    };
    if !same(&q.state, &pending.state) {
        return refused("the sign-in is not the one this browser started (state mismatch)");
    }
    let login = match o.oidc.finish(pending, &q.code).await {
        Ok(l) => l,
        Err(e) => {
            tracing::info!(error = %e, "officer sign-in refused");
            return refused(&e.to_string());
        }
    };
    let person = printable(&login.personal_id).into_owned();
    let Some(role) = role_of(&login.claims, &o.role_claim) else {
        tracing::info!(%person, "officer sign-in refused: no registry role");
        return c.refused(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!(
                "{person} holds no registry role: the identity provider's {:?} claim names neither officer nor observer",
                o.role_claim
            ),
            None,
        );
    };
    let token = if role == "officer" {
        o.officer_token.clone()
    } else {
        o.observer_token.clone()
    };
    tracing::info!(%person, role, "officer signed in");
    match c.sessions.open(
        token,
        format!("{person} ({role})"),
        Some(person),
        "/requests",
    ) {
        Ok(mut r) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
                c.login_cookie()
            )) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            r
        }
        Err(why) => c.refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in failed",
            &why.to_string(),
            None,
        ),
    }
}

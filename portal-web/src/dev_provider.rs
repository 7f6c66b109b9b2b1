//! A development OpenID provider for `lienthong demo` — **not an eID**:
//! anyone can sign in as anyone, and every page it shows says so.
//!
//! It speaks just enough of OpenID Connect for the portal's real login
//! code to run unchanged: discovery, its key set (one P-256 key made at
//! start), an authorization page with a form, and a token endpoint that
//! checks the client, the redirect URI, PKCE (S256) and single use of each
//! code. [`Tamper`] makes it issue tokens that a relying party must refuse
//! (tests of the portal's checks use it; a demo never does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use lienthong_proto::time::now_secs;
use maud::{DOCTYPE, html};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Deserialize;
use serde_json::json;

use crate::state::{random_token, same};

/// What every page of the development provider says.
pub const BANNER: &str = "DEVELOPMENT IDENTITY PROVIDER — not an eID: anyone can sign in as anyone. / NHÀ CUNG CẤP ĐỊNH DANH THỬ NGHIỆM — không phải định danh điện tử thật.";

/// How long a code may wait to be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long an ID token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Ways to issue a token a relying party must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tamper {
    #[default]
    None,
    /// Expired an hour ago.
    Expired,
    /// For another client.
    OtherAudience,
    /// Signed by a key the provider does not publish.
    ForeignKey,
    /// With another nonce than the login's.
    WrongNonce,
    /// With an authentication level below any accepted one.
    LowAcr,
    /// The signature's bytes changed after signing.
    BrokenSignature,
}

/// The provider's settings.
#[derive(Debug, Clone)]
pub struct DevProviderConfig {
    /// Its own URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The only redirect URI it sends codes to.
    pub redirect_uri: String,
    /// The claim that carries the personal id.
    pub personal_id_claim: String,
    /// The `acr` it asserts.
    pub acr: String,
    /// Prefilled in the form.
    pub suggested_personal_id: String,
}

struct Code {
    nonce: String,
    challenge: String,
    personal_id: String,
    issued: Instant,
}

struct Inner {
    cfg: DevProviderConfig,
    key: EcdsaKeyPair,
    foreign: EcdsaKeyPair,
    codes: Mutex<HashMap<String, Code>>,
    tamper: Mutex<Tamper>,
}

/// The provider; clone it to change [`Tamper`] while it serves.
#[derive(Clone)]
pub struct DevProvider(Arc<Inner>);

impl std::fmt::Debug for DevProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevProvider")
            .field("issuer", &self.0.cfg.issuer)
            .finish_non_exhaustive()
    }
}

/// Why the development provider could not make its keys or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DevKeyError {
    #[error("cannot make a key")]
    Generate,
    #[error("cannot read the key made")]
    Read,
    #[error("cannot sign")]
    Sign,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone, thiserror::Error)]
enum AuthRequestError {
    #[error("unknown client or redirect URI")]
    UnknownClient,
    #[error("PKCE with S256 is required")]
    NoPkce,
    #[error("state and nonce are required")]
    NoStateOrNonce,
}

fn new_key() -> Result<EcdsaKeyPair, DevKeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| DevKeyError::Generate)?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| DevKeyError::Read)
}

impl DevProvider {
    pub fn new(cfg: DevProviderConfig) -> Result<Self, DevKeyError> {
        Ok(DevProvider(Arc::new(Inner {
            cfg,
            key: new_key()?,
            foreign: new_key()?,
            codes: Mutex::new(HashMap::new()),
            tamper: Mutex::new(Tamper::None),
        })))
    }

    pub fn set_tamper(&self, t: Tamper) {
        if let Ok(mut held) = self.0.tamper.lock() {
            *held = t;
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize_page).post(authorize))
            .route("/token", axum::routing::post(token))
            .with_state(self.clone())
    }

    fn id_token(&self, code: &Code) -> Result<String, DevKeyError> {
        let cfg = &self.0.cfg;
        let tamper = self.0.tamper.lock().map(|t| *t).unwrap_or_default();
        let now = now_secs();
        let exp = if tamper == Tamper::Expired {
            now - 3600
        } else {
            now + TOKEN_TTL.as_secs() as i64
        };
        let mut claims = json!({
            "iss": cfg.issuer,
            "sub": code.personal_id,
            "aud": if tamper == Tamper::OtherAudience { "another-client" } else { cfg.client_id.as_str() },
            "iat": now,
            "exp": exp,
            "auth_time": now,
            "nonce": if tamper == Tamper::WrongNonce { "not-the-login-nonce" } else { code.nonce.as_str() },
            "acr": if tamper == Tamper::LowAcr { "dev-low" } else { cfg.acr.as_str() },
        });
        claims[cfg.personal_id_claim.as_str()] = json!(code.personal_id);
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "dev-1"});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let key = if tamper == Tamper::ForeignKey {
            &self.0.foreign
        } else {
            &self.0.key
        };
        let mut sig = key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| DevKeyError::Sign)?
            .as_ref()
            .to_vec();
        if tamper == Tamper::BrokenSignature {
            sig[10] ^= 1;
        }
        Ok(format!("{input}.{}", B64URL.encode(sig)))
    }
}

async fn discovery(State(p): State<DevProvider>) -> Response {
    let iss = &p.0.cfg.issuer;
    axum::Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": ["sub", "acr", p.0.cfg.personal_id_claim],
    }))
    .into_response()
}

async fn jwks(State(p): State<DevProvider>) -> Response {
    // An uncompressed point: 0x04 || x || y.
    let point = p.0.key.public_key().as_ref();
    axum::Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "dev-1",
        "x": B64URL.encode(&point[1..33]),
        "y": B64URL.encode(&point[33..65]),
    }]}))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct AuthRequest {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    personal_id: String,
}

fn check_request(p: &DevProvider, q: &AuthRequest) -> Result<(), AuthRequestError> {
    let cfg = &p.0.cfg;
    if q.client_id != cfg.client_id || q.redirect_uri != cfg.redirect_uri {
        return Err(AuthRequestError::UnknownClient);
    }
    if q.code_challenge_method != "S256" || q.code_challenge.is_empty() {
        return Err(AuthRequestError::NoPkce);
    }
    if q.nonce.is_empty() || q.state.is_empty() {
        return Err(AuthRequestError::NoStateOrNonce);
    }
    Ok(())
}

fn page(title: &str, body: maud::Markup) -> Response {
    html! {
        (DOCTYPE)
        html lang="vi" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1"; title { (title) } }
            body style="font-family:system-ui,sans-serif;max-width:40rem;margin:0 auto;padding:1rem" {
                p role="note" style="background:#ffe14d;color:#000;padding:.75rem;font-weight:bold;border:2px solid #000" { (BANNER) }
                h1 { (title) }
                (body)
            }
        }
    }
    .into_response()
}

async fn authorize_page(State(p): State<DevProvider>, Query(q): Query<AuthRequest>) -> Response {
    if let Err(e) = check_request(&p, &q) {
        return (
            StatusCode::BAD_REQUEST,
            page("Refused", html! { p { (e.to_string()) } }),
        )
            .into_response();
    }
    page(
        "Đăng nhập thử nghiệm / Development sign-in",
        html! {
            form method="post" action="/authorize" {
                @for (k, v) in [("client_id", &q.client_id), ("redirect_uri", &q.redirect_uri), ("state", &q.state), ("nonce", &q.nonce), ("code_challenge", &q.code_challenge), ("code_challenge_method", &q.code_challenge_method)] {
                    input type="hidden" name=(k) value=(v);
                }
                p {
                    label for="personal_id" { "Số định danh / Personal ID" } br;
                    input #personal_id name="personal_id" value=(p.0.cfg.suggested_personal_id) autocomplete="off" required;
                }
                p { button type="submit" { "Đăng nhập / Sign in" } }
            }
        },
    )
}

async fn authorize(State(p): State<DevProvider>, Form(q): Form<AuthRequest>) -> Response {
    if let Err(e) = check_request(&p, &q) {
        return (
            StatusCode::BAD_REQUEST,
            page("Refused", html! { p { (e.to_string()) } }),
        )
            .into_response();
    }
    let code = random_token();
    if let Ok(mut codes) = p.0.codes.lock() {
        codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        if codes.len() > 10_000 {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many logins").into_response();
        }
        codes.insert(
            code.clone(),
            Code {
                nonce: q.nonce.clone(),
                challenge: q.code_challenge.clone(),
                personal_id: q.personal_id.chars().take(64).collect(),
                issued: Instant::now(),
            },
        );
    }
    let back = serde_urlencoded::to_string([("code", code.as_str()), ("state", q.state.as_str())])
        .unwrap_or_default();
    Redirect::to(&format!("{}?{back}", p.0.cfg.redirect_uri)).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
}

fn token_error(what: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": what})),
    )
        .into_response()
}

/// The client's id and secret, from HTTP Basic or the form.
fn client_credentials(headers: &HeaderMap, form: &TokenRequest) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let dec = |x: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={x}"))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|(_, v)| v)
            };
            Some((dec(id)?, dec(secret)?))
        });
    basic.unwrap_or_else(|| (form.client_id.clone(), form.client_secret.clone()))
}

async fn token(
    State(p): State<DevProvider>,
    headers: HeaderMap,
    Form(f): Form<TokenRequest>,
) -> Response {
    let cfg = &p.0.cfg;
    let (id, secret) = client_credentials(&headers, &f);
    if id != cfg.client_id || !same(&secret, &cfg.client_secret) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if f.grant_type != "authorization_code" || f.redirect_uri != cfg.redirect_uri {
        return token_error("grant type or redirect URI");
    }
    // Single use: taken out whatever follows.
    let Some(code) = p.0.codes.lock().ok().and_then(|mut c| c.remove(&f.code)) else {
        return token_error("unknown or used code");
    };
    if code.issued.elapsed() >= CODE_TTL {
        return token_error("expired code");
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, f.code_verifier.as_bytes());
    if !same(&B64URL.encode(digest.as_ref()), &code.challenge) {
        return token_error("PKCE verifier does not match");
    }
    match p.id_token(&code) {
        Ok(id_token) => axum::Json(json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL.as_secs(),
            "id_token": id_token,
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

//! Citizens' login by OpenID Connect: authorization code with PKCE (S256),
//! a nonce and a state per attempt; the ID token's signature (the
//! provider's published keys, asymmetric algorithms only), issuer,
//! audience, expiry and nonce are checked by `openidconnect`, then the
//! `acr` against the accepted levels and the personal id from the
//! configured claim.
//!
//! The provider's metadata and keys are discovered from the issuer URL and
//! kept for [`DISCOVERY_TTL`]; a token signed by a key not yet known makes
//! one fresh discovery (the provider rotated its keys).

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::http_client::HttpClient;

/// How long discovered metadata and keys are kept.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// Claims a person can edit at the provider: never a personal id.
pub const EDITABLE_CLAIMS: &[&str] = &[
    "email",
    "preferred_username",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "profile",
    "picture",
    "website",
    "phone_number",
    "address",
];

/// Signature algorithms accepted on ID tokens: asymmetric only (an HMAC
/// keyed with the client secret, or `none`, proves nothing about the
/// provider).
const ALGORITHMS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The claims beyond the standard ones, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for Extra {}

type Fields = IdTokenFields<
    Extra,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type Client = openidconnect::Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Login settings.
#[derive(Clone)]
pub struct OidcConfig {
    /// The provider's issuer URL (`https://`; `http://` only on loopback).
    pub issuer: String,
    pub client_id: String,
    /// None for a public client (PKCE alone).
    pub client_secret: Option<String>,
    /// Where the provider sends the citizen back (`{public URL}/auth/callback`).
    pub redirect_url: String,
    /// The claim carrying the verified personal id.
    pub personal_id_claim: String,
    /// `acr` values good enough (the configured level and those above it).
    pub accepted_acr: Vec<String>,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("personal_id_claim", &self.personal_id_claim)
            .field("accepted_acr", &self.accepted_acr)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    /// Every problem at once.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (what, url) in [
            ("issuer", &self.issuer),
            ("redirect URL", &self.redirect_url),
        ] {
            match openidconnect::url::Url::parse(url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
                Ok(_) => errors.push(format!(
                    "the {what} {url} must be https:// (http:// only on loopback)"
                )),
                Err(e) => errors.push(format!("the {what} {url:?}: {e}")),
            }
        }
        if self.client_id.is_empty() {
            errors.push("the client id is empty".into());
        }
        let claim = self.personal_id_claim.as_str();
        if claim.is_empty() || EDITABLE_CLAIMS.contains(&claim) {
            errors.push(format!(
                "the personal-id claim {claim:?} must be one the provider asserts from identity proofing, never one a person edits ({})",
                EDITABLE_CLAIMS.join(", ")
            ));
        }
        if self.accepted_acr.iter().all(String::is_empty) {
            errors.push("name at least one accepted acr (authentication level)".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn is_loopback(u: &openidconnect::url::Url) -> bool {
    match u.host() {
        Some(openidconnect::url::Host::Domain(d)) => d == "localhost",
        Some(openidconnect::url::Host::Ipv4(a)) => a.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// One login attempt, kept by the portal until the provider sends the
/// citizen back.
pub struct PendingLogin {
    pub state: String,
    nonce: Nonce,
    pkce: PkceCodeVerifier,
    pub started: Instant,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin").finish_non_exhaustive()
    }
}

/// What a verified ID token said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The personal id claim as given (not yet in canonical form).
    pub personal_id: String,
    pub acr: String,
    /// The token's claims beyond the standard ones (verified with it),
    /// e.g. a role the provider asserts.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a login failed (shown to the citizen; never a token).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached: {0}")]
    Discovery(String),
    #[error("the identity provider refused the code: {0}")]
    Token(String),
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
    #[error("the authentication level {0:?} is below the level this page requires")]
    Acr(String),
    #[error("the ID token carries no personal id claim {0:?}")]
    NoPersonalId(String),
    #[error("the login is not the one this browser started (state mismatch)")]
    State,
    #[error("the login is unknown or expired; start again")]
    Unknown,
    #[error("the identity provider said: {0}")]
    Provider(String),
}

/// The relying party.
pub struct Oidc {
    cfg: OidcConfig,
    http: HttpClient,
    discovered: Mutex<Option<(Instant, Client)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(cfg: OidcConfig, http: HttpClient) -> Result<Self, Vec<String>> {
        cfg.check()?;
        Ok(Oidc {
            cfg,
            http,
            discovered: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// The client, discovered afresh when older than [`DISCOVERY_TTL`] or
    /// when `fresh`.
    async fn client(&self, fresh: bool) -> Result<Client, LoginError> {
        let mut held = self.discovered.lock().await;
        if let Some((at, c)) = held.as_ref()
            && !fresh
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let http = self.http.clone();
        let meta = CoreProviderMetadata::discover_async(issuer, &move |r| {
            let http = http.clone();
            async move { http.call(r).await }
        })
        .await
        .map_err(|e| LoginError::Discovery(error_chain(&e)))?;
        let redirect = RedirectUrl::new(self.cfg.redirect_url.clone())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let client = Client::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            self.cfg.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        *held = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    /// The provider's URL to send the citizen to, and what to keep until
    /// the citizen comes back.
    pub async fn begin(&self) -> Result<(String, PendingLogin), LoginError> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .add_auth_context_value(AuthenticationContextClass::new(
                self.cfg.accepted_acr.join(" "),
            ));
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.url();
        Ok((
            url.to_string(),
            PendingLogin {
                state: state.secret().clone(),
                nonce,
                pkce: verifier,
                started: Instant::now(),
            },
        ))
    }

    /// Redeems `code` for the login `pending` started; the caller checked
    /// the state.
    pub async fn finish(&self, pending: PendingLogin, code: &str) -> Result<Login, LoginError> {
        let client = self.client(false).await?;
        let http = self.http.clone();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Token(e.to_string()))?
            .set_pkce_verifier(pkce_clone(&pending.pkce))
            .request_async(&move |r| {
                let http = http.clone();
                async move { http.call(r).await }
            })
            .await
            .map_err(|e| LoginError::Token(error_chain(&e)))?;
        let id_token = tokens.id_token().ok_or(LoginError::NoIdToken)?;
        let check = |c: &Client| {
            let verifier = c
                .id_token_verifier()
                .set_allowed_algs(ALGORITHMS.iter().cloned());
            id_token
                .claims(&verifier, &pending.nonce)
                .cloned()
                .map_err(|e| error_chain(&e))
        };
        let claims = match check(&client) {
            Ok(c) => c,
            // Keys rotated since discovery: look once more.
            Err(e) if e.contains("key") || e.contains("signature") => {
                check(&self.client(true).await?).map_err(LoginError::IdToken)?
            }
            Err(e) => return Err(LoginError::IdToken(e)),
        };
        let acr = claims
            .auth_context_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        if !self.cfg.accepted_acr.contains(&acr) {
            return Err(LoginError::Acr(acr));
        }
        let claim = &self.cfg.personal_id_claim;
        let personal_id = match claims.additional_claims().rest.get(claim) {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err(LoginError::NoPersonalId(claim.clone())),
        };
        Ok(Login {
            personal_id,
            acr,
            claims: claims.additional_claims().rest.clone(),
        })
    }
}

fn pkce_clone(v: &PkceCodeVerifier) -> PkceCodeVerifier {
    PkceCodeVerifier::new(v.secret().clone())
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://eid.example.vn".into(),
            client_id: "portal".into(),
            client_secret: None,
            redirect_url: "https://tracuu.example.vn/auth/callback".into(),
            personal_id_claim: "personal_id".into(),
            accepted_acr: vec!["substantial".into()],
            scopes: Vec::new(),
        }
    }

    #[test]
    fn settings_are_checked_all_at_once() {
        assert!(config().check().is_ok());
        let loopback = OidcConfig {
            issuer: "http://127.0.0.1:9000".into(),
            redirect_url: "http://localhost:8443/auth/callback".into(),
            ..config()
        };
        assert!(loopback.check().is_ok(), "plain HTTP on loopback");
        let bad = OidcConfig {
            issuer: "http://eid.example.vn".into(),
            client_id: String::new(),
            personal_id_claim: "email".into(),
            accepted_acr: Vec::new(),
            ..config()
        };
        let errors = bad.check().unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("must be https://"), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("never one a person edits"))
        );
        assert!(errors.iter().any(|e| e.contains("acr")));
    }

    #[test]
    fn no_editable_claim_can_carry_the_personal_id() {
        for claim in EDITABLE_CLAIMS {
            let c = OidcConfig {
                personal_id_claim: (*claim).into(),
                ..config()
            };
            assert!(c.check().is_err(), "{claim}");
        }
    }

    #[test]
    fn the_client_secret_is_never_printed() {
        let c = OidcConfig {
            client_secret: Some("s3cr3t-value".into()),
            ..config()
        };
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}

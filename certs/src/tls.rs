//! Mutual TLS between security servers.
//!
//! A peer is accepted only if its certificate
//! 1. chains to a CA the instance trusts, is within its validity window and
//!    carries the TLS key usage for its role, **and**
//! 2. has a SHA-256 fingerprint in the pinned set — the auth certificates the
//!    global configuration lists, minus revoked ones.
//!
//! Both live in a [`TrustStore`] that the configuration client swaps at run
//! time; every new handshake reads the current [`Trust`]. Host names are not
//! checked: a server is identified by its pinned certificate and the server
//! id in its subject, not by the address it was reached at (addresses move).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_proto::id::ServerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, TrustAnchor, UnixTime,
};

use crate::verify::{self, Usage};
use crate::{CertError, Fingerprint, PrivateKey};

/// ALPN protocol of gRPC over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// What a server trusts at one moment: CA anchors and pinned fingerprints.
#[derive(Clone)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    pinned: HashSet<Fingerprint>,
    revoked: HashSet<Fingerprint>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("anchors", &self.anchors.len())
            .field("pinned", &self.pinned.len())
            .finish()
    }
}

impl Trust {
    /// Trust in certificates chaining to `cas` whose fingerprints are in `pinned`.
    pub fn new(
        cas: &[CertificateDer<'_>],
        pinned: impl IntoIterator<Item = Fingerprint>,
    ) -> Result<Self, CertError> {
        Ok(Trust {
            anchors: verify::anchors(cas)?,
            pinned: pinned.into_iter().collect(),
            revoked: HashSet::new(),
        })
    }

    /// The same trust, refusing certificates in `revoked` even where they
    /// chain to a trusted CA.
    pub fn with_revoked(mut self, revoked: impl IntoIterator<Item = Fingerprint>) -> Self {
        self.revoked.extend(revoked);
        self
    }

    pub fn is_revoked(&self, fp: &Fingerprint) -> bool {
        self.revoked.contains(fp)
    }

    pub fn is_pinned(&self, fp: &Fingerprint) -> bool {
        self.pinned.contains(fp)
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// Verifies a peer's end-entity certificate for `usage` and returns the
    /// server it names.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        usage: Usage,
        now: SystemTime,
        expected: Option<&ServerId>,
    ) -> Result<ServerId, CertError> {
        let id = verify::verify_auth_cert(end_entity, &self.anchors, now, usage, expected)?;
        let fp = Fingerprint::of(end_entity);
        if !self.is_pinned(&fp) {
            return Err(CertError::NotPinned(fp));
        }
        Ok(id)
    }

    /// Verifies a peer's end-entity certificate for `usage` by its chain
    /// alone (a trusted CA, in its validity, not revoked), whether or not
    /// the configuration pins it yet; returns the server it names.
    pub fn verify_chained(
        &self,
        end_entity: &CertificateDer<'_>,
        usage: Usage,
        now: SystemTime,
    ) -> Result<ServerId, CertError> {
        let id = verify::verify_auth_cert(end_entity, &self.anchors, now, usage, None)?;
        let fp = Fingerprint::of(end_entity);
        if self.is_revoked(&fp) {
            return Err(CertError::Revoked(fp));
        }
        Ok(id)
    }
}

/// The current [`Trust`], replaceable at run time.
#[derive(Clone, Debug)]
pub struct TrustStore(Arc<RwLock<Arc<Trust>>>);

impl TrustStore {
    pub fn new(trust: Trust) -> Self {
        TrustStore(Arc::new(RwLock::new(Arc::new(trust))))
    }

    /// The trust in force now.
    pub fn current(&self) -> Arc<Trust> {
        // A poisoned lock still holds a complete Arc: a writer only swaps it.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the trust; handshakes from now on use the new one.
    pub fn replace(&self, trust: Trust) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(trust);
    }
}

/// A TLS identity: certificate chain (leaf first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("leaf", &self.chain.first().map(|c| Fingerprint::of(c)))
            .field("key", &self.key)
            .finish()
    }
}

impl Identity {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_pkcs8_der()))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn to_rustls(e: CertError) -> rustls::Error {
    let cert_err = match e {
        CertError::Expired { .. } => CertificateError::Expired,
        CertError::NotYetValid { .. } => CertificateError::NotValidYet,
        CertError::UnknownIssuer => CertificateError::UnknownIssuer,
        CertError::BadCertificateSignature => CertificateError::BadSignature,
        CertError::Revoked(_) => CertificateError::Revoked,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_err)
}

fn now_from(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// Says whether a certificate fingerprint is pinned.
pub type PinCheck = Arc<dyn Fn(&Fingerprint) -> bool + Send + Sync>;

/// How a connecting client's certificate is judged.
enum ClientCheck {
    /// Chains to a trusted CA and is pinned by the configuration.
    Trust(TrustStore),
    /// Chains to a trusted CA and is not revoked; whether the
    /// configuration pins it is the server's first check of every request.
    Chained(TrustStore),
    /// Is pinned, whoever issued it (information systems' certificates,
    /// often self-signed, pinned by the server's operator).
    PinnedOnly(PinCheck),
}

std::thread_local! {
    /// The client certificate this thread's verifier last refused.
    static REFUSED: std::cell::Cell<Option<Fingerprint>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` — one poll of a server-side handshake — and returns with its
/// result the fingerprint of a client certificate the verifier refused
/// during it. rustls verifies synchronously inside the poll that reads the
/// certificate, so a listener learns what the peer it refused presented,
/// connection by connection, from one shared server config.
pub fn refused_during<R>(f: impl FnOnce() -> R) -> (R, Option<Fingerprint>) {
    REFUSED.with(|r| r.set(None));
    let out = f();
    (out, REFUSED.with(std::cell::Cell::take))
}

/// Verifies the certificates of connecting peers (server side).
struct PinnedClientVerifier {
    check: ClientCheck,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinnedClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.check {
            ClientCheck::Trust(_) => "PinnedClientVerifier(trust store)",
            ClientCheck::Chained(_) => "PinnedClientVerifier(chain, revocations)",
            ClientCheck::PinnedOnly(_) => "PinnedClientVerifier(pins only)",
        })
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = match &self.check {
            ClientCheck::Trust(store) => store
                .current()
                .verify_peer(end_entity, Usage::TlsClient, now_from(now), None)
                .map(|_| ()),
            ClientCheck::Chained(store) => store
                .current()
                .verify_chained(end_entity, Usage::TlsClient, now_from(now))
                .map(|_| ()),
            ClientCheck::PinnedOnly(is_pinned) => {
                let fp = Fingerprint::of(end_entity);
                if is_pinned(&fp) {
                    Ok(())
                } else {
                    Err(CertError::NotPinned(fp))
                }
            }
        };
        match verdict {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                let fp = Fingerprint::of(end_entity);
                REFUSED.with(|r| r.set(Some(fp)));
                tracing::warn!(peer = %fp, error = %e, "refused TLS client");
                Err(to_rustls(e))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies the certificate of the peer we connect to (client side).
#[derive(Debug)]
struct PinnedServerVerifier {
    store: TrustStore,
    expected: Option<ServerId>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let trust = self.store.current();
        match trust.verify_peer(
            end_entity,
            Usage::TlsServer,
            now_from(now),
            self.expected.as_ref(),
        ) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                tracing::warn!(peer = %Fingerprint::of(end_entity), error = %e, "refused TLS server");
                Err(to_rustls(e))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A server config for mutual TLS: presents `identity`, requires a client
/// certificate that `store` accepts, speaks only HTTP/2, TLS 1.3 and 1.2.
pub fn server_config(identity: &Identity, store: TrustStore) -> Result<ServerConfig, CertError> {
    client_checking_server_config(identity, ClientCheck::Trust(store))
}

/// A server config for mutual TLS whose handshake admits any client
/// certificate chaining to a CA of `store` and not revoked; the server
/// checks that the configuration pins it as the first step of every
/// request, so a peer that joined since the last configuration poll is
/// not refused at the handshake, where nothing could say why.
pub fn server_config_chained_clients(
    identity: &Identity,
    store: TrustStore,
) -> Result<ServerConfig, CertError> {
    client_checking_server_config(identity, ClientCheck::Chained(store))
}

/// A server config that admits only clients whose certificate `is_pinned`
/// accepts, whoever issued it (a security server's information systems).
pub fn server_config_pinned_clients(
    identity: &Identity,
    is_pinned: PinCheck,
) -> Result<ServerConfig, CertError> {
    client_checking_server_config(identity, ClientCheck::PinnedOnly(is_pinned))
}

/// A server config presenting `identity` that requires a client
/// certificate passing `check`; HTTP/2 only, TLS 1.3 and 1.2.
fn client_checking_server_config(
    identity: &Identity,
    check: ClientCheck,
) -> Result<ServerConfig, CertError> {
    let provider = provider();
    let verifier = PinnedClientVerifier {
        check,
        algs: provider.signature_verification_algorithms,
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Generate(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.chain.clone(), identity.key_der())
        .map_err(|e| CertError::BadKey(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A server config for one-way TLS (the registry's public endpoints):
/// presents `identity`, asks no client certificate.
pub fn server_config_no_client_auth(identity: &Identity) -> Result<ServerConfig, CertError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Generate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key_der())
        .map_err(|e| CertError::BadKey(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A client config for mutual TLS: presents `identity` and accepts a server
/// that `store` accepts and, when `expected` is set, that names that server.
pub fn client_config(
    identity: &Identity,
    store: TrustStore,
    expected: Option<ServerId>,
) -> Result<ClientConfig, CertError> {
    let provider = provider();
    let verifier = PinnedServerVerifier {
        store,
        expected,
        algs: provider.signature_verification_algorithms,
    };
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Generate(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.chain.clone(), identity.key_der())
        .map_err(|e| CertError::BadKey(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

fn root_store(cas: &[CertificateDer<'_>]) -> Result<Arc<rustls::RootCertStore>, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| CertError::Chain(format!("CA certificate is not usable: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A server config for the registry's endpoints: presents `identity`; a
/// client *may* present a certificate chaining to `cas` (a registered
/// security server does, so its later requests are authenticated by TLS),
/// anonymous clients are admitted and identified by other means (operator
/// token, enrollment token) or not at all (configuration download).
pub fn server_config_optional_client_auth(
    identity: &Identity,
    cas: &[CertificateDer<'_>],
) -> Result<ServerConfig, CertError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(root_store(cas)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| CertError::Chain(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Generate(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key_der())
        .map_err(|e| CertError::BadKey(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// A client config for talking to the registry: the registry's certificate
/// must chain to the instance CA (`ca`, from the anchor) and name the host
/// dialled; `identity` (a security server's auth certificate) is presented
/// when given.
pub fn registry_client_config(
    ca: &CertificateDer<'_>,
    identity: Option<&Identity>,
) -> Result<ClientConfig, CertError> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        root_store(std::slice::from_ref(ca))?,
        provider(),
    )
    .build()
    .map_err(|e| CertError::Chain(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Generate(e.to_string()))?
        .with_webpki_verifier(verifier);
    let mut cfg = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key_der())
            .map_err(|e| CertError::BadKey(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

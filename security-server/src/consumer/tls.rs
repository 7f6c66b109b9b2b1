//! How the agency's information systems reach the consumer side: plain h2c
//! (loopback or a trusted network), TLS with the server's auth
//! certificate, or mutual TLS where each information system's certificate
//! is pinned for the subsystems it may call as
//! (`lienthong server clients pin`).

use std::sync::Arc;

use lienthong_certs::Fingerprint;
use lienthong_certs::tls::{ALPN_H2, Identity};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

use crate::provider::Policies;

/// The consumer side's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerTransport {
    /// HTTP/2 without TLS.
    #[default]
    Plain,
    /// TLS with the server's auth certificate; information systems are not
    /// authenticated by the transport.
    Tls,
    /// TLS, and each information system presents a certificate pinned for
    /// the subsystem it calls as.
    MutualTls,
}

impl std::str::FromStr for ConsumerTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h2c" => Ok(ConsumerTransport::Plain),
            "tls" => Ok(ConsumerTransport::Tls),
            "mtls" => Ok(ConsumerTransport::MutualTls),
            other => Err(format!("unknown transport {other:?}: use h2c, tls or mtls")),
        }
    }
}

/// The rustls config of the consumer side, or `None` for plain h2c.
pub fn server_config(
    transport: ConsumerTransport,
    identity: &Identity,
    policies: &Policies,
) -> Result<Option<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.to_pkcs8_der()));
    let mut cfg = match transport {
        ConsumerTransport::Plain => return Ok(None),
        ConsumerTransport::Tls => builder
            .with_no_client_auth()
            .with_single_cert(identity.chain.clone(), key),
        ConsumerTransport::MutualTls => builder
            .with_client_cert_verifier(Arc::new(PinnedSystems {
                policies: policies.clone(),
                algs: provider.signature_verification_algorithms,
            }))
            .with_single_cert(identity.chain.clone(), key),
    }
    .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Some(cfg))
}

/// Accepts an information system's certificate if some subsystem pins it.
/// Which subsystem it may call as is checked per call.
#[derive(Debug)]
struct PinnedSystems {
    policies: Policies,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedSystems {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        if self.policies.current().is_pinned(&fp) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(certificate = %fp, "refused an information system: certificate not pinned");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
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

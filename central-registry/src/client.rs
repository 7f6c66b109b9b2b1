//! Talking to a registry: connecting with only the anchor, the operator
//! client, and building a security server's registration requests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lienthong_certs::net::TlsConnectorService;
use lienthong_certs::signing::Signer;
use lienthong_certs::tls::{self, Identity};
use lienthong_certs::{CertError, PrivateKey, csr};
use lienthong_proto::canonical;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1::configuration_distribution_client::ConfigurationDistributionClient;
use lienthong_proto::pb::registry::v1::registry_operator_client::RegistryOperatorClient;
use lienthong_proto::pb::registry::v1::{CertificateRequest, RequestKind, SubmitRequest};
use prost::Message;
use rustls_pki_types::CertificateDer;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Largest anchor file read.
pub const MAX_ANCHOR_BYTES: u64 = 1024 * 1024;
/// How long connecting to one registry address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to the registry failed before any call was made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("anchor {path}: {detail}")]
    Anchor { path: String, detail: String },
    #[error("cannot reach the registry at any of {addresses:?}: {last}")]
    Unreachable {
        addresses: Vec<String>,
        last: String,
    },
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("operator token is not a valid header value")]
    BadToken,
    #[error(
        "the registry at {address} is not the one your anchor names: its TLS certificate is not issued by the anchor's instance CA ({detail}); check that the anchor file is this instance's"
    )]
    NotThisRegistry { address: String, detail: String },
}

/// Reads an anchor file (the protobuf `Anchor`, as `registry anchor` writes it).
pub fn read_anchor(path: &Path) -> Result<Anchor, ClientError> {
    let err = |detail: String| ClientError::Anchor {
        path: path.display().to_string(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_ANCHOR_BYTES {
        return Err(err(format!(
            "{} bytes; an anchor is at most {MAX_ANCHOR_BYTES}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let anchor =
        Anchor::decode(bytes.as_slice()).map_err(|e| err(format!("not an anchor: {e}")))?;
    if anchor.instance.is_empty()
        || anchor.registry_addresses.is_empty()
        || anchor.configuration_signing_certificates.is_empty()
        || anchor.instance_ca_certificate.is_empty()
    {
        return Err(err(
            "incomplete: instance, registry addresses, signing certificate and CA are all required"
                .into(),
        ));
    }
    Ok(anchor)
}

/// Writes an anchor file.
pub fn write_anchor(path: &Path, anchor: &Anchor) -> Result<(), CertError> {
    lienthong_certs::pem::write_atomic(path, &anchor.encode_to_vec(), 0o644)
}

/// Connects to the first reachable registry address of the anchor. The
/// registry must present a certificate of the anchor's CA naming the host
/// dialled; `identity` (a security server's auth certificate) is presented
/// when given.
pub async fn connect(anchor: &Anchor, identity: Option<&Identity>) -> Result<Channel, ClientError> {
    let ca = CertificateDer::from(anchor.instance_ca_certificate.clone());
    let config = Arc::new(tls::registry_client_config(&ca, identity)?);
    let mut last = String::from("no address");
    let mut mismatch = None;
    for address in &anchor.registry_addresses {
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(e) => {
                last = format!("{address}: {e}");
                continue;
            }
        };
        let connector = TlsConnectorService::new(config.clone()).with_timeout(CONNECT_TIMEOUT);
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                let chain = error_chain(&e);
                if is_foreign_certificate(&chain) {
                    mismatch = Some((address.clone(), chain.clone()));
                }
                last = format!("{address}: {chain}");
                tracing::warn!(%address, error = %last, "registry address unreachable");
            }
        }
    }
    if let Some((address, detail)) = mismatch {
        return Err(ClientError::NotThisRegistry { address, detail });
    }
    Err(ClientError::Unreachable {
        addresses: anchor.registry_addresses.clone(),
        last,
    })
}

/// Whether a connection failed because the server's certificate does not
/// chain to the anchor's CA (rustls names it so), not for lack of a server.
fn is_foreign_certificate(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
        && ["BadSignature", "UnknownIssuer", "NotValidForName"]
            .iter()
            .any(|r| chain.contains(r))
}

/// An error with all its causes, `outer: inner: …` (transport errors hide
/// the useful part in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A configuration-download client that accepts documents up to the
/// verifier's limit (tonic's default of 4 MiB is below what 50,000 services
/// take).
pub fn distribution_client(channel: Channel) -> ConfigurationDistributionClient<Channel> {
    ConfigurationDistributionClient::new(channel)
        .max_decoding_message_size(lienthong_certs::conf::MAX_CONFIGURATION_BYTES + 64 * 1024)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The operator client with its token.
pub type OperatorClient = RegistryOperatorClient<InterceptedService<Channel, BearerToken>>;

/// An operator client over `channel` authenticated by `token`.
pub fn operator_client(channel: Channel, token: &str) -> Result<OperatorClient, ClientError> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| ClientError::BadToken)?;
    value.set_sensitive(true);
    Ok(
        RegistryOperatorClient::with_interceptor(channel, BearerToken(value))
            .max_decoding_message_size(lienthong_certs::conf::MAX_CONFIGURATION_BYTES + 64 * 1024),
    )
}

/// Signs a registration request as its owner.
pub fn sign_submission(mut req: SubmitRequest, owner: &Signer) -> Result<SubmitRequest, CertError> {
    req.owner_signature = None;
    let digest = canonical::digest(&canonical::registration_request(&req));
    req.owner_signature = Some(owner.sign_digest(&digest)?);
    Ok(req)
}

/// A server's first request: its auth key and its owner's signing key, both
/// as CSRs, signed by the new owner key, with the enrollment token.
pub fn first_request(
    server: &ServerId,
    address: &str,
    enrollment_token: &str,
    auth_key: &PrivateKey,
    owner_signing_key: &PrivateKey,
) -> Result<SubmitRequest, CertError> {
    let auth_csr = csr::create(auth_key, &server.to_string())?;
    let signing_csr = csr::create(owner_signing_key, &server.owner.to_string())?;
    let signer = Signer::for_csr(owner_signing_key, &signing_csr)?;
    let req = SubmitRequest {
        kind: RequestKind::AuthCertificate as i32,
        server: Some(server.into()),
        enrollment_token: enrollment_token.to_owned(),
        address: address.to_owned(),
        auth_csr: Some(CertificateRequest {
            csr: auth_csr,
            member: None,
            consent: None,
        }),
        signing_csrs: vec![CertificateRequest {
            csr: signing_csr,
            member: Some((&server.owner).into()),
            consent: None,
        }],
        ..Default::default()
    };
    sign_submission(req, &signer)
}

/// A request to serve `client` on `server`, with a signing CSR for the
/// client's member when it has no signing key on this server yet; signed
/// by the owner's registered signing key. Sent over mutual TLS.
pub fn client_request(
    server: &ServerId,
    client: &SubsystemId,
    member_signing_key: Option<(&MemberId, &PrivateKey)>,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let signing_csrs = match member_signing_key {
        Some((member, key)) => vec![CertificateRequest {
            csr: csr::create(key, &member.to_string())?,
            member: Some(member.into()),
            consent: None,
        }],
        None => Vec::new(),
    };
    let req = SubmitRequest {
        kind: RequestKind::Client as i32,
        server: Some(server.into()),
        subsystem: Some(client.into()),
        signing_csrs,
        ..Default::default()
    };
    sign_submission(req, owner)
}

/// A request to serve `client` on `server` with a new signing key of the
/// client's member, another member than the owner: the member consents with
/// its registered signing certificate (`member_signer`), as the registry
/// requires ([`crate::consent`]). Signed by the owner's registered key.
pub fn client_request_with_consent(
    server: &ServerId,
    client: &SubsystemId,
    member_key: &PrivateKey,
    member_signer: &Signer,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let member = &client.member;
    let csr = csr::create(member_key, &member.to_string())?;
    let consent = crate::consent::sign(server, member, &csr, member_signer)?;
    let req = SubmitRequest {
        kind: RequestKind::Client as i32,
        server: Some(server.into()),
        subsystem: Some(client.into()),
        signing_csrs: vec![CertificateRequest {
            csr,
            member: Some(member.into()),
            consent: Some(consent),
        }],
        ..Default::default()
    };
    sign_submission(req, owner)
}

/// A request to move `server` to `address`, or (with `None`) to remove it.
pub fn server_request(
    server: &ServerId,
    address: Option<&str>,
    owner: &Signer,
) -> Result<SubmitRequest, CertError> {
    let req = SubmitRequest {
        kind: if address.is_some() {
            RequestKind::AddressChange
        } else {
            RequestKind::ServerRemoval
        } as i32,
        server: Some(server.into()),
        address: address.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    sign_submission(req, owner)
}

//! Stage 3: who vouches for the request — its envelope signed with a
//! current signing certificate of the client's member, who may withhold
//! it as it asks. From here on, a refusal's record says what the envelope
//! says.

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::Fingerprint;
use lienthong_proto::canonical;
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::exchange::v1::RequestEnvelope;
use tonic::body::Body;

use super::envelope::Enveloped;
use super::{Facts, bare_refusal};
use crate::conf_client::ConfView;
use crate::faults::{Fault, FaultError};
use crate::refusal::Refusal;
use lienthong_proto::time::unix_ms;

/// A request signed by the client's member.
pub struct Verified {
    pub facts: Facts,
    pub view: Arc<ConfView>,
    pub now: SystemTime,
    pub parts: http::request::Parts,
    pub body: Body,
}

/// Verifies the signature of `enveloped`.
pub fn verify(enveloped: Enveloped) -> Result<Verified, Refusal> {
    let Enveloped {
        peer,
        mut envelope,
        envelope_bytes,
        client,
        target,
        parts,
        body,
    } = enveloped;
    let checked = check_signature(&peer.view, &envelope, &client, peer.now).and_then(|()| {
        let withheld_until = envelope
            .header
            .as_ref()
            .map_or(0, |h| h.withheld_until_unix_ms);
        // The client's member signed its own withholding: the grant in
        // force now must cover it, whatever its consumer side checked.
        crate::withholding::check(
            peer.view.withholding_grants(),
            peer.view.groups_of(&client),
            unix_ms(peer.now),
            withheld_until,
        )
        .map_err(|refusal| {
            Fault::WithholdingRefused.with(format!(
                "{client} may not withhold this exchange until unix ms {withheld_until}: {refusal}"
            ))
        })
    });
    if let Err(fault) = checked {
        return Err(bare_refusal(peer.started, &peer.span, fault));
    }
    let header = envelope.header.take().unwrap_or_default();
    let facts = Facts {
        started: peer.started,
        peer: peer.server,
        request_digest: canonical::digest(&canonical::request_header(&header)),
        header,
        client,
        target,
        envelope: envelope_bytes,
        span: peer.span,
    };
    Ok(Verified {
        facts,
        view: peer.view,
        now: peer.now,
        parts,
        body,
    })
}

/// Whether `envelope` is signed by a current signing certificate of the
/// client's member.
pub fn check_signature(
    view: &ConfView,
    envelope: &RequestEnvelope,
    client: &SubsystemId,
    now: SystemTime,
) -> Result<(), FaultError> {
    let sig = envelope
        .signature
        .as_ref()
        .ok_or_else(|| Fault::BadSignature.with("the request is not signed"))?;
    let fp = Fingerprint::from_slice(&sig.signer_certificate_sha256)
        .ok_or_else(|| Fault::BadSignature.with("the signature names no certificate"))?;
    let cert = view
        .signing_cert(&fp, now)
        .filter(|c| c.member == client.member)
        .ok_or_else(|| {
            Fault::BadSignature.with(format!(
                "the request is not signed with a current signing certificate of {}",
                client.member
            ))
        })?;
    cert.key
        .verify_request(envelope)
        .map(|_| ())
        .map_err(|e| Fault::BadSignature.with(format!("the signature does not verify: {e}")))
}

//! Stage 3: the request read (bounded, in the chunks it came in, hashed as
//! they came) and its envelope signed with the client member's key.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use lienthong_proto::canonical;
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, RequestHeader};
use lienthong_proto::pb::identifiers::v1::ServiceId;
use prost::Message;

use super::Facts;
use super::check::Checked;
use crate::batch::Signers;
use crate::body::Chunks;
use crate::conf_client::ConfView;
use crate::faults::Fault;
use crate::metadata::{self, CallMetadata, Target};
use crate::refusal::Refusal;
use crate::telemetry;
use lienthong_proto::time::unix_ms;

/// A request signed in the client member's name, ready to travel.
pub struct Signed {
    pub facts: Facts,
    pub meta: CallMetadata,
    pub view: Arc<ConfView>,
    /// The call's path.
    pub uri: http::Uri,
    /// The call's headers without its Lienthong metadata, with the signed
    /// envelope instead.
    pub headers: HeaderMap,
    pub payload: Chunks,
    /// The signed envelope, as it travels and is logged.
    pub envelope: Vec<u8>,
}

/// Reads and signs the request of `checked`.
pub async fn sign(
    checked: Checked,
    signers: &Signers,
    max_message: usize,
) -> Result<Signed, Refusal> {
    let Checked {
        mut facts,
        meta,
        view,
        parts,
        body,
    } = checked;
    let payload =
        match Chunks::read(body, max_message, Fault::MessageTooLarge, Fault::BadRequest).await {
            Ok(p) => p,
            Err(fault) => return Err(facts.refused(fault, Some(&meta))),
        };
    let Some(signer) = signers.get(&meta.client.member) else {
        let fault = Fault::NoSigningKey.with(format!(
            "this server holds no signing key for {}; register the client here with `lienthong server clients add`",
            meta.client.member
        ));
        return Err(facts.refused(fault, Some(&meta)));
    };
    // The provider's span becomes a child of the call's CLIENT span;
    // without span export the caller's context travels on unchanged.
    facts.forward = telemetry::client_span(&facts.span, &facts.service, &facts.method);
    let (traceparent, tracestate) = telemetry::propagate(&facts.forward)
        .unwrap_or_else(|| (meta.traceparent.clone(), meta.tracestate.clone()));
    let header = request_header(&facts, &meta, &payload, traceparent, tracestate);
    facts.request_digest = canonical::digest(&canonical::request_header(&header));
    let signature = match signer.sign(facts.request_digest).await {
        Ok(s) => s,
        Err(e) => {
            let fault = Fault::ConsumerInternal.with(format!("signing failed: {e}"));
            return Err(facts.refused(fault, Some(&meta)));
        }
    };
    let envelope = RequestEnvelope {
        header: Some(header),
        signature: Some(signature),
    }
    .encode_to_vec();
    // The envelope travels in a header (base64) and, as bytes, in the
    // request record.
    let mut headers = parts.headers;
    metadata::strip_lienthong(&mut headers);
    metadata::put_bin(&mut headers, metadata::ENVELOPE, &envelope);
    Ok(Signed {
        facts,
        meta,
        view,
        uri: parts.uri,
        headers,
        payload,
        envelope,
    })
}

/// What the client member signs.
fn request_header(
    facts: &Facts,
    meta: &CallMetadata,
    payload: &Chunks,
    traceparent: String,
    tracestate: String,
) -> RequestHeader {
    RequestHeader {
        message_id: facts.message_id.clone(),
        client: Some((&meta.client).into()),
        service: Some(ServiceId {
            provider: match &meta.target {
                Target::Provider(p) => Some(p.into()),
                Target::Server(_) => None,
            },
            service_code: facts.service.clone(),
            version: String::new(),
        }),
        method: facts.method.clone(),
        user_id: meta.user_id.clone(),
        purpose: meta.purpose.clone(),
        data_subject: meta.data_subject.clone(),
        created_at_unix_ms: unix_ms(SystemTime::now()),
        payload_digest: payload.digest().to_vec(),
        payload_size: payload.len() as u64,
        traceparent,
        tracestate,
        withheld_until_unix_ms: meta.withheld_until_ms,
        target_server: match &meta.target {
            Target::Server(s) => Some(s.into()),
            Target::Provider(_) => None,
        },
    }
}

//! A record's canonical bytes: the protobuf encoding of
//! `lienthong.trace.v1.LogLeaf`, which is what the Merkle tree hashes and
//! what a trace portal decodes and shows.

use lienthong_proto::pb::trace::v1 as pb;
use prost::Message;

use super::{LogRecord, Phase, Role};

/// The leaf bytes of `r`, with `subject` the salted commitment to its data
/// subject (never the subject itself). With `hidden` (the commitment of a
/// withheld exchange), the official and the purpose are left out of the
/// leaf and the commitment stands in.
pub fn leaf_bytes(r: &LogRecord, subject: Option<[u8; 32]>, hidden: Option<[u8; 32]>) -> Vec<u8> {
    let digest = (!r.envelope.is_empty()).then(|| lienthong_proto::sha256(&r.envelope));
    leaf_bytes_with(r, subject, hidden, digest)
}

/// [`leaf_bytes`] with the envelope's SHA-256 already made (`None` for
/// an empty envelope).
pub fn leaf_bytes_with(
    r: &LogRecord,
    subject: Option<[u8; 32]>,
    hidden: Option<[u8; 32]>,
    envelope_digest: Option<[u8; 32]>,
) -> Vec<u8> {
    leaf_of(r.clone(), subject, hidden, envelope_digest).encode_to_vec()
}

/// The leaf of `r` as a message, its values moved out of `r` (the
/// writer's way: nothing is copied); encoded, it is [`leaf_bytes_with`].
pub fn leaf_of(
    r: LogRecord,
    subject: Option<[u8; 32]>,
    hidden: Option<[u8; 32]>,
    envelope_digest: Option<[u8; 32]>,
) -> pb::LogLeaf {
    let (user_id, purpose) = match hidden {
        Some(_) => (String::new(), String::new()),
        None => (r.user_id, r.purpose),
    };
    pb::LogLeaf {
        side: match r.role {
            Role::Consumer => pb::Side::Consumer,
            Role::Provider => pb::Side::Provider,
        } as i32,
        phase: match r.phase {
            Phase::Request => pb::Phase::Request,
            Phase::Response => pb::Phase::Response,
            Phase::Fault => pb::Phase::Fault,
            Phase::Retention => pb::Phase::Retention,
        } as i32,
        at_unix_ms: r.at_ms,
        message_id: r.message_id,
        client: r.client,
        service: r.service,
        method: r.method,
        user_id,
        purpose,
        data_subject_hash: Vec::new(),
        peer: r.peer,
        request_digest: r.request_digest,
        payload_digest: r.payload_digest,
        payload_size: r.payload_size,
        envelope_digest: envelope_digest.map(|d| d.to_vec()).unwrap_or_default(),
        grpc_status: r.grpc_status,
        fault: r.fault,
        withheld_until_unix_ms: r.withheld_until_ms,
        duration_us: r.duration_us,
        hidden_commitment: hidden.map(|h| h.to_vec()).unwrap_or_default(),
        data_subject_commitment: subject.map(|h| h.to_vec()).unwrap_or_default(),
        pruned_from: r.pruned.map(|p| p.from).unwrap_or_default(),
        pruned_to: r.pruned.map(|p| p.to).unwrap_or_default(),
        pruned_leaves_digest: r.pruned.map(|p| p.digest.to_vec()).unwrap_or_default(),
        pruned_through_unix_ms: r.pruned.map(|p| p.through_ms).unwrap_or_default(),
    }
}

/// The side a leaf was written by, as a word.
pub fn side_name(side: i32) -> &'static str {
    match pb::Side::try_from(side) {
        Ok(pb::Side::Consumer) => "consumer",
        Ok(pb::Side::Provider) => "provider",
        _ => "unknown",
    }
}

/// A leaf's phase, as a word.
pub fn phase_name(phase: i32) -> &'static str {
    match pb::Phase::try_from(phase) {
        Ok(pb::Phase::Request) => "request",
        Ok(pb::Phase::Response) => "response",
        Ok(pb::Phase::Fault) => "fault",
        Ok(pb::Phase::Retention) => "retention",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reaches_the_leaf() {
        let base = LogRecord {
            message_id: "m".into(),
            ..Default::default()
        };
        let b = leaf_bytes(&base, None, None);
        type Edit = Box<dyn Fn(&mut LogRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.role = Role::Provider),
            Box::new(|r| r.phase = Phase::Fault),
            Box::new(|r| r.at_ms = 1),
            Box::new(|r| r.client.push('x')),
            Box::new(|r| r.service.push('x')),
            Box::new(|r| r.method.push('x')),
            Box::new(|r| r.user_id.push('x')),
            Box::new(|r| r.purpose.push('x')),
            Box::new(|r| r.peer.push('x')),
            Box::new(|r| r.request_digest.push(1)),
            Box::new(|r| r.payload_digest.push(1)),
            Box::new(|r| r.payload_size = 1),
            Box::new(|r| r.envelope.push(1)),
            Box::new(|r| r.grpc_status = 1),
            Box::new(|r| r.fault.push('x')),
            Box::new(|r| r.withheld_until_ms = 1),
            Box::new(|r| {
                r.pruned = Some(crate::Pruned {
                    from: 1,
                    to: 2,
                    digest: [3; 32],
                    through_ms: 4,
                })
            }),
        ];
        for (i, e) in edits.iter().enumerate() {
            let mut r = base.clone();
            e(&mut r);
            assert_ne!(leaf_bytes(&r, None, None), b, "edit {i}");
        }
        assert_ne!(leaf_bytes(&base, Some([1; 32]), None), b);
        // The plain data subject never enters the leaf.
        let mut r = base.clone();
        r.data_subject = "001099012345".into();
        assert_eq!(leaf_bytes(&r, None, None), b);
    }
}

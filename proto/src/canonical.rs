//! The bytes every Lienthong signature covers — defined here and nowhere else.
//!
//! Protobuf encodings are not canonical across implementations, so
//! signatures cover a simple, fixed encoding instead:
//!
//! * a domain tag (the message's full protobuf name) as the first field, so
//!   a signature over one kind of header never verifies as another kind;
//! * then every field in field-number order, each as
//!   - text and bytes: `u32` big-endian length, then the bytes;
//!   - integers: 8 bytes big-endian;
//!   - identifiers: a presence byte (`0`/`1`), then each part as text.
//!
//! A signature's input is built by [`signature_input`] from the SHA-256
//! digest of those bytes, or from a batch root when several headers share one
//! signature.

use crate::pb::exchange::v1::{RequestHeader, ResponseHeader};
use crate::pb::identifiers::v1 as idpb;
use crate::pb::registry::v1::{Checkpoint, SubmitRequest};
use crate::sha256;

/// Prefix of every signature input: the scheme and its version.
pub const SIGNATURE_DOMAIN: &[u8] = b"lienthong.signature.v1";

/// An append-only writer of canonical fields.
struct Canon(Vec<u8>);

impl Canon {
    fn new(tag: &str) -> Self {
        let mut c = Canon(Vec::with_capacity(256));
        c.str(tag);
        c
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Every field is bounded far below 4 GiB by the message size limit;
        // saturating keeps the function total even so.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn present(&mut self, present: bool) {
        self.0.push(u8::from(present));
    }

    fn member(&mut self, m: Option<&idpb::MemberId>) -> &mut Self {
        if let Some(m) = m {
            self.present(true);
            self.str(&m.instance)
                .str(&m.member_class)
                .str(&m.member_code)
        } else {
            self.present(false);
            self
        }
    }

    fn subsystem(&mut self, s: Option<&idpb::SubsystemId>) -> &mut Self {
        match s {
            Some(s) => {
                self.present(true);
                self.member(s.member.as_ref()).str(&s.subsystem_code)
            }
            None => {
                self.present(false);
                self
            }
        }
    }

    fn server(&mut self, s: Option<&idpb::SecurityServerId>) -> &mut Self {
        match s {
            Some(s) => {
                self.present(true);
                self.member(s.owner.as_ref()).str(&s.server_code)
            }
            None => {
                self.present(false);
                self
            }
        }
    }

    fn service(&mut self, s: Option<&idpb::ServiceId>) -> &mut Self {
        match s {
            Some(s) => {
                self.present(true);
                self.subsystem(s.provider.as_ref())
                    .str(&s.service_code)
                    .str(&s.version)
            }
            None => {
                self.present(false);
                self
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Canonical bytes of a request header.
pub fn request_header(h: &RequestHeader) -> Vec<u8> {
    let mut c = Canon::new("lienthong.exchange.v1.RequestHeader");
    c.str(&h.message_id)
        .subsystem(h.client.as_ref())
        .service(h.service.as_ref())
        .str(&h.method)
        .str(&h.user_id)
        .str(&h.purpose)
        .str(&h.data_subject)
        .i64(h.created_at_unix_ms)
        .bytes(&h.payload_digest)
        .u64(h.payload_size)
        .str(&h.traceparent)
        .str(&h.tracestate)
        .i64(h.withheld_until_unix_ms)
        .server(h.target_server.as_ref());
    c.finish()
}

/// Canonical bytes of a response header.
pub fn response_header(h: &ResponseHeader) -> Vec<u8> {
    let mut c = Canon::new("lienthong.exchange.v1.ResponseHeader");
    c.str(&h.message_id)
        .bytes(&h.request_digest)
        .i64(h.created_at_unix_ms)
        .bytes(&h.payload_digest)
        .u64(h.payload_size)
        .i64(i64::from(h.grpc_status));
    c.finish()
}

/// Canonical bytes of a log checkpoint (its signature excluded).
pub fn checkpoint(cp: &Checkpoint) -> Vec<u8> {
    let mut c = Canon::new("lienthong.registry.v1.Checkpoint");
    c.server(cp.server.as_ref())
        .u64(cp.tree_size)
        .bytes(&cp.root_hash)
        .i64(cp.created_at_unix_ms);
    c.finish()
}

/// The commitment a withheld exchange's leaf carries instead of the
/// official and the purpose: SHA-256 over a random salt and both fields.
/// The salt and the fields (a [`HiddenOpening`]) stay sealed on the
/// server; once the exchange is released, the trace reveals them and the
/// portal checks them against the leaf the tree binds.
///
/// [`HiddenOpening`]: crate::pb::trace::v1::HiddenOpening
pub fn hidden_commitment(salt: &[u8], user_id: &str, purpose: &str) -> [u8; 32] {
    let mut c = Canon::new("lienthong.trace.v1.HiddenOpening");
    c.bytes(salt).str(user_id).str(purpose);
    sha256(&c.finish())
}

/// The commitment a log leaf carries to its data subject: SHA-256 over the
/// canonical (salt, subject). The salt (32 random bytes) is kept sealed on
/// the server and revealed only with the record, so the subject cannot be
/// guessed from the leaf, and a portal that knows the subject checks it.
pub fn subject_commitment(salt: &[u8], subject: &str) -> [u8; 32] {
    let mut c = Canon::new("lienthong.trace.v1.SubjectCommitment");
    c.bytes(salt).str(subject);
    sha256(&c.finish())
}

/// Canonical bytes of a registration request (its owner signature excluded).
pub fn registration_request(r: &SubmitRequest) -> Vec<u8> {
    let mut c = Canon::new("lienthong.registry.v1.SubmitRequest");
    c.i64(i64::from(r.kind))
        .server(r.server.as_ref())
        .str(&r.enrollment_token);
    let csrs = r.auth_csr.iter().chain(r.signing_csrs.iter());
    c.u64(r.signing_csrs.len() as u64 + u64::from(r.auth_csr.is_some()));
    for csr in csrs {
        c.bytes(&csr.csr).member(csr.member.as_ref());
    }
    c.subsystem(r.subsystem.as_ref()).str(&r.address);
    c.finish()
}

/// Canonical bytes of a global configuration: its serialized bytes (which
/// travel unchanged inside `SignedConfiguration`) under a domain tag.
pub fn configuration(serialized: &[u8]) -> Vec<u8> {
    let mut c = Canon::new("lienthong.globalconf.v1.GlobalConfiguration");
    c.bytes(serialized);
    c.finish()
}

/// SHA-256 of canonical bytes: what a signature (or a batch leaf) stands for.
pub fn digest(canonical: &[u8]) -> [u8; 32] {
    sha256(canonical)
}

/// What a signature is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// One header's digest, signed alone.
    Single([u8; 32]),
    /// The root of a batch of header digests (leaves are
    /// `merkle::leaf_hash(digest)`), with the batch size.
    Batch { root: [u8; 32], tree_size: u64 },
}

/// The exact bytes handed to the signature algorithm.
pub fn signature_input(signed: &Signed) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 42);
    out.extend_from_slice(SIGNATURE_DOMAIN);
    match signed {
        Signed::Single(d) => {
            out.push(0);
            out.extend_from_slice(d);
        }
        Signed::Batch { root, tree_size } => {
            out.push(1);
            out.extend_from_slice(root);
            out.extend_from_slice(&tree_size.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RequestHeader {
        RequestHeader {
            message_id: "m-1".into(),
            client: Some(idpb::SubsystemId {
                member: Some(idpb::MemberId {
                    instance: "VN".into(),
                    member_class: "GOV".into(),
                    member_code: "000102".into(),
                }),
                subsystem_code: "business".into(),
            }),
            method: "GetPerson".into(),
            payload_digest: vec![7; 32],
            ..Default::default()
        }
    }

    #[test]
    fn every_field_changes_the_bytes() {
        let base = request_header(&header());
        type Edit = Box<dyn Fn(&mut RequestHeader)>;
        let edits: Vec<Edit> = vec![
            Box::new(|h| h.message_id.push('x')),
            Box::new(|h| h.client = None),
            Box::new(|h| h.method.push('x')),
            Box::new(|h| h.user_id.push('x')),
            Box::new(|h| h.purpose.push('x')),
            Box::new(|h| h.data_subject.push('x')),
            Box::new(|h| h.created_at_unix_ms += 1),
            Box::new(|h| h.payload_digest[0] ^= 1),
            Box::new(|h| h.payload_size += 1),
            Box::new(|h| h.traceparent.push('x')),
            Box::new(|h| h.tracestate.push('x')),
            Box::new(|h| h.withheld_until_unix_ms = 1),
            Box::new(|h| {
                h.target_server = Some(idpb::SecurityServerId {
                    owner: None,
                    server_code: "ss1".into(),
                })
            }),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut h = header();
            edit(&mut h);
            assert_ne!(
                request_header(&h),
                base,
                "edit {i} did not change the bytes"
            );
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab" + "c" must differ from "a" + "bc".
        let mut a = header();
        a.user_id = "ab".into();
        a.purpose = "c".into();
        let mut b = header();
        b.user_id = "a".into();
        b.purpose = "bc".into();
        assert_ne!(request_header(&a), request_header(&b));
    }

    #[test]
    fn kinds_are_domain_separated() {
        let req = request_header(&RequestHeader::default());
        let resp = response_header(&ResponseHeader::default());
        assert_ne!(req[..40], resp[..40]);
        let single = signature_input(&Signed::Single([1; 32]));
        let batch = signature_input(&Signed::Batch {
            root: [1; 32],
            tree_size: 1,
        });
        assert_ne!(single, batch);
    }
}

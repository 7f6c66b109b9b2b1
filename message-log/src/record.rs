//! A record as a segment stores it: everything the server keeps about one
//! record ([`Stored`]), sealed with ChaCha20-Poly1305.
//!
//! Each segment has its own key, derived with HKDF-SHA256 from the log key
//! named in its header and a random salt drawn when the segment was created
//! ([`SegmentKey`]). The nonce is the record's position in the log. A
//! position is sealed at most once under one segment key: the writer opens
//! a new segment whenever it starts and after any failed write, so a tail
//! cut back after a crash is never written again under the same key. The
//! associated data is the owner server's id, the position and the key id,
//! so a record moved within the log, or copied in from another server's,
//! does not open.

use lienthong_proto::canonical::{hidden_commitment, subject_commitment};
use lienthong_proto::pb::trace::v1::{HiddenOpening, LogLeaf};
use prost::Message;
use ring::aead;
use ring::{hkdf, hmac};

use crate::{LogError, LogKeys};

/// Everything kept about one record, sealed as one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stored {
    /// The canonical leaf bytes (`lienthong.trace.v1.LogLeaf`): what the
    /// tree hashes.
    #[prost(bytes = "vec", tag = "1")]
    pub leaf: Vec<u8>,
    /// The signed envelope as it travelled.
    #[prost(bytes = "vec", tag = "2")]
    pub envelope: Vec<u8>,
    /// The data subject (for the server's own investigations and lookups).
    #[prost(string, tag = "3")]
    pub data_subject: String,
    /// The salt of the leaf's subject commitment (FindUsage reveals it).
    #[prost(bytes = "vec", tag = "4")]
    pub subject_salt: Vec<u8>,
    /// The body, for subsystems that opted in.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
    /// For a withheld exchange: the encoded `HiddenOpening` its leaf
    /// commits to.
    #[prost(bytes = "vec", tag = "6")]
    pub hidden_opening: Vec<u8>,
    /// For a record retention had pruned before the log moved into
    /// segments: its leaf hash only (everything else empty). Sealed like
    /// any record, so nobody without the log key can turn a record into one.
    #[prost(bytes = "vec", tag = "7")]
    pub pruned_leaf_hash: Vec<u8>,
}

/// What is sealed beside a leaf that is not what the leaf commits to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedMismatch {
    #[error("its sealed data subject is not the one its leaf commits to")]
    SubjectNotCommitted,
    #[error("its sealed data subject is not the one its leaf names")]
    SubjectNotNamed,
    #[error("it holds a data subject its leaf does not name")]
    UnnamedSubject,
    #[error("its withheld opening does not decode")]
    OpeningUndecodable,
    #[error("its withheld opening is not what its leaf commits to")]
    OpeningNotCommitted,
    #[error("it holds a withheld opening its leaf does not commit to")]
    UncommittedOpening,
}

impl Stored {
    /// Checks that what is sealed beside the leaf is what the leaf commits
    /// to: the data subject (its salted commitment, or the keyed hash of
    /// leaves written before commitments) and, for a withheld exchange, the
    /// opening of its hidden official and purpose.
    pub fn check(&self, leaf: &LogLeaf, keys: &LogKeys) -> Result<(), SealedMismatch> {
        if !leaf.data_subject_commitment.is_empty() {
            let expected = subject_commitment(&self.subject_salt, &self.data_subject);
            if self.subject_salt.len() != 32
                || self.data_subject.is_empty()
                || expected.as_slice() != leaf.data_subject_commitment.as_slice()
            {
                return Err(SealedMismatch::SubjectNotCommitted);
            }
        } else if !leaf.data_subject_hash.is_empty() {
            if self.data_subject.is_empty()
                || keys.subject_hash(&self.data_subject).as_slice()
                    != leaf.data_subject_hash.as_slice()
            {
                return Err(SealedMismatch::SubjectNotNamed);
            }
        } else if !self.data_subject.is_empty() {
            return Err(SealedMismatch::UnnamedSubject);
        }
        if !leaf.hidden_commitment.is_empty() {
            let opening = HiddenOpening::decode(self.hidden_opening.as_slice())
                .map_err(|_| SealedMismatch::OpeningUndecodable)?;
            let expected = hidden_commitment(&opening.salt, &opening.user_id, &opening.purpose);
            if expected.as_slice() != leaf.hidden_commitment.as_slice() {
                return Err(SealedMismatch::OpeningNotCommitted);
            }
        } else if !self.hidden_opening.is_empty() {
            return Err(SealedMismatch::UncommittedOpening);
        }
        Ok(())
    }
}

/// What the writer made for a record before sealing it, so that sealing
/// does not make it again. Each must be what it says for the record being
/// sealed: a value is cut when the leaf holds it and made again from the
/// record when opened, so one that is not the record's own makes a record
/// that never opens to what was sealed (debug builds check the
/// commitment).
#[derive(Debug, Clone, Copy)]
pub struct Made<'a> {
    /// The segment key's [`SegmentKey::subject_salt`] for the record's
    /// position.
    pub subject_salt: &'a [u8; 32],
    /// The SHA-256 of the record's envelope.
    pub envelope_digest: Option<&'a [u8; 32]>,
    /// The commitment to the record's data subject under its salt
    /// (`canonical::subject_commitment`); made here when not given.
    pub subject_commitment: Option<&'a [u8; 32]>,
}

/// A [`Stored`] as it is sealed: the same fields (so records sealed
/// before these savings open as they are), less what the key or the record
/// itself gives again — the subject's salt (a function of the segment key
/// and the position), the data subject when the request envelope's header
/// holds it, and, cut out of the leaf, the envelope's digest and the
/// subject commitment (32 bytes each, made again when opened), the client
/// and service the request envelope's header names in parts, and every
/// value the signed envelope holds verbatim (the message id, method,
/// official, purpose and digests: the leaf restates what was signed). A
/// value that is not what would be derived is kept as it is.
#[derive(Clone, PartialEq, prost::Message)]
struct Compact {
    #[prost(bytes = "vec", tag = "1")]
    leaf: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    envelope: Vec<u8>,
    #[prost(string, tag = "3")]
    data_subject: String,
    #[prost(bytes = "vec", tag = "4")]
    subject_salt: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "5")]
    body: Option<Vec<u8>>,
    #[prost(bytes = "vec", tag = "6")]
    hidden_opening: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pruned_leaf_hash: Vec<u8>,
    /// What was cut out of the leaf by offset (records sealed before
    /// [`Compact::field_cuts`]; beside those, only
    /// [`FIELD_CUTS_MARKER`]), ascending: per cut,
    /// what (one byte) and its offset in the whole leaf (two bytes); a cut
    /// from the envelope then says where the value starts in the envelope
    /// (two bytes) and its length (one byte).
    #[prost(bytes = "vec", tag = "8")]
    leaf_cuts: Vec<u8>,
    /// The subject's salt is the segment's for this position.
    #[prost(bool, tag = "9")]
    derived_salt: bool,
    /// The data subject is the request envelope's (its header's field 7),
    /// not stored again.
    #[prost(bool, tag = "10")]
    subject_from_envelope: bool,
    /// The leaf's fields cut out whole (key, length and value), in the
    /// leaf's order: per cut, the leaf bytes kept since the last cut (a
    /// varint), what it is and which field (one byte: the kind in the top
    /// three bits, the leaf's field number, at most 31, in the others),
    /// and for a value from the envelope, which of the envelope's values
    /// ([`envelope_values`], one byte). Two or three bytes a cut where the
    /// offsets took five to eight.
    #[prost(bytes = "vec", tag = "11")]
    field_cuts: Vec<u8>,
}

/// A cut: the envelope's SHA-256 (`LogLeaf.envelope_digest`, field 15).
/// (Kinds are at most 7: three bits of a whole-field cut's byte.)
const CUT_ENVELOPE_DIGEST: u8 = 1;
/// A cut: a value the envelope holds verbatim.
const CUT_FROM_ENVELOPE: u8 = 2;
/// A cut: the subject commitment (`LogLeaf.data_subject_commitment`,
/// field 21), made again from the record's salt and data subject.
const CUT_SUBJECT_COMMITMENT: u8 = 3;
/// A cut: the client (`LogLeaf.client`, field 5), named from the request
/// envelope's client ([`client_name`]).
const CUT_CLIENT: u8 = 4;
/// A cut: the service (`LogLeaf.service`, field 6), named from the request
/// envelope's service ([`service_name`]).
const CUT_SERVICE: u8 = 5;
const DIGEST: usize = 32;
/// The shortest value cut from the envelope.
const SHORTEST_FROM_ENVELOPE: usize = 8;
/// What [`Compact::leaf_cuts`] holds beside cuts by whole field: too
/// short to be a cut by offset, so a release that knows only those refuses
/// the record instead of opening it to a leaf without the fields cut.
const FIELD_CUTS_MARKER: u8 = 0;
/// The largest leaf field number a whole-field cut can name (five bits).
const LARGEST_CUT_FIELD: u64 = 31;
/// The leaf's field that holds the envelope's digest.
const LEAF_ENVELOPE_DIGEST: u64 = 15;
/// The leaf's fields that hold the client, the service and the subject
/// commitment.
const LEAF_CLIENT: u64 = 5;
const LEAF_SERVICE: u64 = 6;
const LEAF_SUBJECT_COMMITMENT: u64 = 21;

/// The length-delimited top-level fields of the protobuf message `msg`, as
/// (field, offset of the value, length), in order; stops at the first
/// thing that does not parse.
fn length_delimited(msg: &[u8]) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut rest = b.get(*at..)?;
        let before = rest.len();
        let v = prost::encoding::decode_varint(&mut rest).ok()?;
        *at += before - rest.len();
        Some(v)
    }
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < msg.len() {
            let tag = varint(msg, &mut at)?;
            match tag & 7 {
                0 => {
                    varint(msg, &mut at)?;
                }
                1 => at = at.checked_add(8)?,
                5 => at = at.checked_add(4)?,
                2 => {
                    let len = usize::try_from(varint(msg, &mut at)?).ok()?;
                    let start = at;
                    at = at.checked_add(len)?;
                    if at > msg.len() {
                        return None;
                    }
                    return Some((tag >> 3, start, len));
                }
                _ => return None,
            }
        }
        None
    })
}

/// The first length-delimited field `want` of the protobuf message `msg`.
fn field(msg: &[u8], want: u64) -> Option<&[u8]> {
    length_delimited(msg)
        .find(|&(f, _, _)| f == want)
        .map(|(_, at, len)| &msg[at..at + len])
}

/// The header of a request envelope (`RequestEnvelope.header`), read in
/// place. Any envelope is read so: a response envelope's header has no
/// client, service or subject fields of the types read here (its fields
/// 2 and 3 are a digest and a number), and whatever is read from other
/// bytes is only ever compared with the leaf's values, and made again
/// from the same bytes when opened.
fn request_header(envelope: &[u8]) -> Option<&[u8]> {
    field(envelope, 1)
}

/// `INSTANCE/CLASS/MEMBER/SUBSYSTEM` of an encoded `SubsystemId`, as the
/// server names a client in the leaf, appended to `out`; `None` if a part
/// is missing. The record format's own spelling: what was cut with it is
/// made again with it, whatever the rest of the code base names ids like.
fn subsystem_name(id: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let member = field(id, 1)?;
    let parts = [
        field(member, 1)?,
        field(member, 2)?,
        field(member, 3)?,
        field(id, 2)?,
    ];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    Some(())
}

/// The leaf's client, named from the request envelope's header (field 2).
fn client_name(envelope: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    subsystem_name(field(request_header(envelope)?, 2)?, &mut out)?;
    Some(out)
}

/// The leaf's service, `PROVIDER_SUBSYSTEM/SERVICE_CODE`, named from the
/// request envelope's header (field 3: its provider and service code).
fn service_name(envelope: &[u8]) -> Option<Vec<u8>> {
    let service = field(request_header(envelope)?, 3)?;
    let mut out = Vec::with_capacity(64);
    subsystem_name(field(service, 1)?, &mut out)?;
    out.push(b'/');
    out.extend_from_slice(field(service, 2)?);
    Some(out)
}

/// The request envelope's data subject (its header's field 7).
fn envelope_subject(envelope: &[u8]) -> Option<&[u8]> {
    field(request_header(envelope)?, 7)
}

/// Most of the envelope's values a leaf's value is compared with.
const MOST_ENVELOPE_VALUES: usize = 64;

/// Where the envelope holds values a leaf may restate, as (offset,
/// length): its length-delimited fields and those of its sub-messages (the
/// header's message id, method, official, purpose and digests), each
/// [`SHORTEST_FROM_ENVELOPE`] to 255 bytes long and starting within two
/// bytes' reach, at most [`MOST_ENVELOPE_VALUES`]. Linear in the
/// envelope's length whatever it holds, and so is comparing a leaf with
/// them (a substring search would build a searcher per value).
///
/// **Part of the record format:** a cut from the envelope names its value
/// by its rank in this list, so the list — what is kept, in what order,
/// the limits above — must never change for records already sealed (a
/// change would open them to other bytes, which the audit reports as
/// edits). A different list needs a new kind of cut.
fn envelope_values(envelope: &[u8]) -> Vec<(u16, u8)> {
    let mut out = Vec::with_capacity(16);
    let mut keep = |at: usize, len: usize| {
        if let (Ok(at), Ok(len)) = (u16::try_from(at), u8::try_from(len))
            && usize::from(len) >= SHORTEST_FROM_ENVELOPE
            && out.len() < MOST_ENVELOPE_VALUES
        {
            out.push((at, len));
        }
    };
    for (_, at, len) in length_delimited(envelope) {
        keep(at, len);
        for (_, inner, n) in length_delimited(&envelope[at..at + len]) {
            keep(at + inner, n);
        }
    }
    out
}

/// The key and length of a length-delimited protobuf field, as the
/// shortest varints.
fn field_key(field: u64, len: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    prost::encoding::encode_varint(field << 3 | 2, &mut key);
    prost::encoding::encode_varint(len as u64, &mut key);
    key
}

/// What a cut stands for.
#[derive(Debug, Clone, Copy)]
enum Cut {
    EnvelopeDigest,
    /// The envelope's value of this rank in [`envelope_values`].
    FromEnvelope(u8),
    /// The subject commitment, made again from the salt and the subject.
    SubjectCommitment,
    /// The client, named again from the request envelope's header.
    Client,
    /// The service, named again from the request envelope's header.
    Service,
}

impl Cut {
    /// Its kind byte.
    fn kind(self) -> u8 {
        match self {
            Cut::EnvelopeDigest => CUT_ENVELOPE_DIGEST,
            Cut::FromEnvelope(..) => CUT_FROM_ENVELOPE,
            Cut::SubjectCommitment => CUT_SUBJECT_COMMITMENT,
            Cut::Client => CUT_CLIENT,
            Cut::Service => CUT_SERVICE,
        }
    }
}

impl Compact {
    /// `made`: what the caller made already (the rest is made here).
    fn of(record: Stored, made: Made<'_>) -> Compact {
        let salt_is_derived = record.subject_salt.as_slice() == made.subject_salt;
        let commitment = || match made.subject_commitment {
            Some(c) => {
                debug_assert_eq!(
                    *c,
                    subject_commitment(&record.subject_salt, &record.data_subject),
                    "the commitment given is the record's"
                );
                *c
            }
            None => subject_commitment(&record.subject_salt, &record.data_subject),
        };
        // (where the field's key starts in the leaf, where its value ends,
        // the field, the cut)
        let mut derived: Vec<(usize, usize, u64, Cut)> = Vec::new();
        let envelope = record.envelope.as_slice();
        let values = envelope_values(envelope);
        // Named once each, if the leaf has the field at all.
        let (mut client, mut service) = (None, None);
        for (field, at, len) in length_delimited(&record.leaf) {
            let value = &record.leaf[at..at + len];
            // Whether the leaf's value is the name `name` gives the
            // envelope (made at most once, into `slot`).
            let named = |slot: &mut Option<Option<Vec<u8>>>, name: fn(&[u8]) -> Option<Vec<u8>>| {
                slot.get_or_insert_with(|| name(envelope)).as_deref() == Some(value)
            };
            let cut = if field == LEAF_SUBJECT_COMMITMENT {
                (!record.data_subject.is_empty() && value == commitment())
                    .then_some(Cut::SubjectCommitment)
            } else if envelope.is_empty() {
                None
            } else if field == LEAF_CLIENT {
                named(&mut client, client_name).then_some(Cut::Client)
            } else if field == LEAF_SERVICE {
                named(&mut service, service_name).then_some(Cut::Service)
            } else if field == LEAF_ENVELOPE_DIGEST {
                let digest = match made.envelope_digest {
                    Some(d) => *d,
                    None => lienthong_proto::sha256(envelope),
                };
                (value == digest).then_some(Cut::EnvelopeDigest)
            } else {
                values
                    .iter()
                    .position(|&(from, n)| {
                        usize::from(n) == len
                            && &envelope[usize::from(from)..usize::from(from) + len] == value
                    })
                    .map(|rank| Cut::FromEnvelope(rank as u8))
            };
            // Only a field whose key and length are encoded as they will
            // be again (the shortest varints) is cut whole.
            if let Some(cut) = cut
                && (1..=LARGEST_CUT_FIELD).contains(&field)
            {
                let key = field_key(field, len);
                if at >= key.len() && record.leaf[at - key.len()..at] == key[..] {
                    derived.push((at - key.len(), at + len, field, cut));
                }
            }
        }
        let mut leaf = Vec::with_capacity(record.leaf.len());
        let mut cuts = Vec::with_capacity(3 * derived.len());
        let mut from = 0;
        for (start, end, field, cut) in derived {
            prost::encoding::encode_varint((start - from) as u64, &mut cuts);
            leaf.extend_from_slice(&record.leaf[from..start]);
            from = end;
            cuts.push(cut.kind() << 5 | field as u8);
            if let Cut::FromEnvelope(rank) = cut {
                cuts.push(rank);
            }
        }
        leaf.extend_from_slice(&record.leaf[from..]);
        let subject_from_envelope = !record.data_subject.is_empty()
            && envelope_subject(&record.envelope) == Some(record.data_subject.as_bytes());
        Compact {
            leaf,
            envelope: record.envelope,
            data_subject: if subject_from_envelope {
                String::new()
            } else {
                record.data_subject
            },
            subject_salt: if salt_is_derived {
                Vec::new()
            } else {
                record.subject_salt
            },
            body: record.body,
            hidden_opening: record.hidden_opening,
            pruned_leaf_hash: record.pruned_leaf_hash,
            // Cuts by whole field come with the marker a release that
            // knows only cuts by offset refuses, rather than opening the
            // record to a leaf without the fields cut.
            leaf_cuts: if cuts.is_empty() {
                Vec::new()
            } else {
                vec![FIELD_CUTS_MARKER]
            },
            field_cuts: cuts,
            derived_salt: salt_is_derived,
            subject_from_envelope,
        }
    }

    /// The record again; `None` when the cuts do not fit the leaf.
    fn expand(mut self, derived_salt: impl FnOnce() -> [u8; 32]) -> Option<Stored> {
        let subject_salt = if self.derived_salt {
            derived_salt().to_vec()
        } else {
            std::mem::take(&mut self.subject_salt)
        };
        let data_subject = if self.subject_from_envelope {
            if !self.data_subject.is_empty() {
                return None;
            }
            String::from_utf8(envelope_subject(&self.envelope)?.to_vec()).ok()?
        } else {
            std::mem::take(&mut self.data_subject)
        };
        let leaf = if self.field_cuts.is_empty() {
            self.leaf_by_offsets(&subject_salt, &data_subject)?
        } else if self.leaf_cuts == [FIELD_CUTS_MARKER] {
            self.leaf_by_fields(&subject_salt, &data_subject)?
        } else {
            return None;
        };
        Some(Stored {
            leaf,
            envelope: self.envelope,
            data_subject,
            subject_salt,
            body: self.body,
            hidden_opening: self.hidden_opening,
            pruned_leaf_hash: self.pruned_leaf_hash,
        })
    }

    /// The whole leaf from cuts by offset ([`Compact::leaf_cuts`]).
    fn leaf_by_offsets(&self, subject_salt: &[u8], data_subject: &str) -> Option<Vec<u8>> {
        let mut leaf = Vec::with_capacity(self.leaf.len() + self.leaf_cuts.len() / 3 * DIGEST);
        let mut from = 0usize;
        let mut cuts = self.leaf_cuts.as_slice();
        while let [kind, hi, lo, rest @ ..] = cuts {
            let at = usize::from(u16::from_be_bytes([*hi, *lo]));
            // Offsets in the whole leaf: what came before is in `leaf`.
            let take = at.checked_sub(leaf.len())?;
            leaf.extend_from_slice(self.leaf.get(from..from.checked_add(take)?)?);
            from += take;
            cuts = match (*kind, rest) {
                (CUT_ENVELOPE_DIGEST, rest) => {
                    leaf.extend_from_slice(&lienthong_proto::sha256(&self.envelope));
                    rest
                }
                (CUT_SUBJECT_COMMITMENT, rest) if !data_subject.is_empty() => {
                    leaf.extend_from_slice(&subject_commitment(subject_salt, data_subject));
                    rest
                }
                (CUT_CLIENT, rest) => {
                    leaf.extend_from_slice(&client_name(&self.envelope)?);
                    rest
                }
                (CUT_SERVICE, rest) => {
                    leaf.extend_from_slice(&service_name(&self.envelope)?);
                    rest
                }
                (CUT_FROM_ENVELOPE, [hi, lo, len, rest @ ..]) => {
                    let start = usize::from(u16::from_be_bytes([*hi, *lo]));
                    leaf.extend_from_slice(self.envelope.get(start..start + usize::from(*len))?);
                    rest
                }
                _ => return None,
            };
        }
        if !cuts.is_empty() {
            return None;
        }
        leaf.extend_from_slice(self.leaf.get(from..)?);
        Some(leaf)
    }

    /// The whole leaf from cuts of whole fields ([`Compact::field_cuts`]).
    fn leaf_by_fields(&self, subject_salt: &[u8], data_subject: &str) -> Option<Vec<u8>> {
        let mut leaf = Vec::with_capacity(self.leaf.len() + self.field_cuts.len() * 24);
        // Each made at most once, however many cuts name it.
        let mut values = None;
        let (mut digest, mut commitment, mut client, mut service) = (None, None, None, None);
        let mut from = 0usize;
        let mut cuts = self.field_cuts.as_slice();
        while !cuts.is_empty() {
            let kept = usize::try_from(prost::encoding::decode_varint(&mut cuts).ok()?).ok()?;
            leaf.extend_from_slice(self.leaf.get(from..from.checked_add(kept)?)?);
            from += kept;
            let [what, rest @ ..] = cuts else {
                return None;
            };
            let field = u64::from(what & 0x1f);
            let (value, rest): (&[u8], &[u8]) = match (what >> 5, rest) {
                _ if field == 0 => return None,
                (CUT_ENVELOPE_DIGEST, rest) => (
                    digest.get_or_insert_with(|| lienthong_proto::sha256(&self.envelope)),
                    rest,
                ),
                (CUT_SUBJECT_COMMITMENT, rest) if !data_subject.is_empty() => (
                    commitment
                        .get_or_insert_with(|| subject_commitment(subject_salt, data_subject)),
                    rest,
                ),
                (CUT_CLIENT, rest) => (
                    client
                        .get_or_insert_with(|| client_name(&self.envelope))
                        .as_deref()?,
                    rest,
                ),
                (CUT_SERVICE, rest) => (
                    service
                        .get_or_insert_with(|| service_name(&self.envelope))
                        .as_deref()?,
                    rest,
                ),
                (CUT_FROM_ENVELOPE, [rank, rest @ ..]) => {
                    let values = values.get_or_insert_with(|| envelope_values(&self.envelope));
                    let &(at, len) = values.get(usize::from(*rank))?;
                    let at = usize::from(at);
                    (self.envelope.get(at..at + usize::from(len))?, rest)
                }
                _ => return None,
            };
            leaf.extend_from_slice(&field_key(field, value.len()));
            leaf.extend_from_slice(value);
            cuts = rest;
        }
        leaf.extend_from_slice(self.leaf.get(from..)?);
        Some(leaf)
    }
}

const HKDF_INFO: &[u8] = b"lienthong message log segment v1";
const HKDF_SALTS_INFO: &[u8] = b"lienthong message log subject salts v1";

/// The sealing key of one segment.
pub struct SegmentKey {
    key: aead::LessSafeKey,
    /// Makes each position's subject salt.
    salts: hmac::Key,
    owner: Vec<u8>,
    key_id: u32,
}

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SegmentKey {
    /// The key of a segment with `salt`, sealed under log key `key_id`.
    pub fn derive(keys: &LogKeys, key_id: u32, salt: &[u8]) -> Result<Self, LogError> {
        let ikm = keys.seal_key(key_id).ok_or_else(|| {
            LogError(format!(
                "log key {key_id} is not in the log key directory (removed or replaced?)"
            ))
        })?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
        let okm = prk
            .expand(&[HKDF_INFO], &aead::CHACHA20_POLY1305)
            .map_err(|_| LogError("cannot derive a segment key".into()))?;
        let salts = prk
            .expand(&[HKDF_SALTS_INFO], hmac::HMAC_SHA256)
            .map_err(|_| LogError("cannot derive a segment key".into()))?;
        Ok(SegmentKey {
            key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
            salts: hmac::Key::from(salts),
            owner: keys.owner.as_bytes().to_vec(),
            key_id,
        })
    }

    /// The salt of the subject commitment of the record at `index`:
    /// unpredictable without the log key, never the same twice in a
    /// segment, and nothing to store.
    pub fn subject_salt(&self, index: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.salts, &index.to_be_bytes()).as_ref());
        out
    }

    fn nonce(index: u64) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        aead::Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u64) -> Vec<u8> {
        let mut a = Vec::with_capacity(self.owner.len() + 13);
        a.extend_from_slice(&self.owner);
        a.push(0);
        a.extend_from_slice(&index.to_be_bytes());
        a.extend_from_slice(&self.key_id.to_be_bytes());
        a
    }

    /// Seals `record` at position `index`, appending the sealed bytes to
    /// `out`.
    pub fn seal_into(
        &self,
        index: u64,
        record: &Stored,
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let salt = self.subject_salt(index);
        let made = Made {
            subject_salt: &salt,
            envelope_digest: None,
            subject_commitment: None,
        };
        self.seal_with(index, record.clone(), made, out)
    }

    /// [`SegmentKey::seal_into`] with what the writer made already (see
    /// [`Made`]); takes the record (nothing of it is copied).
    pub fn seal_with(
        &self,
        index: u64,
        record: Stored,
        made: Made<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let start = out.len();
        let compact = Compact::of(record, made);
        prost::Message::encode(&compact, out).map_err(|e| LogError(e.to_string()))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Self::nonce(index),
                aead::Aad::from(self.aad(index)),
                &mut out[start..],
            )
            .map_err(|_| LogError("sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the record sealed at `index`; `None` when it does not open
    /// (edited, moved, from another server, or under another key).
    pub fn open(&self, index: u64, sealed: &[u8]) -> Option<Stored> {
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(
                Self::nonce(index),
                aead::Aad::from(self.aad(index)),
                &mut data,
            )
            .ok()?;
        <Compact as prost::Message>::decode(&*plain)
            .ok()?
            .expand(|| self.subject_salt(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(owner: &str) -> LogKeys {
        LogKeys::new(owner, vec![1; 32], [2; 32])
    }

    /// Nothing made but the salt.
    fn made(salt: &[u8; 32]) -> Made<'_> {
        Made {
            subject_salt: salt,
            envelope_digest: None,
            subject_commitment: None,
        }
    }

    #[test]
    fn a_record_opens_only_where_it_was_sealed() {
        let k = keys("VN/GOV/1/ss1");
        let seg = SegmentKey::derive(&k, 1, &[5; 32]).unwrap();
        let rec = Stored {
            leaf: b"leaf".to_vec(),
            data_subject: "001099012345".into(),
            ..Default::default()
        };
        let mut sealed = Vec::new();
        seg.seal_into(7, &rec, &mut sealed).unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"001099012345"));
        assert_eq!(seg.open(7, &sealed), Some(rec));
        // Another position, another segment, another server: nothing.
        assert_eq!(seg.open(8, &sealed), None);
        let other_segment = SegmentKey::derive(&k, 1, &[6; 32]).unwrap();
        assert_eq!(other_segment.open(7, &sealed), None);
        let other_server = SegmentKey::derive(&keys("VN/GOV/2/ss1"), 1, &[5; 32]).unwrap();
        assert_eq!(other_server.open(7, &sealed), None);
        let mut flipped = sealed.clone();
        flipped[3] ^= 1;
        assert_eq!(seg.open(7, &flipped), None);
        assert!(
            SegmentKey::derive(&k, 2, &[5; 32]).is_err(),
            "unknown key id"
        );
    }

    #[test]
    fn what_can_be_derived_is_not_stored_and_comes_back_exactly() {
        let k = keys("VN/GOV/1/ss1");
        let seg = SegmentKey::derive(&k, 1, &[5; 32]).unwrap();
        let record = crate::LogRecord {
            message_id: "m-1".into(),
            client: "VN/GOV/000102/police".into(),
            data_subject: "001099012345".into(),
            envelope: vec![9; 300],
            ..Default::default()
        };
        let salt = seg.subject_salt(7);
        let subject = subject_commitment(&salt, &record.data_subject);
        let whole = Stored {
            leaf: crate::leaf::leaf_bytes(&record, Some(subject), None),
            envelope: record.envelope.clone(),
            data_subject: record.data_subject.clone(),
            subject_salt: salt.to_vec(),
            ..Default::default()
        };
        let mut compact = Vec::new();
        seg.seal_into(7, &whole, &mut compact).unwrap();
        assert_eq!(seg.open(7, &compact), Some(whole.clone()));
        // The writer's way, with the salt and digest it made: the same bytes.
        let mut with = Vec::new();
        let digest = lienthong_proto::sha256(&record.envelope);
        let made = Made {
            subject_salt: &salt,
            envelope_digest: Some(&digest),
            subject_commitment: Some(&subject),
        };
        seg.seal_with(7, whole.clone(), made, &mut with).unwrap();
        assert_eq!(with, compact);
        // A random salt and a leaf whose digests are not the record's are
        // kept as they are.
        let mut kept = whole.clone();
        kept.subject_salt = vec![1; 32];
        kept.envelope.push(0);
        let mut sealed = Vec::new();
        seg.seal_into(7, &kept, &mut sealed).unwrap();
        assert_eq!(seg.open(7, &sealed), Some(kept));
        // Salt and envelope digest: twice 32 bytes, less the few that say
        // what was cut.
        assert!(
            sealed.len() >= compact.len() + 2 * 32 - 8,
            "{} {}",
            sealed.len(),
            compact.len()
        );
        // Each position its own salt.
        assert_ne!(seg.subject_salt(7), seg.subject_salt(8));
    }

    #[test]
    fn what_the_envelope_holds_is_not_stored_twice() {
        let k = keys("VN/GOV/1/ss1");
        let seg = SegmentKey::derive(&k, 1, &[5; 32]).unwrap();
        let mut record = crate::LogRecord {
            message_id: "0b6f3c1e-4d2a-4f0e-9a57-3c2d1e0f9a8b".into(),
            method: "population.v1.PersonRegistry/GetPerson".into(),
            user_id: "officer-7".into(),
            purpose: "business registration 2026-114".into(),
            payload_digest: vec![2; 32],
            client: "VN/GOV/000305/business".into(),
            ..Default::default()
        };
        // The signed envelope restates some of the leaf's values (not the
        // client, which it holds in parts), among other fields.
        let envelope = |r: &crate::LogRecord| {
            use lienthong_proto::pb::exchange::v1 as ex;
            prost::Message::encode_to_vec(&ex::RequestEnvelope {
                header: Some(ex::RequestHeader {
                    message_id: r.message_id.clone(),
                    method: r.method.clone(),
                    user_id: r.user_id.clone(),
                    purpose: r.purpose.clone(),
                    payload_digest: r.payload_digest.clone(),
                    created_at_unix_ms: 1_790_000_000_000,
                    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    ..Default::default()
                }),
                signature: Some(ex::Signature {
                    value: vec![3; 64],
                    signer_certificate_sha256: vec![4; 32],
                    ..Default::default()
                }),
            })
        };
        record.envelope = envelope(&record);
        let whole = Stored {
            leaf: crate::leaf::leaf_bytes(&record, None, None),
            envelope: record.envelope.clone(),
            ..Default::default()
        };
        let mut sealed = Vec::new();
        seg.seal_into(3, &whole, &mut sealed).unwrap();
        assert_eq!(seg.open(3, &sealed), Some(whole.clone()));
        let cut: usize = [
            record.message_id.len(),
            record.method.len(),
            record.user_id.len(),
            record.purpose.len(),
            record.payload_digest.len(),
        ]
        .iter()
        .map(|n| n - 1)
        .sum();
        // The same envelope with other values of the same lengths.
        let other = |v: &str| "x".repeat(v.len());
        let mut uncut = whole.clone();
        uncut.envelope = envelope(&crate::LogRecord {
            message_id: other(&record.message_id),
            method: other(&record.method),
            user_id: other(&record.user_id),
            purpose: other(&record.purpose),
            payload_digest: vec![9; 32],
            ..Default::default()
        });
        assert_eq!(uncut.envelope.len(), record.envelope.len());
        uncut.leaf = crate::leaf::leaf_bytes(
            &crate::LogRecord {
                envelope: uncut.envelope.clone(),
                ..record.clone()
            },
            None,
            None,
        );
        let mut kept = Vec::new();
        seg.seal_into(3, &uncut, &mut kept).unwrap();
        assert_eq!(seg.open(3, &kept), Some(uncut));
        // Each value cut with its key and length, three bytes kept (and
        // the leaf's length prefix and the varint of the gap before the
        // next cut may each take a byte less).
        let saved = kept.len() - sealed.len();
        assert!((cut..=cut + 2).contains(&saved), "{saved} saved, {cut} cut");

        // Cuts that do not fit what they were sealed with open to nothing,
        // never to other bytes.
        let compact = Compact::of(whole.clone(), made(&seg.subject_salt(3)));
        assert!(compact.leaf_cuts == [FIELD_CUTS_MARKER] && compact.field_cuts.len() >= 3 * 5);
        let mut short = compact.clone();
        short.envelope.truncate(50);
        assert_eq!(short.expand(|| [0; 32]), None);
        let mut unknown = compact.clone();
        unknown.field_cuts[1] = 7 << 5 | 1;
        assert_eq!(unknown.expand(|| [0; 32]), None);
        let mut torn = compact;
        torn.field_cuts.pop();
        assert_eq!(torn.expand(|| [0; 32]), None);
    }

    /// A request record's client, service and data subject, which its
    /// signed envelope holds in parts, and its subject commitment, which
    /// its salt and subject give again, are not stored: they come back
    /// exactly, and a record whose values are not those is kept whole.
    #[test]
    fn names_and_subject_come_back_from_the_request_envelope() {
        use lienthong_proto::pb::exchange::v1 as ex;
        use lienthong_proto::pb::identifiers::v1 as id;
        let k = keys("VN/GOV/1/ss1");
        let seg = SegmentKey::derive(&k, 1, &[5; 32]).unwrap();
        let envelope = |client: &str, provider: &str, subject: &str| {
            prost::Message::encode_to_vec(&ex::RequestEnvelope {
                header: Some(ex::RequestHeader {
                    message_id: "0b6f3c1e".into(),
                    client: Some(subsystem(client, "business")),
                    service: Some(id::ServiceId {
                        provider: Some(subsystem(provider, "population")),
                        service_code: "population.v1.PersonRegistry".into(),
                        version: String::new(),
                    }),
                    data_subject: subject.into(),
                    ..Default::default()
                }),
                signature: Some(ex::Signature {
                    value: vec![3; 64],
                    ..Default::default()
                }),
            })
        };
        let salt = seg.subject_salt(4);
        let stored = |envelope: Vec<u8>, subject: &str, salt: &[u8; 32]| {
            let record = crate::LogRecord {
                client: "VN/GOV/000305/business".into(),
                service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
                data_subject: subject.into(),
                envelope,
                ..Default::default()
            };
            Stored {
                leaf: crate::leaf::leaf_bytes(
                    &record,
                    Some(subject_commitment(salt, subject)),
                    None,
                ),
                envelope: record.envelope,
                data_subject: subject.into(),
                subject_salt: salt.to_vec(),
                ..Default::default()
            }
        };
        let seal = |whole: &Stored| {
            let mut sealed = Vec::new();
            seg.seal_into(4, whole, &mut sealed).unwrap();
            assert_eq!(seg.open(4, &sealed).as_ref(), Some(whole));
            sealed.len()
        };
        let subject = "001099012345";
        let cut = seal(&stored(
            envelope("000305", "000102", subject),
            subject,
            &salt,
        ));
        // Other members and another subject of the same lengths in the
        // envelope: nothing of it is the leaf's, and all of it is kept.
        let kept = seal(&stored(
            envelope("000999", "000998", "001099000000"),
            subject,
            &salt,
        ));
        // The client (22 bytes) and service (53), each with its key and
        // length for two bytes, and the subject (12 and its two-byte
        // prefix, for the flag's two).
        assert_eq!(kept - cut, 22 + 53 + 12, "{kept} kept, {cut} cut");
        // The commitment (32 bytes and two of key and length, for two) is
        // cut in both; one under another salt is not the record's, and is
        // kept.
        let mut other_salt = stored(envelope("000305", "000102", subject), subject, &[8; 32]);
        other_salt.subject_salt = salt.to_vec();
        // (A byte more where the leaf's length prefix takes one less.)
        assert!((32..=33).contains(&(seal(&other_salt) - cut)));

        // A response envelope names neither: its record opens as it was.
        let response = prost::Message::encode_to_vec(&ex::ResponseEnvelope {
            header: Some(ex::ResponseHeader {
                message_id: "0b6f3c1e".into(),
                request_digest: vec![1; 32],
                ..Default::default()
            }),
            signature: None,
        });
        seal(&stored(response, subject, &salt));

        // A flagged subject with one stored as well, or an envelope
        // without one, opens to nothing.
        let whole = stored(envelope("000305", "000102", subject), subject, &salt);
        let compact = Compact::of(whole, made(&salt));
        assert!(compact.subject_from_envelope && compact.data_subject.is_empty());
        let mut both = compact.clone();
        both.data_subject = subject.into();
        assert_eq!(both.expand(|| salt), None);
        let mut none = compact;
        none.envelope = envelope("000305", "000102", "");
        assert_eq!(none.expand(|| salt), None);
    }

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Subsystem `sub` of member `VN/GOV/code`.
    fn subsystem(code: &str, sub: &str) -> lienthong_proto::pb::identifiers::v1::SubsystemId {
        use lienthong_proto::pb::identifiers::v1 as id;
        id::SubsystemId {
            member: Some(id::MemberId {
                instance: "VN".into(),
                member_class: "GOV".into(),
                member_code: code.into(),
            }),
            subsystem_code: sub.into(),
        }
    }

    /// A request record with every kind of cut: its envelope restates the
    /// leaf's message id, method, official, purpose and payload digest,
    /// names its client, service and data subject, and its digest and
    /// subject commitment are made again.
    fn every_cut() -> (SegmentKey, Stored) {
        use lienthong_proto::pb::exchange::v1 as ex;
        use lienthong_proto::pb::identifiers::v1 as id;
        let seg = SegmentKey::derive(&keys("VN/GOV/000102/ss1"), 1, &[5; 32]).unwrap();
        let mut record = crate::LogRecord {
            message_id: "0b6f3c1e-4d2a-4f0e-9a57-3c2d1e0f9a8b".into(),
            method: "population.v1.PersonRegistry/GetPerson".into(),
            user_id: "officer-7".into(),
            purpose: "business registration 2026-114".into(),
            payload_digest: vec![2; 32],
            client: "VN/GOV/000305/business".into(),
            service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
            data_subject: "001099012345".into(),
            ..Default::default()
        };
        record.envelope = prost::Message::encode_to_vec(&ex::RequestEnvelope {
            header: Some(ex::RequestHeader {
                message_id: record.message_id.clone(),
                client: Some(subsystem("000305", "business")),
                service: Some(id::ServiceId {
                    provider: Some(subsystem("000102", "population")),
                    service_code: "population.v1.PersonRegistry".into(),
                    version: String::new(),
                }),
                method: record.method.clone(),
                user_id: record.user_id.clone(),
                purpose: record.purpose.clone(),
                payload_digest: record.payload_digest.clone(),
                data_subject: record.data_subject.clone(),
                created_at_unix_ms: 1_790_000_000_000,
                ..Default::default()
            }),
            signature: Some(ex::Signature {
                value: vec![3; 64],
                signer_certificate_sha256: vec![4; 32],
                ..Default::default()
            }),
        });
        let salt = seg.subject_salt(11);
        let stored = Stored {
            leaf: crate::leaf::leaf_bytes(
                &record,
                Some(subject_commitment(&salt, &record.data_subject)),
                None,
            ),
            envelope: record.envelope,
            data_subject: record.data_subject,
            subject_salt: salt.to_vec(),
            ..Default::default()
        };
        (seg, stored)
    }

    /// A record sealed by the release before whole-field cuts (cuts by
    /// offset, [`Compact::leaf_cuts`]) still opens to what was sealed; the
    /// same record sealed now is smaller.
    #[test]
    fn records_cut_by_offset_still_open() {
        let (seg, whole) = every_cut();
        let hex = [
            "0fb4f0eed6431463cea2600aa2a50c791aa5602a0c99d706c3f8c71989b16c14",
            "bc1ebcbdfe2d7ce059e969e253dfd841a3299599e857132e0b4501d70a08e9d6",
            "a85e72bb3fe1613101a306aa615379142d9498a4f763596c681bf52f676fe177",
            "6d5f661d17fe20aea277c91a8f96d2fd6818411ad269c606e5e51deba4533ed1",
            "37d747b62e75f9621b9a669ce6f97b83e4914ed0aad52cc93e1f080ffdbc8efc",
            "fddc42588fe8450903b0215ffb3231649b12e38a6ced24aa32935094ffacadfa",
            "b16e70cf09adaf017430c03ddfd7a585b23ab2e3a61138f09e3ce96aa608af9c",
            "b7f37a642ffbfc112431340fcf1bd24390404b48888befb9736dfa08eb585aac",
            "f5f82bcc6f5ad44fb4ca3426ecf484e3fc7de36098761a4c4f72987adbf79593",
            "f7504ee400611c27d5f3f4fc2fc195791f794c8794fc74e04dea66fa74fd8eb7",
            "728ae6dfc39b0349e68c1b19c365334664830ed45a6587dff5390804babd2530",
            "313dbb62c2922f3fdf89f34d1b9b3fe4e1b54e845d99892d89dcf7ceac5737b2",
            "c239374721c8a3fdb0582b6c55b7e88eb50ed0d291e7bb433c69ca87782367fd",
            "8b3e5c086208775bc48f0f18a138043d3f65885fc84b3523e58864315c2cc569",
            "7e33e526392475d481323170d6f06948205d9d8166",
        ]
        .concat();
        let sealed = from_hex(&hex);
        assert_eq!(seg.open(11, &sealed).as_ref(), Some(&whole));
        let mut now = Vec::new();
        seg.seal_into(11, &whole, &mut now).unwrap();
        assert_eq!(seg.open(11, &now).as_ref(), Some(&whole));
        // Nine cuts: five from the envelope (five bytes each saved), the
        // client, the service, the digest and the commitment (three each),
        // and the leaf's length prefix takes a byte less; less the three
        // bytes of the marker beside them.
        assert_eq!(sealed.len() - now.len(), 5 * 5 + 4 * 3 + 1 - 3);
        // What a release that knows only cuts by offset reads of it (field
        // 11 unknown to it, so skipped): the marker, which it refuses.
        let mut old_reading = Compact::of(whole.clone(), made(&seg.subject_salt(11)));
        old_reading.field_cuts.clear();
        assert_eq!(old_reading.expand(|| seg.subject_salt(11)), None);
        // Cuts of both kinds in one record open to nothing.
        let mut both = Compact::of(whole.clone(), made(&seg.subject_salt(11)));
        both.leaf_cuts = vec![CUT_ENVELOPE_DIGEST, 0, 0];
        assert_eq!(both.expand(|| seg.subject_salt(11)), None);
    }

    /// A record sealed with cuts by whole field (the format since
    /// 2026-12-02) opens to what was sealed: what names a cut —
    /// [`envelope_values`]'s ranks among them — is part of the format.
    #[test]
    fn records_cut_by_whole_field_open_as_sealed() {
        let (seg, whole) = every_cut();
        let hex = [
            "0fa7f0eed64324bee6bec23d92a77e1266dd396947dc503387d85f36b7475e7b",
            "b517bfbeaf332cb20ea06ce351d8cc14fd7be2a9db272c1b703870e62976dafc",
            "c85723b36ec3492918cb718f462f1f2011d8bda8d85978555a78a935065ddd48",
            "193c255e3df01a83ba6cb377a9adac9f5b3e786ec6458659a4a04398da4a3ecf",
            "6ccd17ec177fe50368845b89f4fc6983ff8702d8ac8b72ec370c0f09fc80c5ed",
            "a581664f84b90c173ea5335ae9322a72da7bf0cf12d833ab2e9214cff5ada2e0",
            "a6797bcd79fac5336431da3cd48edfcaa639bce9b01767a6d84be471f553f1cb",
            "f2ad6b277ea69952607265429f448d5191444c3e25621f2fc5558018d86a6197",
            "c7cb1bfd596d96cd6e0994a8dabca6e3fc7de36098761a4c4f72987acb9185d1",
            "f6514fe501601d26d4f2f5fd2ec0946878680f8794fc74e04dea66fa74fd8eb7",
            "728ae6dfc39b0349e68c1b19c365334664830ed45a6587dff5390804babd2530",
            "281ebc65c5952838d88ef44a1c9c38e3e6b2499a7999892d89dcf7ceac5737b2",
            "c23971422584a6a9b506386c15b3ec0fb1acd49196a5d9453c26cf82112067fe",
            "8e4b0971fd03eb084a9448954f99bafc6bcc",
        ]
        .concat();
        let sealed = from_hex(&hex);
        assert_eq!(seg.open(11, &sealed).as_ref(), Some(&whole));
    }
}

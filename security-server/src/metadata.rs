//! The metadata of an exchange: what an information system adds to its call
//! (`lt-client`, `lt-service`, …), and the signed envelopes that travel
//! between security servers in binary metadata (`lt-envelope-bin` in the
//! request headers, `lt-response-bin` in the response trailers).
//!
//! Everything here is pure and bounded: a value over its limit, with a
//! control character or not UTF-8 is refused with a message naming it.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName, HeaderValue};
use lienthong_proto::id::{ServerId, SubsystemId};

use crate::faults::{Fault, FaultError};

pub const CLIENT: &str = "lt-client";
pub const SERVICE: &str = "lt-service";
pub const USER_ID: &str = "lt-user-id";
pub const PURPOSE: &str = "lt-purpose";
pub const DATA_SUBJECT: &str = "lt-data-subject";
pub const MESSAGE_ID: &str = "lt-message-id";
/// For services built into every security server: the server addressed
/// (instead of `lt-service`).
pub const SERVER: &str = "lt-server";
/// Hide the exchange from the data subject's trace until then (Unix ms);
/// only clients in the instance's withholding group may.
pub const WITHHELD_UNTIL: &str = "lt-withheld-until";
/// The services every security server offers itself.
pub const BUILTIN_SERVICES: &[&str] = &[
    "lienthong.trace.v1.AccessTrace",
    "lienthong.operational.v1.OperationalData",
    "lienthong.allowedmethods.v1.AllowedMethods",
];
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The signed request envelope, between security servers.
pub const ENVELOPE: &str = "lt-envelope-bin";
/// The signed response envelope, in the provider's trailers.
pub const RESPONSE_ENVELOPE: &str = "lt-response-bin";

pub use lienthong_proto::fields::{MAX_DATA_SUBJECT, MAX_PURPOSE, MAX_USER_ID};
/// Longest message id, in bytes.
pub const MAX_MESSAGE_ID: usize = 128;
/// Longest W3C trace-context value kept.
pub const MAX_TRACE_CONTEXT: usize = 512;
/// Largest encoded envelope accepted.
pub const MAX_ENVELOPE: usize = 16 * 1024;

/// Whom a call is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A provider subsystem's service (`lt-service`).
    Provider(SubsystemId),
    /// A service built into one security server (`lt-server`).
    Server(ServerId),
}

impl Target {
    /// The member whose signature the response must carry.
    pub fn member(&self) -> &lienthong_proto::id::MemberId {
        match self {
            Target::Provider(s) => &s.member,
            Target::Server(s) => &s.owner,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Provider(s) => write!(f, "{s}"),
            Target::Server(s) => write!(f, "{s}"),
        }
    }
}

/// What the information system said about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMetadata {
    pub client: SubsystemId,
    pub target: Target,
    pub user_id: String,
    pub purpose: String,
    pub data_subject: String,
    pub message_id: Option<String>,
    pub traceparent: String,
    pub tracestate: String,
    /// 0 = not withheld.
    pub withheld_until_ms: i64,
}

/// A gRPC path split into its service and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcPath<'a> {
    pub service: &'a str,
    pub method: &'a str,
}

/// Splits `/package.Service/Method`.
pub fn parse_path(path: &str) -> Result<GrpcPath<'_>, FaultError> {
    let bad = || {
        Fault::BadRequest.with(format!(
            "path {:?} is not a gRPC method path (/package.Service/Method)",
            excerpt(path)
        ))
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let (service, method) = rest.split_once('/').ok_or_else(bad)?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 255
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    if !ident(service) || !ident(method) || method.contains('.') {
        return Err(bad());
    }
    Ok(GrpcPath { service, method })
}

fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One text metadata value: UTF-8, no control characters, at most `max`
/// characters. Absent is `None`. (Free text is brought into canonical
/// form by [`free_text`].)
pub fn text(headers: &HeaderMap, name: &str, max: usize) -> Result<Option<String>, FaultError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = std::str::from_utf8(v.as_bytes())
        .map_err(|_| Fault::BadRequest.with(format!("{name} is not UTF-8")))?;
    if s.chars().any(char::is_control) {
        return Err(Fault::BadRequest.with(format!("{name} contains a control character")));
    }
    if s.chars().count() > max {
        return Err(Fault::BadRequest.with(format!("{name} is longer than {max} characters")));
    }
    Ok(Some(s.to_owned()))
}

fn subsystem(headers: &HeaderMap, name: &str) -> Result<SubsystemId, FaultError> {
    let s = text(headers, name, 1024)?.ok_or_else(|| {
        Fault::BadRequest.with(format!(
            "{name} is missing: name the {} subsystem as INSTANCE/CLASS/MEMBER/SUBSYSTEM",
            if name == CLIENT {
                "calling"
            } else {
                "provider"
            }
        ))
    })?;
    s.parse()
        .map_err(|e| Fault::BadRequest.with(format!("{name}: {e}")))
}

/// Checks a message id: printable ASCII letters, digits and `-_.:`.
pub fn check_message_id(id: &str) -> Result<(), FaultError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Fault::BadRequest.with(format!(
            "message id {:?} must be 1..={MAX_MESSAGE_ID} characters of A-Z a-z 0-9 - _ . :",
            excerpt(id)
        )))
    }
}

/// Reads the Lienthong metadata of an information system's call.
pub fn parse_call(headers: &HeaderMap) -> Result<CallMetadata, FaultError> {
    let client = subsystem(headers, CLIENT)?;
    let target = match text(headers, SERVER, 1024)? {
        Some(server) if !headers.contains_key(SERVICE) => Target::Server(
            server
                .parse()
                .map_err(|e| Fault::BadRequest.with(format!("{SERVER}: {e}")))?,
        ),
        Some(_) => {
            return Err(Fault::BadRequest.with(format!(
                "give either {SERVICE} (a provider subsystem) or {SERVER} (a built-in service of one server), not both"
            )));
        }
        None => Target::Provider(subsystem(headers, SERVICE)?),
    };
    let withheld_until_ms = match text(headers, WITHHELD_UNTIL, 20)? {
        None => 0,
        Some(v) => v.parse::<i64>().ok().filter(|t| *t > 0).ok_or_else(|| {
            Fault::BadRequest.with(format!(
                "{WITHHELD_UNTIL} must be a Unix time in milliseconds"
            ))
        })?,
    };
    let message_id = text(headers, MESSAGE_ID, MAX_MESSAGE_ID)?;
    if let Some(id) = &message_id {
        check_message_id(id)?;
    }
    let trace = |name| -> Result<String, FaultError> {
        // Trace context is advisory: drop a malformed value instead of
        // refusing (what the provider would refuse never leaves).
        Ok(text(headers, name, MAX_TRACE_CONTEXT)
            .ok()
            .flatten()
            .filter(|v| crate::fields::trace_context_ok(v))
            .unwrap_or_default())
    };
    Ok(CallMetadata {
        client,
        target,
        user_id: free_text(headers, USER_ID, MAX_USER_ID)?,
        purpose: free_text(headers, PURPOSE, MAX_PURPOSE)?,
        data_subject: text(headers, DATA_SUBJECT, MAX_DATA_SUBJECT)?.unwrap_or_default(),
        message_id,
        traceparent: trace(TRACEPARENT)?,
        tracestate: trace(TRACESTATE)?,
        withheld_until_ms,
    })
}

/// A free-text value (official, purpose) in canonical form: NFC, no
/// invisible, private-use or unassigned characters, at most `max`
/// characters ([`lienthong_proto::fields::canonical_text`]); absent is empty.
pub fn free_text(
    headers: &HeaderMap,
    name: &'static str,
    max: usize,
) -> Result<String, FaultError> {
    let Some(v) = headers.get(name) else {
        return Ok(String::new());
    };
    let s = std::str::from_utf8(v.as_bytes())
        .map_err(|_| Fault::BadRequest.with(format!("{name} is not UTF-8")))?;
    lienthong_proto::fields::canonical_text(name, s, max)
        .map_err(|e| Fault::BadRequest.with(e.to_string()))
}

/// The caller's deadline (`grpc-timeout`: up to 8 digits and a unit of
/// H, M, S, m, u or n), if it sent a valid one.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Removes every `lt-*` header and the trace context: nothing an
/// information system or a peer says under our names passes on unchecked
/// (the trace context travels signed in the envelope instead).
pub fn strip_lienthong(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("lt-") || k == TRACEPARENT || k == TRACESTATE
        })
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// gRPC binary metadata is base64; senders may or may not pad.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Puts binary metadata (`*-bin`).
pub fn put_bin(headers: &mut HeaderMap, name: &'static str, bytes: &[u8]) {
    let encoded = B64.encode(bytes);
    // Base64 text is always a valid header value.
    let value = HeaderValue::from_str(&encoded).expect("base64 is a valid header value");
    headers.insert(HeaderName::from_static(name), value);
}

/// Why binary metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinError {
    #[error("{name} is larger than {max} bytes")]
    TooLarge { name: String, max: usize },
    #[error("{name} is not base64: {source}")]
    NotBase64 {
        name: String,
        #[source]
        source: base64::DecodeError,
    },
}

/// Reads binary metadata (`*-bin`) of at most `max` decoded bytes.
pub fn get_bin(headers: &HeaderMap, name: &str, max: usize) -> Result<Option<Vec<u8>>, BinError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let too_large = || BinError::TooLarge {
        name: name.to_owned(),
        max,
    };
    // A cheap bound before decoding; the exact one after (the text bound
    // lets up to two bytes more through).
    if v.len() > max * 4 / 3 + 4 {
        return Err(too_large());
    }
    let bytes = B64
        .decode(v.as_bytes())
        .map_err(|source| BinError::NotBase64 {
            name: name.to_owned(),
            source,
        })?;
    if bytes.len() > max {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn paths() {
        let p = parse_path("/population.v1.PersonRegistry/GetPerson").unwrap();
        assert_eq!(p.service, "population.v1.PersonRegistry");
        assert_eq!(p.method, "GetPerson");
        for bad in [
            "", "/", "//", "/a", "/a/", "a/b", "/a/b/c", "/a b/c", "/a/b.c",
        ] {
            let e = parse_path(bad).unwrap_err();
            assert_eq!(e.fault, Fault::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn call_metadata() {
        let h = headers(&[
            (CLIENT, "VN/GOV/000305/business"),
            (SERVICE, "VN/GOV/000102/population"),
            (USER_ID, "officer-7"),
            (PURPOSE, "case 2026/114"),
            (DATA_SUBJECT, "001099012345"),
            (MESSAGE_ID, "m-1"),
        ]);
        let m = parse_call(&h).unwrap();
        assert_eq!(m.client.to_string(), "VN/GOV/000305/business");
        assert_eq!(m.target.to_string(), "VN/GOV/000102/population");
        assert_eq!(m.withheld_until_ms, 0);
        let mut builtin = h.clone();
        builtin.remove(SERVICE);
        builtin.insert(SERVER, HeaderValue::from_static("VN/GOV/000102/ss1"));
        assert!(matches!(
            parse_call(&builtin).unwrap().target,
            Target::Server(_)
        ));
        let mut both = h.clone();
        both.insert(SERVER, HeaderValue::from_static("VN/GOV/000102/ss1"));
        assert!(parse_call(&both).is_err());
        assert_eq!(m.message_id.as_deref(), Some("m-1"));

        for (name, value, want) in [
            (CLIENT, "VN/GOV/000305", "lt-client"),
            (SERVICE, "VN/GOV/0_1/x", "lt-service"),
            (MESSAGE_ID, "has space", "message id"),
            (DATA_SUBJECT, &"9".repeat(65), "lt-data-subject"),
            (WITHHELD_UNTIL, "tomorrow", "lt-withheld-until"),
        ] {
            let mut h = h.clone();
            h.insert(name, HeaderValue::from_str(value).unwrap());
            let e = parse_call(&h).unwrap_err();
            assert!(e.message.contains(want), "{name}: {}", e.message);
        }
        let mut missing = h.clone();
        missing.remove(CLIENT);
        assert!(
            parse_call(&missing)
                .unwrap_err()
                .message
                .contains("missing")
        );
        let mut control = h.clone();
        control.insert(PURPOSE, HeaderValue::from_bytes(b"a\tb").unwrap());
        assert!(parse_call(&control).is_err());
    }

    #[test]
    fn binary_metadata_roundtrip_and_bounds() {
        let mut h = HeaderMap::new();
        put_bin(&mut h, ENVELOPE, b"\x00\x01hello");
        assert_eq!(
            get_bin(&h, ENVELOPE, 100).unwrap().unwrap(),
            b"\x00\x01hello"
        );
        h.insert(ENVELOPE, HeaderValue::from_static("AAFoZWxsbw=="));
        assert_eq!(
            get_bin(&h, ENVELOPE, 100).unwrap().unwrap(),
            b"\x00\x01hello"
        );
        h.insert(ENVELOPE, HeaderValue::from_static("!!!"));
        assert!(get_bin(&h, ENVELOPE, 100).is_err());
        put_bin(&mut h, ENVELOPE, &[0; 200]);
        assert!(get_bin(&h, ENVELOPE, 100).is_err());
        // Within the text bound (8 characters for 3 bytes) but 6 bytes
        // decoded: refused (found by the metadata fuzz target).
        put_bin(&mut h, ENVELOPE, &[1, 2, 3, 4, 5, 6]);
        assert!(get_bin(&h, ENVELOPE, 3).is_err());
        assert_eq!(get_bin(&h, ENVELOPE, 6).unwrap().unwrap().len(), 6);
        assert_eq!(get_bin(&HeaderMap::new(), ENVELOPE, 100).unwrap(), None);
    }

    #[test]
    fn deadlines() {
        use std::time::Duration;
        let t = |v: &'static str| grpc_timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5000u"), Some(Duration::from_millis(5)));
        for bad in ["S", "2s", "123456789S", "-1S", "x"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn lienthong_headers_are_stripped() {
        let mut h = headers(&[(CLIENT, "x"), ("lt-anything", "y"), ("x-custom", "z")]);
        strip_lienthong(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-custom"));
    }
}

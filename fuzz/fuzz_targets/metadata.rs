//! An information system's call metadata (`parse_call`), the gRPC path
//! (`parse_path`), the caller's deadline (`grpc_timeout`) and binary
//! metadata (`get_bin`), from headers built out of the input:
//! `max: u16`, then `[name: u8][len: u16][value]`… (name indexes NAMES;
//! the last one is the request path).

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::Input;
use lienthong_security_server::metadata::{self as md, Target};

const NAMES: &[&str] = &[
    md::CLIENT,
    md::SERVICE,
    md::USER_ID,
    md::PURPOSE,
    md::DATA_SUBJECT,
    md::MESSAGE_ID,
    md::SERVER,
    md::WITHHELD_UNTIL,
    md::TRACEPARENT,
    md::TRACESTATE,
    md::ENVELOPE,
    "grpc-timeout",
    ":path",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max = usize::from(input.u16());
    let mut headers = HeaderMap::new();
    let mut path: &[u8] = b"";
    while !input.is_empty() {
        let name = NAMES[usize::from(input.byte()) % NAMES.len()];
        let len = usize::from(input.u16());
        let value = input.take(len);
        if name == ":path" {
            path = value;
        } else if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }

    // The path: what parses prints back as itself.
    if let Ok(path) = std::str::from_utf8(path)
        && let Ok(p) = md::parse_path(path)
    {
        assert_eq!(format!("/{}/{}", p.service, p.method), path);
        assert!(!p.method.contains('.'));
    }

    // Call metadata: within its limits, and what parses re-parses the same.
    if let Ok(m) = md::parse_call(&headers) {
        assert!(m.user_id.chars().count() <= md::MAX_USER_ID);
        assert!(m.purpose.chars().count() <= md::MAX_PURPOSE);
        assert!(m.data_subject.chars().count() <= md::MAX_DATA_SUBJECT);
        assert!(m.withheld_until_ms >= 0);
        if let Some(id) = &m.message_id {
            assert!(md::check_message_id(id).is_ok());
        }
        for s in [&m.user_id, &m.purpose, &m.data_subject] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        let mut again = HeaderMap::new();
        let mut put = |name: &'static str, v: &str| {
            if !v.is_empty() {
                again.insert(
                    name,
                    HeaderValue::from_bytes(v.as_bytes()).expect("was a header"),
                );
            }
        };
        put(md::CLIENT, &m.client.to_string());
        match &m.target {
            Target::Provider(p) => put(md::SERVICE, &p.to_string()),
            Target::Server(s) => put(md::SERVER, &s.to_string()),
        }
        put(md::USER_ID, &m.user_id);
        put(md::PURPOSE, &m.purpose);
        put(md::DATA_SUBJECT, &m.data_subject);
        put(md::MESSAGE_ID, m.message_id.as_deref().unwrap_or(""));
        put(md::TRACEPARENT, &m.traceparent);
        put(md::TRACESTATE, &m.tracestate);
        if m.withheld_until_ms != 0 {
            put(md::WITHHELD_UNTIL, &m.withheld_until_ms.to_string());
        }
        let reparsed = md::parse_call(&again).expect("a parsed call re-parses");
        assert_eq!(reparsed, m);
    }

    // Deadline: a valid one is at most 8 digits of its unit.
    if let Some(d) = md::grpc_timeout(&headers) {
        assert!(d <= std::time::Duration::from_secs(99_999_999 * 3600));
    }

    // Binary metadata: never more than asked for; put/get round-trips.
    if let Ok(Some(bytes)) = md::get_bin(&headers, md::ENVELOPE, max) {
        assert!(
            bytes.len() <= max,
            "{} bytes decoded, max {max}",
            bytes.len()
        );
        let mut h = HeaderMap::new();
        md::put_bin(&mut h, md::ENVELOPE, &bytes);
        assert_eq!(md::get_bin(&h, md::ENVELOPE, max), Ok(Some(bytes)));
    }
    md::strip_lienthong(&mut headers);
    assert!(headers.keys().all(|k| !k.as_str().starts_with("lt-")));
});

//! The global configuration as a security server receives it: signed
//! bytes verified against the anchor, decoded, checked for freshness and
//! indexed (`ConfView::build`, which parses every certificate in it), and
//! the anchor file itself. Input: `mode: u8`, `held: u8`, then bytes.
//! Mode 0: the bytes are a `SignedConfiguration`. Mode 1: the bytes are the
//! configuration, signed here with the fixture's registry key (so the
//! decoding and indexing behind the signature are reached). Mode 2: the
//! bytes are an `Anchor`, checked against a valid signed configuration.

#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use lienthong_certs::conf::{self, ConfError};
use lienthong_fuzz::{Input, fixture};
use lienthong_proto::canonical;
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_security_server::conf_client::ConfView;
use prost::Message;

fn index(conf: &GlobalConfiguration, now: SystemTime) {
    let Ok(view) = ConfView::build(conf, now) else {
        return;
    };
    assert_eq!(view.version, conf.version);
    let _ = view.trust();
    for s in view.servers() {
        assert_eq!(view.server(&s.id).map(|e| &e.id), Some(&s.id));
        for fp in &s.auth_certs {
            if !view.is_revoked(fp) {
                assert!(view.server_with_cert(fp).is_some());
            }
        }
        for c in &s.clients {
            assert!(view.serves(&s.id, c));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte() % 3;
    let held = match input.byte() {
        0 => None,
        n => Some(u64::from(n)),
    };
    let bytes = input.rest();
    let f = fixture();
    let now = SystemTime::now();
    match mode {
        0 => {
            let Ok(signed) = SignedConfiguration::decode(bytes) else {
                return;
            };
            if let Ok(conf) = conf::verify_configuration(&f.anchor, &signed, held, now) {
                assert_eq!(conf.instance, f.anchor.instance);
                index(&conf, now);
            }
        }
        1 => {
            let digest = canonical::digest(&canonical::configuration(bytes));
            let signed = SignedConfiguration {
                configuration: bytes.to_vec(),
                signature: Some(f.registry.sign_digest(&digest).expect("signs")),
            };
            let decoded = conf::verify_signature_and_decode(&f.anchor, &signed);
            match &decoded {
                Ok(c) => assert_eq!(
                    GlobalConfiguration::decode(c.encode_to_vec().as_slice()).as_ref(),
                    Ok(c)
                ),
                Err(e) => assert!(matches!(e, ConfError::Decode(_)), "{e}"),
            }
            let Ok(c) = decoded else {
                return;
            };
            match conf::check_current(&f.anchor, &c, held, now) {
                Ok(()) | Err(ConfError::Expired { .. }) => index(&c, now),
                Err(_) => {}
            }
        }
        _ => {
            let Ok(anchor) = Anchor::decode(bytes) else {
                return;
            };
            let mut c = f.configuration();
            c.instance = anchor.instance.clone();
            let signed = conf::sign_configuration(&c, &f.registry).expect("signs");
            if conf::verify_configuration(&anchor, &signed, held, now).is_ok() {
                assert!(
                    anchor
                        .configuration_signing_certificates
                        .contains(&f.registry_cert)
                );
            }
        }
    }
});

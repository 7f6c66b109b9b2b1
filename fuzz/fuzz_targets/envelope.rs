//! The signed envelopes between security servers: a request envelope
//! (`lt-envelope-bin`) through decoding, `envelope_parts` and signature
//! verification, and a response envelope (`lt-response-bin`) through
//! decoding and verification. Input: `mode: u8`, then the envelope bytes.
//! Mode bit 0 re-signs the header with the fixture's key (so the checks
//! behind the signature are reached), bit 1 signs it in a batch of
//! `2 + byte % 7` with the path in the input's next byte.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::{Input, fixture};
use lienthong_proto::canonical;
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, ResponseEnvelope};
use lienthong_security_server::metadata::{self, Target};
use lienthong_security_server::provider::envelope_parts;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte();
    let batch = input.byte();
    let bytes = input.rest();
    let f = fixture();

    if let Ok(mut env) = RequestEnvelope::decode(bytes) {
        assert_eq!(
            RequestEnvelope::decode(env.encode_to_vec().as_slice()).as_ref(),
            Ok(&env)
        );
        if let Some(header) = &env.header {
            let digest = canonical::digest(&canonical::request_header(header));
            if mode & 1 != 0 {
                env = f.client.sign_request(header.clone()).expect("signs");
            }
            if mode & 2 != 0 {
                let n = 2 + usize::from(batch % 7);
                let mut digests: Vec<[u8; 32]> = (0..n)
                    .map(|i| lienthong_proto::sha256(&[i as u8]))
                    .collect();
                let at = usize::from(batch) % n;
                digests[at] = digest;
                let sigs = f.client.sign_batch(&digests).expect("signs");
                env.signature = Some(sigs[at].clone());
            }
            if mode & 3 != 0 {
                assert_eq!(f.client_key.verify_request(&env).ok(), Some(digest));
            }
        }
        let verified = f.client_key.verify_request(&env);
        if verified.is_ok() {
            let sig = env.signature.as_ref().expect("verified");
            assert_eq!(sig.signer_certificate_sha256, f.client_key.fingerprint().0);
        }
        let _ = f.provider_key.verify_request(&env);

        // The envelope against the path it names, and against a fixed one.
        let named = env.header.as_ref().and_then(|h| {
            let code = h.service.as_ref().map_or("", |s| s.service_code.as_str());
            Some(format!("/{code}/{}", h.method))
        });
        let fixed = format!("/{}/{}", lienthong_fuzz::SERVICE, lienthong_fuzz::METHOD);
        for path in named.iter().chain([&fixed]) {
            let Ok(path) = metadata::parse_path(path) else {
                continue;
            };
            if let Ok((header, client, target)) = envelope_parts(&env, &path) {
                let service = header.service.as_ref().expect("checked");
                assert_eq!(service.service_code, path.service);
                assert_eq!(header.method, path.method);
                assert!(metadata::check_message_id(&header.message_id).is_ok());
                assert_eq!(
                    Some(client.to_string()),
                    header.client.as_ref().and_then(|c| {
                        lienthong_proto::id::SubsystemId::try_from(c)
                            .ok()
                            .map(|c| c.to_string())
                    })
                );
                match target {
                    Target::Provider(p) => {
                        assert!(header.target_server.is_none());
                        assert_eq!(p.to_string().parse().ok(), Some(p));
                    }
                    Target::Server(s) => {
                        assert!(service.provider.is_none());
                        assert_eq!(s.to_string().parse().ok(), Some(s));
                    }
                }
            }
        }
    }

    // The provider's signed response, as a consumer checks it.
    if let Ok(mut env) = ResponseEnvelope::decode(bytes) {
        let bound: Option<[u8; 32]> = env
            .header
            .as_ref()
            .and_then(|h| h.request_digest.as_slice().try_into().ok());
        let request_digest = bound.unwrap_or([0; 32]);
        if mode & 1 != 0
            && let Some(h) = &env.header
        {
            env = f.provider.sign_response(h.clone()).expect("signs");
            let verified = f.provider_key.verify_response(&env, &request_digest);
            assert_eq!(verified.is_ok(), bound.is_some());
        }
        let _ = f.provider_key.verify_response(&env, &request_digest);
        let _ = f.client_key.verify_response(&env, &[0; 32]);
    }
});

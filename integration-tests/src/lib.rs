//! Fixtures for whole-federation tests: fresh PKI per test from our own
//! `certs` crate, real sockets on `127.0.0.1:0`.

pub mod federation;
pub mod nodes;
pub mod otlp;
pub mod registry;
pub mod wait;

use lienthong_certs::tls::Identity;
use lienthong_certs::{Fingerprint, InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};
use lienthong_proto::id::ServerId;

/// A throwaway instance CA and helpers to issue identities from it.
pub struct TestPki {
    pub ca: InstanceCa,
}

impl TestPki {
    /// A fresh P-256 CA for `instance`.
    pub fn new(instance: &str) -> Self {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key generation works");
        TestPki {
            ca: InstanceCa::create(instance, key, Validity::days(30)).expect("CA creation works"),
        }
    }

    /// A security server's TLS identity, issued through a real CSR.
    pub fn server_identity(&self, server: &str) -> (Identity, Fingerprint) {
        self.server_identity_with(server, Validity::days(1))
    }

    /// As [`server_identity`](Self::server_identity), with a chosen validity window.
    pub fn server_identity_with(
        &self,
        server: &str,
        validity: Validity,
    ) -> (Identity, Fingerprint) {
        let id: ServerId = server.parse().expect("test server id is valid");
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key generation works");
        let csr = csr::verify(&csr::create(&key, server).expect("CSR creation works"))
            .expect("own CSR verifies");
        let cert = self
            .ca
            .issue_auth(&csr, &id, "127.0.0.1", validity)
            .expect("issuing works");
        let fp = Fingerprint::of(&cert);
        (
            Identity {
                chain: vec![cert],
                key,
            },
            fp,
        )
    }
}

//! Lienthong's public-key infrastructure.
//!
//! The central registry is the instance's certificate authority. Keys never
//! leave the server that made them: a server generates a key pair
//! ([`PrivateKey`]), sends a CSR whose self-signature proves possession
//! ([`csr`]), and the registry's [`InstanceCa`] issues
//!
//! * **auth certificates** — a security server's TLS identity (client and
//!   server auth), subject naming the server, SAN holding its address;
//! * **signing certificates** — a member's message-signing identity
//!   (digital signature only), subject naming the member.
//!
//! [`verify`] checks chain, validity window, key usage and identity;
//! [`tls`] builds rustls configs for mutual TLS where the peer must chain to
//! a trusted CA *and* match a fingerprint pinned by the global configuration
//! (swappable at run time); [`signing`] signs and verifies envelopes over the
//! canonical bytes of `lienthong_proto::canonical`; [`net`] adapts TLS
//! streams to tonic servers and clients.
//!
//! Start with [`InstanceCa::create`] and [`tls::server_config`].

pub mod ca;
pub mod conf;
pub mod csr;
mod error;
mod fingerprint;
pub mod key_policy;
mod keys;
pub mod net;
pub mod pem;
pub mod signing;
pub mod tls;
pub mod verify;

#[cfg(test)]
mod test_support;

pub use ca::{InstanceCa, Validity};
pub use error::CertError;
pub use fingerprint::Fingerprint;
pub use keys::{KeyAlgorithm, PrivateKey};

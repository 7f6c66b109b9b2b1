//! The Lienthong wire contract.
//!
//! * [`pb`] — the generated protobuf messages and gRPC services, one module
//!   per versioned package (`pb::exchange::v1::RequestEnvelope`, …). The
//!   `.proto` files under `proto/` are the documentation other agencies
//!   implement against.
//! * [`id`] — identifier newtypes (`MemberId`, `SubsystemId`, `ServerId`,
//!   `ServiceId`, `GlobalGroupId`), parsed once at the edge.
//! * [`canonical`] — the bytes every signature covers, defined in one place.
//! * [`fields`] — the canonical form of an exchange's free-form fields
//!   (official, purpose, data subject), enforced alike at both ends.
//! * [`merkle`] — RFC 6962 hashing for signature batches and the message log.
//! * [`catalogue`] — protobuf descriptor sets of services, parsed and
//!   bounded before anyone publishes or serves them.
//! * [`time`] — Unix time in milliseconds and seconds, as the wire has it.

pub mod canonical;
pub mod catalogue;
pub mod fields;
pub mod id;
pub mod merkle;
pub mod time;

/// Generated protobuf code, one module per package.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    pub mod identifiers {
        pub mod v1 {
            tonic::include_proto!("lienthong.identifiers.v1");
        }
    }
    pub mod exchange {
        pub mod v1 {
            tonic::include_proto!("lienthong.exchange.v1");
        }
    }
    pub mod globalconf {
        pub mod v1 {
            tonic::include_proto!("lienthong.globalconf.v1");
        }
    }
    pub mod registry {
        pub mod v1 {
            tonic::include_proto!("lienthong.registry.v1");
        }
    }
    pub mod trace {
        pub mod v1 {
            tonic::include_proto!("lienthong.trace.v1");
        }
    }
    pub mod operational {
        pub mod v1 {
            tonic::include_proto!("lienthong.operational.v1");
        }
    }
    pub mod allowedmethods {
        pub mod v1 {
            tonic::include_proto!("lienthong.allowedmethods.v1");
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

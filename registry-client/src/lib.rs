//! Talking to a Lienthong registry, as every other party does: security
//! servers, operators' commands and tests. Nothing here runs a registry.
//!
//! Start with [`read_anchor`] (the out-of-band file naming the registry's
//! addresses, CA and configuration keys) and [`connect`], which dials the
//! first reachable address over TLS pinned to the anchor's CA; a party
//! that keeps calling holds [`Registries`], which also fails over to the
//! addresses the newest configuration lists. Then:
//!
//! * [`configuration`] — downloading the signed global configuration and
//!   verifying it against the anchor; keeping a copy on disk.
//! * [`registration`] — a security server's registration requests (first
//!   contact with an enrollment token, client subsystems, address changes)
//!   and asking about them; [`consent`] is a member's signature allowing a
//!   signing certificate in its name on another member's server.
//! * [`operator`] — the officer's and observer's token-authenticated client.
//! * [`catalogue`] — services' descriptor sets, downloaded by the digest
//!   the configuration names them by.
//!
//! Errors keep their causes: [`error_chain`] prints a transport error with
//! everything under it, where rustls says what actually went wrong.

#![forbid(unsafe_code)]

pub mod anchor;
pub mod catalogue;
pub mod configuration;
mod connect;
pub mod consent;
mod error;
pub mod operator;
pub mod registration;

pub use anchor::{MAX_ANCHOR_BYTES, read_anchor, write_anchor};
pub use configuration::distribution_client;
pub use connect::{CONNECT_TIMEOUT, Registries, connect, dial_order};
pub use error::{ClientError, error_chain};
pub use operator::{
    BearerToken, ON_BEHALF_OF, OperatorClient, operator_client, operator_client_for,
};
pub use registration::{
    client_request, client_request_with_consent, first_request, server_request, sign_submission,
};

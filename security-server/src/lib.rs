//! The Lienthong security server: the gateway every exchange passes
//! through, twice — the consumer's server signs and forwards its
//! information system's call, the provider's server verifies it, checks
//! access rights and calls its backend, and both keep a durable log.
//!
//! Start with [`SecurityServer::start`]. The request's path is the module
//! tree: [`consumer`] (calls from the agency's own systems), [`provider`]
//! (signed requests from other servers), [`access`] (who may call what),
//! [`message_log`], [`conf_client`] (the global configuration), [`faults`]
//! (every refusal, one table). [`join`] registers a server and its clients
//! with the central registry.

pub mod access;
pub mod admin;
pub mod allowed_methods;
pub mod batch;
pub mod body;
pub mod builtin;
pub mod checkpoint;
pub mod conf_client;
pub mod consumer;
pub mod faults;
pub mod fields;
pub mod join;
pub mod keys;
pub mod limits;
mod listen;
pub use lienthong_message_log as message_log;
pub mod metadata;
pub mod operational;
pub mod provider;
pub mod refusal;
pub mod replay;
mod server;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod withholding;

/// What both sides of a server share: its keys and signers, its view of
/// the configuration, its message log and its operator's decisions.
#[derive(Clone)]
pub struct Shared {
    pub keys: std::sync::Arc<keys::Keys>,
    pub conf: std::sync::Arc<conf_client::ConfClient>,
    pub log: std::sync::Arc<dyn message_log::MessageLog>,
    pub policies: provider::Policies,
    pub signers: std::sync::Arc<batch::Signers>,
}

pub use server::{
    DEFAULT_CONSUMER_LISTEN, DEFAULT_PROVIDER_LISTEN, DEFAULT_RETENTION, LOCK_FILE, SecurityServer,
    ServerOptions, server_id,
};

//! The Lienthong central registry: the instance's source of truth and
//! certificate authority. It lists members, subsystems, security servers,
//! services and certificates, and publishes the signed global configuration
//! that every security server pulls and caches, so it is never on the data
//! path.
//!
//! Start with [`Registry::start`] (what `lienthong registry serve` runs) and
//! [`init::initialise`] (what `lienthong registry init` runs). The pieces:
//!
//! * [`store`] — the [`Store`](store::Store) trait and its SQLite backend;
//!   every write is a [`model::Change`] applied with its audit record in one
//!   transaction.
//! * [`operator`] — the operator API (token-authenticated, officer and
//!   observer roles).
//! * [`registration`] — security servers' registration requests, checked
//!   and turned into certificates on approval.
//! * [`publisher`] — builds, signs and versions the global configuration;
//!   [`distribution`] serves it, and [`catalogue`] the services'
//!   descriptor sets it names by digest.
//! * [`witness`] — countersigns the servers' message-log checkpoints.
//!
//! What operators and security servers use to talk to it is the
//! `lienthong-registry-client` crate.

pub mod admin;
pub mod auth;
pub mod catalogue;
pub mod consent;
pub mod distribution;
pub mod error;
pub mod init;
pub mod model;
pub mod operator;
pub mod publisher;
pub mod refusals;
pub mod registration;
mod server;
pub mod store;
pub mod throttle;
pub mod witness;

pub use server::{DEFAULT_PORT, Registry, RegistryOptions};

//! The citizens' page of Lienthong: "who looked at my data?".
//!
//! A citizen signs in with the country's eID by OpenID Connect
//! ([`oidc`]), and sees every access to their data across the bus as the
//! trace portal verified it ([`source`], over the portal's own security
//! server): when, which agency and system, which service, the purpose, the
//! official, the result, whether both ends logged it and the proofs held,
//! and how many records are withheld until when. The page is HTML rendered
//! on the server ([`pages`], no script), Vietnamese first and English
//! second. The trace downloads with its proofs as a file ([`bundle`]) that
//! `lienthong trace verify` checks offline against the verifier's anchor.
//!
//! Start with [`app::router`] and [`serve::serve`]; `lienthong portal serve`
//! wires them to a security server.

#![forbid(unsafe_code)]

pub mod app;
pub mod bundle;
pub mod console;
pub mod console_common;
pub mod dev_provider;
pub mod http_client;
pub mod i18n;
pub mod oidc;
pub mod pages;
pub mod serve;
pub mod server_console;
pub mod source;
pub mod state;

//! streamgate: a reverse-proxy gateway that signs Cloudflare Stream URLs on the fly.
//!
//! The request path reads top to bottom: [`routes`] → [`identity`] → [`policy`] →
//! [`cache`] (→ [`token`]) → redirect. [`emulator`] is a local Stream origin that judges the
//! tokens independently, so the whole flow works offline.
#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod error;
pub mod gateway;
pub mod header_timer;
pub mod identity;
pub mod policy;
pub mod routes;
pub mod secret;
pub mod server;
pub mod token;

/// The response body type used by every handler.
pub type Body = http_body_util::Full<bytes::Bytes>;

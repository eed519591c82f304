//! streamgate: a reverse-proxy gateway that signs Cloudflare Stream URLs on the fly.
//!
//! The request path reads top to bottom: [`routes`] → [`identity`] → [`policy`] →
//! [`cache`] (→ [`token`]) → redirect. [`emulator`] is a local Stream origin that judges the
//! tokens independently, so the whole flow works offline.
#![forbid(unsafe_code)]

pub mod app;
pub mod body;
pub mod cache;
pub mod catalogue;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod cors;
pub mod emulator;
pub mod error;
pub mod explain;
pub mod gateway;
pub mod header_timer;
pub mod https_client;
pub mod identity;
pub mod inspect;
pub mod live;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod routes;
pub mod secret;
pub mod server;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod token;

/// Hash maps and sets on the request path: foldhash instead of SipHash. Their keys come from
/// the configuration (lookups may be attacker-chosen, inserts are not), so flooding is not a
/// concern and the faster hash is measurable per request.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

pub use body::Body;

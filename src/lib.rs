//! streamgate: a reverse-proxy gateway that signs Cloudflare Stream URLs on the fly.
//!
//! The request path reads as the modules in order: [`http`] accepts the connection, [`app`]'s
//! edge makes the [`request`] context, [`gateway`] dispatches to a handler in [`routes`],
//! which asks [`identity`] who is calling and [`authz`] for a permit, then [`token`] for a
//! token, and answers with a redirect or through [`proxy`]. [`emulator`] is a local Stream
//! origin that judges the tokens independently, so the whole flow works offline.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod authz;
pub mod body;
pub mod cli;
pub mod cloudflare;
pub mod config;
pub mod emulator;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod hex;
pub mod http;
pub mod identity;
pub mod log_writer;
pub mod metrics;
pub mod page_cache;
pub mod proxy;
pub mod request;
pub mod rfc3339;
pub mod routes;
pub mod secret;
pub mod snapshot;
#[cfg(test)]
mod test_support;
pub mod token;
pub mod untrusted;

/// Hash maps and sets on the request path: foldhash instead of SipHash. Their keys come from
/// the configuration (lookups may be attacker-chosen, inserts are not), so flooding is not a
/// concern and the faster hash is measurable per request.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

pub use body::Body;

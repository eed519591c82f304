//! Stream tokens: claims, keys in Cloudflare's formats, and signing.

pub mod cache;
pub mod claims;
pub mod keys;
pub mod signer;

pub use claims::{AccessRule, TokenSettings, VideoUid};
pub use keys::{KeyError, SigningKey};
pub use signer::{IssuedToken, SignError, Signer};

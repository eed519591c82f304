//! The validated settings: what a configuration file says, checked, as plain data.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::{IdentitySettings, RateLimitSettings, UpstreamSettings};
use crate::authz::catalogue::Catalogue;
use crate::authz::policy::Policy;
use crate::http::tls::TlsFiles;
use crate::secret::KeyLocation;
use crate::token::TokenSettings;

/// The most clock skew the emulator may be told to tolerate on `exp` and `nbf`.
pub const MAX_EMULATOR_LEEWAY: Duration = Duration::from_secs(60);

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// The field path, e.g. `rules[2].videos[0]`; empty for whole-file problems.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Where tokens are played from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSettings {
    /// A real (or other external) Stream origin, e.g. `https://customer-abc.cloudflarestream.com`.
    Origin(String),
    /// Start the built-in emulator and use it as the origin.
    Emulator(EmulatorOptions),
}

/// Options for the built-in Stream emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    pub country_header: HeaderName,
    pub client_ip_header: Option<HeaderName>,
    pub leeway: Duration,
    /// Catalogue videos (resolved to their uids) the emulator's account starts with
    /// `requireSignedURLs: false`, as a forgotten setting on a real account would be.
    pub unprotected: Vec<String>,
}

/// Cloudflare's API by default (`cloudflare.api_base`).
pub const DEFAULT_CLOUDFLARE_API_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Where the account id is read from when `cloudflare.account_id` is not set.
pub const CLOUDFLARE_ACCOUNT_ID_ENV: &str = "CLOUDFLARE_ACCOUNT_ID";
/// Where the API token is read from when `cloudflare.api_token` is not set.
pub const CLOUDFLARE_API_TOKEN_ENV: &str = "CLOUDFLARE_API_TOKEN";

/// `cloudflare`: the Cloudflare account the `stream` commands manage, and the account id and
/// API token the emulator's management API accepts. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudflareSettings {
    /// 32 hex characters, lowercase. `None`: [`CLOUDFLARE_ACCOUNT_ID_ENV`] (see
    /// [`CloudflareSettings::resolved_account_id`]).
    pub account_id: Option<String>,
    /// Where the API token is read from (a file or an environment variable, never inline).
    /// `None`: [`CLOUDFLARE_API_TOKEN_ENV`] (see [`CloudflareSettings::api_token_location`]).
    pub api_token: Option<KeyLocation>,
    /// An absolute `http`/`https` URL without query or trailing slash, e.g.
    /// `http://127.0.0.1:8081/client/v4`. `None`: [`DEFAULT_CLOUDFLARE_API_BASE`].
    pub api_base: Option<String>,
    /// How often a running gateway audits the account; `None` (the default): never.
    pub audit_interval: Option<Duration>,
}

impl CloudflareSettings {
    /// The configured account id, else [`CLOUDFLARE_ACCOUNT_ID_ENV`] when it holds 32 hex
    /// characters (lowercased); `None` when neither does.
    pub fn resolved_account_id(&self) -> Option<String> {
        self.account_id.clone().or_else(|| {
            std::env::var(CLOUDFLARE_ACCOUNT_ID_ENV)
                .ok()
                .map(|id| id.trim().to_ascii_lowercase())
                .filter(|id| is_account_id(id))
        })
    }

    /// Where the API token is read from: the configured place, else
    /// [`CLOUDFLARE_API_TOKEN_ENV`].
    pub fn api_token_location(&self) -> KeyLocation {
        self.api_token
            .clone()
            .unwrap_or_else(|| KeyLocation::Env(CLOUDFLARE_API_TOKEN_ENV.to_string()))
    }

    /// The API's base URL, without a trailing slash.
    pub fn api_base_or_default(&self) -> &str {
        self.api_base
            .as_deref()
            .unwrap_or(DEFAULT_CLOUDFLARE_API_BASE)
    }
}

/// One configured signing key, not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    pub id: Option<String>,
    pub location: KeyLocation,
    /// Development only: create the file with a fresh key when it does not exist.
    pub generate_if_missing: bool,
    /// Signs new tokens; the others are only trusted (by the emulator) until removed.
    pub active: bool,
    /// `signing_keys[i]`, for error messages.
    pub field: String,
    pub position: Option<(usize, usize)>,
}

/// The validated configuration: what the rest of the program reads.
#[derive(Debug)]
pub struct Settings {
    /// The config file, as named to the program.
    pub file: String,
    pub listen: SocketAddr,
    pub stream: StreamSettings,
    pub signing_keys: Vec<KeySource>,
    /// Token settings for rules that do not override them.
    pub default_token: Arc<TokenSettings>,
    /// A cached token is served only while it has at least this much life left.
    pub min_remaining: Duration,
    /// `nbf` is set this far before signing, for viewers with slow clocks.
    pub nbf_backdate: Duration,
    pub cache_capacity: u64,
    pub max_signing_in_flight: usize,
    /// Async workers sign a miss themselves while one of them stays free (`signing.on_workers`).
    pub sign_on_workers: bool,
    pub catalogue: Arc<Catalogue>,
    /// Who can sign in, and how.
    pub identity: IdentitySettings,
    pub policy: Arc<Policy>,
    /// HTTPS on `listen`, when configured.
    pub tls: Option<TlsSettings>,
    /// How proxy mode reaches Stream.
    pub upstream: UpstreamSettings,
    /// Connection limits (applied when the gateway starts).
    pub limits: crate::http::server::Limits,
    /// Longest time to produce a response head.
    pub request_timeout: Duration,
    /// Largest request body on the POST APIs.
    pub max_body_bytes: usize,
    /// Token-minting rate limits.
    pub rate_limit: RateLimitSettings,
    /// Log one line per request.
    pub access_log: bool,
    /// A listener of its own for `/metrics` (and `/healthz`), e.g. on loopback.
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve `/metrics` on the gateway's own listener (off by default: the metrics name
    /// rules and show per-rule traffic).
    pub metrics_public: bool,
    /// Serve the demo and embed page at `GET /`.
    pub demo_page: bool,
    /// Which other sites' pages may call `/api/*`.
    pub cors: CorsSettings,
    /// The Stream-compatible token API.
    pub token_api: TokenApiSettings,
    /// Where the token audit trail goes; `None` keeps none.
    pub audit_trail: Option<crate::audit::AuditSink>,
    /// The Cloudflare account and API (read once at start).
    pub cloudflare: CloudflareSettings,
    /// A live reload may apply a configuration with no rules or no videos.
    pub allow_empty_policy: bool,
    /// Things that are allowed but probably mistakes.
    pub warnings: Vec<String>,
}

/// A duration as operators write it: `25h`, `1h30m`, `90s` → `1m30s`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let parts = [
        (secs / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() { "0s".into() } else { text }
}

/// Cross-origin access to `/api/*`.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Normalised origins (`https://www.example.com`, lowercase, no trailing slash).
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    pub max_age: Duration,
}

/// The Stream-compatible token API.
#[derive(Debug, Clone)]
pub struct TokenApiSettings {
    pub enabled: bool,
    /// Accept only this account id in the path (lowercase); any well-formed one when unset.
    pub account_id: Option<String>,
}

/// Cloudflare account ids are 32 hex characters.
pub fn is_account_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `tls` and `http_redirect_listen`: HTTPS on the main listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Resolved against the config file's directory.
    pub files: TlsFiles,
    /// A plain-HTTP listener that redirects to HTTPS (and answers `/healthz`).
    pub http_redirect_listen: Option<SocketAddr>,
    /// How often the files are checked for a new pair. Not in the file; tests shorten it.
    pub reload_interval: Duration,
    /// Positions of `tls`, `tls.cert`, `tls.key`, for errors found when loading.
    /// Where `tls`, `tls.cert` and `tls.key` are in the file, for error messages.
    pub positions: [Option<(usize, usize)>; 3],
}

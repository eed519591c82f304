//! The configuration file as written: serde structs with `deny_unknown_fields`.
//!
//! Field-level checks that need no context (durations, uids, hex digests, the 24 h limit)
//! happen while parsing so serde_yaml can report their line and column.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::token::claims::{AccessRule, CountryCode, MAX_TTL, VideoUid, parse_str};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub stream: RawStream,
    #[serde(default)]
    pub signing_keys: Vec<RawKey>,
    #[serde(default)]
    pub token: RawToken,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub signing: RawSigning,
    #[serde(default)]
    pub videos: UniqueMap<RawVideo>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    #[serde(default)]
    pub users: UniqueMap<RawUser>,
    #[serde(default)]
    pub jwt_issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub trusted_proxies: Vec<RawNet>,
    #[serde(default)]
    pub client_address: RawClientAddress,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub tls: Option<RawTls>,
    pub http_redirect_listen: Option<SocketAddr>,
    #[serde(default)]
    pub mode: RawMode,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub log: RawLog,
    /// The token audit trail (off unless set).
    pub audit_trail: Option<RawAuditTrail>,
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve `/metrics` on the gateway's own (public) listener.
    #[serde(default)]
    pub metrics_public: bool,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// Serve the demo and embed page at `GET /`.
    #[serde(default = "default_true")]
    pub demo_page: bool,
    #[serde(default)]
    pub cors: RawCors,
    #[serde(default)]
    pub token_api: RawTokenApi,
    #[serde(default)]
    pub cloudflare: RawCloudflare,
    /// Let a live reload apply a file with no rules or no videos (refused otherwise, as the
    /// likely sign of a truncated or half-written file).
    #[serde(default)]
    pub allow_empty_policy: bool,
}

fn default_true() -> bool {
    true
}

/// Cross-origin access to `/api/*` from other sites' pages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    /// Origins (`https://www.example.com`) whose pages may call `/api/*` with credentials.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    pub max_age: HumanDuration,
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: HumanDuration(Duration::from_secs(600)),
        }
    }
}

/// The Stream-compatible `POST /accounts/{account_id}/stream/{video_uid}/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenApi {
    pub enabled: bool,
    /// Accept only this account id in the path; any well-formed one when unset.
    pub account_id: Option<String>,
}

impl Default for RawTokenApi {
    fn default() -> Self {
        Self {
            enabled: true,
            account_id: None,
        }
    }
}

/// Connection and request limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub header_read_timeout: HumanDuration,
    pub idle_timeout: HumanDuration,
    pub max_header_bytes: usize,
    pub request_timeout: HumanDuration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    pub shutdown_drain: HumanDuration,
    pub shutdown_deadline: HumanDuration,
}

impl Default for RawLimits {
    fn default() -> Self {
        use crate::http::server;
        Self {
            header_read_timeout: HumanDuration(server::HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(server::IDLE_TIMEOUT),
            max_header_bytes: server::MAX_HEADER_BYTES,
            request_timeout: HumanDuration(Duration::from_secs(30)),
            max_connections: server::MAX_CONNECTIONS,
            max_body_bytes: 4 * 1024,
            h2_max_concurrent_streams: server::H2_MAX_CONCURRENT_STREAMS,
            shutdown_drain: HumanDuration(server::SHUTDOWN_DRAIN),
            shutdown_deadline: HumanDuration(server::SHUTDOWN_GRACE),
        }
    }
}

/// Logging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// One line per request (target `streamgate::access`).
    pub access: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { access: true }
    }
}

/// Where the token audit trail goes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditTrail {
    pub sink: RawAuditSink,
    /// The file, for `sink: file` (relative to the configuration file's directory).
    pub path: Option<String>,
    /// A file is rotated once it holds this many bytes.
    #[serde(default = "default_audit_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`<path>.1` … `<path>.<keep_files>`).
    #[serde(default = "default_audit_keep_files")]
    pub keep_files: usize,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawAuditSink {
    Stderr,
    File,
}

fn default_audit_file_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_audit_keep_files() -> usize {
    5
}

/// Token-minting rate limits (off unless set).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_subject: Option<RawRate>,
    pub per_address: Option<RawRate>,
    /// Callers tracked at once per limit.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            per_subject: None,
            per_address: None,
            max_keys: default_max_keys(),
        }
    }
}

fn default_max_keys() -> usize {
    crate::authz::ratelimit::MAX_KEYS
}

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// How a permitted request is answered.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    #[default]
    Redirect,
    Proxy,
}

/// The client that proxy mode uses to reach Stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Bytes per second a proxied body must bring, averaged over each `idle_timeout`.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    pub ca_file: Option<PathBuf>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            idle_timeout: default_idle_timeout(),
            min_body_rate: default_min_body_rate(),
            ca_file: None,
        }
    }
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

fn default_min_body_rate() -> u64 {
    1024
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// HTTPS on `listen`: a PEM certificate chain and its private key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the viewer's address is read when the peer is a trusted proxy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAddress {
    /// `X-Forwarded-For` (default), `Forwarded`, `X-Real-IP` or `CF-Connecting-IP`.
    pub header: Option<String>,
}

/// How unauthenticated browsers are sent to sign in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub login_url: Option<String>,
    pub public_url: Option<String>,
    #[serde(default = "default_basic_cache_ttl")]
    pub basic_cache_ttl: HumanDuration,
    #[serde(default = "default_max_in_flight")]
    pub max_password_checks: usize,
    #[serde(default)]
    pub failed_sign_ins: RawFailedSignIns,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            login_url: None,
            public_url: None,
            basic_cache_ttl: default_basic_cache_ttl(),
            max_password_checks: default_max_in_flight(),
            failed_sign_ins: RawFailedSignIns::default(),
        }
    }
}

/// Failed sign-ins let through per address and user name, and the backoff after them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFailedSignIns {
    pub allowed: u32,
    pub backoff: HumanDuration,
    pub max_backoff: HumanDuration,
}

impl Default for RawFailedSignIns {
    fn default() -> Self {
        let defaults = crate::identity::throttle::FailedSignIns::default();
        Self {
            allowed: defaults.allowed,
            backoff: HumanDuration(defaults.backoff),
            max_backoff: HumanDuration(defaults.max_backoff),
        }
    }
}

fn default_realm() -> String {
    "streamgate".to_string()
}

fn default_basic_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// An argon2id PHC string.
    pub password: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    /// A short name for qualified rule subjects (`user:<name>:<subject>`).
    pub name: Option<String>,
    /// Its subjects and groups also match unqualified `user:` and `group:` subjects.
    #[serde(default)]
    pub shares_local_names: bool,
    pub audience: OneOrMany,
    pub algorithms: Vec<String>,
    pub secret: Option<RawSecretRef>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: HumanDuration,
    #[serde(default = "default_jwks_min_refresh_interval")]
    pub jwks_min_refresh_interval: HumanDuration,
    pub jwks_ca_file: Option<PathBuf>,
    #[serde(default = "default_jwt_leeway")]
    pub leeway: HumanDuration,
    pub cookie: Option<String>,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    pub groups_claim: Option<String>,
    #[serde(default = "default_jwt_cache_ttl")]
    pub cache_ttl: HumanDuration,
}

fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_jwks_min_refresh_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_jwt_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_subject_claim() -> String {
    "sub".to_string()
}

fn default_jwt_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// A secret read from a file or an environment variable; never inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretRef {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

/// A string, or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A CIDR block, or a single address (a /32 or /128).
#[derive(Debug, Clone, Copy)]
pub struct RawNet(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for RawNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "an IP address or CIDR block", |text| {
            text.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| text.parse::<std::net::IpAddr>().ok().map(Into::into))
                .map(RawNet)
        })
    }
}

/// An instant written in RFC 3339 (`2026-12-01T18:00:00Z`, `2026-12-01T19:00:00+01:00`).
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub u64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(
            deserializer,
            "an RFC 3339 time such as 2026-12-01T18:00:00Z",
            |text| parse_rfc3339(text).map(Timestamp),
        )
    }
}

/// Unix seconds of an RFC 3339 time with `Z` or a `±HH:MM` offset (see
/// [`crate::rfc3339::parse`]).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let at = crate::rfc3339::parse(text)?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// Country lists for a token: `allow` only these, or `block` these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCountries {
    pub allow: Option<Vec<CountryCode>>,
    pub block: Option<Vec<CountryCode>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub customer_code: Option<String>,
    pub origin: Option<String>,
    pub emulator: Option<RawEmulator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmulator {
    #[serde(default = "default_emulator_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_country_header")]
    pub country_header: String,
    pub client_ip_header: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Catalogue videos (aliases or uids) the emulator's account starts unprotected.
    #[serde(default)]
    pub unprotected: Vec<String>,
}

/// The Cloudflare account and API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCloudflare {
    pub account_id: Option<String>,
    pub api_token: Option<RawSecretRef>,
    pub api_base: Option<String>,
    pub audit_interval: Option<HumanDuration>,
}

fn default_emulator_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

fn default_country_header() -> String {
    "CF-IPCountry".to_string()
}

fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: Option<String>,
    pub file: Option<PathBuf>,
    pub env: Option<String>,
    #[serde(default)]
    pub generate_if_missing: bool,
    /// The key new tokens are signed with (default: the first).
    #[serde(default)]
    pub active: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    #[serde(default = "default_ttl")]
    pub ttl: Ttl,
    #[serde(default = "default_min_remaining")]
    pub min_remaining: HumanDuration,
    #[serde(default = "default_nbf_backdate")]
    pub nbf_backdate: HumanDuration,
    #[serde(default)]
    pub downloadable: bool,
    #[serde(default)]
    pub access_rules: Vec<AccessRule>,
    pub countries: Option<RawCountries>,
    #[serde(default)]
    pub bind_client_ip: bool,
}

impl Default for RawToken {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            min_remaining: default_min_remaining(),
            nbf_backdate: default_nbf_backdate(),
            downloadable: false,
            access_rules: Vec::new(),
            countries: None,
            bind_client_ip: false,
        }
    }
}

fn default_ttl() -> Ttl {
    Ttl(Duration::from_secs(3600))
}

fn default_min_remaining() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}

fn default_nbf_backdate() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_capacity")]
    pub capacity: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
        }
    }
}

fn default_capacity() -> u64 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Whether async workers may sign a miss themselves while one of them stays free.
    #[serde(default = "default_true")]
    pub on_workers: bool,
}

impl Default for RawSigning {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            on_workers: true,
        }
    }
}

fn default_max_in_flight() -> usize {
    // RSA signing is CPU-bound: one signing thread per core saturates the cores during a
    // burst of misses; more would only queue inside the OS scheduler.
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideo {
    pub uid: VideoUid,
    #[serde(default)]
    pub tags: Vec<String>,
    pub title: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: String,
    pub sha256: Sha256Hex,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub videos: Vec<String>,
    pub subjects: Vec<String>,
    #[serde(default)]
    pub action: RawAction,
    pub ttl: Option<Ttl>,
    pub downloadable: Option<bool>,
    pub access_rules: Option<Vec<AccessRule>>,
    pub countries: Option<RawCountries>,
    pub bind_client_ip: Option<bool>,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    pub mode: Option<RawMode>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    #[default]
    Allow,
    Deny,
}

/// A human duration such as `90s`, `10m`, `1h30m`.
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 90s, 10m or 1h")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                // humantime's own message quotes the text: not passed on.
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A token lifetime: a human duration between 1 second and 24 hours.
#[derive(Debug, Clone, Copy)]
pub struct Ttl(pub Duration);

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(
            deserializer,
            "a duration from 1s to 24h (Stream's limit), such as 1h",
            |text| {
                humantime::parse_duration(text)
                    .ok()
                    .filter(|ttl| (Duration::from_secs(1)..=MAX_TTL).contains(ttl))
                    .map(Ttl)
            },
        )
    }
}

/// A SHA-256 digest written as 64 hex characters.
#[derive(Debug, Clone, Copy)]
pub struct Sha256Hex(pub [u8; 32]);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(
            deserializer,
            "the key's SHA-256 as 64 hex characters",
            |text| {
                if text.len() != 64 || !text.is_ascii() {
                    return None;
                }
                let mut digest = [0u8; 32];
                for (i, byte) in digest.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
                }
                Some(Sha256Hex(digest))
            },
        )
    }
}

/// The error for a name listed twice in a [`UniqueMap`].
pub const DUPLICATE_ENTRY: &str = "duplicate entry: this name is already listed above";

/// A YAML mapping kept in document order that refuses duplicate keys.
#[derive(Debug)]
pub struct UniqueMap<V>(pub Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of names to entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap<V>, A::Error> {
                use std::hash::BuildHasher;
                let mut entries: Vec<(String, V)> = Vec::new();
                // Index by hash instead of copying every key: maps with 100,000 users load
                // measurably faster. A hash collision falls back to comparing the keys.
                let hasher = foldhash::quality::FixedState::default();
                let mut seen: std::collections::HashMap<u64, usize> =
                    std::collections::HashMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let duplicate = match seen.get(&hasher.hash_one(&key)) {
                        None => false,
                        Some(&first) => {
                            entries[first].0 == key || entries.iter().any(|(k, _)| *k == key)
                        }
                    };
                    if duplicate {
                        // The position names the entry; the name itself is not repeated.
                        return Err(de::Error::custom(DUPLICATE_ENTRY));
                    }
                    seen.entry(hasher.hash_one(&key)).or_insert(entries.len());
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

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

use crate::token::claims::{AccessRule, MAX_TTL, VideoUid};

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
    pub rules: Vec<RawRule>,
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
}

impl Default for RawToken {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            min_remaining: default_min_remaining(),
            nbf_backdate: default_nbf_backdate(),
            downloadable: false,
            access_rules: Vec::new(),
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
}

impl Default for RawSigning {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
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
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
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
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "`{text}` is not a duration ({e}); use e.g. 90s, 10m, 1h"
                        ))
                    })
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
        let HumanDuration(ttl) = HumanDuration::deserialize(deserializer)?;
        if ttl > MAX_TTL {
            return Err(de::Error::custom(format!(
                "ttl {} is over Stream's limit of 24h",
                super::human_duration(ttl)
            )));
        }
        if ttl < Duration::from_secs(1) {
            return Err(de::Error::custom("ttl must be at least 1s"));
        }
        Ok(Ttl(ttl))
    }
}

/// A SHA-256 digest written as 64 hex characters.
#[derive(Debug, Clone, Copy)]
pub struct Sha256Hex(pub [u8; 32]);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let invalid = || de::Error::custom("expected the key's SHA-256 as 64 hex characters");
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Sha256Hex(digest))
    }
}

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
                let mut entries: Vec<(String, V)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("duplicate entry `{key}`")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

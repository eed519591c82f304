//! What goes into a Stream token: validated claim types and the claims builder.
//!
//! Everything here is pure; [`super::signer`] turns [`Claims`] into a signed JWT.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// Stream accepts at most this many access rules in one token.
pub const MAX_ACCESS_RULES: usize = 5;
/// Stream rejects tokens that expire more than 24 hours after signing.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Deserialize a string through `parse`. A refusal says only what was `expected`, never the
/// text, and is raised while the string is the current value, so that a YAML error points at
/// its line.
pub(crate) fn parse_str<'de, D, T>(
    deserializer: D,
    expected: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct ParseVisitor<T> {
        expected: &'static str,
        parse: fn(&str) -> Option<T>,
    }
    impl<T> serde::de::Visitor<'_> for ParseVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expected)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text)
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
        }
    }
    deserializer.deserialize_str(ParseVisitor { expected, parse })
}

/// A Stream video uid: 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VideoUid([u8; 32]);

impl VideoUid {
    /// The uid's 32 ASCII bytes, for writers that need no `&str`.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The uid as text.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII hex digits.
        std::str::from_utf8(&self.0).expect("uid is ASCII")
    }
}

/// Why a string is not a video uid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a video uid is 32 hex characters")]
pub struct InvalidUid;

impl FromStr for VideoUid {
    type Err = InvalidUid;

    /// Accepts 32 hex digits in either case; stores them lowercase.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 32] = s.as_bytes().try_into().map_err(|_| InvalidUid)?;
        if !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(InvalidUid);
        }
        Ok(Self(bytes.map(|b| b.to_ascii_lowercase())))
    }
}

impl fmt::Debug for VideoUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for VideoUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VideoUid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "a video uid (32 hex characters)", |text| {
            text.parse().ok()
        })
    }
}

/// What an access rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Block,
}

/// An IP address or CIDR block, kept in the operator's spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IpOrNet(String);

impl FromStr for IpOrNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.parse::<IpAddr>().is_ok() || s.parse::<IpNet>().is_ok() {
            Ok(Self(s.to_string()))
        } else {
            Err(format!("`{s}` is not an IP address or CIDR block"))
        }
    }
}

impl From<IpAddr> for IpOrNet {
    fn from(ip: IpAddr) -> Self {
        Self(ip.to_string())
    }
}

impl<'de> Deserialize<'de> for IpOrNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "an IP address or CIDR block", |text| {
            text.parse().ok()
        })
    }
}

/// An ISO 3166-1 alpha-2 country code, uppercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CountryCode(String);

impl FromStr for CountryCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(format!("`{s}` is not a two-letter country code"))
        }
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "a two-letter country code", |text| {
            text.parse().ok()
        })
    }
}

/// One entry of a token's `accessRules`, in Stream's JSON shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AccessRule {
    /// Matches every viewer; usually last, as a catch-all.
    #[serde(rename = "any")]
    Any { action: RuleAction },
    /// Matches viewers whose address is in one of the listed addresses or CIDR blocks.
    #[serde(rename = "ip.src")]
    IpSrc {
        action: RuleAction,
        ip: Vec<IpOrNet>,
    },
    /// Matches viewers whose country (by GeoIP) is one of the listed codes.
    #[serde(rename = "ip.geoip.country")]
    Country {
        action: RuleAction,
        country: Vec<CountryCode>,
    },
}

impl AccessRule {
    /// Checks what serde cannot: a rule's list may not be empty.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AccessRule::IpSrc { ip, .. } if ip.is_empty() => {
                Err("an `ip.src` rule needs at least one address in `ip`".into())
            }
            AccessRule::Country { country, .. } if country.is_empty() => {
                Err("an `ip.geoip.country` rule needs at least one code in `country`".into())
            }
            _ => Ok(()),
        }
    }
}

/// The entitlement-dependent part of a token: two requests share a cached token only when
/// these are equal (and the video is the same).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenSettings {
    /// How long a token lives from signing; at most [`MAX_TTL`].
    pub ttl: Duration,
    /// Whether the token may fetch MP4 downloads.
    pub downloadable: bool,
    /// Stream access rules, at most [`MAX_ACCESS_RULES`].
    pub access_rules: Arc<[AccessRule]>,
    /// Unix second after which no token may be valid (the deciding rule's `not_after`):
    /// `exp` is clipped to it.
    pub not_after: Option<u64>,
}

impl TokenSettings {
    /// Settings with a ttl and nothing else.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            downloadable: false,
            access_rules: Arc::from(Vec::new()),
            not_after: None,
        }
    }
}

/// The claims of a Stream token, serialized in Stream's field names.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub kid: &'a str,
    pub exp: u64,
    pub nbf: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub downloadable: bool,
    #[serde(rename = "accessRules", skip_serializing_if = "<[_]>::is_empty")]
    pub access_rules: &'a [AccessRule],
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl<'a> Claims<'a> {
    /// Claims for `uid` signed by `kid` at unix second `now`: `exp = now + ttl` (but never
    /// after `settings.not_after`), `nbf = now - nbf_backdate` (so viewers whose clocks run
    /// slow are not refused).
    pub fn build(
        uid: &'a VideoUid,
        kid: &'a str,
        settings: &'a TokenSettings,
        now: u64,
        nbf_backdate: Duration,
    ) -> Self {
        Claims {
            sub: uid.as_str(),
            kid,
            exp: settings
                .not_after
                .map_or(now + settings.ttl.as_secs(), |end| {
                    end.min(now + settings.ttl.as_secs())
                }),
            nbf: now.saturating_sub(nbf_backdate.as_secs()),
            downloadable: settings.downloadable,
            access_rules: &settings.access_rules,
        }
    }
}

/// The validity window of a token whose times were chosen by the caller (the Stream-compatible
/// token API), not derived from a ttl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Unix second from which the token is accepted.
    pub nbf: u64,
    /// Unix second after which the token is refused.
    pub exp: u64,
}

impl<'a> Claims<'a> {
    /// Claims with exactly the times in `validity`; `settings.ttl` and `not_after` were
    /// already applied by whoever chose them.
    pub fn with_validity(
        uid: &'a VideoUid,
        kid: &'a str,
        settings: &'a TokenSettings,
        validity: Validity,
    ) -> Self {
        Claims {
            sub: uid.as_str(),
            kid,
            exp: validity.exp,
            nbf: validity.nbf,
            downloadable: settings.downloadable,
            access_rules: &settings.access_rules,
        }
    }
}

/// Whether `alias` is a usable video alias: 1–64 of `[A-Za-z0-9._-]`, starting with a letter
/// or digit (so `.` and `..` can never be aliases), and not shaped like a uid.
pub fn is_valid_alias(alias: &str) -> bool {
    let bytes = alias.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && alias.parse::<VideoUid>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> VideoUid {
        "0123456789abcdef0123456789ABCDEF".parse().unwrap()
    }

    #[test]
    fn uid_is_normalised_to_lowercase_and_rejects_other_shapes() {
        assert_eq!(uid().as_str(), "0123456789abcdef0123456789abcdef");
        assert!("0123".parse::<VideoUid>().is_err());
        assert!(
            "0123456789abcdef0123456789abcdeg"
                .parse::<VideoUid>()
                .is_err()
        );
        assert!(
            "../3456789abcdef0123456789abcdef0"
                .parse::<VideoUid>()
                .is_err()
        );
    }

    #[test]
    fn claims_have_integer_times_and_omit_empty_options() {
        let settings = TokenSettings {
            ttl: Duration::from_secs(3600),
            downloadable: false,
            access_rules: Arc::from(vec![]),
            not_after: None,
        };
        let uid = uid();
        let claims = Claims::build(&uid, "kid1", &settings, 1_000_000, Duration::from_secs(60));
        let json = serde_json::to_string(&claims).unwrap();
        assert_eq!(
            json,
            r#"{"sub":"0123456789abcdef0123456789abcdef","kid":"kid1","exp":1003600,"nbf":999940}"#
        );
    }

    #[test]
    fn access_rules_serialize_in_streams_shape() {
        let settings = TokenSettings {
            ttl: Duration::from_secs(60),
            downloadable: true,
            access_rules: Arc::from(vec![
                AccessRule::Country {
                    action: RuleAction::Allow,
                    country: vec!["us".parse().unwrap()],
                },
                AccessRule::IpSrc {
                    action: RuleAction::Block,
                    ip: vec!["10.0.0.0/8".parse().unwrap()],
                },
                AccessRule::Any {
                    action: RuleAction::Block,
                },
            ]),
            not_after: None,
        };
        let uid = uid();
        let claims = Claims::build(&uid, "k", &settings, 100, Duration::ZERO);
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(value["downloadable"], true);
        assert_eq!(
            value["accessRules"],
            serde_json::json!([
                {"type": "ip.geoip.country", "action": "allow", "country": ["US"]},
                {"type": "ip.src", "action": "block", "ip": ["10.0.0.0/8"]},
                {"type": "any", "action": "block"}
            ])
        );
    }

    #[test]
    fn exp_is_clipped_to_the_rules_end() {
        let settings = TokenSettings {
            not_after: Some(1_000_100),
            ..TokenSettings::with_ttl(Duration::from_secs(3600))
        };
        let uid = uid();
        let claims = Claims::build(&uid, "k", &settings, 1_000_000, Duration::ZERO);
        assert_eq!(claims.exp, 1_000_100);
        let claims = Claims::build(&uid, "k", &settings, 990_000, Duration::ZERO);
        assert_eq!(claims.exp, 993_600);
    }

    #[test]
    fn access_rule_parsing_rejects_bad_addresses_and_countries() {
        let bad_ip = serde_json::from_str::<AccessRule>(
            r#"{"type":"ip.src","action":"allow","ip":["300.1.1.1"]}"#,
        );
        assert!(bad_ip.is_err());
        let bad_country = serde_json::from_str::<AccessRule>(
            r#"{"type":"ip.geoip.country","action":"allow","country":["USA"]}"#,
        );
        assert!(bad_country.is_err());
        let v6 = serde_json::from_str::<AccessRule>(
            r#"{"type":"ip.src","action":"allow","ip":["2001:db8::/32","::1"]}"#,
        );
        assert!(v6.is_ok());
    }
}

//! The emulator's token judge: a token plays only when it carries a good RS256 signature by a
//! configured key and claims Stream would accept at that moment, and a refusal never repeats
//! any part of the token.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::{Json, Key};
use crate::emulator::{Emulator, EmulatorSettings, VerifyingKeySpec};
use crate::token::SigningKey;

/// The test-only signing key the judge trusts, and a second one it does not.
const TRUSTED_PEM: &str = include_str!("../../tests/fixtures/test-only-signing-key.pem");
const UNTRUSTED_PEM: &str = include_str!("../../tests/fixtures/test-only-second-key.pem");
const TRUSTED_KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const UNTRUSTED_KID: &str = "ffeeddccbbaa99887766554433221100";
/// The videos the judge knows.
const VIDEOS: [&str; 2] = [
    "ce800be43a9772f4bb02f35b860fb516",
    "5d5bc37ffcf54c9b82e996823bffbb81",
];
const LEEWAY_SECS: i64 = 30;
const MAX_LIFE_SECS: i64 = 24 * 60 * 60;
/// A fixed "now" well inside every field's range.
const EPOCH: i64 = 1_750_000_000;
const CLAIMS: &[&str] = &["sub", "kid", "exp", "nbf", "downloadable", "accessRules"];

/// A token (any text, or a good one with flaws), the viewer, and the time it is judged.
#[derive(Debug, Arbitrary)]
pub struct Input {
    token: Token,
    address: IpAddr,
    country: Option<String>,
    now: u32,
}

#[derive(Debug, Arbitrary)]
enum Token {
    Raw(String),
    /// A token for a known video, signed by the trusted key, with these flaws.
    Signed(Vec<Flaw>),
}

#[derive(Debug, Arbitrary)]
enum Flaw {
    Alg(Json),
    HeaderKid(Kid),
    Header(Key, Json),
    Sub(Sub),
    ClaimKid(Kid),
    Exp(Time),
    Nbf(Option<Time>),
    Downloadable(Option<Json>),
    Rules(Vec<Rule>),
    Claim(Key, Json),
    RawClaims(Vec<u8>),
    Signer(Signer),
}

#[derive(Debug, Arbitrary)]
enum Kid {
    Untrusted,
    Other(Json),
    Missing,
}

#[derive(Debug, Arbitrary)]
enum Sub {
    Second,
    Unknown,
    Other(Json),
}

#[derive(Debug, Arbitrary)]
enum Time {
    Relative(i32),
    Text(i32),
    Other(Json),
}

#[derive(Debug, Arbitrary)]
enum Rule {
    Any(bool),
    Ip(bool, Vec<String>),
    Country(bool, Vec<String>),
    Other(Json),
}

#[derive(Debug, Arbitrary)]
enum Signer {
    Untrusted,
    /// HMAC-SHA256 keyed with the trusted public key (the classic key confusion).
    PublicKeyHmac,
    Raw(Vec<u8>),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pair(pem: &str) -> RsaKeyPair {
    let der = pem::parse(pem).expect("a PEM fixture");
    RsaKeyPair::from_der(der.contents()).expect("an RSA fixture key")
}

fn keys() -> &'static (RsaKeyPair, RsaKeyPair) {
    static KEYS: OnceLock<(RsaKeyPair, RsaKeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| (pair(TRUSTED_PEM), pair(UNTRUSTED_PEM)))
}

fn trusted_public_key() -> Vec<u8> {
    use aws_lc_rs::signature::KeyPair as _;
    keys().0.public_key().as_ref().to_vec()
}

fn rs256(pair: &RsaKeyPair, message: &str) -> Vec<u8> {
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .expect("signing with a fixture key works");
    signature
}

impl Kid {
    fn value(&self) -> Option<Value> {
        match self {
            Kid::Untrusted => Some(json!(UNTRUSTED_KID)),
            Kid::Other(json) => Some(json.to_value(&[])),
            Kid::Missing => None,
        }
    }
}

impl Time {
    fn value(&self, now: i64) -> Value {
        match self {
            Time::Relative(secs) => json!(now + i64::from(*secs)),
            Time::Text(secs) => json!((now + i64::from(*secs)).to_string()),
            Time::Other(json) => json.to_value(&[]),
        }
    }
}

impl Rule {
    fn value(&self) -> Value {
        let action = |allow: &bool| if *allow { "allow" } else { "block" };
        match self {
            Rule::Any(allow) => json!({"type": "any", "action": action(allow)}),
            Rule::Ip(allow, ips) => json!({"type": "ip.src", "action": action(allow), "ip": ips}),
            Rule::Country(allow, codes) => {
                json!({"type": "ip.geoip.country", "action": action(allow), "country": codes})
            }
            Rule::Other(json) => json.to_value(&["type", "action", "ip", "country"]),
        }
    }
}

fn set(map: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    match value {
        Some(value) => map.insert(name.into(), value),
        None => map.remove(name),
    };
}

impl Input {
    fn now(&self) -> i64 {
        EPOCH + i64::from(self.now)
    }

    fn token(&self) -> String {
        let flaws = match &self.token {
            Token::Raw(text) => return text.clone(),
            Token::Signed(flaws) => flaws,
        };
        let now = self.now();
        let mut header = Map::new();
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(TRUSTED_KID));
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(VIDEOS[0]));
        claims.insert("kid".into(), json!(TRUSTED_KID));
        claims.insert("exp".into(), json!(now + 3600));
        let (mut raw_claims, mut signer) = (None, None);
        for flaw in flaws {
            match flaw {
                Flaw::Alg(alg) => set(&mut header, "alg", Some(alg.to_value(&[]))),
                Flaw::HeaderKid(kid) => set(&mut header, "kid", kid.value()),
                Flaw::Header(key, value) => set(
                    &mut header,
                    &key.name(&["alg", "kid", "typ"]),
                    Some(value.to_value(&[])),
                ),
                Flaw::Sub(sub) => {
                    let sub = match sub {
                        Sub::Second => json!(VIDEOS[1]),
                        Sub::Unknown => json!("00000000000000000000000000000000"),
                        Sub::Other(json) => json.to_value(&[]),
                    };
                    set(&mut claims, "sub", Some(sub));
                }
                Flaw::ClaimKid(kid) => set(&mut claims, "kid", kid.value()),
                Flaw::Exp(time) => set(&mut claims, "exp", Some(time.value(now))),
                Flaw::Nbf(time) => set(&mut claims, "nbf", time.as_ref().map(|t| t.value(now))),
                Flaw::Downloadable(value) => set(
                    &mut claims,
                    "downloadable",
                    value.as_ref().map(|v| v.to_value(&[])),
                ),
                Flaw::Rules(rules) => set(
                    &mut claims,
                    "accessRules",
                    Some(Value::Array(rules.iter().map(Rule::value).collect())),
                ),
                Flaw::Claim(key, value) => {
                    set(&mut claims, &key.name(CLAIMS), Some(value.to_value(&[])))
                }
                Flaw::RawClaims(bytes) => raw_claims = Some(bytes.clone()),
                Flaw::Signer(flawed) => signer = Some(flawed),
            }
        }
        let payload = raw_claims.unwrap_or_else(|| Value::Object(claims).to_string().into_bytes());
        let message = format!(
            "{}.{}",
            b64(Value::Object(header).to_string().as_bytes()),
            b64(&payload)
        );
        let signature = match signer {
            None => rs256(&keys().0, &message),
            Some(Signer::Untrusted) => rs256(&keys().1, &message),
            Some(Signer::PublicKeyHmac) => {
                let key =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &trusted_public_key());
                aws_lc_rs::hmac::sign(&key, message.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            Some(Signer::Raw(bytes)) => bytes.clone(),
        };
        format!("{message}.{}", b64(&signature))
    }
}

/// What the judge may and must make of a token at `now`, by Stream's documentation.
struct Expected {
    /// Signed by the trusted key under RS256 with its `kid`, for a known video, inside its
    /// validity window; the video and whether it is downloadable.
    may_accept: Option<(String, bool)>,
    /// The same, with plainly spelled claims and no access rules.
    must_accept: bool,
}

fn expected(token: &str, now: i64) -> Expected {
    let refuse = Expected {
        may_accept: None,
        must_accept: false,
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return refuse;
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
    };
    let (Some(header), Some(claims)) = (decode(header_b64), decode(payload_b64)) else {
        return refuse;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return refuse;
    };
    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA256,
        trusted_public_key(),
    );
    let signed = header.get("alg") == Some(&json!("RS256"))
        && header.get("kid") == Some(&json!(TRUSTED_KID))
        && public.verify(message.as_bytes(), &signature).is_ok();
    let time = |name: &str, plain: bool| match claims.get(name) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if !plain => s.parse().ok(),
        _ => None,
    };
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let downloadable = claims.get("downloadable");
    let fits = |plain: bool| {
        let exp_ok = time("exp", plain).is_some_and(|exp| {
            exp >= now - LEEWAY_SECS && exp <= now + MAX_LIFE_SECS + LEEWAY_SECS
        });
        let nbf_ok = match claims.get("nbf") {
            None => true,
            Some(_) => time("nbf", plain).is_some_and(|nbf| nbf <= now + LEEWAY_SECS),
        };
        signed
            && VIDEOS.contains(&sub)
            && claims.get("kid") == Some(&json!(TRUSTED_KID))
            && exp_ok
            && nbf_ok
            && downloadable.is_none_or(Value::is_boolean)
    };
    Expected {
        may_accept: fits(false)
            .then(|| (sub.to_string(), downloadable == Some(&Value::Bool(true)))),
        must_accept: fits(true) && !claims.contains_key("accessRules"),
    }
}

/// Whether `reason` is made only of the judge's fixed text and field names, so it cannot
/// repeat any part of a token.
fn is_fixed_reason(reason: &str) -> bool {
    const FIXED: [&str; 8] = [
        "unknown signing key",
        "invalid signature",
        "token is for an unknown video",
        "token expired",
        "token not yet valid",
        "blocked by rule on 'any'",
        "blocked by rule on 'ip.src'",
        "blocked by rule on 'ip.geoip.country'",
    ];
    const FIELDS: [&str; 10] = [
        "header",
        "payload",
        "signature",
        "alg",
        "kid",
        "sub",
        "exp",
        "nbf",
        "downloadable",
        "accessRules",
    ];
    let field = |field: &str| {
        FIELDS.contains(&field)
            || field
                .strip_prefix("accessRules[")
                .and_then(|rest| rest.split_once(']'))
                .is_some_and(|(index, suffix)| {
                    index.parse::<usize>().is_ok_and(|i| i < 5)
                        && ["", ".type", ".action", ".ip", ".country"].contains(&suffix)
                })
    };
    FIXED.contains(&reason)
        || reason
            .strip_prefix("malformed token: check fields [")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|fields| fields.is_empty() || fields.split(", ").all(field))
}

fn judge() -> &'static Emulator {
    static JUDGE: OnceLock<Emulator> = OnceLock::new();
    JUDGE.get_or_init(|| {
        let key = SigningKey::from_material(Some(TRUSTED_KID), TRUSTED_PEM)
            .expect("the fixture key loads");
        Emulator::new(EmulatorSettings {
            keys: vec![VerifyingKeySpec::from(&key)],
            video_uids: VIDEOS.map(str::to_string).to_vec(),
            videos: Vec::new(),
            api: None,
            country_header: http::HeaderName::from_static("cf-ipcountry"),
            client_ip_header: None,
            leeway: Duration::from_secs(LEEWAY_SECS as u64),
        })
        .expect("the emulator's settings are valid")
    })
}

/// Judge the token and check the verdict.
pub fn check(input: Input) {
    let token = input.token();
    let now = input.now();
    let verdict = judge().judge_token(&token, input.address, input.country.as_deref(), now);
    let expected = expected(&token, now);
    match verdict {
        Ok(permit) => assert_eq!(
            Some(permit),
            expected.may_accept,
            "accepted a token Stream would refuse: {token}"
        ),
        Err(reason) => {
            assert!(
                !expected.must_accept || reason.starts_with("blocked"),
                "refused a good token ({reason}): {token}"
            );
            assert!(
                is_fixed_reason(&reason),
                "a reason made of more than fixed text: {reason:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_tokens_signed_by_a_trusted_key_with_valid_claims_play() {
        super::super::property(super::check);
    }
}

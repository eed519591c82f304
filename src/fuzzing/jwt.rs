//! JWT verification against an HS256 issuer: a token is accepted only when it is signed with
//! the issuer's secret under the pinned algorithm and its `iss`, `aud`, `exp` and `nbf` hold;
//! a refusal names no secret and echoes nothing unbounded or unprintable.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::{Json, Key};
use crate::identity::jwt::{IssuerKeys, IssuerSettings, JwtVerifier};
use crate::identity::{AuthError, Principal, PrincipalKind};
use crate::secret::KeyLocation;

pub const ISSUER: &str = "https://idp.fuzz.test/";
pub const AUDIENCE: &str = "streamgate";
const OTHER_AUDIENCE: &str = "other-app";
/// The issuer's shared secret (test-only).
pub const SECRET: &str = "fuzz-only-hs256-secret-0123456789abcdef";
const LEEWAY_SECS: u64 = 60;
/// Claim names the verifier reads.
const CLAIMS: &[&str] = &["iss", "aud", "sub", "exp", "nbf", "groups", "iat", "kid"];

/// A token: any text, or a good one with flaws (none: it must be accepted).
#[derive(Debug, Arbitrary)]
pub enum Input {
    Raw(String),
    Built(Vec<Flaw>),
}

/// One thing changed in a good token.
#[derive(Debug, Arbitrary)]
pub enum Flaw {
    Alg(Alg),
    Kid(Json),
    Header(Key, Json),
    RawHeader(Vec<u8>),
    Iss(Option<Json>),
    Aud(Aud),
    Sub(Option<Json>),
    /// `exp` this many seconds from now (`None`: absent).
    Exp(Option<i32>),
    Nbf(Option<i32>),
    /// A time claim as a float.
    FloatTime(bool, i32, u8),
    Claim(Key, Json),
    RawClaims(Vec<u8>),
    Signature(Signature),
    /// Another token's parts around this one's.
    Splice(u8, String),
}

#[derive(Debug, Arbitrary)]
pub enum Alg {
    Hs384,
    Rs256,
    None,
    Missing,
    Other(Json),
}

#[derive(Debug, Arbitrary)]
pub enum Aud {
    Second,
    List(Vec<Option<String>>),
    Other(Json),
    Missing,
}

#[derive(Debug, Arbitrary)]
pub enum Signature {
    /// HMAC-SHA256 with another secret.
    OtherSecret,
    /// HMAC-SHA384 with the issuer's secret.
    Sha384,
    Empty,
    Raw(Vec<u8>),
    Text(String),
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(algorithm: hmac::Algorithm, secret: &str, message: &str) -> String {
    b64(hmac::sign(
        &hmac::Key::new(algorithm, secret.as_bytes()),
        message.as_bytes(),
    )
    .as_ref())
}

/// A token the issuer accepts, with `flaws` applied.
pub fn token_with(flaws: &[Flaw]) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), json!("HS256"));
    header.insert("typ".into(), json!("JWT"));
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(ISSUER));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("sub".into(), json!("alice"));
    claims.insert("exp".into(), json!(now() + 600));
    claims.insert("groups".into(), json!(["staff"]));
    let (mut raw_header, mut raw_claims, mut signature, mut splice) = (None, None, None, None);
    let set = |map: &mut Map<String, Value>, name: &str, value: Option<Value>| {
        match value {
            Some(value) => map.insert(name.into(), value),
            None => map.remove(name),
        };
    };
    for flaw in flaws {
        match flaw {
            Flaw::Alg(alg) => {
                let alg = match alg {
                    Alg::Hs384 => Some(json!("HS384")),
                    Alg::Rs256 => Some(json!("RS256")),
                    Alg::None => Some(json!("none")),
                    Alg::Missing => None,
                    Alg::Other(json) => Some(json.to_value(&[])),
                };
                set(&mut header, "alg", alg);
            }
            Flaw::Kid(kid) => set(&mut header, "kid", Some(kid.to_value(&[]))),
            Flaw::Header(key, value) => {
                let name = key.name(&["alg", "kid", "typ", "jku", "jwk", "x5u", "crit"]);
                set(&mut header, &name, Some(value.to_value(&[])));
            }
            Flaw::RawHeader(bytes) => raw_header = Some(bytes.clone()),
            Flaw::Iss(iss) => set(&mut claims, "iss", iss.as_ref().map(|j| j.to_value(CLAIMS))),
            Flaw::Aud(aud) => {
                let aud = match aud {
                    Aud::Second => Some(json!([OTHER_AUDIENCE, "x"])),
                    Aud::List(items) => Some(json!(
                        items
                            .iter()
                            .map(|item| item.clone().unwrap_or(AUDIENCE.into()))
                            .collect::<Vec<_>>()
                    )),
                    Aud::Other(json) => Some(json.to_value(CLAIMS)),
                    Aud::Missing => None,
                };
                set(&mut claims, "aud", aud);
            }
            Flaw::Sub(sub) => set(&mut claims, "sub", sub.as_ref().map(|j| j.to_value(CLAIMS))),
            Flaw::Exp(secs) => set(
                &mut claims,
                "exp",
                secs.map(|s| json!(now() + i64::from(s))),
            ),
            Flaw::Nbf(secs) => set(
                &mut claims,
                "nbf",
                secs.map(|s| json!(now() + i64::from(s))),
            ),
            Flaw::FloatTime(exp, secs, fraction) => {
                let time = (now() + i64::from(*secs)) as f64 + f64::from(*fraction) / 256.0;
                set(
                    &mut claims,
                    if *exp { "exp" } else { "nbf" },
                    Some(json!(time)),
                );
            }
            Flaw::Claim(key, value) => {
                set(&mut claims, &key.name(CLAIMS), Some(value.to_value(CLAIMS)))
            }
            Flaw::RawClaims(bytes) => raw_claims = Some(bytes.clone()),
            Flaw::Signature(flawed) => signature = Some(flawed),
            Flaw::Splice(at, text) => splice = Some((*at, text.clone())),
        }
    }
    let header = raw_header.unwrap_or_else(|| Value::Object(header).to_string().into_bytes());
    let claims = raw_claims.unwrap_or_else(|| Value::Object(claims).to_string().into_bytes());
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let signature = match signature {
        None => mac(hmac::HMAC_SHA256, SECRET, &message),
        Some(Signature::OtherSecret) => mac(hmac::HMAC_SHA256, "another-secret", &message),
        Some(Signature::Sha384) => mac(hmac::HMAC_SHA384, SECRET, &message),
        Some(Signature::Empty) => String::new(),
        Some(Signature::Raw(bytes)) => b64(bytes),
        Some(Signature::Text(text)) => text.clone(),
    };
    let token = format!("{message}.{signature}");
    match splice {
        None => token,
        Some((at, text)) => {
            let at = usize::from(at) % (token.len() + 1);
            format!("{}{text}{}", &token[..at], &token[at..])
        }
    }
}

impl Input {
    /// The token's text.
    pub fn token(&self) -> String {
        match self {
            Input::Raw(text) => text.clone(),
            Input::Built(flaws) => token_with(flaws),
        }
    }
}

/// The settings of the one HS256 issuer, its secret in `file`.
pub fn issuer(file: std::path::PathBuf, cookie: Option<&str>) -> IssuerSettings {
    IssuerSettings {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into(), OTHER_AUDIENCE.into()],
        algorithms: vec![Algorithm::HS256],
        keys: IssuerKeys::Secret(KeyLocation::File(file)),
        leeway: Duration::from_secs(LEEWAY_SECS),
        cookie: cookie.map(str::to_string),
        subject_claim: "sub".into(),
        groups_claim: Some("groups".into()),
        cache_ttl: Duration::from_secs(300),
        name: None,
        shares_local_names: false,
    }
}

/// A verifier for [`issuer`]: the secret is written to a temporary file, read, and removed.
pub fn verifier(cookie: Option<&str>) -> JwtVerifier {
    let path = std::env::temp_dir().join(format!(
        "streamgate-fuzz-secret-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, SECRET).expect("the temporary directory is writable");
    let verifier = JwtVerifier::new(vec![issuer(path.clone(), cookie)]);
    let _ = std::fs::remove_file(&path);
    verifier.expect("the fuzz issuer is valid")
}

/// What the issuer may and must make of a token.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// Signed with its secret under HS256, with `iss`, `aud`, `exp`, `nbf` and `sub` holding
    /// (times as any JSON number, a few seconds' clock movement allowed).
    pub may_accept: bool,
    /// The same, spelled plainly: canonical JSON, a header of `alg` (and a string `kid` or
    /// `typ`), integer times well inside the leeway.
    pub must_accept: bool,
}

/// What the issuer may and must make of `token`.
pub fn expected(token: &str) -> Expected {
    let refuse = Expected {
        may_accept: false,
        must_accept: false,
    };
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refuse;
    };
    // The decoded object, and whether its JSON was spelled canonically.
    let decode = |part: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        let object = serde_json::from_slice::<Map<String, Value>>(&bytes).ok()?;
        let canonical = Value::Object(object.clone()).to_string().into_bytes() == bytes;
        Some((object, canonical))
    };
    let (Some((header, header_plain)), Some((claims, claims_plain))) =
        (decode(header_b64), decode(payload_b64))
    else {
        return refuse;
    };
    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    let signed = header.get("alg") == Some(&json!("HS256"))
        && signature == mac(hmac::HMAC_SHA256, SECRET, message);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE || aud == OTHER_AUDIENCE,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud == AUDIENCE || aud == OTHER_AUDIENCE),
        _ => false,
    };
    let identified = claims.get("iss") == Some(&json!(ISSUER))
        && aud_ok
        && claims
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|sub| !sub.is_empty());
    let now = now() as f64;
    let leeway = LEEWAY_SECS as f64;
    let in_time = |slack: f64, time: &dyn Fn(&Value) -> Option<f64>| {
        claims
            .get("exp")
            .and_then(time)
            .is_some_and(|exp| exp >= now - leeway - slack)
            && claims
                .get("nbf")
                .is_none_or(|nbf| time(nbf).is_some_and(|nbf| nbf <= now + leeway + slack))
    };
    let header_plain = header_plain
        && header.iter().all(|(name, value)| match name.as_str() {
            "alg" => true,
            "kid" | "typ" => value.is_string(),
            _ => false,
        });
    let plain_aud = match claims.get("aud") {
        Some(Value::Array(auds)) => auds.iter().all(Value::is_string),
        _ => true,
    };
    Expected {
        may_accept: signed && identified && in_time(5.0, &Value::as_f64),
        must_accept: signed
            && identified
            && header_plain
            && claims_plain
            && plain_aud
            && in_time(-5.0, &|v: &Value| v.as_u64().map(|t| t as f64)),
    }
}

/// Check what the verifier made of `token`.
pub fn check_verdict(token: &str, verdict: &Result<Arc<Principal>, AuthError>) {
    match verdict {
        Ok(principal) => {
            assert!(
                expected(token).may_accept,
                "accepted a token the issuer did not sign, or whose claims do not hold: {token}"
            );
            assert_eq!(
                principal.kind,
                PrincipalKind::Jwt {
                    issuer: Arc::new(crate::identity::IssuerSource::unnamed(ISSUER))
                }
            );
            assert_eq!(principal.claims.get("sub"), Some(&json!(&*principal.name)));
        }
        Err(AuthError::InvalidToken(reason)) => {
            assert!(
                !expected(token).must_accept,
                "refused a good token ({reason}): {token}"
            );
            assert!(!reason.contains(SECRET), "the reason names the secret");
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
            assert!(reason.len() <= 200, "an unbounded reason: {reason:?}");
        }
        Err(other) => panic!("a fixed-key issuer answered {other:?}"),
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = super::runtime();
}

/// Verify the token and check the verdict.
pub fn check(input: Input) {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| verifier(None));
    let token = input.token();
    let verdict = RUNTIME.with(|runtime| runtime.block_on(verifier.verify(&token)));
    check_verdict(&token, &verdict);
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_tokens_the_issuer_signed_with_valid_claims_are_accepted() {
        super::super::property(super::check);
    }
}

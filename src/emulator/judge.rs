//! Token judging, written from Stream's documentation and nothing else: it shares no code with
//! the gateway's signer, so a bug there cannot hide behind the same bug here.
//!
//! The steps, in order: split the token, read the header (`alg` must be `RS256`, `kid` must
//! name a known key), check the RS256 signature, read the claims, check the validity window,
//! then run the access rules for this viewer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::rules::{self, AccessRule, RuleOutcome, Viewer};

/// Why a token was refused. `Display` is the short reason sent in the 401 body; it never
/// contains any part of the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token: check fields [{}]", .0.join(", "))]
    Malformed(Vec<String>),
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token is for an unknown video")]
    UnknownVideo,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("blocked by rule on '{0}'")]
    Blocked(&'static str),
}

impl Rejection {
    fn malformed(fields: &[&str]) -> Rejection {
        Rejection::Malformed(fields.iter().map(|&field| field.to_owned()).collect())
    }
}

/// What an accepted token lets the viewer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit {
    /// The video the token is for (its `sub`).
    pub video_uid: String,
    /// Whether `/downloads/` may be fetched.
    pub downloadable: bool,
}

/// The validated claims of a token whose signature checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub downloadable: bool,
    pub access_rules: Vec<AccessRule>,
}

/// What a judge trusts: the signing keys (by key id) and the videos on this origin. The
/// emulator's account answers from its current state, so a key created or deleted through the
/// API is trusted or refused from the next request on.
pub trait Trust {
    /// The verifying key with id `kid`, if trusted.
    fn key(&self, kid: &str) -> Option<&DecodingKey>;
    /// Whether `uid` is a video on this origin.
    fn knows_video(&self, uid: &str) -> bool;
}

/// A fixed set of keys and videos.
#[derive(Default)]
pub struct FixedTrust {
    pub keys: HashMap<String, DecodingKey>,
    pub video_uids: HashSet<String>,
}

impl Trust for FixedTrust {
    fn key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    fn knows_video(&self, uid: &str) -> bool {
        self.video_uids.contains(uid)
    }
}

/// The judging rules that do not depend on what is trusted; built once by the emulator.
pub struct TokenJudge {
    leeway_secs: i64,
}

impl TokenJudge {
    /// A judge tolerating `leeway` of clock skew on `exp` and `nbf`.
    pub fn new(leeway: Duration) -> TokenJudge {
        TokenJudge {
            leeway_secs: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Judge `token` for `viewer` at `now_unix_secs`, against the keys and videos of `trust`.
    /// `Ok` is the permit a valid token grants; `Err` is the first reason found to refuse it.
    pub fn judge(
        &self,
        token: &str,
        trust: &(impl Trust + ?Sized),
        viewer: &Viewer,
        now_unix_secs: i64,
    ) -> Result<Permit, Rejection> {
        let (header_kid, claims) = verify_signature(token, |kid| trust.key(kid))?;
        let claims = parse_claims(&claims, &header_kid)?;
        if !trust.knows_video(&claims.sub) {
            return Err(Rejection::UnknownVideo);
        }
        check_validity_window(&claims, now_unix_secs, self.leeway_secs)?;
        if let RuleOutcome::Blocked(rule_type) = rules::evaluate(&claims.access_rules, viewer) {
            return Err(Rejection::Blocked(rule_type));
        }
        Ok(Permit {
            video_uid: claims.sub,
            downloadable: claims.downloadable,
        })
    }
}

/// Check the header and the RS256 signature. `Ok` is the header's `kid` and the (still
/// unvalidated) claims object.
pub fn verify_signature<'k>(
    token: &str,
    key_for: impl FnOnce(&str) -> Option<&'k DecodingKey>,
) -> Result<(String, Map<String, Value>), Rejection> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err(Rejection::malformed(&["header", "payload", "signature"]));
    };
    let header = decode_json_object(header_b64).ok_or_else(|| Rejection::malformed(&["header"]))?;

    // Only RS256 is accepted, whatever the token says: this is what stops `none` and HS256
    // tokens "signed" with the public key.
    let alg_ok = header.get("alg").and_then(Value::as_str) == Some("RS256");
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|kid| !kid.is_empty());
    let kid = match (alg_ok, kid) {
        (true, Some(kid)) => kid,
        (false, Some(_)) => return Err(Rejection::malformed(&["alg"])),
        (true, None) => return Err(Rejection::malformed(&["kid"])),
        (false, None) => return Err(Rejection::malformed(&["alg", "kid"])),
    };
    let key = key_for(kid).ok_or(Rejection::UnknownKey)?;

    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    // An undecodable signature is as bad as a wrong one.
    let verified = jsonwebtoken::crypto::verify(
        signature_b64,
        signing_input.as_bytes(),
        key,
        Algorithm::RS256,
    )
    .unwrap_or(false);
    if !verified {
        return Err(Rejection::InvalidSignature);
    }

    let claims =
        decode_json_object(claims_b64).ok_or_else(|| Rejection::malformed(&["payload"]))?;
    Ok((kid.to_owned(), claims))
}

fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Validate the claims of a signed token. `Err` names every offending field.
pub fn parse_claims(claims: &Map<String, Value>, header_kid: &str) -> Result<Claims, Rejection> {
    let mut bad_fields: Vec<String> = Vec::new();
    let mut flag = |field: &str| bad_fields.push(field.to_owned());

    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| is_video_uid(sub));
    if sub.is_none() {
        flag("sub");
    }
    if claims.get("kid").and_then(Value::as_str) != Some(header_kid) {
        flag("kid");
    }
    let exp = claims.get("exp").and_then(unix_seconds);
    if exp.is_none() {
        flag("exp");
    }
    let nbf = match claims.get("nbf") {
        None => None,
        Some(value) => {
            let nbf = unix_seconds(value);
            if nbf.is_none() {
                flag("nbf");
            }
            nbf
        }
    };
    let downloadable = match claims.get("downloadable") {
        None => false,
        Some(Value::Bool(downloadable)) => *downloadable,
        Some(_) => {
            flag("downloadable");
            false
        }
    };
    let access_rules = match claims.get("accessRules").map(rules::parse_access_rules) {
        None => Vec::new(),
        Some(Ok(access_rules)) => access_rules,
        Some(Err(fields)) => {
            bad_fields.extend(fields);
            Vec::new()
        }
    };

    match (sub, exp) {
        (Some(sub), Some(exp)) if bad_fields.is_empty() => Ok(Claims {
            sub: sub.to_owned(),
            exp,
            nbf,
            downloadable,
            access_rules,
        }),
        _ => Err(Rejection::Malformed(bad_fields)),
    }
}

/// Stream refuses tokens that expire more than 24 hours after they were signed.
const MAX_TOKEN_LIFE_SECS: i64 = 24 * 60 * 60;

/// Refuse a token past `exp` or before `nbf`, each widened by `leeway_secs`, and one whose
/// `exp` lies more than 24 hours ahead (it cannot have been signed within Stream's limit).
pub fn check_validity_window(
    claims: &Claims,
    now_unix_secs: i64,
    leeway_secs: i64,
) -> Result<(), Rejection> {
    if claims.exp < now_unix_secs.saturating_sub(leeway_secs) {
        return Err(Rejection::Expired);
    }
    let latest_exp = now_unix_secs
        .saturating_add(MAX_TOKEN_LIFE_SECS)
        .saturating_add(leeway_secs);
    if claims.exp > latest_exp {
        return Err(Rejection::Malformed(vec!["exp".to_owned()]));
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now_unix_secs.saturating_add(leeway_secs))
    {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

/// A time claim: a JSON integer, or a string holding one (Stream's own `/token` tokens carry
/// strings). Floats, other strings and anything else are `None`.
fn unix_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

/// A Stream video uid: 32 lower-case hex characters.
pub fn is_video_uid(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use jsonwebtoken::{EncodingKey, Header};
    use rustls_pki_types::PrivatePkcs1KeyDer;
    use rustls_pki_types::pem::PemObject;
    use serde_json::json;

    use super::*;

    const KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const OTHER_KID: &str = "ffeeddccbbaa99887766554433221100";
    const UID: &str = "ce800be43a9772f4bb02f35b860fb516";
    const NOW: i64 = 1_750_000_000;

    fn fixture_der(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        PrivatePkcs1KeyDer::from_pem_file(path)
            .expect("fixture key should load")
            .secret_pkcs1_der()
            .to_vec()
    }

    fn decoding_key(der: &[u8]) -> DecodingKey {
        use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RsaPublicKeyComponents};
        let pair = RsaKeyPair::from_der(der).expect("fixture key should parse");
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        DecodingKey::from_rsa_raw_components(&components.n, &components.e)
    }

    fn trust() -> FixedTrust {
        let keys = HashMap::from([
            (
                KID.to_owned(),
                decoding_key(&fixture_der("test-only-signing-key.pem")),
            ),
            (
                OTHER_KID.to_owned(),
                decoding_key(&fixture_der("test-only-second-key.pem")),
            ),
        ]);
        FixedTrust {
            keys,
            video_uids: HashSet::from([UID.to_owned()]),
        }
    }

    fn mint_with(kid: &str, key_file: &str, claims: &Value) -> String {
        let header = Header {
            alg: Algorithm::RS256,
            kid: Some(kid.to_owned()),
            typ: None,
            ..Default::default()
        };
        let key = EncodingKey::from_rsa_der(&fixture_der(key_file));
        jsonwebtoken::encode(&header, claims, &key).expect("signing should work")
    }

    fn mint(claims: &Value) -> String {
        mint_with(KID, "test-only-signing-key.pem", claims)
    }

    fn claims() -> Value {
        json!({"sub": UID, "kid": KID, "exp": NOW + 3600})
    }

    fn with(mut claims: Value, field: &str, value: Value) -> Value {
        claims[field] = value;
        claims
    }

    fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
        )
    }

    fn anywhere() -> Viewer {
        Viewer::new("192.0.2.1".parse().unwrap(), None)
    }

    fn verdict(token: &str) -> Result<Permit, Rejection> {
        TokenJudge::new(Duration::from_secs(30)).judge(token, &trust(), &anywhere(), NOW)
    }

    fn reason(token: &str) -> String {
        verdict(token)
            .expect_err("token should be refused")
            .to_string()
    }

    #[test]
    fn valid_token_grants_its_video() {
        assert_eq!(
            verdict(&mint(&claims())),
            Ok(Permit {
                video_uid: UID.into(),
                downloadable: false
            })
        );
    }

    #[test]
    fn token_from_second_key_is_accepted() {
        let token = mint_with(
            OTHER_KID,
            "test-only-second-key.pem",
            &with(claims(), "kid", json!(OTHER_KID)),
        );
        assert!(verdict(&token).is_ok());
    }

    #[test]
    fn downloadable_claim_is_carried_to_the_permit() {
        let token = mint(&with(claims(), "downloadable", json!(true)));
        assert!(verdict(&token).unwrap().downloadable);
    }

    #[test]
    fn exp_as_integer_string_is_accepted() {
        let token = mint(&with(claims(), "exp", json!((NOW + 60).to_string())));
        assert!(verdict(&token).is_ok());
        let token = mint(&with(claims(), "nbf", json!((NOW - 60).to_string())));
        assert!(verdict(&token).is_ok());
    }

    #[test]
    fn exp_as_float_is_malformed() {
        let token = mint(&with(claims(), "exp", json!(NOW as f64 + 0.5)));
        assert_eq!(reason(&token), "malformed token: check fields [exp]");
    }

    #[test]
    fn non_numeric_time_claims_are_malformed() {
        for bad in [
            json!("soon"),
            json!("1.5"),
            json!(""),
            json!("+5"),
            json!(true),
        ] {
            let token = mint(&with(with(claims(), "exp", bad.clone()), "nbf", bad));
            assert_eq!(reason(&token), "malformed token: check fields [exp, nbf]");
        }
    }

    #[test]
    fn missing_required_claims_are_all_named() {
        let token = mint(&json!({"downloadable": "yes"}));
        assert_eq!(
            reason(&token),
            "malformed token: check fields [sub, kid, exp, downloadable]"
        );
    }

    #[test]
    fn sub_that_is_not_a_uid_is_malformed() {
        for sub in [json!("not-a-uid"), json!(UID.to_uppercase()), json!(42)] {
            let token = mint(&with(claims(), "sub", sub));
            assert_eq!(reason(&token), "malformed token: check fields [sub]");
        }
    }

    #[test]
    fn sub_unknown_to_the_origin_is_refused() {
        let token = mint(&with(
            claims(),
            "sub",
            json!("00000000000000000000000000000000"),
        ));
        assert_eq!(verdict(&token), Err(Rejection::UnknownVideo));
    }

    #[test]
    fn claim_kid_must_match_header_kid() {
        let token = mint(&with(claims(), "kid", json!(OTHER_KID)));
        assert_eq!(reason(&token), "malformed token: check fields [kid]");
        let mut missing = claims();
        missing.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            reason(&mint(&missing)),
            "malformed token: check fields [kid]"
        );
    }

    #[test]
    fn expiry_is_judged_with_leeway() {
        let just_inside = mint(&with(claims(), "exp", json!(NOW - 30)));
        assert!(verdict(&just_inside).is_ok());
        let just_outside = mint(&with(claims(), "exp", json!(NOW - 31)));
        assert_eq!(verdict(&just_outside), Err(Rejection::Expired));
    }

    #[test]
    fn expiry_more_than_a_day_ahead_is_malformed() {
        let day = 24 * 60 * 60;
        let within = mint(&with(claims(), "exp", json!(NOW + day)));
        assert!(verdict(&within).is_ok());
        let beyond = mint(&with(claims(), "exp", json!(NOW + day + 31)));
        assert_eq!(reason(&beyond), "malformed token: check fields [exp]");
    }

    #[test]
    fn not_before_is_judged_with_leeway() {
        let just_inside = mint(&with(claims(), "nbf", json!(NOW + 30)));
        assert!(verdict(&just_inside).is_ok());
        let just_outside = mint(&with(claims(), "nbf", json!(NOW + 31)));
        assert_eq!(reason(&just_outside), "token not yet valid");
    }

    #[test]
    fn alg_none_is_rejected() {
        let token = unsigned(&json!({"alg": "none", "kid": KID}), &claims(), "");
        assert_eq!(reason(&token), "malformed token: check fields [alg]");
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_rejected() {
        let header = Header {
            alg: Algorithm::HS256,
            kid: Some(KID.to_owned()),
            ..Default::default()
        };
        let pair =
            aws_lc_rs::signature::RsaKeyPair::from_der(&fixture_der("test-only-signing-key.pem"))
                .unwrap();
        let public_key_der = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&public_key_der),
        )
        .unwrap();
        assert_eq!(reason(&token), "malformed token: check fields [alg]");
    }

    #[test]
    fn header_without_kid_is_malformed() {
        let header = Header {
            alg: Algorithm::RS256,
            kid: None,
            ..Default::default()
        };
        let key = EncodingKey::from_rsa_der(&fixture_der("test-only-signing-key.pem"));
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        assert_eq!(reason(&token), "malformed token: check fields [kid]");
    }

    #[test]
    fn unknown_kid_is_rejected() {
        let token = mint_with(
            "99999999999999999999999999999999",
            "test-only-signing-key.pem",
            &with(claims(), "kid", json!("99999999999999999999999999999999")),
        );
        assert_eq!(verdict(&token), Err(Rejection::UnknownKey));
    }

    #[test]
    fn token_signed_by_another_configured_key_fails_signature() {
        // Header names the first key, but the second key signed it.
        let token = mint_with(KID, "test-only-second-key.pem", &claims());
        assert_eq!(verdict(&token), Err(Rejection::InvalidSignature));
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let token = mint(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims =
            URL_SAFE_NO_PAD.encode(with(claims(), "downloadable", json!(true)).to_string());
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(verdict(&forged), Err(Rejection::InvalidSignature));
    }

    #[test]
    fn garbage_signature_is_invalid() {
        let token = mint(&claims());
        let (signed, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verdict(&format!("{signed}.!!not-base64!!")),
            Err(Rejection::InvalidSignature)
        );
        assert_eq!(
            verdict(&format!("{signed}.")),
            Err(Rejection::InvalidSignature)
        );
    }

    #[test]
    fn token_without_three_parts_is_malformed() {
        assert!(matches!(verdict("a.b"), Err(Rejection::Malformed(_))));
        assert!(matches!(verdict("a.b.c.d"), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn undecodable_header_is_malformed() {
        assert_eq!(
            reason("%%%.e30.e30"),
            "malformed token: check fields [header]"
        );
        // `[]` is JSON but not an object.
        assert_eq!(
            reason("W10.e30.e30"),
            "malformed token: check fields [header]"
        );
    }

    #[test]
    fn blocking_rule_names_its_type() {
        let token = mint(&with(
            claims(),
            "accessRules",
            json!([{"type": "ip.src", "action": "block", "ip": ["192.0.2.0/24"]}]),
        ));
        assert_eq!(reason(&token), "blocked by rule on 'ip.src'");
    }

    #[test]
    fn too_many_rules_are_malformed() {
        let rules = Value::Array(vec![json!({"type": "any", "action": "allow"}); 6]);
        let token = mint(&with(claims(), "accessRules", rules));
        assert_eq!(
            reason(&token),
            "malformed token: check fields [accessRules]"
        );
    }

    #[test]
    fn expired_is_reported_before_rules_are_run() {
        let token = mint(&with(
            with(claims(), "exp", json!(NOW - 3600)),
            "accessRules",
            json!([{"type": "any", "action": "block"}]),
        ));
        assert_eq!(verdict(&token), Err(Rejection::Expired));
    }

    #[test]
    fn video_uid_is_32_lowercase_hex() {
        assert!(is_video_uid(UID));
        assert!(!is_video_uid(&UID.to_uppercase()));
        assert!(!is_video_uid(&UID[1..]));
        assert!(!is_video_uid("ce800be43a9772f4bb02f35b860fb51g"));
    }
}

//! Signing keys: Cloudflare's formats in, a parsed RSA key pair out, parsed once at load.
//!
//! Cloudflare's `POST /stream/keys` returns `id`, `pem` (base64 of a PKCS#1 PEM) and `jwk`
//! (base64 of an RSA JWK). Operators paste what they were given, so [`SigningKey::from_material`]
//! accepts the whole JSON response, the `pem` or `jwk` string, each base64-wrapped or not, and
//! PKCS#8 PEM as well.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeyPairComponents, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use pkcs1::{RsaPrivateKeyRef, UintRef};
use pkcs8::PrivateKeyInfoRef;
use pkcs8::der::Decode;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::secret::Secret;

/// Why key material could not be turned into a signing key. Never contains the material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key material is not recognised: expected Cloudflare's key JSON, a PEM or a JWK (each may be base64-wrapped)"
    )]
    Unrecognised,
    #[error("PEM key is not an RSA private key (PKCS#1 or PKCS#8)")]
    NotRsaPem,
    #[error("JWK is not usable: {0}")]
    Jwk(String),
    #[error("RSA key rejected: {0}")]
    Rejected(String),
    #[error("no key id: set `id` in the config (the key material does not carry one)")]
    MissingId,
    #[error("the key id is not 32 hex characters")]
    BadId,
    #[error("key id mismatch: the config's `id` differs from the id in the key material")]
    IdMismatch,
    #[error("could not generate a key: {0}")]
    Generate(String),
}

/// An RSA signing key with its Stream key id, ready to sign without re-parsing.
pub struct SigningKey {
    id: String,
    pair: KeyPair,
    /// `base64url({"alg":"RS256","kid":"<id>"})`, the same for every token of this key.
    header_b64: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("key", &"***")
            .finish()
    }
}

impl SigningKey {
    /// Parse `material` (any of Cloudflare's forms, see the module docs).
    ///
    /// `configured_id` is the `id` from the config; when the material carries an id too (the
    /// JSON response's `id` or the JWK's `kid`) the two must agree. `Err` never contains key
    /// material.
    pub fn from_material(configured_id: Option<&str>, material: &str) -> Result<Self, KeyError> {
        let (embedded_id, pair) = decode(material, 0)?;
        let id = match (configured_id, embedded_id) {
            (Some(configured), Some(embedded)) if !configured.eq_ignore_ascii_case(&embedded) => {
                return Err(KeyError::IdMismatch);
            }
            (Some(id), _) => id.to_ascii_lowercase(),
            (None, Some(id)) => id.to_ascii_lowercase(),
            (None, None) => return Err(KeyError::MissingId),
        };
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::BadId);
        }
        Ok(Self::new(id, pair))
    }

    fn new(id: String, pair: KeyPair) -> Self {
        let header = Header {
            typ: None,
            kid: Some(id.clone()),
            ..Header::new(Algorithm::RS256)
        };
        let header_json = serde_json::to_vec(&header).expect("a header always serializes");
        Self {
            header_b64: URL_SAFE_NO_PAD.encode(header_json),
            id,
            pair,
        }
    }

    /// The key id, used as the JWT header's and the claims' `kid`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half as big-endian `(modulus, exponent)`.
    pub fn public_components(&self) -> (Vec<u8>, Vec<u8>) {
        let components = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        (components.n, components.e)
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }

    pub(crate) fn header_b64(&self) -> &str {
        &self.header_b64
    }
}

/// Decode one layer of key material; `depth` bounds base64 unwrapping.
fn decode(material: &str, depth: u8) -> Result<(Option<String>, KeyPair), KeyError> {
    let text = material.trim();
    if text.starts_with('{') {
        return decode_json(text, depth);
    }
    if text.starts_with("-----BEGIN") {
        return decode_pem(text).map(|pair| (None, pair));
    }
    if depth >= 2 {
        return Err(KeyError::Unrecognised);
    }
    let compact: String = text.split_ascii_whitespace().collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| URL_SAFE_NO_PAD.decode(compact.trim_end_matches('=').as_bytes()))
        .map_err(|_| KeyError::Unrecognised)?;
    let inner = String::from_utf8(bytes).map_err(|_| KeyError::Unrecognised)?;
    decode(&inner, depth + 1)
}

fn decode_pem(text: &str) -> Result<KeyPair, KeyError> {
    let der = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| KeyError::NotRsaPem)?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs1(pkcs1) => KeyPair::from_der(pkcs1.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(pkcs8) => KeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()),
        _ => return Err(KeyError::NotRsaPem),
    };
    parsed.map_err(|rejected| KeyError::Rejected(rejected.to_string()))
}

fn decode_json(text: &str, depth: u8) -> Result<(Option<String>, KeyPair), KeyError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| KeyError::Unrecognised)?;
    // The API's envelope: {"result": {"id", "pem", "jwk"}, "success": true, ...}
    let value = value.get("result").cloned().unwrap_or(value);
    if value.get("kty").is_some() {
        let jwk: RsaJwk = serde_json::from_value(value)
            .map_err(|error| KeyError::Jwk(redacted_serde_error(&error)))?;
        return jwk.into_key_pair();
    }
    let id = value
        .get("id")
        .and_then(|id| id.as_str())
        .map(str::to_string);
    let inner = value
        .get("pem")
        .or_else(|| value.get("jwk"))
        .and_then(|inner| inner.as_str())
        .ok_or(KeyError::Unrecognised)?;
    let (inner_id, pair) = decode(inner, depth)?;
    Ok((id.or(inner_id), pair))
}

/// serde_json's messages may quote the offending value; keep only the category and place.
fn redacted_serde_error(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

/// An RSA private JWK as Cloudflare returns it.
#[derive(Deserialize)]
struct RsaJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    n: String,
    e: String,
    d: String,
    p: String,
    q: String,
    dp: String,
    dq: String,
    qi: String,
}

impl RsaJwk {
    fn into_key_pair(self) -> Result<(Option<String>, KeyPair), KeyError> {
        if self.kty != "RSA" {
            return Err(KeyError::Jwk("`kty` must be `RSA`".into()));
        }
        if self.alg.as_deref().is_some_and(|alg| alg != "RS256") {
            return Err(KeyError::Jwk("`alg` must be `RS256`".into()));
        }
        let field = |name: &str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value.trim_end_matches('='))
                .map_err(|_| KeyError::Jwk(format!("`{name}` is not base64url")))
        };
        let components = KeyPairComponents {
            public_key: PublicKeyComponents {
                n: field("n", &self.n)?,
                e: field("e", &self.e)?,
            },
            d: field("d", &self.d)?,
            p: field("p", &self.p)?,
            q: field("q", &self.q)?,
            dP: field("dp", &self.dp)?,
            dQ: field("dq", &self.dq)?,
            qInv: field("qi", &self.qi)?,
        };
        let pair = KeyPair::from_components(&components)
            .map_err(|rejected| KeyError::Rejected(rejected.to_string()))?;
        Ok((self.kid, pair))
    }
}

/// A freshly generated key in Cloudflare's `POST /stream/keys` result shape.
pub struct GeneratedKey {
    /// The new key's id.
    pub id: String,
    /// `{"id", "pem", "jwk", "created"}` with `pem` and `jwk` base64-wrapped, as Cloudflare
    /// returns them.
    pub cloudflare_json: Secret<String>,
    /// The public half, big-endian: RSA modulus (no leading zero byte) and exponent.
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    /// When it was made (the `created` of the JSON, to the second).
    pub created: std::time::SystemTime,
}

/// Generate a 2048-bit RSA key with a random id, for development with the emulator.
pub fn generate() -> Result<GeneratedKey, KeyError> {
    let fail = |what: &str| KeyError::Generate(what.to_string());
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| fail("RSA generation failed"))?;
    let pkcs8 = pair
        .as_der()
        .map_err(|_| fail("could not encode the key"))?;
    // aws-lc-rs writes PKCS#8 and exposes no private components, while Cloudflare's forms are
    // the PKCS#1 key inside it (`pem`) and that key's integers (`jwk`).
    let info =
        PrivateKeyInfoRef::from_der(pkcs8.as_ref()).map_err(|_| fail("unexpected PKCS#8"))?;
    let pkcs1 = info.private_key.as_bytes();
    let key = RsaPrivateKeyRef::from_der(pkcs1).map_err(|_| fail("unexpected PKCS#1"))?;

    let mut id_bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id_bytes).map_err(|_| fail("no randomness"))?;
    let id = crate::hex::encode(&id_bytes);

    let pem = pem::encode_config(
        &pem::Pem::new("RSA PRIVATE KEY", pkcs1),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    // Big-endian without leading zero bytes, as JWK integers are written.
    let b64u = |int: UintRef<'_>| URL_SAFE_NO_PAD.encode(int.as_bytes());
    let jwk = serde_json::json!({
        "use": "sig", "kty": "RSA", "kid": id, "alg": "RS256",
        "n": b64u(key.modulus), "e": b64u(key.public_exponent),
        "d": b64u(key.private_exponent), "p": b64u(key.prime1), "q": b64u(key.prime2),
        "dp": b64u(key.exponent1), "dq": b64u(key.exponent2), "qi": b64u(key.coefficient),
    });
    let created_at = std::time::SystemTime::now();
    let created = humantime::format_rfc3339_seconds(created_at).to_string();
    let document = serde_json::json!({
        "id": id,
        "pem": STANDARD.encode(pem),
        "jwk": STANDARD.encode(jwk.to_string()),
        "created": created,
    });
    let cloudflare_json =
        serde_json::to_string_pretty(&document).expect("a JSON value always serializes");
    Ok(GeneratedKey {
        id,
        cloudflare_json: Secret::new(cloudflare_json),
        modulus: key.modulus.as_bytes().to_vec(),
        exponent: key.public_exponent.as_bytes().to_vec(),
        created: created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_PEM: &str = include_str!("../../tests/fixtures/test-only-signing-key.pem");
    const FIXTURE_JSON: &str =
        include_str!("../../tests/fixtures/test-only-signing-key.cloudflare.json");
    const FIXTURE_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn fixture_field(name: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(FIXTURE_JSON).unwrap();
        value[name].as_str().unwrap().to_string()
    }

    #[test]
    fn every_cloudflare_form_yields_the_same_key() {
        let reference = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let pem_b64 = fixture_field("pem");
        let jwk_b64 = fixture_field("jwk");
        let jwk_raw = String::from_utf8(STANDARD.decode(&jwk_b64).unwrap()).unwrap();
        let forms = [
            (Some(FIXTURE_ID), pem_b64.as_str()),
            (None, jwk_b64.as_str()),
            (None, jwk_raw.as_str()),
            (None, FIXTURE_JSON),
        ];
        for (id, material) in forms {
            let key = SigningKey::from_material(id, material).unwrap();
            assert_eq!(key.id(), FIXTURE_ID);
            assert_eq!(key.public_components(), reference.public_components());
        }
    }

    #[test]
    fn pem_without_id_needs_one_from_the_config() {
        assert_eq!(
            SigningKey::from_material(None, FIXTURE_PEM).unwrap_err(),
            KeyError::MissingId
        );
    }

    #[test]
    fn conflicting_ids_are_refused() {
        let err = SigningKey::from_material(Some("ffffffffffffffffffffffffffffffff"), FIXTURE_JSON)
            .unwrap_err();
        assert!(matches!(err, KeyError::IdMismatch));
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        for material in [
            "",
            "not a key",
            "bm90IGEga2V5",
            "{\"pem\": \"eA==\"}",
            "{\"kty\":\"EC\"}",
        ] {
            let err = SigningKey::from_material(Some(FIXTURE_ID), material).unwrap_err();
            assert!(!err.to_string().contains("bm90"), "{err}");
        }
        let truncated = &FIXTURE_PEM[..FIXTURE_PEM.len() / 2];
        assert!(SigningKey::from_material(Some(FIXTURE_ID), truncated).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(FIXTURE_ID));
        assert!(debug.contains("***"));
    }

    #[test]
    fn generated_key_round_trips_through_cloudflares_forms() {
        let generated = generate().unwrap();
        let from_json =
            SigningKey::from_material(None, generated.cloudflare_json.expose()).unwrap();
        assert_eq!(from_json.id(), generated.id);
        let document: serde_json::Value =
            serde_json::from_str(generated.cloudflare_json.expose()).unwrap();
        let from_jwk = SigningKey::from_material(None, document["jwk"].as_str().unwrap()).unwrap();
        let pem =
            String::from_utf8(STANDARD.decode(document["pem"].as_str().unwrap()).unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let from_pem = SigningKey::from_material(Some(&generated.id), &pem).unwrap();
        assert_eq!(from_jwk.public_components(), from_json.public_components());
        assert_eq!(from_pem.public_components(), from_json.public_components());
    }
}

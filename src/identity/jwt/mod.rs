//! JWTs from trusted identity providers.
//!
//! A token names its issuer in `iss`; that picks the issuer's settings (its pinned
//! algorithms, audiences and keys). The header's `alg` must be one of the pinned ones before
//! any key is looked at, so a token cannot choose how it is verified (no `none`, no HS256
//! signed with an RSA public key). Keys come from a shared secret, a PEM public key, or a
//! JWKS document on disk or at a URL; URL keys are refreshed in the background and on an
//! unknown `kid` (single-flight, rate-limited).
//!
//! Verified tokens are remembered (keyed by a keyed hash of the token, never the token
//! itself) until the earlier of the issuer's `cache_ttl` and the token's expiry.
//!
//! `keys` reads an issuer's key material (secrets, PEM public keys, JWKS files); `jwks`
//! parses JWKS documents and keeps a JWKS URL's keys fresh.

mod jwks;
mod keys;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use self::jwks::Remote;
use self::keys::{KeySet, load_fixed};
use super::hot::HotSlots;
use super::{AuthError, CredentialHasher, IssuerSource, Principal, PrincipalKind, lookup_claim};
use crate::secret::KeyLocation;

/// One trusted issuer, validated from the configuration.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The exact `iss` value tokens must carry.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Accepted `alg` values, all of one family matching `keys`.
    pub algorithms: Vec<Algorithm>,
    /// Where the verification keys come from.
    pub keys: IssuerKeys,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Also read the token from this cookie.
    pub cookie: Option<String>,
    /// Dotted path of the claim naming the subject (default `sub`).
    pub subject_claim: String,
    /// Dotted path of the claim holding groups (a string or an array of strings).
    pub groups_claim: Option<String>,
    /// How long a verified token is remembered (capped by its `exp`).
    pub cache_ttl: Duration,
    /// The short name qualified rule subjects use (`user:<name>:<subject>`).
    pub name: Option<String>,
    /// Its subjects and groups also match unqualified `user:` and `group:` subjects.
    pub shares_local_names: bool,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKeys {
    /// HS256/384/512 shared secret.
    Secret(KeyLocation),
    /// A PEM public key (RSA, EC or Ed25519).
    PublicKeyPem(PathBuf),
    /// A JWKS document on disk.
    JwksFile(PathBuf),
    /// A JWKS URL, fetched at start, every `refresh`, and on an unknown `kid` (at most once per
    /// `min_refresh_interval`).
    JwksUrl {
        /// The document's http(s) URL.
        url: http::Uri,
        /// How often the document is fetched again.
        refresh: Duration,
        /// The shortest time between two fetches caused by unknown `kid`s.
        min_refresh_interval: Duration,
        /// A CA to trust for this URL besides the usual roots.
        ca_file: Option<PathBuf>,
    },
}

/// Verified tokens remembered at most.
const CACHE_CAPACITY: u64 = 100_000;
/// Echoed untrusted values (an unknown `iss`) are cut to this many characters.
const ECHO_MAX_CHARS: usize = 100;

/// Verifies JWTs from the configured issuers. Share it in an `Arc`.
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    hasher: CredentialHasher,
    cache: moka::future::Cache<[u8; 32], Cached>,
    /// The most recent verifications, in front of `cache`.
    hot: HotSlots<Arc<Principal>>,
    jwks_fetches: AtomicU64,
    verifications: AtomicU64,
    refresh_spawned: AtomicBool,
    /// Refresh tasks still running.
    refresh_tasks: Arc<AtomicUsize>,
}

/// A verified token in the cache, with how long it may stay.
#[derive(Clone)]
struct Cached {
    principal: Arc<Principal>,
    ttl: Duration,
    /// When the entry expires (its `ttl` from when it was verified).
    until: Instant,
}

struct CacheExpiry;

impl moka::Expiry<[u8; 32], Cached> for CacheExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// One issuer, ready to verify.
struct Issuer {
    name: Arc<str>,
    /// What its principals carry: where they came from.
    source: Arc<IssuerSource>,
    settings: IssuerSettings,
    validation: Validation,
    keys: KeySource,
}

impl JwtVerifier {
    /// Read every issuer's key material (files and environment variables; no network).
    /// Errors name the issuer's index, and the file or variable, never secret contents.
    pub fn new(issuers: Vec<IssuerSettings>) -> Result<Self, Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let mut built: Vec<Issuer> = Vec::with_capacity(issuers.len());
        let mut seen = std::collections::HashSet::new();
        for (index, settings) in issuers.into_iter().enumerate() {
            if !seen.insert(settings.issuer.clone()) {
                errors.push((index, "this issuer is configured twice".to_string()));
                continue;
            }
            match Issuer::new(settings) {
                Ok(issuer) => built.push(issuer),
                Err(messages) => errors.extend(messages.into_iter().map(|m| (index, m))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            issuers: built,
            hasher: CredentialHasher::new(),
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(CacheExpiry)
                .build(),
            hot: HotSlots::new(),
            jwks_fetches: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
            refresh_spawned: AtomicBool::new(false),
            refresh_tasks: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Verify a token and name its subject. Repeat calls with the same token are answered
    /// from the cache until the token (or the issuer's `cache_ttl`) expires.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        match self.recent(token) {
            Ok(principal) => Ok(principal),
            Err(cache_key) => self.verify_keyed(token, cache_key).await,
        }
    }

    /// The principal of `token` when a recent verification is remembered in a hot slot,
    /// without awaiting anything; else `Err` with the token's cache key, for
    /// [`JwtVerifier::verify_keyed`]. A repeat caller is answered here, so callers box only
    /// the rest (whose future is large).
    pub fn recent(&self, token: &str) -> Result<Arc<Principal>, [u8; 32]> {
        let cache_key = self.hasher.digest(&[token.as_bytes()]);
        self.hot.get(&cache_key, Instant::now()).ok_or(cache_key)
    }

    /// [`JwtVerifier::verify`] past the hot slots, for the key [`JwtVerifier::recent`] gave.
    pub async fn verify_keyed(
        &self,
        token: &str,
        cache_key: [u8; 32],
    ) -> Result<Arc<Principal>, AuthError> {
        let now = Instant::now();
        if let Some(hit) = self.cache.get(&cache_key).await {
            self.hot
                .put(cache_key, Arc::clone(&hit.principal), hit.until);
            return Ok(hit.principal);
        }
        match self.verify_uncached(token).await {
            Ok((principal, ttl)) => {
                if !ttl.is_zero() {
                    let cached = Cached {
                        principal: principal.clone(),
                        ttl,
                        until: now + ttl,
                    };
                    self.cache.insert(cache_key, cached).await;
                }
                Ok(principal)
            }
            Err(error) => {
                tracing::debug!(reason = %error, "JWT refused");
                Err(error)
            }
        }
    }

    /// JWKS fetch attempts completed so far (successful or not), over all issuers.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Full signature verifications so far (cache misses that got as far as a key).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Arc<Principal>, Duration), AuthError> {
        let claimed = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| *issuer.name == *claimed)
            .ok_or_else(|| {
                invalid(format!(
                    "issuer \"{}\" is not trusted",
                    echo(&claimed, ECHO_MAX_CHARS)
                ))
            })?;

        let header = jsonwebtoken::decode_header(token).map_err(|_| header_refusal(token))?;
        if !issuer.settings.algorithms.contains(&header.alg) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }

        let kid = header.kid.as_deref();
        let keys = self.keys_for(issuer, kid).await?;
        let key = keys.find(kid).ok_or_else(|| unknown_key(kid))?;
        if !key.kind.accepts(header.alg) || key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(invalid("algorithm does not match the key"));
        }

        self.verifications.fetch_add(1, Ordering::Relaxed);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &issuer.validation)
            .map_err(|error| invalid(refusal_reason(&error)))?;
        let claims = data.claims;

        let subject = match lookup_claim(&claims, &issuer.settings.subject_claim) {
            Some(Value::String(subject)) if !subject.is_empty() => {
                Arc::<str>::from(subject.as_str())
            }
            Some(Value::String(_)) => return Err(invalid("the subject claim is empty")),
            Some(_) => return Err(invalid("the subject claim is not a string")),
            None => {
                return Err(invalid(format!(
                    "missing claim {}",
                    issuer.settings.subject_claim
                )));
            }
        };
        let groups: Vec<Arc<str>> = match issuer
            .settings
            .groups_claim
            .as_deref()
            .and_then(|path| lookup_claim(&claims, path))
        {
            Some(Value::String(group)) => vec![Arc::from(group.as_str())],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(Arc::from)
                .collect(),
            _ => Vec::new(),
        };

        let ttl = cache_ttl(
            claims.get("exp"),
            issuer.settings.leeway,
            issuer.settings.cache_ttl,
            SystemTime::now(),
        );
        let principal = Principal::new(
            PrincipalKind::Jwt {
                issuer: Arc::clone(&issuer.source),
            },
            subject,
            groups,
            claims,
        );
        Ok((Arc::new(principal), ttl))
    }

    /// The issuer's keys, holding one for `kid`; a JWKS URL is refetched once (if allowed)
    /// when it lacks it.
    async fn keys_for(&self, issuer: &Issuer, kid: Option<&str>) -> Result<Arc<KeySet>, AuthError> {
        let remote = match &issuer.keys {
            KeySource::Fixed(keys) => {
                return match keys.find(kid) {
                    Some(_) => Ok(keys.clone()),
                    None => Err(unknown_key(kid)),
                };
            }
            KeySource::Remote(remote) => remote,
        };
        // Read the generation before the keys: a fetch that lands after this is seen below.
        let seen = remote.generation.load(Ordering::Acquire);
        if let Some(keys) = remote.current()
            && keys.find(kid).is_some()
        {
            return Ok(keys);
        }
        self.refresh_on_demand(issuer, remote, seen).await;
        match remote.current() {
            None => Err(AuthError::KeysUnavailable),
            Some(keys) if keys.find(kid).is_some() => Ok(keys),
            Some(_) => Err(unknown_key(kid)),
        }
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.issuers.iter().map(|i| &*i.name).collect();
        f.debug_struct("JwtVerifier")
            .field("issuers", &names)
            .field("jwks_fetches", &self.jwks_fetches())
            .field("verifications", &self.verifications())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    fn new(settings: IssuerSettings) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if settings.issuer.is_empty() {
            errors.push("the issuer (`iss`) is empty".to_string());
        }
        if settings.audiences.is_empty() {
            errors.push("at least one audience is required".to_string());
        }
        if settings.subject_claim.is_empty() {
            errors.push("the subject claim is empty".to_string());
        }
        let Some(&first) = settings.algorithms.first() else {
            errors.push("no algorithms are listed".to_string());
            return Err(errors);
        };
        let family = first.family();
        if settings.algorithms.iter().any(|alg| alg.family() != family) {
            errors.push(format!(
                "algorithms {} mix key types; list one family: HS*, RS*/PS*, ES*, or EdDSA",
                list_algorithms(&settings.algorithms)
            ));
            return Err(errors);
        }
        let keys = match load_keys(&settings.keys, &settings.algorithms) {
            Ok(keys) => Some(keys),
            Err(message) => {
                errors.push(message);
                None
            }
        };
        let Some(keys) = keys.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };

        let mut validation = Validation::new(first);
        validation.algorithms = settings.algorithms.clone();
        validation.leeway = settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&settings.audiences);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let name = Arc::from(settings.issuer.as_str());
        Ok(Self {
            source: Arc::new(IssuerSource {
                iss: Arc::clone(&name),
                name: settings.name.as_deref().map(Arc::from),
                shares_local_names: settings.shares_local_names,
            }),
            name,
            settings,
            validation,
            keys,
        })
    }
}

/// The `iss` of a token, read without verifying anything, only to pick the issuer.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<Value>,
    }
    let mut parts = token.split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(payload), Some(_), None) => payload,
        _ => return Err(invalid("malformed (not three dot-separated parts)")),
    };
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid("malformed payload"))?;
    let peek: Peek = serde_json::from_slice(&json).map_err(|_| invalid("malformed payload"))?;
    match peek.iss {
        Some(Value::String(iss)) => Ok(iss),
        Some(_) => Err(invalid("malformed claim iss")),
        None => Err(invalid("missing claim iss")),
    }
}

/// Why a header that jsonwebtoken cannot read is refused: an unknown `alg` (such as
/// `none`) by name, anything else as malformed.
fn header_refusal(token: &str) -> AuthError {
    let alg = token
        .split('.')
        .next()
        .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .and_then(|header| match header.get("alg") {
            // A known algorithm means something else is wrong with the header.
            Some(Value::String(alg)) if alg.parse::<Algorithm>().is_err() => Some(echo(alg, 20)),
            _ => None,
        });
    match alg {
        Some(alg) => invalid(format!("algorithm \"{alg}\" is not accepted")),
        None => invalid("malformed header"),
    }
}

/// A short reason for a failed `jsonwebtoken::decode`; names no secret and echoes nothing
/// from the token.
fn refusal_reason(error: &jsonwebtoken::errors::Error) -> String {
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "algorithm not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        _ => "malformed".into(),
    }
}

/// How long a verified token may be remembered: `cache_ttl`, but never past `exp` + leeway.
fn cache_ttl(
    exp: Option<&Value>,
    leeway: Duration,
    cache_ttl: Duration,
    now: SystemTime,
) -> Duration {
    let Some(exp) = exp.and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
    else {
        return Duration::ZERO;
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let until = Duration::from_secs(exp).saturating_add(leeway);
    until.saturating_sub(now).min(cache_ttl)
}

fn unknown_key(kid: Option<&str>) -> AuthError {
    match kid {
        Some(_) => invalid("unknown key id"),
        None => invalid("the token names no key id (kid)"),
    }
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(reason.into())
}

/// An untrusted value made safe to echo: no control characters, at most `max` characters.
pub(super) fn echo(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

pub(super) fn list_algorithms(algorithms: &[Algorithm]) -> String {
    let names: Vec<String> = algorithms.iter().map(|alg| format!("{alg:?}")).collect();
    names.join(", ")
}

/// Whether `value` is shaped like a JWT: three non-empty base64url segments joined by dots.
/// A cheap check to tell a JWT bearer from an API key; it verifies nothing.
pub fn looks_like_jwt(value: &str) -> bool {
    let mut segments = 0;
    for segment in value.split('.') {
        segments += 1;
        if segments > 3
            || segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

/// Where an issuer's keys are kept once loaded.
enum KeySource {
    /// A secret, a PEM key or a JWKS file: read once.
    Fixed(Arc<KeySet>),
    Remote(Box<Remote>),
}

/// Read (or, for a URL, prepare to fetch) an issuer's keys, checking they suit `algorithms`
/// (one family, already checked).
fn load_keys(keys: &IssuerKeys, algorithms: &[Algorithm]) -> Result<KeySource, String> {
    match (load_fixed(keys, algorithms)?, keys) {
        (Some(set), _) => Ok(KeySource::Fixed(Arc::new(set))),
        (
            None,
            IssuerKeys::JwksUrl {
                url,
                refresh,
                min_refresh_interval,
                ca_file,
            },
        ) => Remote::new(url, *refresh, *min_refresh_interval, ca_file.as_deref())
            .map(|remote| KeySource::Remote(Box::new(remote))),
        (None, _) => Err("no keys".into()),
    }
}

#[cfg(test)]
mod tests {
    //! The verifier's own tests, and the keys, tokens and settings the tests of `keys` and
    //! `jwks` share.

    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _,
    };
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use pkcs8::der::Decode;

    use super::*;
    use crate::test_support::pem;

    pub(super) const ISS: &str = "https://idp.test/";
    pub(super) const AUD: &str = "streamgate";

    /// A signing key and its public forms.
    pub(super) struct TestKey {
        pub(super) encoding: EncodingKey,
        /// SubjectPublicKeyInfo DER.
        pub(super) spki: Vec<u8>,
        /// The public JWK, without `kid`.
        pub(super) jwk: Value,
    }

    impl TestKey {
        pub(super) fn pem(&self) -> String {
            pem("PUBLIC KEY", &self.spki)
        }

        pub(super) fn jwk_with(&self, kid: &str) -> Value {
            let mut jwk = self.jwk.clone();
            jwk["kid"] = json!(kid);
            jwk
        }
    }

    pub(super) fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The RSAPrivateKey inside a PKCS#8 document (jsonwebtoken signs with PKCS#1).
    fn pkcs8_rsa_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8).unwrap();
        info.private_key.as_bytes().to_vec()
    }

    fn new_rsa_key() -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let public = pair.public_key();
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).unwrap();
        TestKey {
            encoding: EncodingKey::from_rsa_der(&pkcs8_rsa_to_pkcs1(pkcs8.as_ref())),
            spki: spki.as_ref().to_vec(),
            jwk: json!({
                "kty": "RSA",
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            }),
        }
    }

    /// RSA keys take a while to generate: two, shared by every test.
    pub(super) fn rsa_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(new_rsa_key)
    }

    pub(super) fn other_rsa_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(new_rsa_key)
    }

    pub(super) fn ec_key(p384: bool) -> TestKey {
        let (alg, crv, size) = if p384 {
            (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
        } else {
            (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let spki =
            AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).unwrap();
        TestKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            spki: spki.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC",
                "crv": crv,
                "x": b64(&point[1..1 + size]),
                "y": b64(&point[1 + size..]),
            }),
        }
    }

    pub(super) fn ed_key() -> TestKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let spki =
            AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).unwrap();
        TestKey {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            spki: spki.as_ref().to_vec(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Valid claims for `ISS`/`AUD`, with `extra` merged in (`null` removes a claim).
    pub(super) fn claims(extra: Value) -> Value {
        let mut claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 600});
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    pub(super) fn sign(
        key: &EncodingKey,
        alg: Algorithm,
        kid: Option<&str>,
        claims: &Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    pub(super) fn settings(keys: IssuerKeys, algorithms: Vec<Algorithm>) -> IssuerSettings {
        IssuerSettings {
            issuer: ISS.into(),
            audiences: vec![AUD.into(), "other-app".into()],
            algorithms,
            keys,
            leeway: Duration::from_secs(60),
            cookie: None,
            subject_claim: "sub".into(),
            name: None,
            shares_local_names: false,
            groups_claim: Some("groups".into()),
            cache_ttl: Duration::from_secs(300),
        }
    }

    /// A file in `dir` holding `contents`.
    pub(super) fn file(dir: &tempfile::TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub(super) const SECRET: &str = "test-only-secret-0123456789abcdef-0123456789";

    /// An HS256 verifier (the secret is in a file in `dir`).
    fn hs256(dir: &tempfile::TempDir) -> JwtVerifier {
        let path = file(dir, "secret", format!("{SECRET}\n"));
        JwtVerifier::new(vec![settings(
            IssuerKeys::Secret(KeyLocation::File(path)),
            vec![Algorithm::HS256],
        )])
        .unwrap()
    }

    fn hs_sign(claims: &Value) -> String {
        sign(
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
            None,
            claims,
        )
    }

    /// A verifier for one PEM public key.
    pub(super) fn pem_verifier(
        dir: &tempfile::TempDir,
        key: &TestKey,
        algorithms: Vec<Algorithm>,
    ) -> JwtVerifier {
        let path = file(dir, "public.pem", key.pem());
        JwtVerifier::new(vec![settings(IssuerKeys::PublicKeyPem(path), algorithms)]).unwrap()
    }

    pub(super) fn reason(result: Result<Arc<Principal>, AuthError>) -> String {
        match result {
            Err(AuthError::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    pub(super) fn group_names(principal: &Principal) -> Vec<&str> {
        principal.groups.iter().map(|g| &**g).collect()
    }

    #[test]
    fn looks_like_jwt_wants_three_base64url_segments() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"));
        assert!(looks_like_jwt("a-_.b.c"));
        for not in [
            "",
            "a.b",
            "a.b.c.d",
            "a..c",
            ".b.c",
            "a.b.",
            "a.b=.c",
            "a b.c.d",
            "sk_live_abc",
        ] {
            assert!(!looks_like_jwt(not), "{not:?}");
        }
    }

    #[tokio::test]
    async fn hs256_token_is_accepted_with_subject_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let principal = verifier
            .verify(&hs_sign(&claims(
                json!({"groups": ["viewers", "editors", 7]}),
            )))
            .await
            .unwrap();
        assert_eq!(&*principal.name, "alice");
        assert_eq!(group_names(&principal), ["editors", "viewers"]);
        assert_eq!(
            principal.kind,
            PrincipalKind::Jwt {
                issuer: Arc::new(IssuerSource::unnamed(ISS))
            }
        );
        assert_eq!(principal.claims["sub"], "alice");

        let principal = verifier
            .verify(&hs_sign(&claims(json!({"sub": "bob", "groups": "admins"}))))
            .await
            .unwrap();
        assert_eq!(&*principal.name, "bob");
        assert_eq!(group_names(&principal), ["admins"]);

        let principal = verifier
            .verify(&hs_sign(&claims(json!({"sub": "carol"}))))
            .await
            .unwrap();
        assert!(principal.groups.is_empty());
    }

    #[tokio::test]
    async fn subject_and_groups_follow_dotted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "secret", SECRET);
        let mut issuer = settings(
            IssuerKeys::Secret(KeyLocation::File(path)),
            vec![Algorithm::HS256, Algorithm::HS512],
        );
        issuer.subject_claim = "user.email".into();
        issuer.groups_claim = Some("realm_access.roles".into());
        let verifier = JwtVerifier::new(vec![issuer]).unwrap();
        let token = sign(
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS512,
            None,
            &claims(json!({
                "user": {"email": "dana@example.test"},
                "realm_access": {"roles": ["b", "a"]},
            })),
        );
        let principal = verifier.verify(&token).await.unwrap();
        assert_eq!(&*principal.name, "dana@example.test");
        assert_eq!(group_names(&principal), ["a", "b"]);

        // The subject claim is required and must be a string.
        let missing = hs_sign(&claims(json!({"user": {"name": "x"}})));
        assert_eq!(
            reason(verifier.verify(&missing).await),
            "missing claim user.email"
        );
        let number = hs_sign(&claims(json!({"user": {"email": 5}})));
        assert!(reason(verifier.verify(&number).await).contains("not a string"));
    }

    #[tokio::test]
    async fn expiry_and_not_before_are_checked_with_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let expired = hs_sign(&claims(json!({"exp": now() - 120})));
        assert_eq!(reason(verifier.verify(&expired).await), "expired");
        let within_leeway = hs_sign(&claims(json!({"exp": now() - 20})));
        verifier.verify(&within_leeway).await.unwrap();

        let early = hs_sign(&claims(json!({"nbf": now() + 120})));
        assert_eq!(reason(verifier.verify(&early).await), "not valid yet (nbf)");
        let nearly = hs_sign(&claims(json!({"nbf": now() + 20})));
        verifier.verify(&nearly).await.unwrap();

        let no_exp = hs_sign(&claims(json!({"exp": null})));
        assert_eq!(reason(verifier.verify(&no_exp).await), "missing claim exp");
    }

    #[tokio::test]
    async fn wrong_issuer_and_audience_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let stranger = hs_sign(&claims(json!({"iss": "https://evil.test/"})));
        assert_eq!(
            reason(verifier.verify(&stranger).await),
            "issuer \"https://evil.test/\" is not trusted"
        );
        let noisy = hs_sign(&claims(
            json!({"iss": format!("a\nb\u{7}{}", "x".repeat(500))}),
        ));
        let refused = reason(verifier.verify(&noisy).await);
        assert!(refused.starts_with("issuer \"ab"), "{refused}");
        assert!(!refused.chars().any(char::is_control));
        assert!(refused.len() < 140, "{}", refused.len());
        let no_iss = hs_sign(&claims(json!({"iss": null})));
        assert_eq!(reason(verifier.verify(&no_iss).await), "missing claim iss");

        let elsewhere = hs_sign(&claims(json!({"aud": "someone-else"})));
        assert_eq!(reason(verifier.verify(&elsewhere).await), "wrong audience");
        let no_aud = hs_sign(&claims(json!({"aud": null})));
        assert_eq!(reason(verifier.verify(&no_aud).await), "missing claim aud");
        let among = hs_sign(&claims(json!({"aud": ["someone-else", "other-app"]})));
        verifier.verify(&among).await.unwrap();
    }

    #[tokio::test]
    async fn tampered_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let token = hs_sign(&claims(json!({})));
        let (message, signature) = token.rsplit_once('.').unwrap();

        let mut flipped: Vec<u8> = signature.bytes().collect();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let forged = format!("{message}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(reason(verifier.verify(&forged).await), "bad signature");

        let (header, _) = message.split_once('.').unwrap();
        let payload = b64(claims(json!({"sub": "mallory"})).to_string().as_bytes());
        let swapped = format!("{header}.{payload}.{signature}");
        assert_eq!(reason(verifier.verify(&swapped).await), "bad signature");

        let garbage = reason(verifier.verify("not-a-jwt").await);
        assert!(garbage.starts_with("malformed"), "{garbage}");
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(claims(json!({})).to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_eq!(
                reason(verifier.verify(&token).await),
                "algorithm \"none\" is not accepted"
            );
        }
        // A known algorithm in an otherwise unreadable header is not blamed on the algorithm.
        let odd = b64(br#"{"alg":"HS256","kid":5}"#);
        let token = format!("{odd}.{payload}.c2ln");
        assert_eq!(reason(verifier.verify(&token).await), "malformed header");
        assert_eq!(verifier.verifications(), 0);
    }

    #[tokio::test]
    async fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let verifier = pem_verifier(&dir, key, vec![Algorithm::RS256]);
        for secret in [key.pem().into_bytes(), key.spki.clone()] {
            let token = sign(
                &EncodingKey::from_secret(&secret),
                Algorithm::HS256,
                None,
                &claims(json!({})),
            );
            assert_eq!(
                reason(verifier.verify(&token).await),
                "algorithm HS256 is not accepted"
            );
        }
        // An algorithm of the right family that is not pinned is refused by name too.
        let rs384 = sign(&key.encoding, Algorithm::RS384, None, &claims(json!({})));
        assert_eq!(
            reason(verifier.verify(&rs384).await),
            "algorithm RS384 is not accepted"
        );
        assert_eq!(verifier.verifications(), 0);
    }

    #[tokio::test]
    async fn a_second_verify_of_the_same_token_is_a_cache_hit() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = hs256(&dir);
        let token = hs_sign(&claims(json!({})));
        let first = verifier.verify(&token).await.unwrap();
        let second = verifier.verify(&token).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(verifier.verifications(), 1);

        verifier
            .verify(&hs_sign(&claims(json!({"sub": "bob"}))))
            .await
            .unwrap();
        assert_eq!(verifier.verifications(), 2);

        // Refusals are not cached.
        let expired = hs_sign(&claims(json!({"exp": now() - 3600})));
        for _ in 0..2 {
            assert!(verifier.verify(&expired).await.is_err());
        }
        assert_eq!(verifier.verifications(), 4);
    }

    #[test]
    fn the_cache_never_outlives_the_token() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let leeway = Duration::from_secs(60);
        let ttl = Duration::from_secs(300);
        assert_eq!(
            cache_ttl(Some(&json!(1_000_100)), leeway, ttl, now),
            Duration::from_secs(160)
        );
        assert_eq!(cache_ttl(Some(&json!(1_010_000)), leeway, ttl, now), ttl);
        assert_eq!(
            cache_ttl(Some(&json!(999_000)), leeway, ttl, now),
            Duration::ZERO
        );
        assert_eq!(
            cache_ttl(Some(&json!(1_000_100.5)), leeway, ttl, now),
            Duration::from_secs(160)
        );
        assert_eq!(cache_ttl(None, leeway, ttl, now), Duration::ZERO);
    }

    #[test]
    fn errors_name_each_issuer_index() {
        let dir = tempfile::tempdir().unwrap();
        let good = settings(
            IssuerKeys::Secret(KeyLocation::File(file(&dir, "secret", SECRET))),
            vec![Algorithm::HS256],
        );
        let mut bad = good.clone();
        bad.issuer = "https://other.test/".into();
        bad.audiences.clear();
        let errors = JwtVerifier::new(vec![good.clone(), bad, good]).unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|(index, _)| *index).collect();
        assert_eq!(indexes, [1, 2], "{errors:?}");
        assert!(errors[0].1.contains("audience"));
        assert!(errors[1].1.contains("twice"));
    }
}

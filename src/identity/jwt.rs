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

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{AuthError, CredentialHasher, Principal, PrincipalKind, lookup_claim};
use crate::http::client::{self as http_client, ClientOptions, HttpsClient};
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
        url: http::Uri,
        refresh: Duration,
        min_refresh_interval: Duration,
        ca_file: Option<PathBuf>,
    },
}

/// A JWKS fetch gives up after this long.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS document larger than this is refused.
const JWKS_MAX_BYTES: usize = 1 << 20;
/// Verified tokens remembered at most.
const CACHE_CAPACITY: u64 = 100_000;
/// The shortest HMAC secret accepted.
const MIN_SECRET_BYTES: usize = 32;
/// After a failed JWKS fetch, the first retry comes after this long, doubling per failure...
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...up to this (and never later than the issuer's `refresh`).
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Echoed untrusted values (an unknown `iss`) are cut to this many characters.
const ECHO_MAX_CHARS: usize = 100;

/// Verifies JWTs from the configured issuers. Share it in an `Arc`.
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    hasher: CredentialHasher,
    cache: moka::future::Cache<[u8; 32], Cached>,
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
    settings: IssuerSettings,
    validation: Validation,
    keys: KeySource,
}

enum KeySource {
    /// A secret, a PEM key or a JWKS file: read once.
    Fixed(Arc<KeySet>),
    Remote(Box<Remote>),
}

/// A JWKS URL and what was last fetched from it.
struct Remote {
    url: http::Uri,
    refresh: Duration,
    min_refresh_interval: Duration,
    client: HttpsClient,
    /// `None` until a fetch has succeeded.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Completed fetch attempts; bumped after `keys` is updated.
    generation: AtomicU64,
    /// Held while fetching (single flight); holds when an unknown `kid` last caused a fetch.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Verification keys by `kid`.
#[derive(Default)]
struct KeySet {
    by_kid: std::collections::HashMap<String, VerifyKey>,
    /// The key for tokens without a `kid` (or for every token, with `for_any_kid`).
    single: Option<VerifyKey>,
    /// A secret or PEM key: the token's `kid` does not matter.
    for_any_kid: bool,
}

impl KeySet {
    fn only(key: VerifyKey) -> Self {
        Self {
            by_kid: Default::default(),
            single: Some(key),
            for_any_kid: true,
        }
    }

    fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            _ if self.for_any_kid => self.single.as_ref(),
            Some(kid) => self.by_kid.get(kid),
            None => self.single.as_ref(),
        }
    }
}

#[derive(Clone)]
struct VerifyKey {
    key: DecodingKey,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    alg: Option<Algorithm>,
}

/// What a key is, finer than an algorithm family: an EC key has one curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Hmac => alg.family() == AlgorithmFamily::Hmac,
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyKind::Hmac => "an HMAC secret",
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "a P-256 EC key",
            KeyKind::EcP384 => "a P-384 EC key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }
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
                errors.push((
                    index,
                    format!("issuer {:?} is configured twice", settings.issuer),
                ));
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
            jwks_fetches: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
            refresh_spawned: AtomicBool::new(false),
            refresh_tasks: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Start one task per JWKS URL issuer: fetch now, then every `refresh` (sooner after a
    /// failure, keeping the previous keys meanwhile). The tasks end when `stop` resolves or
    /// the verifier is dropped. A second call does nothing.
    pub fn spawn_refresh(self: &Arc<Self>, stop: impl Future<Output = ()> + Send + 'static) {
        let remote: Vec<usize> = (0..self.issuers.len())
            .filter(|&i| matches!(self.issuers[i].keys, KeySource::Remote(_)))
            .collect();
        if remote.is_empty() || self.refresh_spawned.swap(true, Ordering::SeqCst) {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = stop => {
                    let _ = stop_tx.send(true);
                }
                // Every refresh task ended (the verifier was dropped).
                () = stop_tx.closed() => {}
            }
        });
        for index in remote {
            let running = TaskGuard::new(self.refresh_tasks.clone());
            let verifier = Arc::downgrade(self);
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _running = running;
                refresh_loop(verifier, index, stop).await;
            });
        }
    }

    /// Verify a token and name its subject. Repeat calls with the same token are answered
    /// from the cache until the token (or the issuer's `cache_ttl`) expires.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let cache_key = self.hasher.digest(&[token.as_bytes()]);
        if let Some(hit) = self.cache.get(&cache_key).await {
            return Ok(hit.principal);
        }
        match self.verify_uncached(token).await {
            Ok((principal, ttl)) => {
                if !ttl.is_zero() {
                    let cached = Cached {
                        principal: principal.clone(),
                        ttl,
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
                issuer: issuer.name.clone(),
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

    /// Fetch a JWKS because a token named a key it lacks: one fetch at a time, none if another
    /// completed since `seen`, and at most one per `min_refresh_interval`.
    async fn refresh_on_demand(&self, issuer: &Issuer, remote: &Remote, seen: u64) {
        let mut last = remote.fetching.lock().await;
        if remote.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < remote.min_refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_jwks(issuer, remote).await;
    }

    /// One fetch; the caller holds `remote.fetching`. Keeps the previous keys on failure.
    async fn fetch_jwks(&self, issuer: &Issuer, remote: &Remote) -> bool {
        let result =
            http_client::get_bytes(&remote.client, &remote.url, JWKS_TIMEOUT, JWKS_MAX_BYTES)
                .await
                .map_err(|error| error.to_string())
                .and_then(|body| parse_jwks(&body, &issuer.settings.algorithms));
        let ok = match result {
            Ok(keys) => {
                tracing::debug!(
                    issuer = %issuer.name,
                    keys = keys.by_kid.len().max(usize::from(keys.single.is_some())),
                    "fetched the issuer's JWKS"
                );
                *remote
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(keys));
                true
            }
            Err(reason) => {
                tracing::warn!(
                    issuer = %issuer.name,
                    url = %redacted(&remote.url),
                    "cannot fetch the issuer's JWKS: {reason}; keeping the previous keys"
                );
                false
            }
        };
        remote.generation.fetch_add(1, Ordering::Release);
        self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        ok
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

/// Counts a running task until dropped (also when the runtime drops the task).
struct TaskGuard(Arc<AtomicUsize>);

impl TaskGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Refresh one JWKS URL issuer until `stop` or the verifier is gone.
async fn refresh_loop(verifier: Weak<JwtVerifier>, index: usize, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let delay = {
            let Some(verifier) = verifier.upgrade() else {
                return;
            };
            let issuer = &verifier.issuers[index];
            let KeySource::Remote(remote) = &issuer.keys else {
                return;
            };
            let fetched = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                fetched = async {
                    let _flight = remote.fetching.lock().await;
                    verifier.fetch_jwks(issuer, remote).await
                } => fetched,
            };
            if fetched {
                failures = 0;
                remote.refresh
            } else {
                failures = failures.saturating_add(1);
                retry_delay(failures).min(remote.refresh)
            }
        };
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves once stop is signalled (or can no longer be).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// 1 s after the first failure, doubling, at most 30 s.
fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(5);
    (FIRST_RETRY * factor).min(MAX_RETRY)
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

        Ok(Self {
            name: Arc::from(settings.issuer.as_str()),
            settings,
            validation,
            keys,
        })
    }
}

/// Read (or, for a URL, prepare to fetch) an issuer's keys, checking they suit `algorithms`
/// (one family, already checked).
fn load_keys(keys: &IssuerKeys, algorithms: &[Algorithm]) -> Result<KeySource, String> {
    let family = algorithms[0].family();
    let algs = list_algorithms(algorithms);
    if family == AlgorithmFamily::Hmac && !matches!(keys, IssuerKeys::Secret(_)) {
        return Err(format!(
            "{algs} need a shared `secret`, not a public key or JWKS"
        ));
    }
    match keys {
        IssuerKeys::Secret(location) => {
            if family != AlgorithmFamily::Hmac {
                return Err(format!(
                    "{algs} need a public key (PEM or JWKS); a `secret` is only for HS256, HS384 or HS512"
                ));
            }
            let key = read_secret(location)?;
            Ok(KeySource::Fixed(Arc::new(KeySet::only(key))))
        }
        IssuerKeys::PublicKeyPem(path) => {
            let pem = std::fs::read(path)
                .map_err(|error| format!("cannot read public key {}: {error}", path.display()))?;
            let (key, kind) = parse_public_key_pem(&pem)
                .map_err(|reason| format!("public key {}: {reason}", path.display()))?;
            if let Some(alg) = algorithms.iter().find(|alg| !kind.accepts(**alg)) {
                return Err(format!(
                    "public key {} is {}, which cannot verify {alg:?}",
                    path.display(),
                    kind.describe()
                ));
            }
            Ok(KeySource::Fixed(Arc::new(KeySet::only(VerifyKey {
                key,
                kind,
                alg: None,
            }))))
        }
        IssuerKeys::JwksFile(path) => {
            let body = std::fs::read(path)
                .map_err(|error| format!("cannot read JWKS file {}: {error}", path.display()))?;
            let keys = parse_jwks(&body, algorithms)
                .map_err(|reason| format!("JWKS file {}: {reason}", path.display()))?;
            Ok(KeySource::Fixed(Arc::new(keys)))
        }
        IssuerKeys::JwksUrl {
            url,
            refresh,
            min_refresh_interval,
            ca_file,
        } => {
            if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
                return Err(format!(
                    "the JWKS URL {} is not an http(s) URL",
                    redacted(url)
                ));
            }
            if refresh.is_zero() {
                return Err("the JWKS `refresh` interval must be positive".into());
            }
            let client = http_client::build(&ClientOptions {
                extra_ca_file: ca_file.clone(),
                ..ClientOptions::default()
            })
            .map_err(|error| error.to_string())?;
            Ok(KeySource::Remote(Box::new(Remote {
                url: url.clone(),
                refresh: *refresh,
                min_refresh_interval: *min_refresh_interval,
                client,
                keys: RwLock::new(None),
                generation: AtomicU64::new(0),
                fetching: tokio::sync::Mutex::new(None),
            })))
        }
    }
}

/// An HMAC secret from a file or an environment variable, trailing newlines trimmed.
fn read_secret(location: &KeyLocation) -> Result<VerifyKey, String> {
    let (mut bytes, source) = match location {
        KeyLocation::File(path) => (
            std::fs::read(path)
                .map_err(|error| format!("cannot read secret file {}: {error}", path.display()))?,
            format!("secret file {}", path.display()),
        ),
        KeyLocation::Env(var) => (
            std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set or not UTF-8"))?
                .into_bytes(),
            format!("environment variable {var}"),
        ),
    };
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        let length = bytes.len();
        bytes.fill(0);
        return Err(format!(
            "the {source} holds {length} bytes; an HMAC secret needs at least {MIN_SECRET_BYTES}"
        ));
    }
    let key = DecodingKey::from_secret(&bytes);
    bytes.fill(0);
    Ok(VerifyKey {
        key,
        kind: KeyKind::Hmac,
        alg: None,
    })
}

/// A public key from PEM: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, P-256, P-384, Ed25519)
/// or `RSA PUBLIC KEY` (PKCS#1).
fn parse_public_key_pem(pem: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    let (label, der) = first_pem_block(pem)?;
    match label.as_str() {
        "PUBLIC KEY" => parse_spki(&der),
        "RSA PUBLIC KEY" => {
            check_rsa_public_key(&der)?;
            Ok((DecodingKey::from_rsa_der(&der), KeyKind::Rsa))
        }
        "CERTIFICATE" => Err(
            "holds a certificate, not a public key (extract it: `openssl x509 -pubkey -noout`)"
                .into(),
        ),
        label if label.contains("PRIVATE KEY") => {
            Err("holds a private key; give the issuer's public key (`openssl pkey -pubout`)".into())
        }
        other => Err(format!(
            "holds a PEM \"{}\" block, not a PUBLIC KEY",
            echo(other, 40)
        )),
    }
}

/// The label and decoded contents of the first PEM block.
fn first_pem_block(pem: &[u8]) -> Result<(String, Vec<u8>), String> {
    const NOT_PEM: &str = "not a PEM file (expected -----BEGIN PUBLIC KEY-----)";
    let text = std::str::from_utf8(pem).map_err(|_| NOT_PEM.to_string())?;
    let start = text.find("-----BEGIN ").ok_or(NOT_PEM)?;
    let after = &text[start + "-----BEGIN ".len()..];
    let label_end = after.find("-----").ok_or(NOT_PEM)?;
    let label = &after[..label_end];
    let body = &after[label_end + "-----".len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body
        .find(&end_marker)
        .ok_or_else(|| format!("the PEM block has no {}", echo(&end_marker, 60)))?;
    let base64: String = body[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| "the PEM block is not valid base64".to_string())?;
    Ok((label.to_string(), der))
}

/// DER object identifiers (contents only).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A SubjectPublicKeyInfo, as the key bytes jsonwebtoken expects for its kind.
fn parse_spki(der: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    const MALFORMED: &str = "the public key is not valid DER SubjectPublicKeyInfo";
    let (spki, rest) = der_expect(der, 0x30).ok_or(MALFORMED)?;
    if !rest.is_empty() {
        return Err(MALFORMED.into());
    }
    let (algorithm, rest) = der_expect(spki, 0x30).ok_or(MALFORMED)?;
    let (bits, rest) = der_expect(rest, 0x03).ok_or(MALFORMED)?;
    if !rest.is_empty() {
        return Err(MALFORMED.into());
    }
    let (oid, parameters) = der_expect(algorithm, 0x06).ok_or(MALFORMED)?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(MALFORMED.into()),
    };
    if oid == OID_RSA_ENCRYPTION {
        check_rsa_public_key(key)?;
        Ok((DecodingKey::from_rsa_der(key), KeyKind::Rsa))
    } else if oid == OID_EC_PUBLIC_KEY {
        let (curve, _) = der_expect(parameters, 0x06).ok_or(MALFORMED)?;
        let (kind, length) = if curve == OID_P256 {
            (KeyKind::EcP256, 65)
        } else if curve == OID_P384 {
            (KeyKind::EcP384, 97)
        } else {
            return Err("an EC key on an unsupported curve (use P-256 or P-384)".into());
        };
        if key.len() != length || key[0] != 0x04 {
            return Err("the EC public key is not an uncompressed point".into());
        }
        Ok((DecodingKey::from_ec_der(key), kind))
    } else if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err("the Ed25519 public key is not 32 bytes".into());
        }
        Ok((DecodingKey::from_ed_der(key), KeyKind::Ed25519))
    } else {
        Err("an unsupported key type (use RSA, EC P-256/P-384 or Ed25519)".into())
    }
}

fn check_rsa_public_key(pkcs1: &[u8]) -> Result<(), String> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(pkcs1)
        .map_err(|_| "not a valid RSA public key".to_string())?;
    if key.modulus_len() < 256 {
        return Err(format!(
            "the RSA key has {} bits; at least 2048 are required",
            key.modulus_len() * 8
        ));
    }
    Ok(())
}

/// One DER element with tag `tag`: its contents and what follows it.
fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 3 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some(rest.split_at(length))
}

/// The keys of a JWKS document that can verify some of `algorithms`. Keys for other
/// families, encryption keys, and keys that do not parse are skipped; none left is an error.
fn parse_jwks(body: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|error| format!("not a JWKS document ({error})"))?;
    let mut usable: Vec<(Option<String>, VerifyKey)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (position, value) in document.keys.into_iter().enumerate() {
        let label = value.get("kid").and_then(Value::as_str).map_or_else(
            || format!("key {}", position + 1),
            |kid| format!("kid {}", echo(kid, 40)),
        );
        match jwk_to_key(value, algorithms) {
            Ok((kid, key)) => usable.push((kid, key)),
            Err(reason) => {
                tracing::debug!("JWKS {label} skipped: {reason}");
                skipped.push(format!("{label}: {reason}"));
            }
        }
    }
    if usable.is_empty() {
        let mut message = format!("no key usable for {}", list_algorithms(algorithms));
        if !skipped.is_empty() {
            let shown: Vec<&str> = skipped.iter().take(3).map(String::as_str).collect();
            message.push_str(&format!(" ({})", shown.join("; ")));
        }
        return Err(message);
    }
    let mut keys = KeySet::default();
    if usable.len() == 1 && usable[0].0.is_none() {
        keys.single = usable.pop().map(|(_, key)| key);
        return Ok(keys);
    }
    for (kid, key) in usable {
        match kid {
            Some(kid) => {
                keys.by_kid.entry(kid).or_insert(key);
            }
            None => tracing::debug!("a JWKS key without `kid` among several is ignored"),
        }
    }
    Ok(keys)
}

fn jwk_to_key(
    value: Value,
    algorithms: &[Algorithm],
) -> Result<(Option<String>, VerifyKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a valid JWK".to_string())?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return Err("not a signature key (`use`)".into());
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(named) => {
            let alg = Algorithm::try_from(named)
                .map_err(|_| format!("algorithm {named} is not a signature algorithm"))?;
            if !algorithms.contains(&alg) {
                return Err(format!("algorithm {alg:?} is not accepted"));
            }
            Some(alg)
        }
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err("an EC key on an unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (HMAC secrets are never taken from a JWKS)".into());
        }
        _ => return Err("an unsupported key type".into()),
    };
    if !algorithms.iter().any(|alg| kind.accepts(*alg)) {
        return Err(format!(
            "{} cannot verify {}",
            kind.describe(),
            list_algorithms(algorithms)
        ));
    }
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|_| "the key material does not decode".to_string())?;
    let sane = match (kind, key.kind()) {
        (KeyKind::Rsa, DecodingKeyKind::RsaModulusExponent { n, .. }) => {
            n.iter().skip_while(|byte| **byte == 0).count() >= 256
        }
        (KeyKind::EcP256, DecodingKeyKind::SecretOrDer(point)) => point.len() == 65,
        (KeyKind::EcP384, DecodingKeyKind::SecretOrDer(point)) => point.len() == 97,
        (KeyKind::Ed25519, DecodingKeyKind::SecretOrDer(x)) => x.len() == 32,
        _ => false,
    };
    if !sane {
        return Err(match kind {
            KeyKind::Rsa => "an RSA key shorter than 2048 bits".into(),
            _ => "the key material has the wrong length".into(),
        });
    }
    Ok((jwk.common.key_id, VerifyKey { key, kind, alg }))
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
fn echo(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

fn list_algorithms(algorithms: &[Algorithm]) -> String {
    let names: Vec<String> = algorithms.iter().map(|alg| format!("{alg:?}")).collect();
    names.join(", ")
}

/// A URL for logs: scheme, host and path, without a query that could hold a secret.
fn redacted(url: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("?"),
        url.authority().map_or("?", |authority| authority.as_str()),
        url.path()
    )
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

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, OnceLock};

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _,
    };
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::http::client::test_support::{TestCa, TestServer, respond, serve};

    const ISS: &str = "https://idp.test/";
    const AUD: &str = "streamgate";
    /// Bounded waits: at most this many polls of `POLL` each.
    const POLLS: usize = 1000;
    const POLL: Duration = Duration::from_millis(10);

    /// A signing key and its public forms.
    struct TestKey {
        encoding: EncodingKey,
        /// SubjectPublicKeyInfo DER.
        spki: Vec<u8>,
        /// The public JWK, without `kid`.
        jwk: Value,
    }

    impl TestKey {
        fn pem(&self) -> String {
            pem("PUBLIC KEY", &self.spki)
        }

        fn jwk_with(&self, kid: &str) -> Value {
            let mut jwk = self.jwk.clone();
            jwk["kid"] = json!(kid);
            jwk
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    use crate::test_support::pem;

    /// The RSAPrivateKey inside a PKCS#8 document (jsonwebtoken signs with PKCS#1).
    fn pkcs8_rsa_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
        let (info, _) = der_expect(pkcs8, 0x30).unwrap();
        let (_version, rest) = der_expect(info, 0x02).unwrap();
        let (_algorithm, rest) = der_expect(rest, 0x30).unwrap();
        let (key, _) = der_expect(rest, 0x04).unwrap();
        key.to_vec()
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
    fn rsa_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(new_rsa_key)
    }

    fn other_rsa_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(new_rsa_key)
    }

    fn ec_key(p384: bool) -> TestKey {
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

    fn ed_key() -> TestKey {
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
    fn claims(extra: Value) -> Value {
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

    fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn settings(keys: IssuerKeys, algorithms: Vec<Algorithm>) -> IssuerSettings {
        IssuerSettings {
            issuer: ISS.into(),
            audiences: vec![AUD.into(), "other-app".into()],
            algorithms,
            keys,
            leeway: Duration::from_secs(60),
            cookie: None,
            subject_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            cache_ttl: Duration::from_secs(300),
        }
    }

    /// A file in `dir` holding `contents`.
    fn file(dir: &tempfile::TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    const SECRET: &str = "test-only-secret-0123456789abcdef-0123456789";

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
    fn pem_verifier(
        dir: &tempfile::TempDir,
        key: &TestKey,
        algorithms: Vec<Algorithm>,
    ) -> JwtVerifier {
        let path = file(dir, "public.pem", key.pem());
        JwtVerifier::new(vec![settings(IssuerKeys::PublicKeyPem(path), algorithms)]).unwrap()
    }

    fn reason(result: Result<Arc<Principal>, AuthError>) -> String {
        match result {
            Err(AuthError::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    fn group_names(principal: &Principal) -> Vec<&str> {
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
        assert_eq!(principal.kind, PrincipalKind::Jwt { issuer: ISS.into() });
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
    async fn rs256_and_ps256_tokens_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let verifier = pem_verifier(&dir, key, vec![Algorithm::RS256, Algorithm::PS256]);
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = sign(
                &key.encoding,
                alg,
                Some("any"),
                &claims(json!({"groups": "g"})),
            );
            let principal = verifier.verify(&token).await.unwrap();
            assert_eq!(&*principal.name, "alice", "{alg:?}");
            assert_eq!(group_names(&principal), ["g"]);
        }
    }

    #[tokio::test]
    async fn es256_es384_and_eddsa_tokens_are_accepted() {
        let cases = [
            (ec_key(false), Algorithm::ES256),
            (ec_key(true), Algorithm::ES384),
            (ed_key(), Algorithm::EdDSA),
        ];
        for (key, alg) in cases {
            let dir = tempfile::tempdir().unwrap();
            let verifier = pem_verifier(&dir, &key, vec![alg]);
            let token = sign(&key.encoding, alg, None, &claims(json!({"groups": ["x"]})));
            let principal = verifier.verify(&token).await.unwrap();
            assert_eq!(&*principal.name, "alice", "{alg:?}");
            assert_eq!(group_names(&principal), ["x"]);
        }
    }

    #[tokio::test]
    async fn a_pkcs1_rsa_public_key_pem_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let (spki, _) = der_expect(&key.spki, 0x30).unwrap();
        let (_, rest) = der_expect(spki, 0x30).unwrap();
        let (bits, _) = der_expect(rest, 0x03).unwrap();
        let path = file(&dir, "rsa.pem", pem("RSA PUBLIC KEY", &bits[1..]));
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::PublicKeyPem(path),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let token = sign(&key.encoding, Algorithm::RS256, None, &claims(json!({})));
        verifier.verify(&token).await.unwrap();
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

    #[tokio::test]
    async fn a_jwks_file_serves_keys_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (rsa_key(), other_rsa_key());
        let ec = ec_key(false);
        let document = json!({"keys": [
            one.jwk_with("one"),
            two.jwk_with("two"),
            ec.jwk_with("ec-is-skipped"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct-is-skipped"},
        ]});
        let path = file(&dir, "jwks.json", document.to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let by_two = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("two"),
            &claims(json!({})),
        );
        verifier.verify(&by_two).await.unwrap();

        let wrong_kid = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("one"),
            &claims(json!({})),
        );
        assert_eq!(reason(verifier.verify(&wrong_kid).await), "bad signature");
        let unknown = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("three"),
            &claims(json!({})),
        );
        assert_eq!(reason(verifier.verify(&unknown).await), "unknown key id");
        let no_kid = sign(&two.encoding, Algorithm::RS256, None, &claims(json!({})));
        assert!(reason(verifier.verify(&no_kid).await).contains("no key id"));
    }

    #[tokio::test]
    async fn a_jwks_with_one_key_without_kid_serves_tokens_without_kid() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed_key();
        let path = file(&dir, "jwks.json", json!({"keys": [key.jwk]}).to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::EdDSA],
        )])
        .unwrap();
        let token = sign(&key.encoding, Algorithm::EdDSA, None, &claims(json!({})));
        verifier.verify(&token).await.unwrap();
    }

    #[tokio::test]
    async fn a_jwk_that_names_its_alg_verifies_only_that_alg() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let mut jwk = key.jwk_with("k");
        jwk["alg"] = json!("RS256");
        let path = file(&dir, "jwks.json", json!({"keys": [jwk]}).to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::RS256, Algorithm::PS256],
        )])
        .unwrap();
        let rs = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );
        verifier.verify(&rs).await.unwrap();
        let ps = sign(
            &key.encoding,
            Algorithm::PS256,
            Some("k"),
            &claims(json!({})),
        );
        assert_eq!(
            reason(verifier.verify(&ps).await),
            "algorithm does not match the key"
        );
    }

    fn error_for(issuer: IssuerSettings) -> String {
        let errors = JwtVerifier::new(vec![issuer]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, 0);
        errors[0].1.clone()
    }

    #[test]
    fn bad_key_material_is_reported_by_file_or_variable_without_contents() {
        let dir = tempfile::tempdir().unwrap();
        let short = file(&dir, "short-secret", "hunter2-is-short\n");
        let message = error_for(settings(
            IssuerKeys::Secret(KeyLocation::File(short.clone())),
            vec![Algorithm::HS256],
        ));
        assert!(message.contains("short-secret"), "{message}");
        assert!(
            message.contains("16 bytes") && message.contains("32"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        let message = error_for(settings(
            IssuerKeys::Secret(KeyLocation::Env(
                "STREAMGATE_TEST_ONLY_UNSET_VARIABLE".into(),
            )),
            vec![Algorithm::HS256],
        ));
        assert!(
            message.contains("STREAMGATE_TEST_ONLY_UNSET_VARIABLE"),
            "{message}"
        );

        let missing = dir.path().join("missing.pem");
        let message = error_for(settings(
            IssuerKeys::PublicKeyPem(missing),
            vec![Algorithm::RS256],
        ));
        assert!(message.contains("missing.pem"), "{message}");

        let private = file(
            &dir,
            "private.pem",
            pem("PRIVATE KEY", b"test-only-not-a-key"),
        );
        let message = error_for(settings(
            IssuerKeys::PublicKeyPem(private),
            vec![Algorithm::RS256],
        ));
        assert!(message.contains("private key"), "{message}");

        let empty = file(&dir, "empty.json", r#"{"keys": []}"#);
        let message = error_for(settings(
            IssuerKeys::JwksFile(empty),
            vec![Algorithm::RS256],
        ));
        assert!(
            message.contains("empty.json") && message.contains("no key usable"),
            "{message}"
        );
    }

    #[test]
    fn algorithms_must_be_one_family_matching_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = IssuerKeys::Secret(KeyLocation::File(file(&dir, "secret", SECRET)));
        let rsa = IssuerKeys::PublicKeyPem(file(&dir, "rsa.pem", rsa_key().pem()));
        let p256 = IssuerKeys::PublicKeyPem(file(&dir, "p256.pem", ec_key(false).pem()));
        let jwks = IssuerKeys::JwksFile(file(
            &dir,
            "jwks.json",
            json!({"keys": [rsa_key().jwk_with("k")]}).to_string(),
        ));

        let cases = [
            (secret.clone(), vec![Algorithm::RS256], "need a public key"),
            (rsa.clone(), vec![Algorithm::HS256], "shared `secret`"),
            (jwks.clone(), vec![Algorithm::HS256], "shared `secret`"),
            (
                rsa.clone(),
                vec![Algorithm::RS256, Algorithm::ES256],
                "mix key types",
            ),
            (rsa.clone(), vec![Algorithm::ES256], "cannot verify ES256"),
            (
                p256.clone(),
                vec![Algorithm::ES256, Algorithm::ES384],
                "cannot verify ES384",
            ),
            (p256, vec![Algorithm::EdDSA], "cannot verify EdDSA"),
            (jwks, vec![Algorithm::ES256], "no key usable"),
            (secret, vec![], "no algorithms"),
        ];
        for (keys, algorithms, expected) in cases {
            let message = error_for(settings(keys, algorithms.clone()));
            assert!(message.contains(expected), "{algorithms:?}: {message}");
        }

        // Secrets: trailing newlines are not part of the secret; 32 bytes are enough.
        let exact = file(&dir, "exact", format!("{}\r\n", &SECRET[..32]));
        JwtVerifier::new(vec![settings(
            IssuerKeys::Secret(KeyLocation::File(exact)),
            vec![Algorithm::HS256, Algorithm::HS384],
        )])
        .unwrap();
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

    /// What a test JWKS endpoint answers.
    struct Endpoint {
        status: u16,
        body: String,
    }

    fn jwks_body(keys: &[(&TestKey, &str)]) -> String {
        let keys: Vec<Value> = keys.iter().map(|(key, kid)| key.jwk_with(kid)).collect();
        json!({ "keys": keys }).to_string()
    }

    async fn jwks_server(
        tls: Option<Arc<rustls::ServerConfig>>,
        body: String,
    ) -> (TestServer, Arc<Mutex<Endpoint>>) {
        let endpoint = Arc::new(Mutex::new(Endpoint { status: 200, body }));
        let state = endpoint.clone();
        let server = serve(
            tls,
            Arc::new(move |_request| {
                let endpoint = state.lock().unwrap();
                respond(endpoint.status, endpoint.body.clone())
            }),
        )
        .await;
        (server, endpoint)
    }

    fn jwks_url(
        scheme: &str,
        server: &TestServer,
        refresh: Duration,
        ca_file: Option<PathBuf>,
    ) -> IssuerKeys {
        IssuerKeys::JwksUrl {
            url: format!("{scheme}://{}/.well-known/jwks.json", server.addr)
                .parse()
                .unwrap(),
            refresh,
            min_refresh_interval: Duration::from_secs(3600),
            ca_file,
        }
    }

    /// Wait (bounded) until `verifier` has completed `fetches` JWKS fetches.
    async fn wait_for_fetches(verifier: &JwtVerifier, fetches: u64) {
        for _ in 0..POLLS {
            if verifier.jwks_fetches() >= fetches {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "only {} JWKS fetches, expected {fetches}",
            verifier.jwks_fetches()
        );
    }

    fn stop_signal() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_jwks_once_for_many_requests() {
        let (one, two) = (rsa_key(), other_rsa_key());
        let (server, endpoint) = jwks_server(None, jwks_body(&[(one, "one")])).await;
        let verifier = Arc::new(
            JwtVerifier::new(vec![settings(
                jwks_url("http", &server, Duration::from_secs(3600), None),
                vec![Algorithm::RS256],
            )])
            .unwrap(),
        );
        let (stop, stop_future) = stop_signal();
        verifier.spawn_refresh(stop_future);
        wait_for_fetches(&verifier, 1).await;
        let by_one = sign(
            &one.encoding,
            Algorithm::RS256,
            Some("one"),
            &claims(json!({})),
        );
        verifier.verify(&by_one).await.unwrap();
        assert_eq!(server.hits(), 1);

        // The provider rotates in a new key; 20 concurrent requests name it.
        endpoint.lock().unwrap().body = jwks_body(&[(one, "one"), (two, "two")]);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let verifier = verifier.clone();
            let token = sign(
                &two.encoding,
                Algorithm::RS256,
                Some("two"),
                &claims(json!({"sub": format!("user-{i}")})),
            );
            tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(verifier.jwks_fetches(), 2);
        assert_eq!(server.hits(), 2);

        // A kid the provider does not have: refused, and no refetch within the cooldown.
        for i in 0..20 {
            let token = sign(
                &two.encoding,
                Algorithm::RS256,
                Some("three"),
                &claims(json!({"sub": format!("user-{i}")})),
            );
            assert_eq!(reason(verifier.verify(&token).await), "unknown key id");
        }
        assert_eq!(verifier.jwks_fetches(), 2);
        assert_eq!(server.hits(), 2);
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn known_kids_keep_verifying_while_the_jwks_endpoint_is_down() {
        let key = rsa_key();
        let (server, endpoint) = jwks_server(None, jwks_body(&[(key, "k")])).await;
        let verifier = Arc::new(
            JwtVerifier::new(vec![settings(
                jwks_url("http", &server, Duration::from_millis(20), None),
                vec![Algorithm::RS256],
            )])
            .unwrap(),
        );
        let (stop, stop_future) = stop_signal();
        verifier.spawn_refresh(stop_future);
        wait_for_fetches(&verifier, 1).await;
        let token = |sub: &str| {
            sign(
                &key.encoding,
                Algorithm::RS256,
                Some("k"),
                &claims(json!({"sub": sub})),
            )
        };
        verifier.verify(&token("before")).await.unwrap();

        endpoint.lock().unwrap().status = 503;
        let fetched = verifier.jwks_fetches();
        wait_for_fetches(&verifier, fetched + 3).await;
        let principal = verifier.verify(&token("during")).await.unwrap();
        assert_eq!(&*principal.name, "during");
        assert_eq!(verifier.verifications(), 2);

        // Stopping ends the refresh task.
        assert_eq!(verifier.refresh_tasks.load(Ordering::SeqCst), 1);
        let _ = stop.send(());
        for _ in 0..POLLS {
            if verifier.refresh_tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the refresh task did not stop");
    }

    #[tokio::test]
    async fn without_any_fetched_keys_the_answer_is_keys_unavailable() {
        let key = rsa_key();
        let (server, endpoint) = jwks_server(None, jwks_body(&[(key, "k")])).await;
        endpoint.lock().unwrap().status = 500;
        let verifier = JwtVerifier::new(vec![settings(
            jwks_url("http", &server, Duration::from_secs(3600), None),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let token = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );
        for _ in 0..5 {
            assert_eq!(
                verifier.verify(&token).await.unwrap_err(),
                AuthError::KeysUnavailable
            );
        }
        // One on-demand attempt; the rest wait for the cooldown.
        assert_eq!(verifier.jwks_fetches(), 1);
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn keys_are_fetched_on_demand_before_spawn_refresh() {
        let key = ec_key(false);
        let (server, _endpoint) = jwks_server(None, jwks_body(&[(&key, "ec")])).await;
        let verifier = JwtVerifier::new(vec![settings(
            jwks_url("http", &server, Duration::from_secs(3600), None),
            vec![Algorithm::ES256],
        )])
        .unwrap();
        let token = sign(
            &key.encoding,
            Algorithm::ES256,
            Some("ec"),
            &claims(json!({})),
        );
        verifier.verify(&token).await.unwrap();
        assert_eq!(verifier.jwks_fetches(), 1);
    }

    #[tokio::test]
    async fn a_jwks_over_https_is_trusted_through_the_issuer_ca_file() {
        let key = rsa_key();
        let ca = TestCa::new();
        let ca_file = ca.ca_file();
        let (server, _endpoint) =
            jwks_server(Some(ca.server_config.clone()), jwks_body(&[(key, "k")])).await;
        let token = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );

        let trusting = JwtVerifier::new(vec![settings(
            jwks_url(
                "https",
                &server,
                Duration::from_secs(3600),
                Some(ca_file.path().into()),
            ),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        trusting.verify(&token).await.unwrap();

        let untrusting = JwtVerifier::new(vec![settings(
            jwks_url("https", &server, Duration::from_secs(3600), None),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        assert_eq!(
            untrusting.verify(&token).await.unwrap_err(),
            AuthError::KeysUnavailable
        );
        assert_eq!(server.hits(), 1);
    }
}

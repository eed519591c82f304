//! Turning claims into a signed Stream token, off the async reactor and with bounded
//! concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::{Mutex, OnceLock};

use http::HeaderMap;

use tokio::sync::{mpsc, oneshot};

use super::claims::{Claims, TokenSettings, Validity, VideoUid};
use super::keys::SigningKey;
use crate::secret::Secret;

/// Why a token could not be signed. These are server faults (500), never the client's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    #[error("RSA signing failed")]
    Crypto,
    #[error("the signing task failed: {0}")]
    Task(String),
    /// The signing queue did not get to it within the request timeout.
    #[error("no signature within {0:?}")]
    TimedOut(std::time::Duration),
}

/// A signed token and what the cache needs to know about it.
#[derive(Debug)]
pub struct IssuedToken {
    /// The JWT; a secret that must never be logged.
    pub token: Secret<String>,
    /// Unix second at which Stream stops accepting it.
    pub expires_at: u64,
    /// The player redirect's response headers (`Location: <origin>/<token>/iframe` and
    /// those that go with it), with the origin they were built for: made on the first
    /// redirect and copied by every later one (a cache hit then copies no token, validates
    /// no header bytes and hashes no header name). Carries the token, so it is a secret too.
    player_redirect: OnceLock<Secret<(Box<str>, HeaderMap)>>,
    /// The id of the key that signed it (empty for tokens made outside a signer).
    pub key_id: Box<str>,
    /// What the audit trail says of it, made on its first event.
    audit: OnceLock<AuditId>,
    /// Whether a request has been given it already (later ones reuse it).
    handed_out: AtomicBool,
    /// Which signing this is: shared by the token's copies, different for every token made
    /// (two signings of the same claims in the same second give equal strings).
    serial: u64,
}

/// The next [`IssuedToken`]'s serial.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);

/// How the audit trail names a token without revealing it: the first 12 hex digits of the
/// SHA-256 of the token, and its expiry in RFC 3339.
#[derive(Debug, Clone)]
pub struct AuditId {
    pub id: String,
    pub expires: String,
    /// `"token_id":<id>,"key_id":<key id>,"expires":<expires>`, the token's part of an audit
    /// event as JSON members.
    pub json: String,
}

impl IssuedToken {
    pub fn new(token: String, expires_at: u64) -> Self {
        Self {
            token: Secret::new(token),
            expires_at,
            player_redirect: OnceLock::new(),
            key_id: Box::default(),
            audit: OnceLock::new(),
            handed_out: AtomicBool::new(false),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// This token, signed by the key `key_id`.
    pub fn signed_by(mut self, key_id: &str) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// A copy of this token for one thread's own use (see the token cache's hot slots): the
    /// same token, whose reference count and redirect headers that thread alone writes. The
    /// hand-out it is made for is this token's first if this token was never handed out;
    /// every later one is a reuse.
    pub fn copy_for_thread(&self) -> Self {
        let first = self.first_hand_out();
        let audit = OnceLock::new();
        if let Some(id) = self.audit.get() {
            let _ = audit.set(id.clone());
        }
        Self {
            token: Secret::new(self.token.expose().clone()),
            expires_at: self.expires_at,
            player_redirect: OnceLock::new(),
            key_id: self.key_id.clone(),
            audit,
            handed_out: AtomicBool::new(!first),
            serial: self.serial,
        }
    }

    /// Whether `self` and `other` are the same token (one may be the other's copy), not
    /// merely equal strings.
    pub fn same_as(&self, other: &IssuedToken) -> bool {
        self.serial == other.serial
    }

    /// The token's id and expiry for the audit trail, computed once.
    pub fn audit_id(&self) -> &AuditId {
        self.audit.get_or_init(|| {
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                self.token.expose().as_bytes(),
            );
            // Built once per token, on a miss's path: hex from a table, not a `format!` per
            // byte.
            let id = crate::hex::encode(&digest.as_ref()[..6]);
            let expires = humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(self.expires_at),
            )
            .to_string();
            let key_id = serde_json::to_string(&*self.key_id).unwrap_or_default();
            let json = format!(r#""token_id":"{id}","key_id":{key_id},"expires":"{expires}""#);
            AuditId { id, expires, json }
        })
    }

    /// `true` the first time a request is given this token, `false` after: whether it was
    /// minted for this request or reused. One read and no write once it has been handed out.
    pub fn first_hand_out(&self) -> bool {
        !self.handed_out.load(Ordering::Relaxed) && !self.handed_out.swap(true, Ordering::Relaxed)
    }

    /// The response headers of a redirect to the player on `origin` with this token, built
    /// by `build` the first time (for the first origin asked; another origin is built anew
    /// each time).
    pub fn player_redirect(
        &self,
        origin: &str,
        build: impl FnOnce() -> Option<HeaderMap>,
    ) -> Option<HeaderMap> {
        if let Some(cached) = self.player_redirect.get() {
            let (cached_origin, headers) = cached.expose();
            return if **cached_origin == *origin {
                Some(headers.clone())
            } else {
                build()
            };
        }
        let headers = build()?;
        let _ = self
            .player_redirect
            .set(Secret::new((origin.into(), headers.clone())));
        Some(headers)
    }

    /// How long from now the token is still valid (zero once expired).
    pub fn remaining(&self) -> Duration {
        Clock::System.until(self.expires_at)
    }
}

/// What the signing threads share: the keys and the signature counter.
struct SigningCore {
    active: Arc<SigningKey>,
    keys: Vec<Arc<SigningKey>>,
    nbf_backdate: Duration,
    signatures: AtomicU64,
    /// What `nbf` and `exp` count from.
    clock: Clock,
}

impl SigningCore {
    fn sign(
        &self,
        uid: &VideoUid,
        settings: &TokenSettings,
        validity: Option<Validity>,
    ) -> Result<IssuedToken, SignError> {
        let claims = match validity {
            Some(validity) => Claims::with_validity(uid, self.active.id(), settings, validity),
            None => Claims::build(
                uid,
                self.active.id(),
                settings,
                self.clock.now(),
                self.nbf_backdate,
            ),
        };
        let token = sign_jws(&self.active, &claims)?;
        self.signatures.fetch_add(1, Ordering::Relaxed);
        Ok(IssuedToken::new(token, claims.exp).signed_by(self.active.id()))
    }
}

/// One signature to make, and where to send it.
struct Job {
    uid: VideoUid,
    settings: Arc<TokenSettings>,
    /// Exact times, or `None` for `now + ttl` and the configured `nbf` backdate.
    validity: Option<Validity>,
    reply: oneshot::Sender<Result<IssuedToken, SignError>>,
}

/// How many signatures may wait for a signing thread before callers wait to enqueue.
const QUEUE_CAPACITY: usize = 1024;

/// Signs tokens with the active key on a small pool of dedicated threads, and on the async
/// workers while one of them at least stays free.
///
/// RSA signing is CPU-bound (about 0.4 ms a token). On the async workers alone, a burst of
/// misses would hold every other connection behind it: each worker's queue fills with misses.
/// So signatures go to dedicated threads fed by a queue (at most one in flight per thread),
/// except that a worker may sign a miss itself while fewer than `workers - 1` other workers
/// are signing: handing a signature to a thread and being woken for its result costs a miss
/// about a tenth of its CPU, and with one worker always free the cached hits keep flowing
/// (README "Benchmarks" has the measurements). A runtime with one worker never signs on it.
/// The threads exit when the `Signer` is dropped.
pub struct Signer {
    core: Arc<SigningCore>,
    jobs: mpsc::Sender<Job>,
    /// Signatures being made on async workers now.
    inline: AtomicUsize,
    /// Signatures made on async workers so far.
    inline_signed: AtomicU64,
    /// The most made on async workers at once so far.
    inline_peak: AtomicUsize,
    /// How many may be (the runtime's workers minus one), learned at the first signature.
    inline_limit: OnceLock<usize>,
}

/// Gives an async worker's signing turn back when dropped.
struct InlineTurn<'a>(&'a AtomicUsize);

impl Drop for InlineTurn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Signer {
    /// `keys[0]` signs new tokens; `threads` signing threads (min 1), plus the runtime's
    /// workers but one, bound the signatures in flight.
    ///
    /// # Panics
    /// When `keys` is empty (configuration validation guarantees at least one key) or a
    /// thread cannot be spawned.
    pub fn new(keys: Vec<SigningKey>, nbf_backdate: Duration, threads: usize) -> Self {
        Self::with_clock(keys, nbf_backdate, threads, Clock::System)
    }

    /// [`Signer::new`], stamping tokens with the time `clock` tells (a [`TokenCache`] in
    /// front of this signer judges their life by the same clock).
    ///
    /// [`TokenCache`]: crate::cache::TokenCache
    pub fn with_clock(
        keys: Vec<SigningKey>,
        nbf_backdate: Duration,
        threads: usize,
        clock: Clock,
    ) -> Self {
        let keys: Vec<Arc<SigningKey>> = keys.into_iter().map(Arc::new).collect();
        let active = Arc::clone(keys.first().expect("at least one signing key"));
        let core = Arc::new(SigningCore {
            active,
            keys,
            nbf_backdate,
            signatures: AtomicU64::new(0),
            clock,
        });
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let core = Arc::clone(&core);
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("streamgate-signer-{index}"))
                .spawn(move || sign_jobs(&core, &queue))
                .expect("spawn a signing thread");
        }
        Self {
            core,
            jobs,
            inline: AtomicUsize::new(0),
            inline_signed: AtomicU64::new(0),
            inline_peak: AtomicUsize::new(0),
            inline_limit: OnceLock::new(),
        }
    }

    /// This signer with signatures on the async workers allowed (the default) or not: when
    /// not, every signature goes to the signing threads, and a burst of misses never takes a
    /// worker from the cached hits.
    pub fn on_workers(self, allowed: bool) -> Self {
        if !allowed {
            let _ = self.inline_limit.set(0);
        }
        self
    }

    /// A turn to sign on this async worker, when the runtime has a worker to spare.
    fn inline_turn(&self) -> Option<InlineTurn<'_>> {
        let limit = *self.inline_limit.get_or_init(|| {
            tokio::runtime::Handle::try_current().map_or(0, |runtime| {
                runtime.metrics().num_workers().saturating_sub(1)
            })
        });
        let before = self
            .inline
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |signing| {
                (signing < limit).then_some(signing + 1)
            })
            .ok()?;
        self.inline_peak.fetch_max(before + 1, Ordering::Relaxed);
        Some(InlineTurn(&self.inline))
    }

    /// Signatures on async workers: how many may be made at once (known after the first
    /// signature), how many were made so far, and the most made at once.
    pub fn inline(&self) -> (Option<usize>, u64, usize) {
        (
            self.inline_limit.get().copied(),
            self.inline_signed.load(Ordering::Relaxed),
            self.inline_peak.load(Ordering::Relaxed),
        )
    }

    /// The key that signs new tokens.
    pub fn active_key(&self) -> &SigningKey {
        &self.core.active
    }

    /// Every configured key (the emulator trusts all of them).
    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.core.keys
    }

    /// The clock this signer stamps tokens by.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// How many tokens this signer has signed.
    pub fn signatures(&self) -> u64 {
        self.core.signatures.load(Ordering::Relaxed)
    }

    /// Sign a token for `uid` on the calling thread. For the CLI and benches; request
    /// handlers use [`Signer::sign`].
    pub fn sign_blocking(
        &self,
        uid: &VideoUid,
        settings: &TokenSettings,
    ) -> Result<IssuedToken, SignError> {
        self.core.sign(uid, settings, None)
    }

    /// Sign a token for `uid` on a signing thread, waiting for a free one.
    pub async fn sign(
        &self,
        uid: VideoUid,
        settings: Arc<TokenSettings>,
    ) -> Result<IssuedToken, SignError> {
        self.sign_job(uid, settings, None).await
    }

    /// Sign a token for `uid` valid exactly over `validity`, on a signing thread.
    pub async fn sign_with_validity(
        &self,
        uid: VideoUid,
        settings: Arc<TokenSettings>,
        validity: Validity,
    ) -> Result<IssuedToken, SignError> {
        self.sign_job(uid, settings, Some(validity)).await
    }

    async fn sign_job(
        &self,
        uid: VideoUid,
        settings: Arc<TokenSettings>,
        validity: Option<Validity>,
    ) -> Result<IssuedToken, SignError> {
        if let Some(_turn) = self.inline_turn() {
            self.inline_signed.fetch_add(1, Ordering::Relaxed);
            return self.core.sign(&uid, &settings, validity);
        }
        let (reply, result) = oneshot::channel();
        let job = Job {
            uid,
            settings,
            validity,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| SignError::Task("the signing threads have stopped".into()))?;
        result
            .await
            .map_err(|_| SignError::Task("a signing thread dropped the job".into()))?
    }
}

/// A signing thread: take jobs until every sender is gone.
fn sign_jobs(core: &SigningCore, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // One thread waits on the queue at a time; the others wait for the lock. A poisoned
        // lock only means another signing thread panicked: keep going.
        let job = queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .blocking_recv();
        let Some(job) = job else { return };
        // The requester may have gone away; its answer is simply dropped.
        let _ = job
            .reply
            .send(core.sign(&job.uid, &job.settings, job.validity));
    }
}

/// Assemble and sign a compact JWS: `b64(header).b64(claims).b64(RS256 signature)`.
///
/// Produces exactly what `jsonwebtoken::encode` would for the same header and claims, but
/// with the key parsed once instead of per token.
pub fn sign_jws(key: &SigningKey, claims: &Claims<'_>) -> Result<String, SignError> {
    let claims_json = serde_json::to_vec(claims).map_err(|_| SignError::Crypto)?;
    let pair = key.pair();
    let signature_len = pair.public_modulus_len();
    let mut jws = String::with_capacity(
        key.header_b64().len() + 2 + (claims_json.len() + signature_len) * 4 / 3 + 4,
    );
    jws.push_str(key.header_b64());
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims_json, &mut jws);

    let mut signature = vec![0u8; signature_len];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        jws.as_bytes(),
        &mut signature,
    )
    .map_err(|_| SignError::Crypto)?;
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut jws);
    Ok(jws)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The time tokens are stamped with and their remaining life is judged by: the system's, or
/// one that only moves when told to (for tests of expiry that do not wait for it).
///
/// An enum rather than a trait object: reading it on a cache hit is a branch on the variant
/// (always the same one in a process) and then either what [`unix_now`] costs or one atomic
/// load, with no indirect call.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock ([`unix_now`]).
    #[default]
    System,
    /// Unix seconds, moved only by whoever holds the other handle (see [`Clock::advance`]).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A clock that reads `unix_secs` until advanced.
    pub fn manual(unix_secs: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(unix_secs)))
    }

    /// Unix seconds now, by this clock.
    #[inline]
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => unix_now(),
            Clock::Manual(secs) => secs.load(Ordering::Relaxed),
        }
    }

    /// The time now, `system_now` being the system clock's (read by the caller).
    pub fn now_or(&self, system_now: u64) -> u64 {
        match self {
            Clock::System => system_now,
            Clock::Manual(secs) => secs.load(Ordering::Relaxed),
        }
    }

    /// How long from now until unix second `at` (zero once passed); to the nanosecond on
    /// the system clock.
    pub fn until(&self, at: u64) -> Duration {
        match self {
            Clock::System => (UNIX_EPOCH + Duration::from_secs(at))
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            Clock::Manual(secs) => {
                Duration::from_secs(at.saturating_sub(secs.load(Ordering::Relaxed)))
            }
        }
    }

    /// Move a manual clock forward by `by` (whole seconds; a token's times have no finer
    /// grain).
    ///
    /// # Panics
    /// On the system clock, which no one moves.
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::System => panic!("the system clock cannot be advanced"),
            Clock::Manual(secs) => {
                secs.fetch_add(by.as_secs(), Ordering::Relaxed);
            }
        }
    }

    /// Whether this is the system clock.
    pub fn is_system(&self) -> bool {
        matches!(self, Clock::System)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_player_redirect_is_built_once_per_token_for_its_origin() {
        let token = IssuedToken::new("a.b.c".into(), 10);
        let mut builds = 0;
        let mut location = |origin: &str| {
            let headers = token
                .player_redirect(origin, || {
                    builds += 1;
                    let mut headers = HeaderMap::new();
                    let location = format!("{origin}/a.b.c/iframe").try_into().ok()?;
                    headers.insert(http::header::LOCATION, location);
                    Some(headers)
                })
                .unwrap();
            headers[http::header::LOCATION].clone()
        };
        assert_eq!(location("https://o"), "https://o/a.b.c/iframe");
        assert_eq!(location("https://o"), "https://o/a.b.c/iframe");
        // Another origin is never served the cached value.
        assert_eq!(location("https://p"), "https://p/a.b.c/iframe");
        assert_eq!(builds, 2);
        assert!(!format!("{token:?}").contains("a.b.c"), "{token:?}");
    }
    use crate::token::claims::{AccessRule, RuleAction};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rustls_pki_types::PrivatePkcs1KeyDer;
    use rustls_pki_types::pem::PemObject;

    const FIXTURE_PEM: &str = include_str!("../../tests/fixtures/test-only-signing-key.pem");
    const FIXTURE_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn settings() -> TokenSettings {
        TokenSettings {
            ttl: Duration::from_secs(3600),
            downloadable: true,
            access_rules: Arc::from(vec![AccessRule::Any {
                action: RuleAction::Allow,
            }]),
            not_after: None,
        }
    }

    #[test]
    fn output_is_byte_identical_to_jsonwebtoken_encode() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let uid: VideoUid = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let settings = settings();
        let claims = Claims::build(
            &uid,
            FIXTURE_ID,
            &settings,
            1_800_000_000,
            Duration::from_secs(60),
        );

        let ours = sign_jws(&key, &claims).unwrap();

        let der = PrivatePkcs1KeyDer::from_pem_slice(FIXTURE_PEM.as_bytes()).unwrap();
        let header = Header {
            typ: None,
            kid: Some(FIXTURE_ID.into()),
            ..Header::new(Algorithm::RS256)
        };
        let reference = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_der(der.secret_pkcs1_der()),
        )
        .unwrap();
        assert_eq!(ours, reference);
    }

    #[test]
    fn header_is_alg_and_kid_only() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let header = URL_SAFE_NO_PAD.decode(key.header_b64()).unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"RS256","kid":"{FIXTURE_ID}"}}"#)
        );
    }

    #[tokio::test]
    async fn a_manual_clock_stamps_nbf_and_exp() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let clock = Clock::manual(1_800_000_000);
        let signer = Signer::with_clock(vec![key], Duration::from_secs(30), 1, clock.clone());
        let uid: VideoUid = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let claims = |issued: &IssuedToken| -> serde_json::Value {
            let part = issued.token.expose().split('.').nth(1).unwrap().to_owned();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        let first = signer.sign(uid, Arc::new(settings())).await.unwrap();
        assert_eq!(first.expires_at, 1_800_003_600);
        assert_eq!(claims(&first)["exp"], 1_800_003_600u64);
        assert_eq!(claims(&first)["nbf"], 1_799_999_970u64);

        clock.advance(Duration::from_secs(10));
        let later = signer.sign_blocking(&uid, &settings()).unwrap();
        assert_eq!(later.expires_at, 1_800_003_610);
        assert_eq!(claims(&later)["nbf"], 1_799_999_980u64);
        assert_eq!(clock.until(later.expires_at), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn async_sign_counts_signatures_and_sets_expiry() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let signer = Arc::new(Signer::new(vec![key], Duration::from_secs(30), 2));
        let uid: VideoUid = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let before = unix_now();
        let issued = signer.sign(uid, Arc::new(settings())).await.unwrap();
        assert_eq!(signer.signatures(), 1);
        assert!(issued.expires_at >= before + 3600 && issued.expires_at <= unix_now() + 3600);
        assert_eq!(issued.token.expose().split('.').count(), 3);
        assert_eq!(format!("{:?}", issued.token), "***");
    }

    /// Sign `count` tokens at once from tasks on the current runtime; every one must verify.
    async fn sign_concurrently(signer: &Arc<Signer>, count: usize) {
        let tasks: Vec<_> = (0..count)
            .map(|n| {
                let signer = Arc::clone(signer);
                tokio::spawn(async move {
                    let uid: VideoUid = format!("{n:032x}").parse().unwrap();
                    signer.sign(uid, Arc::new(settings())).await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().token.expose().split('.').count(), 3);
        }
        assert_eq!(signer.signatures(), count as u64);
    }

    #[tokio::test]
    async fn a_single_worker_never_signs_itself() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let signer = Arc::new(Signer::new(vec![key], Duration::from_secs(30), 2));
        sign_concurrently(&signer, 8).await;
        assert_eq!(signer.inline(), (Some(0), 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn workers_sign_themselves_but_never_all_of_them_at_once() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let signer = Arc::new(Signer::new(vec![key], Duration::from_secs(30), 1));
        sign_concurrently(&signer, 24).await;
        let (limit, inline, peak) = signer.inline();
        assert_eq!(limit, Some(2));
        assert!(inline > 0, "no signature was made on a worker");
        assert!((1..=2).contains(&peak), "{peak} signed on workers at once");
        assert_eq!(
            signer.inline.load(Ordering::Acquire),
            0,
            "every turn given back"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn with_workers_kept_out_every_signature_goes_to_the_threads() {
        let key = SigningKey::from_material(Some(FIXTURE_ID), FIXTURE_PEM).unwrap();
        let signer = Arc::new(Signer::new(vec![key], Duration::from_secs(30), 2).on_workers(false));
        sign_concurrently(&signer, 12).await;
        assert_eq!(signer.inline(), (Some(0), 0, 0));
    }
}

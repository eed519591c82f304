//! HTTP Basic users with argon2id password hashes.
//!
//! A password check is deliberately expensive (argon2id's default parameters use ~19 MiB and
//! tens of milliseconds), so:
//! - checks run on tokio's blocking pool, never on the reactor, in working memory that is
//!   kept and reused ([`WorkingMemory`]), so that their memory is bounded by the permits;
//! - at most `max_concurrent_checks` run at once, and when too many are already queued the
//!   caller is told [`AuthError::Busy`] instead of queueing more;
//! - one client address (an IPv6 /64) has at most one check running or queued for a permit
//!   and [`WAITING_PER_ADDRESS`] more waiting behind it; beyond that it is told
//!   [`AuthError::Throttled`] (429), so one address cannot fill the shared queue;
//! - a successful check is cached for `cache_ttl`, keyed by a keyed hash of the user and
//!   password (so the cache holds nothing that could be checked offline); failures are never
//!   cached;
//! - concurrent checks of the same user and password share one argon2 run;
//! - an unknown user is checked against a dummy hash, so it takes about as long as a wrong
//!   password, and both get the same answer ([`AuthError::InvalidPassword`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Argon2, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use moka::future::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::hot::HotSlots;
use super::password_memory::WorkingMemory;
use super::throttle::AddressKey;
use super::{AuthError, CredentialHasher, Principal, PrincipalKind};
use crate::metrics::ThrottleReason;
use crate::secret::Secret;

/// How many successful verifications the cache holds at most.
const CACHE_CAPACITY: u64 = 10_000;

/// How many checks may wait for a permit, per permit, before callers are told to retry.
const WAITERS_PER_PERMIT: usize = 4;

/// Checks one client address may have waiting behind its one running (or queued) check.
pub const WAITING_PER_ADDRESS: usize = 3;

/// What an address over [`WAITING_PER_ADDRESS`] is told to wait, in seconds.
const RETRY_QUEUED_SECS: u64 = 1;

const MALFORMED: &str = "Basic credentials must be base64 of user:password";

/// One configured user, validated.
#[derive(Debug, Clone)]
pub struct UserSettings {
    pub name: Arc<str>,
    /// argon2id PHC string, already validated by [`validate_phc`].
    pub password_hash: crate::secret::Secret<String>,
    pub groups: Vec<Arc<str>>,
}

/// A user as the authenticator keeps it.
struct User {
    /// The PHC string; shared with the blocking task that checks it.
    password_hash: Secret<Arc<str>>,
    principal: Arc<Principal>,
}

/// The Basic authenticator.
pub struct BasicUsers {
    users: HashMap<Arc<str>, User>,
    hasher: CredentialHasher,
    /// Successful verifications: keyed digest of (user, password) → principal, and when the
    /// entry expires.
    cache: Cache<[u8; 32], (Arc<Principal>, Instant)>,
    /// The most recent verifications, in front of `cache`.
    hot: HotSlots<Arc<Principal>>,
    /// How long a success is cached.
    cache_ttl: Duration,
    /// Bounds how many argon2 checks run at once (each uses the hash's `m` KiB of memory).
    permits: Arc<Semaphore>,
    /// Checks currently waiting for a permit.
    waiting: AtomicUsize,
    /// Above this many waiting checks, answer [`AuthError::Busy`].
    max_waiting: usize,
    /// Full argon2 verifications run so far (dummy ones for unknown users included).
    verifications: Arc<AtomicU64>,
    /// argon2's working memory: one buffer per permit at most.
    memory: Arc<WorkingMemory>,
    /// Checks in progress per client address, one at a time each.
    per_address: Arc<AddressQueues>,
}

/// What a full password check asks and tells around argon2: whether it may still run once
/// it has its turn, and that it found the password wrong. Both happen while the check holds
/// its address's turn, so the next check from that address already sees the failure.
pub trait Gate: Send + Sync {
    /// `Err` refuses the check before argon2 runs.
    fn admit(&self) -> Result<(), AuthError>;
    /// The password (or the user) was wrong.
    fn failed(&self);
}

/// A gate that admits every check and keeps no count.
pub struct Open;

impl Gate for Open {
    fn admit(&self) -> Result<(), AuthError> {
        Ok(())
    }

    fn failed(&self) {}
}

/// The user name and password of `Authorization: Basic ...`, decoded.
pub struct BasicCredentials {
    /// `user:password`.
    decoded: Secret<String>,
    colon: usize,
    /// The base64 they were decoded from, trimmed: what a remembered check is found by.
    encoded: Secret<String>,
}

impl BasicCredentials {
    /// Decode the part of `Authorization: Basic ...` after the scheme. `Err` when it is not
    /// base64 of UTF-8 `user:password`.
    pub fn decode(credentials_b64: &str) -> Result<Self, AuthError> {
        let encoded = credentials_b64.trim_ascii();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthError::MalformedAuthorization(MALFORMED))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| AuthError::MalformedAuthorization(MALFORMED))?;
        let colon = decoded
            .find(':')
            .ok_or(AuthError::MalformedAuthorization(MALFORMED))?;
        Ok(Self {
            decoded: Secret::new(decoded),
            colon,
            encoded: Secret::new(encoded.to_owned()),
        })
    }

    /// The user name (never a secret, but not to be logged: it may be a mistyped password).
    pub fn user(&self) -> &str {
        &self.decoded.expose()[..self.colon]
    }

    fn password(&self) -> &str {
        &self.decoded.expose()[self.colon + 1..]
    }
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicCredentials(***)")
    }
}

/// A hash with the default parameters of a password nobody knows, checked for unknown users
/// so that they take about as long as a known user with a wrong password. Computed once per
/// process, on first use (on the blocking pool).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut password = [0u8; 32];
    SystemRandom::new()
        .fill(&mut password)
        .expect("the system random number generator failed");
    let salt = random_salt().expect("the system random number generator failed");
    Argon2::default()
        .hash_password(&password, &salt)
        .expect("hashing with the default argon2 parameters cannot fail")
        .to_string()
});

impl BasicUsers {
    /// An authenticator for `users` (a later duplicate name replaces an earlier one).
    /// Successes are cached for `cache_ttl`; at most `max_concurrent_checks` (at least 1)
    /// argon2 checks run at once.
    pub fn new(
        users: Vec<UserSettings>,
        cache_ttl: Duration,
        max_concurrent_checks: usize,
    ) -> Self {
        let max_concurrent_checks = max_concurrent_checks.max(1);
        let memory = Arc::new(WorkingMemory::for_hashes(
            users
                .iter()
                .map(|user| user.password_hash.expose().as_str()),
        ));
        let users = users
            .into_iter()
            .map(|user| {
                let principal = Arc::new(Principal::new(
                    PrincipalKind::User,
                    user.name.clone(),
                    user.groups,
                    Default::default(),
                ));
                let password_hash = Secret::new(Arc::from(user.password_hash.expose().as_str()));
                (
                    user.name,
                    User {
                        password_hash,
                        principal,
                    },
                )
            })
            .collect();
        Self {
            users,
            hasher: CredentialHasher::new(),
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(cache_ttl)
                .build(),
            hot: HotSlots::new(),
            cache_ttl,
            permits: Arc::new(Semaphore::new(max_concurrent_checks)),
            waiting: AtomicUsize::new(0),
            max_waiting: max_concurrent_checks.saturating_mul(WAITERS_PER_PERMIT),
            verifications: Arc::new(AtomicU64::new(0)),
            memory,
            per_address: Arc::default(),
        }
    }

    /// Check passwords in `previous`'s working memory when it fits these users' hashes, so
    /// that a reload neither allocates nor frees it (freed memory is not returned to the
    /// system either way).
    pub fn reusing_memory_of(mut self, previous: &BasicUsers) -> Self {
        if previous.memory.fits(&self.memory) {
            previous
                .memory
                .keep_at_most(self.permits.available_permits());
            self.memory = Arc::clone(&previous.memory);
        }
        self
    }

    /// The working memory password checks run in.
    pub fn memory(&self) -> &WorkingMemory {
        &self.memory
    }

    /// Verify `credentials_b64`, the part of `Authorization: Basic ...` after the scheme, sent
    /// from `client`, with no gate ([`Open`]).
    pub async fn verify(
        &self,
        credentials_b64: &str,
        client: IpAddr,
    ) -> Result<Arc<Principal>, AuthError> {
        let credentials = BasicCredentials::decode(credentials_b64)?;
        self.verify_credentials(&credentials, client, &Open).await
    }

    /// What a check of `credentials_b64` (the part of `Authorization: Basic ...` after the
    /// scheme) is remembered by: a keyed hash of the credentials as sent, so that a repeat
    /// caller is found before they are decoded. The base64 alphabet and its padding are
    /// strict (`decode`), so one user name and password have one key.
    fn key(&self, credentials_b64: &str) -> [u8; 32] {
        self.hasher
            .digest(&[credentials_b64.trim_ascii().as_bytes()])
    }

    /// The principal of `credentials_b64` (not yet decoded) when a recent check is
    /// remembered in a hot slot: no await, no allocation and no decoding, for the common case
    /// of a repeat caller.
    pub fn recent(&self, credentials_b64: &str) -> Option<Arc<Principal>> {
        self.hot.get(&self.key(credentials_b64), Instant::now())
    }

    /// Verify decoded `credentials` sent from `client`. A full check asks `gate` once it has
    /// its turn, just before argon2 runs (and is refused with its error), and tells it of a
    /// wrong password before the next check from that address has its turn.
    pub async fn verify_credentials(
        &self,
        credentials: &BasicCredentials,
        client: IpAddr,
        gate: &dyn Gate,
    ) -> Result<Arc<Principal>, AuthError> {
        let (name, password) = (credentials.user(), credentials.password());
        let key = self.key(credentials.encoded.expose());
        let now = Instant::now();
        if let Some(principal) = self.hot.get(&key, now) {
            return Ok(principal);
        }
        // A hit returns at once; concurrent misses for the same key share one check; an error
        // is returned to every waiter and never cached.
        let checked = async {
            let principal = self.check(name, password, client, gate).await?;
            Ok::<_, AuthError>((principal, now + self.cache_ttl))
        };
        let (principal, until) = self
            .cache
            .try_get_with(key, checked)
            .await
            .map_err(|error| (*error).clone())?;
        self.hot.put(key, Arc::clone(&principal), until);
        Ok(principal)
    }

    /// The full argon2 check, one at a time per address and bounded in concurrency overall,
    /// on the blocking pool.
    async fn check(
        &self,
        name: &str,
        password: &str,
        client: IpAddr,
        gate: &dyn Gate,
    ) -> Result<Arc<Principal>, AuthError> {
        let user = self.users.get(name);
        let turn = AddressQueues::enter(&self.per_address, AddressKey::of(client))
            .ok_or_else(|| {
                tracing::debug!(
                    waiting = WAITING_PER_ADDRESS,
                    "this address has too many password checks queued; refusing a Basic sign-in"
                );
                AuthError::Throttled {
                    reason: ThrottleReason::Queued,
                    retry_after_secs: RETRY_QUEUED_SECS,
                }
            })?
            .take_turn()
            .await?;
        let permit = {
            let _waiting =
                WaitingGuard::enter(&self.waiting, self.max_waiting).ok_or_else(|| {
                    tracing::debug!(
                        max_waiting = self.max_waiting,
                        "too many password checks queued; refusing a Basic sign-in"
                    );
                    AuthError::Busy
                })?;
            // The semaphore is never closed; treat it as busy if it ever is.
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| AuthError::Busy)?
        };
        gate.admit()?;

        let stored = user.map(|user| user.password_hash.expose().clone());
        let password = password.to_owned();
        let verifications = self.verifications.clone();
        let memory = Arc::clone(&self.memory);
        // The permit and the address's turn move into the task, so the bounds hold even if
        // this future is dropped (the client went away) while argon2 is still running. The
        // turn comes back, to be given up only once a failure is told to the gate.
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verifications.fetch_add(1, Ordering::Relaxed);
            let matched = match &stored {
                Some(phc) => memory.verify(phc, password.as_bytes()),
                None => {
                    // Same work as a real check, same answer as a wrong password.
                    let _ = memory.verify(&DUMMY_HASH, password.as_bytes());
                    false
                }
            };
            (matched, turn)
        })
        .await;

        match outcome {
            // `_turn` is held to the end of the arm: past the gate's count of a failure.
            Ok((matched, _turn)) => match user.filter(|_| matched) {
                Some(user) => Ok(user.principal.clone()),
                None => {
                    gate.failed();
                    Err(AuthError::InvalidPassword)
                }
            },
            Err(error) => {
                tracing::error!(%error, "a password check failed to complete");
                Err(AuthError::Busy)
            }
        }
    }

    /// How many full argon2 verifications have run (cache hits run none; unknown users run
    /// one against the dummy hash).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The number of configured users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl std::fmt::Debug for BasicUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicUsers")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Password checks in progress per client address: each address's checks take turns, one
/// at a time, and at most [`WAITING_PER_ADDRESS`] wait behind the current one. An address has
/// an entry only while it has checks in progress.
#[derive(Default)]
struct AddressQueues {
    queues: Mutex<HashMap<AddressKey, AddressQueue>>,
}

struct AddressQueue {
    /// Checks in progress (the one with the turn and those waiting for it).
    checks: usize,
    turn: Arc<Semaphore>,
}

impl AddressQueues {
    /// A place in `key`'s queue; `None` when it is full.
    fn enter(queues: &Arc<Self>, key: AddressKey) -> Option<QueuePlace> {
        let mut map = queues.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = map.entry(key).or_insert_with(|| AddressQueue {
            checks: 0,
            turn: Arc::new(Semaphore::new(1)),
        });
        if queue.checks > WAITING_PER_ADDRESS {
            return None;
        }
        queue.checks += 1;
        Some(QueuePlace {
            queues: Arc::clone(queues),
            key,
            turn: Arc::clone(&queue.turn),
            permit: None,
        })
    }

    /// Addresses with checks in progress.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Checks in progress for `key`.
    #[cfg(test)]
    fn checks(&self, key: AddressKey) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map_or(0, |queue| queue.checks)
    }
}

/// A check's place in its address's queue, and then its turn; leaving (on drop) frees it.
struct QueuePlace {
    queues: Arc<AddressQueues>,
    key: AddressKey,
    turn: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl QueuePlace {
    /// Wait for the address's previous checks to finish.
    async fn take_turn(mut self) -> Result<Self, AuthError> {
        // Never closed; treat it as busy if it ever is.
        let permit = Arc::clone(&self.turn)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Busy)?;
        self.permit = Some(permit);
        Ok(self)
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let mut map = self
            .queues
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = map.get_mut(&self.key) {
            queue.checks -= 1;
            if queue.checks == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Counts a check waiting for a permit, while it waits.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    /// `None` when `max` checks are already waiting.
    fn enter(waiting: &'a AtomicUsize, max: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Check that `phc` is an argon2id PHC string with usable parameters, a salt and a hash. The
/// error never contains the hash.
pub fn validate_phc(phc: &str) -> Result<(), String> {
    let phc = phc.trim();
    let hash = PasswordHash::new(phc).map_err(|error| {
        // Name another scheme (`$2b$` bcrypt, `$6$` sha512-crypt) when it is recognisable;
        // only the short identifier, never the rest of the string.
        let scheme = phc
            .strip_prefix('$')
            .and_then(|rest| rest.split('$').next())
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 16
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        match scheme {
            Some(id) if id != argon2::ARGON2ID_IDENT.as_str() => {
                "expected an argon2id hash ($argon2id$...), found another scheme".to_string()
            }
            _ => format!(
                "the password hash is not an argon2id PHC string \
                 ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {error}"
            ),
        }
    })?;
    let algorithm = hash.algorithm.as_str();
    if algorithm != argon2::ARGON2ID_IDENT.as_str() {
        return Err(
            "expected an argon2id hash ($argon2id$...), found another argon2 variant".to_string(),
        );
    }
    if let Some(version) = hash.version {
        Version::try_from(version)
            .map_err(|_| "unsupported argon2 version; use v=19".to_string())?;
    }
    Params::try_from(&hash)
        .map_err(|error| format!("the argon2id parameters are not valid: {error}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("the argon2id hash is missing its salt or hash part".to_string());
    }
    Ok(())
}

/// A random salt of the recommended length (16 bytes), from the system RNG. (The argon2
/// crate's `OsRng` needs rand_core's `getrandom` feature, which this build does not enable.)
fn random_salt() -> Result<SaltString, String> {
    let mut bytes = [0u8; Salt::RECOMMENDED_LENGTH];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_string())?;
    SaltString::encode_b64(&bytes).map_err(|error| format!("encoding the salt failed: {error}"))
}

/// An argon2id PHC string for `password`, with the argon2 crate's default parameters and a
/// random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".to_string());
    }
    let salt = random_salt()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| format!("hashing the password failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::Algorithm;

    const ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    /// The `i`-th of a run of distinct addresses.
    fn address(i: usize) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i as u32))
    }

    /// Whether `password` matches `phc`, as the argon2 crate checks it on its own.
    fn check_password(phc: &str, password: &str) -> bool {
        use argon2::password_hash::PasswordVerifier;
        let hash = PasswordHash::new(phc).unwrap();
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    }

    /// A cheap argon2id hash (8 MiB, 1 pass) so tests stay fast.
    fn cheap_hash(password: &str) -> String {
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let salt = random_salt().unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn user(name: &str, password: &str, groups: &[&str]) -> UserSettings {
        UserSettings {
            name: name.into(),
            password_hash: Secret::new(cheap_hash(password)),
            groups: groups.iter().map(|g| Arc::from(*g)).collect(),
        }
    }

    fn users(ttl: Duration) -> BasicUsers {
        BasicUsers::new(
            vec![
                user("alice", "wonderland", &["viewers", "admins"]),
                user("bob", "pa:ss:word", &[]),
            ],
            ttl,
            2,
        )
    }

    fn encode(credentials: impl AsRef<[u8]>) -> String {
        base64::engine::general_purpose::STANDARD.encode(credentials)
    }

    #[tokio::test]
    async fn correct_password_yields_the_user_principal() {
        let basic = users(Duration::from_secs(60));
        let principal = basic
            .verify(&encode("alice:wonderland"), ADDRESS)
            .await
            .unwrap();
        assert_eq!(&*principal.name, "alice");
        assert_eq!(principal.kind, PrincipalKind::User);
        assert_eq!(
            &*principal.groups,
            &[Arc::from("admins"), Arc::from("viewers")]
        );
        assert!(principal.in_group("admins"));
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_get_the_same_error() {
        let basic = users(Duration::from_secs(60));
        for credentials in ["alice:wrong", "alice:", "mallory:wonderland", ":wonderland"] {
            assert_eq!(
                basic
                    .verify(&encode(credentials), ADDRESS)
                    .await
                    .unwrap_err(),
                AuthError::InvalidPassword,
                "{credentials}"
            );
        }
    }

    #[tokio::test]
    async fn passwords_may_contain_colons() {
        let basic = users(Duration::from_secs(60));
        let principal = basic
            .verify(&encode("bob:pa:ss:word"), ADDRESS)
            .await
            .unwrap();
        assert_eq!(&*principal.name, "bob");
        assert_eq!(
            basic
                .verify(&encode("bob:pa:ss"), ADDRESS)
                .await
                .unwrap_err(),
            AuthError::InvalidPassword
        );
    }

    #[tokio::test]
    async fn malformed_credentials_are_refused_before_any_check() {
        let basic = users(Duration::from_secs(60));
        let cases = [
            "not base64!".to_string(),
            encode("no-colon-here"),
            encode([0xff, 0xfe, b':', b'x']),
            String::new(),
        ];
        for case in &cases {
            assert_eq!(
                basic.verify(case, ADDRESS).await.unwrap_err(),
                AuthError::MalformedAuthorization(MALFORMED),
                "{case:?}"
            );
        }
        assert_eq!(basic.verifications(), 0);
    }

    #[tokio::test]
    async fn a_success_is_cached() {
        let basic = users(Duration::from_secs(60));
        let credentials = encode("alice:wonderland");
        let first = basic.verify(&credentials, ADDRESS).await.unwrap();
        assert_eq!(basic.verifications(), 1);
        let second = basic.verify(&credentials, ADDRESS).await.unwrap();
        assert_eq!(basic.verifications(), 1);
        // The same caller, answered with this thread's copy of the cached principal.
        assert_eq!(first.label(), second.label());
        assert_eq!(first.groups, second.groups);
        let third = basic.verify(&credentials, ADDRESS).await.unwrap();
        assert_eq!(basic.verifications(), 1);
        assert!(
            Arc::ptr_eq(&second, &third),
            "the thread's copy is made once"
        );
    }

    #[tokio::test]
    async fn a_checked_credential_is_found_as_sent_before_it_is_decoded() {
        let basic = users(Duration::from_secs(60));
        let credentials = encode("bob:pa:ss:word");
        assert!(basic.recent(&credentials).is_none(), "nothing checked yet");
        let checked = basic.verify(&credentials, ADDRESS).await.unwrap();
        let found = basic.recent(&credentials).expect("remembered");
        assert_eq!(found.label(), checked.label());
        assert_eq!(&*found.name, "bob", "the name the throttle is asked about");
        // Found as decoding would read it (surrounding blanks are trimmed alike), and by
        // nothing else: another password or another user name is a new check.
        assert!(basic.recent(&format!(" {credentials}\t")).is_some());
        assert!(basic.recent(&encode("bob:pa:ss:wor")).is_none());
        assert!(basic.recent(&encode("bob:pa:ss:word ")).is_none());
        assert!(basic.recent(&encode("Bob:pa:ss:word")).is_none());
        // A check of decoded credentials is remembered under the key they were sent as.
        assert!(basic.recent(&encode("alice:wonderland")).is_none());
        let alice = BasicCredentials::decode(&format!(" {} ", encode("alice:wonderland"))).unwrap();
        basic
            .verify_credentials(&alice, ADDRESS, &Open)
            .await
            .unwrap();
        assert!(basic.recent(&encode("alice:wonderland")).is_some());
        assert_eq!(basic.verifications(), 2);
    }

    #[tokio::test]
    async fn failures_are_never_cached() {
        let basic = users(Duration::from_secs(60));
        for (attempt, credentials) in ["alice:wrong", "alice:wrong", "mallory:x", "mallory:x"]
            .iter()
            .enumerate()
        {
            assert!(basic.verify(&encode(credentials), ADDRESS).await.is_err());
            assert_eq!(basic.verifications(), attempt as u64 + 1);
        }
        // And a failure does not poison a later success.
        basic
            .verify(&encode("alice:wonderland"), ADDRESS)
            .await
            .unwrap();
        assert_eq!(basic.verifications(), 5);
    }

    #[tokio::test]
    async fn the_cache_expires_after_its_ttl() {
        let basic = users(Duration::from_millis(300));
        let credentials = encode("alice:wonderland");
        basic.verify(&credentials, ADDRESS).await.unwrap();
        basic.verify(&credentials, ADDRESS).await.unwrap();
        assert_eq!(basic.verifications(), 1);
        tokio::time::sleep(Duration::from_millis(450)).await;
        basic.verify(&credentials, ADDRESS).await.unwrap();
        assert_eq!(basic.verifications(), 2);
    }

    #[tokio::test]
    async fn too_many_queued_checks_are_refused_as_busy() {
        let basic = Arc::new(BasicUsers::new(
            vec![user("alice", "wonderland", &[])],
            Duration::from_secs(60),
            1,
        ));
        // Hold the only permit so every check has to wait.
        let held = basic.permits.clone().acquire_owned().await.unwrap();
        let mut queued = Vec::new();
        for i in 0..WAITERS_PER_PERMIT {
            let basic = basic.clone();
            // Distinct passwords, so the checks are not coalesced by the cache, from distinct
            // addresses, so each queues for the permit at once.
            queued.push(tokio::spawn(async move {
                basic
                    .verify(&encode(format!("alice:wrong{i}")), address(i))
                    .await
            }));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while basic.waiting.load(Ordering::Acquire) < WAITERS_PER_PERMIT {
            assert!(
                tokio::time::Instant::now() < deadline,
                "checks never queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            basic
                .verify(&encode("alice:wonderland"), ADDRESS)
                .await
                .unwrap_err(),
            AuthError::Busy
        );
        assert!(AuthError::Busy.is_unavailable());

        drop(held);
        for task in queued {
            assert_eq!(task.await.unwrap().unwrap_err(), AuthError::InvalidPassword);
        }
        assert_eq!(basic.waiting.load(Ordering::Acquire), 0);
        basic
            .verify(&encode("alice:wonderland"), ADDRESS)
            .await
            .unwrap();
        assert_eq!(basic.verifications(), WAITERS_PER_PERMIT as u64 + 1);
    }

    #[tokio::test]
    async fn one_address_queues_at_most_four_checks_and_leaves_room_for_others() {
        let basic = Arc::new(BasicUsers::new(
            vec![user("alice", "wonderland", &[])],
            Duration::from_secs(60),
            1,
        ));
        // Hold the only permit so every check has to wait.
        let held = basic.permits.clone().acquire_owned().await.unwrap();
        let flood: Vec<_> = (0..4)
            .map(|i| {
                let basic = Arc::clone(&basic);
                tokio::spawn(async move {
                    basic
                        .verify(&encode(format!("alice:wrong{i}")), ADDRESS)
                        .await
                })
            })
            .collect();
        // One of them waits for the permit; the other three wait behind it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while basic.waiting.load(Ordering::Acquire) < 1
            || basic.per_address.checks(AddressKey::of(ADDRESS)) < 4
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the checks never queued"
            );
            tokio::task::yield_now().await;
        }
        // The fifth from that address is refused without queueing (an IPv6 /64 is one
        // address; a mapped IPv4 address is the IPv4 address).
        for same in [ADDRESS, "::ffff:192.0.2.1".parse().unwrap()] {
            assert_eq!(
                basic
                    .verify(&encode("alice:wrong-again"), same)
                    .await
                    .unwrap_err(),
                AuthError::Throttled {
                    reason: ThrottleReason::Queued,
                    retry_after_secs: 1
                }
            );
        }
        // It holds one place in the shared queue, not four: another address still gets in.
        assert_eq!(basic.waiting.load(Ordering::Acquire), 1);
        let other = {
            let basic = Arc::clone(&basic);
            tokio::spawn(async move { basic.verify(&encode("alice:wonderland"), address(1)).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while basic.waiting.load(Ordering::Acquire) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the other never queued"
            );
            tokio::task::yield_now().await;
        }

        drop(held);
        other.await.unwrap().unwrap();
        for check in flood {
            assert_eq!(
                check.await.unwrap().unwrap_err(),
                AuthError::InvalidPassword
            );
        }
        assert_eq!(basic.verifications(), 5);
        assert_eq!(basic.per_address.len(), 0, "queues are dropped once empty");
    }

    #[tokio::test]
    async fn the_gate_refuses_before_argon2_runs_and_hears_of_each_wrong_password() {
        let basic = users(Duration::from_secs(60));
        /// Admits while `open`, and counts the failures it is told of.
        struct Counting {
            open: bool,
            failures: AtomicUsize,
        }
        impl Gate for Counting {
            fn admit(&self) -> Result<(), AuthError> {
                if self.open {
                    Ok(())
                } else {
                    Err(AuthError::Throttled {
                        reason: ThrottleReason::User,
                        retry_after_secs: 3,
                    })
                }
            }
            fn failed(&self) {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let credentials = BasicCredentials::decode(&encode("alice:wonderland")).unwrap();
        let closed = Counting {
            open: false,
            failures: AtomicUsize::new(0),
        };
        assert!(matches!(
            basic
                .verify_credentials(&credentials, ADDRESS, &closed)
                .await,
            Err(AuthError::Throttled { .. })
        ));
        assert_eq!(basic.verifications(), 0);
        assert_eq!(basic.per_address.len(), 0);
        let open = Counting {
            open: true,
            failures: AtomicUsize::new(0),
        };
        basic
            .verify_credentials(&credentials, ADDRESS, &open)
            .await
            .unwrap();
        let wrong = BasicCredentials::decode(&encode("alice:wrong")).unwrap();
        let unknown = BasicCredentials::decode(&encode("nobody:wonderland")).unwrap();
        for credentials in [&wrong, &unknown] {
            let error = basic
                .verify_credentials(credentials, ADDRESS, &open)
                .await
                .unwrap_err();
            assert_eq!(error, AuthError::InvalidPassword);
        }
        assert_eq!(basic.verifications(), 3);
        assert_eq!(open.failures.load(Ordering::Relaxed), 2);
        assert!(!format!("{credentials:?}").contains("wonderland"));
    }

    #[tokio::test]
    async fn a_flood_of_wrong_passwords_uses_one_buffer_per_permit_at_most() {
        let basic = Arc::new(BasicUsers::new(
            vec![user("alice", "wonderland", &[])],
            Duration::from_secs(60),
            2,
        ));
        let flood: Vec<_> = (0..8)
            .map(|i| {
                let basic = Arc::clone(&basic);
                // Distinct passwords and addresses: nothing coalesced, nothing queued per address.
                tokio::spawn(async move {
                    basic
                        .verify(&encode(format!("alice:wrong{i}")), address(i))
                        .await
                })
            })
            .collect();
        for check in flood {
            let outcome = check.await.unwrap();
            assert!(
                matches!(outcome, Err(AuthError::InvalidPassword | AuthError::Busy)),
                "{outcome:?}"
            );
        }
        assert!(basic.verifications() >= 2);
        assert!(
            (1..=2).contains(&basic.memory().buffers()),
            "{:?}",
            basic.memory()
        );
        basic
            .verify(&encode("alice:wonderland"), ADDRESS)
            .await
            .unwrap();

        // A reload with the same users keeps the same memory.
        let reloaded = BasicUsers::new(
            vec![user("alice", "wonderland", &[])],
            Duration::from_secs(60),
            1,
        )
        .reusing_memory_of(&basic);
        assert!(std::ptr::eq(reloaded.memory(), basic.memory()));
        assert!(reloaded.memory().buffers() <= 1);
    }

    #[test]
    fn validate_phc_accepts_argon2id_and_rejects_everything_else() {
        validate_phc(&hash_password("correct horse").unwrap()).unwrap();
        validate_phc(&cheap_hash("correct horse")).unwrap();

        let salt = random_salt().unwrap();
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let error = validate_phc(&argon2i).unwrap_err();
        assert!(error.contains("another argon2 variant"), "{error}");

        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let error = validate_phc(bcrypt).unwrap_err();
        assert!(error.contains("another scheme"), "{error}");
        let cheap = cheap_hash("pw");
        let no_output = cheap.rsplit_once('$').unwrap().0.to_string();
        let too_little_memory = cheap.replace("m=8192", "m=1");
        for bad in [
            argon2i.as_str(),
            bcrypt,
            "garbage-not-a-hash",
            "",
            "$argon2id$v=19$m=8192,t=1,p=1",
            no_output.as_str(),
            too_little_memory.as_str(),
            "$argon2id$v=99$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            let error = validate_phc(bad).unwrap_err();
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
            assert!(!error.contains("R9h/cIPz0gi"), "{error}");
            assert!(!error.contains("c2FsdHNhbHRzYWx0"), "{error}");
        }
    }

    #[test]
    fn hash_password_output_verifies_and_refuses_empty_passwords() {
        let phc = hash_password("s3cret:with:colons").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(check_password(&phc, "s3cret:with:colons"));
        assert!(!check_password(&phc, "s3cret"));
        assert!(hash_password("").is_err());
    }

    #[tokio::test]
    async fn debug_shows_only_the_number_of_users() {
        let basic = users(Duration::from_secs(60));
        // The request handlers need a `Send` future.
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&basic.verify("x", ADDRESS));
        let debug = format!("{basic:?}");
        assert!(!debug.contains("$argon2"), "{debug}");
        assert!(debug.contains("users: 2"), "{debug}");
        let settings = format!("{:?}", user("carol", "pw", &[]));
        assert!(!settings.contains("$argon2"), "{settings}");
    }
}

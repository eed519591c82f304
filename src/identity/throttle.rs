//! Failed sign-ins, counted per client address and per Basic user name, with backoff.
//!
//! `allowed` failures in a row are let through. From the `allowed`-th failure on, each key
//! (the address, and for HTTP Basic the user name) is in a backoff window: an attempt within
//! it is refused with 429 and `Retry-After` *before* its credential is verified, so it costs
//! no argon2 check and teaches the caller nothing. The window starts at `backoff` after the
//! `allowed`-th failure and doubles with each further failure, up to `max_backoff`. A success
//! for that address or user name resets it; a key with no failure for `max_backoff` is
//! forgotten.
//!
//! The state is bounded: at most `max_keys` addresses and as many user names are tracked.
//! User names are kept as a keyed hash (whatever their length, 32 bytes each, and nothing a
//! client typed is kept). IPv6 addresses count by their /64, which one subscriber usually
//! holds whole. At the cap, keys that went quiet are dropped at once (at most every 250 ms);
//! if none has, a failure for a new key is not tracked under that key: a flood of addresses
//! cannot push out the keys already in backoff, and a user name under attack keeps its
//! window however many addresses guess at it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{AuthError, CredentialHasher};
use crate::metrics::ThrottleReason;

/// Addresses (and, separately, user names) tracked at most, by default.
pub const MAX_KEYS: usize = 100_000;

/// How often a full map may sweep for quiet keys (the sweep walks every key).
const SWEEP_AT_CAP_EVERY: Duration = Duration::from_millis(250);

/// `auth.failed_sign_ins`: how many failures are let through, and the backoff after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedSignIns {
    /// Failures in a row let through before the backoff starts (at least 1; default 5).
    pub allowed: u32,
    /// The first backoff window (default 1 s).
    pub backoff: Duration,
    /// The longest window, and how long a quiet key is remembered (default 5 min).
    pub max_backoff: Duration,
}

impl Default for FailedSignIns {
    fn default() -> Self {
        Self {
            allowed: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl FailedSignIns {
    /// The backoff window after `failures` failures in a row: none below `allowed`, then
    /// `backoff`, doubling with each further failure, at most `max_backoff`.
    pub fn window(&self, failures: u32) -> Option<Duration> {
        let beyond = failures.checked_sub(self.allowed.max(1))?;
        let factor = 1u32.checked_shl(beyond).unwrap_or(u32::MAX);
        Some(self.backoff.saturating_mul(factor).min(self.max_backoff))
    }
}

/// The key a client address is throttled under: the address, or an IPv6 address's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                AddressKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => AddressKey(v4),
        }
    }
}

/// Failures in a row for one key.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

/// Failure counts for one kind of key, with the key cap.
struct Tracked<K> {
    inner: Mutex<Inner<K>>,
    /// The map's length, read without the lock: an empty map (no failures anywhere, the usual
    /// case) costs a sign-in one atomic load.
    len: AtomicUsize,
    max_keys: usize,
}

struct Inner<K> {
    entries: HashMap<K, Entry>,
    last_sweep_at_cap: Option<Instant>,
}

impl<K: Hash + Eq> Tracked<K> {
    fn new(max_keys: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                last_sweep_at_cap: None,
            }),
            len: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// How long `key` must still wait at `now`, if it is in a backoff window.
    fn wait(&self, key: &K, settings: &FailedSignIns, now: Instant) -> Option<Duration> {
        if self.is_empty() {
            return None;
        }
        let entry = *self.lock().entries.get(key)?;
        let until = entry.last_failure + settings.window(entry.failures)?;
        until
            .checked_duration_since(now)
            .filter(|wait| !wait.is_zero())
    }

    /// Count a failure for `key` at `now`; `false` when the map is full and it is not tracked.
    fn failed(&self, key: K, settings: &FailedSignIns, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner.entries.len() >= self.max_keys && !inner.entries.contains_key(&key) {
            let due = inner
                .last_sweep_at_cap
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_AT_CAP_EVERY);
            if due {
                inner.last_sweep_at_cap = Some(now);
                inner
                    .entries
                    .retain(|_, entry| !is_quiet(entry, settings, now));
            }
            if inner.entries.len() >= self.max_keys {
                self.len.store(inner.entries.len(), Ordering::Release);
                return false;
            }
        }
        let entry = inner.entries.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = entry.last_failure.max(now);
        self.len.store(inner.entries.len(), Ordering::Release);
        true
    }

    fn reset(&self, key: &K) {
        if self.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.entries.remove(key);
        self.len.store(inner.entries.len(), Ordering::Release);
    }

    fn forget_quiet(&self, settings: &FailedSignIns, now: Instant) {
        let mut inner = self.lock();
        inner
            .entries
            .retain(|_, entry| !is_quiet(entry, settings, now));
        inner.entries.shrink_to_fit();
        self.len.store(inner.entries.len(), Ordering::Release);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// A key with no failure for `max_backoff` (so past any window) is forgotten.
fn is_quiet(entry: &Entry, settings: &FailedSignIns, now: Instant) -> bool {
    now.saturating_duration_since(entry.last_failure) >= settings.max_backoff
}

/// Failed sign-ins per client address and per Basic user name. Kept by a reload that does
/// not change `auth.failed_sign_ins`.
pub struct SignInThrottle {
    settings: FailedSignIns,
    addresses: Tracked<AddressKey>,
    users: Tracked<[u8; 32]>,
    hasher: CredentialHasher,
}

impl SignInThrottle {
    /// A throttle with `settings`, tracking at most [`MAX_KEYS`] of each kind of key.
    pub fn new(settings: FailedSignIns) -> Self {
        Self::with_max_keys(settings, MAX_KEYS)
    }

    /// A throttle tracking at most `max_keys` addresses and as many user names.
    pub fn with_max_keys(settings: FailedSignIns, max_keys: usize) -> Self {
        Self {
            settings,
            addresses: Tracked::new(max_keys),
            users: Tracked::new(max_keys),
            hasher: CredentialHasher::new(),
        }
    }

    /// The settings this throttle applies.
    pub fn settings(&self) -> &FailedSignIns {
        &self.settings
    }

    /// `Err` ([`AuthError::Throttled`], 429 with `Retry-After`) when `address` or `user` is
    /// in a backoff window: refuse the attempt without verifying its credential.
    pub fn check(&self, address: IpAddr, user: Option<&str>) -> Result<(), AuthError> {
        if self.addresses.is_empty() && self.users.is_empty() {
            return Ok(());
        }
        self.check_at(address, user, Instant::now())
    }

    fn check_at(&self, address: IpAddr, user: Option<&str>, now: Instant) -> Result<(), AuthError> {
        let address = AddressKey::of(address);
        if let Some(wait) = self.addresses.wait(&address, &self.settings, now) {
            return Err(throttled(ThrottleReason::Address, wait));
        }
        if let Some(user) = user.filter(|_| !self.users.is_empty())
            && let Some(wait) = self.users.wait(&self.user_key(user), &self.settings, now)
        {
            return Err(throttled(ThrottleReason::User, wait));
        }
        Ok(())
    }

    /// A credential from `address` (for `user`, when HTTP Basic) was checked and refused.
    pub fn failed(&self, address: IpAddr, user: Option<&str>) {
        self.failed_at(address, user, Instant::now());
    }

    fn failed_at(&self, address: IpAddr, user: Option<&str>, now: Instant) {
        let address = AddressKey::of(address);
        if !self.addresses.failed(address, &self.settings, now) {
            tracing::warn!(
                max_keys = self.addresses.max_keys,
                "failed sign-ins are tracked for as many addresses as allowed; a new one is not"
            );
        }
        if let Some(user) = user
            && !self.users.failed(self.user_key(user), &self.settings, now)
        {
            tracing::warn!(
                max_keys = self.users.max_keys,
                "failed sign-ins are tracked for as many user names as allowed; a new one is not"
            );
        }
    }

    /// A credential from `address` (for `user`, when HTTP Basic) was accepted: their
    /// failures are forgotten.
    pub fn succeeded(&self, address: IpAddr, user: Option<&str>) {
        self.addresses.reset(&AddressKey::of(address));
        if let Some(user) = user.filter(|_| !self.users.is_empty()) {
            self.users.reset(&self.user_key(user));
        }
    }

    /// Forget keys with no failure for `max_backoff`, and give the memory back (the gateway
    /// calls it on a timer, with the rate limits).
    pub fn forget_idle(&self) {
        self.forget_quiet_at(Instant::now());
    }

    fn forget_quiet_at(&self, now: Instant) {
        self.addresses.forget_quiet(&self.settings, now);
        self.users.forget_quiet(&self.settings, now);
    }

    /// Addresses and user names with failures kept now.
    pub fn keys(&self) -> usize {
        self.addresses.len() + self.users.len()
    }

    fn user_key(&self, user: &str) -> [u8; 32] {
        self.hasher.digest(&[user.as_bytes()])
    }
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self::new(FailedSignIns::default())
    }
}

impl std::fmt::Debug for SignInThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInThrottle")
            .field("settings", &self.settings)
            .field("addresses", &self.addresses.len())
            .field("users", &self.users.len())
            .finish()
    }
}

/// The refusal for a key in its window: `Retry-After` in whole seconds, at least 1.
pub fn throttled(reason: ThrottleReason, wait: Duration) -> AuthError {
    AuthError::Throttled {
        reason,
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn retry_after(result: Result<(), AuthError>) -> Option<(ThrottleReason, u64)> {
        match result {
            Ok(()) => None,
            Err(AuthError::Throttled {
                reason,
                retry_after_secs,
            }) => Some((reason, retry_after_secs)),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_window_starts_at_the_allowed_failure_and_doubles_up_to_the_maximum() {
        let settings = FailedSignIns::default();
        assert_eq!(settings.window(0), None);
        assert_eq!(settings.window(4), None);
        assert_eq!(settings.window(5), Some(secs(1)));
        assert_eq!(settings.window(6), Some(secs(2)));
        assert_eq!(settings.window(7), Some(secs(4)));
        assert_eq!(settings.window(13), Some(secs(256)));
        assert_eq!(settings.window(14), Some(secs(300)));
        // No overflow, however many failures.
        assert_eq!(settings.window(40), Some(secs(300)));
        assert_eq!(settings.window(u32::MAX), Some(secs(300)));
        let tight = FailedSignIns {
            allowed: 1,
            backoff: Duration::from_millis(250),
            max_backoff: secs(1),
        };
        assert_eq!(tight.window(1), Some(Duration::from_millis(250)));
        assert_eq!(tight.window(3), Some(secs(1)));
        assert_eq!(tight.window(4), Some(secs(1)));
    }

    #[test]
    fn after_the_allowed_failures_attempts_wait_out_a_doubling_window() {
        let throttle = SignInThrottle::new(FailedSignIns::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.failed_at(A, Some("alice"), t0);
            assert_eq!(retry_after(throttle.check_at(A, Some("alice"), t0)), None);
        }
        throttle.failed_at(A, Some("alice"), t0);
        assert_eq!(
            retry_after(throttle.check_at(A, Some("alice"), t0)),
            Some((ThrottleReason::Address, 1))
        );
        // From another address, the user name is in its window too.
        assert_eq!(
            retry_after(throttle.check_at(B, Some("alice"), t0)),
            Some((ThrottleReason::User, 1))
        );
        // Another user from another address is not.
        assert_eq!(retry_after(throttle.check_at(B, Some("bob"), t0)), None);
        // The window passes; the next failure doubles it.
        let t1 = t0 + secs(1);
        assert_eq!(retry_after(throttle.check_at(A, Some("alice"), t1)), None);
        throttle.failed_at(A, Some("alice"), t1);
        assert_eq!(
            retry_after(throttle.check_at(A, None, t1 + Duration::from_millis(500))),
            Some((ThrottleReason::Address, 2))
        );
        assert_eq!(retry_after(throttle.check_at(A, None, t1 + secs(2))), None);
        // Up to the maximum.
        let mut now = t1 + secs(2);
        for _ in 0..20 {
            throttle.failed_at(A, Some("alice"), now);
            now += secs(300);
        }
        assert_eq!(
            retry_after(throttle.check_at(A, None, now - secs(300))),
            Some((ThrottleReason::Address, 300))
        );
    }

    #[test]
    fn a_success_resets_its_address_and_user_name() {
        let throttle = SignInThrottle::new(FailedSignIns {
            allowed: 2,
            ..FailedSignIns::default()
        });
        let now = Instant::now();
        for _ in 0..3 {
            throttle.failed_at(A, Some("alice"), now);
        }
        assert!(throttle.check_at(A, Some("alice"), now).is_err());
        throttle.succeeded(A, Some("alice"));
        assert_eq!(throttle.keys(), 0);
        assert_eq!(retry_after(throttle.check_at(A, Some("alice"), now)), None);
        // Counting starts again from nothing.
        throttle.failed_at(A, Some("alice"), now);
        assert_eq!(retry_after(throttle.check_at(A, Some("alice"), now)), None);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let throttle = SignInThrottle::new(FailedSignIns {
            allowed: 1,
            ..FailedSignIns::default()
        });
        let now = Instant::now();
        throttle.failed_at("2001:db8:1:2::1".parse().unwrap(), None, now);
        assert!(
            throttle
                .check_at("2001:db8:1:2:ffff::9".parse().unwrap(), None, now)
                .is_err()
        );
        assert!(
            throttle
                .check_at("2001:db8:1:3::1".parse().unwrap(), None, now)
                .is_ok()
        );
        // A mapped IPv4 address is that IPv4 address.
        throttle.failed_at(A, None, now);
        assert!(
            throttle
                .check_at("::ffff:192.0.2.1".parse().unwrap(), None, now)
                .is_err()
        );
    }

    #[test]
    fn the_number_of_keys_is_capped_and_quiet_ones_make_room() {
        let settings = FailedSignIns {
            allowed: 1,
            backoff: secs(1),
            max_backoff: secs(10),
        };
        let throttle = SignInThrottle::with_max_keys(settings, 100);
        let address = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        let t0 = Instant::now();
        for i in 0..1000 {
            throttle.failed_at(address(i), Some(&format!("user{i}")), t0);
        }
        assert_eq!(throttle.keys(), 200, "100 addresses and 100 user names");
        // The keys already tracked keep their windows; a new one is not tracked.
        assert!(throttle.check_at(address(7), None, t0).is_err());
        assert!(throttle.check_at(B, Some("user7"), t0).is_err());
        assert!(throttle.check_at(address(500), Some("user500"), t0).is_ok());
        // Once quiet for `max_backoff`, they make room at the next failure.
        let later = t0 + secs(10);
        throttle.failed_at(address(2000), Some("newcomer"), later);
        assert_eq!(throttle.keys(), 2);
        assert!(throttle.check_at(address(2000), None, later).is_err());
        // And the timer forgets them without a new failure.
        throttle.forget_quiet_at(later + secs(10));
        assert_eq!(throttle.keys(), 0);
    }

    #[test]
    fn debug_shows_counts_not_names() {
        let throttle = SignInThrottle::new(FailedSignIns::default());
        throttle.failed(A, Some("alice-secret-name"));
        let debug = format!("{throttle:?}");
        assert!(!debug.contains("alice"), "{debug}");
        assert!(debug.contains("users: 1"), "{debug}");
    }
}

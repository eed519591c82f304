//! Optional token-minting rate limits, per subject and per client address (`governor`).
//!
//! Each limit keeps state per caller it has seen. That state is bounded: callers whose limit
//! has fully recovered are forgotten by [`MintLimiter::forget_idle`] (the gateway calls it on
//! a timer), and at most `max_keys` callers are tracked per limit. When a flood of distinct
//! callers fills that many (more than `max_keys` new ones within one burst's recovery time),
//! idle ones are dropped at once, and if none is idle minting is refused (429) until some
//! recover, rather than letting the state grow.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Callers tracked per limit by default (a few MiB of state at most).
pub const MAX_KEYS: usize = 100_000;

/// How often a limit at its key cap may sweep for idle callers (the sweep walks every key).
const SWEEP_AT_CAP_EVERY: Duration = Duration::from_millis(250);

/// How long a caller refused at the key cap is told to wait.
const RETRY_AT_CAP: Duration = Duration::from_secs(1);

/// Token-minting rate limits; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub per_subject: Option<Rate>,
    pub per_address: Option<Rate>,
    /// Callers tracked at once per limit (default [`MAX_KEYS`]).
    pub max_keys: usize,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_subject: None,
            per_address: None,
            max_keys: MAX_KEYS,
        }
    }
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

/// The limits for one configuration; each is off unless configured.
pub struct MintLimiter {
    per_subject: Option<Keyed<String>>,
    per_address: Option<Keyed<IpAddr>>,
    clock: DefaultClock,
}

/// One keyed limit with its key cap.
struct Keyed<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    max_keys: usize,
    /// When the last sweep at the cap ran, in milliseconds since `epoch`.
    last_sweep_ms: AtomicU64,
    epoch: Instant,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate.per_second).allow_burst(rate.burst)),
            max_keys: max_keys.max(1),
            last_sweep_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn check(&self, key: &K, clock: &DefaultClock) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys && !self.room_after_sweep() {
            return Err(RETRY_AT_CAP);
        }
        self.limiter
            .check_key(key)
            .map_err(|until| until.wait_time_from(clock.now()))
    }

    /// At the cap: drop the callers whose limit has recovered (at most once per
    /// [`SWEEP_AT_CAP_EVERY`]); whether there is room now.
    fn room_after_sweep(&self) -> bool {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Acquire);
        let due = now_ms.saturating_sub(last) >= SWEEP_AT_CAP_EVERY.as_millis() as u64;
        if due
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
        self.limiter.len() < self.max_keys
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl MintLimiter {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_subject: settings
                .per_subject
                .map(|rate| Keyed::new(rate, settings.max_keys)),
            per_address: settings
                .per_address
                .map(|rate| Keyed::new(rate, settings.max_keys)),
            clock: DefaultClock::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.per_subject.is_some() || self.per_address.is_some()
    }

    /// `Err(wait)` when `subject` (an authenticated caller's label) or `address` is over its
    /// limit; `wait` is how long until the next request would be allowed.
    pub fn check(&self, subject: Option<&str>, address: IpAddr) -> Result<(), Duration> {
        if let Some(subject) = subject {
            self.check_subject(subject)?;
        }
        self.check_address(address)
    }

    /// `Err(wait)` when `address` is over its limit. Asked before the caller's credential is
    /// verified, so that a flood from one address costs no password or signature checks.
    pub fn check_address(&self, address: IpAddr) -> Result<(), Duration> {
        match &self.per_address {
            Some(limiter) => limiter.check(&address, &self.clock),
            None => Ok(()),
        }
    }

    /// `Err(wait)` when `subject` (an authenticated caller's label) is over its limit.
    pub fn check_subject(&self, subject: &str) -> Result<(), Duration> {
        match &self.per_subject {
            Some(limiter) => limiter.check(&subject.to_string(), &self.clock),
            None => Ok(()),
        }
    }

    /// Whether a per-subject limit is set.
    pub fn limits_subjects(&self) -> bool {
        self.per_subject.is_some()
    }

    /// Whether a per-address limit is set.
    pub fn limits_addresses(&self) -> bool {
        self.per_address.is_some()
    }

    /// Forget callers whose limits have fully recovered and give the memory back (call
    /// periodically: every address seen would otherwise be kept).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_subject {
            limiter.forget_idle();
        }
        if let Some(limiter) = &self.per_address {
            limiter.forget_idle();
        }
    }

    /// Callers (subjects and addresses) with state kept now.
    pub fn keys(&self) -> usize {
        self.per_subject.as_ref().map_or(0, |l| l.limiter.len())
            + self.per_address.as_ref().map_or(0, |l| l.limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn rate(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn a_subject_over_its_burst_is_told_when_to_retry() {
        let limiter = MintLimiter::new(&RateLimitSettings {
            per_subject: rate(1, 2),
            ..RateLimitSettings::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(Some("user:alice"), ip).is_ok());
        assert!(limiter.check(Some("user:alice"), ip).is_ok());
        let wait = limiter.check(Some("user:alice"), ip).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // Others are not affected, and anonymous callers have no subject limit.
        assert!(limiter.check(Some("user:bob"), ip).is_ok());
        assert!(limiter.check(None, ip).is_ok());
    }

    #[test]
    fn addresses_are_limited_separately() {
        let limiter = MintLimiter::new(&RateLimitSettings {
            per_address: rate(1, 1),
            ..RateLimitSettings::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(limiter.check(None, a).is_ok());
        assert!(limiter.check(None, a).is_err());
        assert!(limiter.check(None, b).is_ok());
        limiter.forget_idle();
        assert!(!MintLimiter::new(&RateLimitSettings::default()).is_enabled());
    }

    #[test]
    fn a_flood_of_distinct_addresses_is_capped_and_forgotten_once_idle() {
        // Each address's single request recovers within a millisecond.
        let limiter = MintLimiter::new(&RateLimitSettings {
            per_address: rate(1000, 1),
            max_keys: 100,
            ..RateLimitSettings::default()
        });
        let address = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        let mut refused = 0;
        for i in 0..1000 {
            if limiter.check(None, address(i)).is_err() {
                refused += 1;
            }
        }
        assert!(limiter.keys() <= 100, "{} keys", limiter.keys());
        // The flood outran recovery at times (refused), or sweeps made room: never more keys.
        assert!(refused < 1000);
        let started = Instant::now();
        while limiter.keys() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} keys left",
                limiter.keys()
            );
            std::thread::sleep(Duration::from_millis(5));
            limiter.forget_idle();
        }
        // A known caller is still limited as before.
        assert!(limiter.check(None, address(1)).is_ok());
        assert!(limiter.check(None, address(1)).is_err());
    }
}

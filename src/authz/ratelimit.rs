//! Optional token-minting rate limits, per subject and per client address (`governor`).

use std::net::IpAddr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Token-minting rate limits; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub per_subject: Option<Rate>,
    pub per_address: Option<Rate>,
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

/// The limits for one configuration; each is off unless configured.
pub struct MintLimiter {
    per_subject: Option<DefaultKeyedRateLimiter<String>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

fn quota(rate: Rate) -> Quota {
    Quota::per_second(rate.per_second).allow_burst(rate.burst)
}

impl MintLimiter {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_subject: settings.per_subject.map(|r| RateLimiter::keyed(quota(r))),
            per_address: settings.per_address.map(|r| RateLimiter::keyed(quota(r))),
            clock: DefaultClock::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.per_subject.is_some() || self.per_address.is_some()
    }

    /// `Err(wait)` when `subject` (an authenticated caller's label) or `address` is over its
    /// limit; `wait` is how long until the next request would be allowed.
    pub fn check(&self, subject: Option<&str>, address: IpAddr) -> Result<(), Duration> {
        if let (Some(limiter), Some(subject)) = (&self.per_subject, subject) {
            limiter
                .check_key(&subject.to_string())
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        if let Some(limiter) = &self.per_address {
            limiter
                .check_key(&address)
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        Ok(())
    }

    /// Forget keys whose limits have fully recovered (call periodically: every address seen
    /// would otherwise be kept).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_subject {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
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
            per_address: None,
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
            per_subject: None,
            per_address: rate(1, 1),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(limiter.check(None, a).is_ok());
        assert!(limiter.check(None, a).is_err());
        assert!(limiter.check(None, b).is_ok());
        limiter.forget_idle();
        assert!(!MintLimiter::new(&RateLimitSettings::default()).is_enabled());
    }
}

//! Per-client-IP rate limits with `governor` (GCRA), keyed by address; IPv6 by /64, since
//! one host usually holds a whole /64. Limiter state is evicted periodically so memory stays
//! bounded however many addresses come by.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::http::ApiError;

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Login,
    Register,
    DeviceRegister,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::DeviceRegister => "device_register",
        }
    }
}

pub struct RateLimits {
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
    device_register: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("tracked_keys", &self.len())
            .finish()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            login: RateLimiter::keyed(Quota::per_minute(nonzero(config.login_per_minute))),
            register: RateLimiter::keyed(Quota::per_hour(nonzero(config.register_per_hour))),
            device_register: RateLimiter::keyed(Quota::per_hour(nonzero(
                config.device_register_per_hour,
            ))),
            clock: DefaultClock::default(),
        }
    }

    fn limiter(&self, limit: Limit) -> &DefaultKeyedRateLimiter<IpAddr> {
        match limit {
            Limit::Login => &self.login,
            Limit::Register => &self.register,
            Limit::DeviceRegister => &self.device_register,
        }
    }

    /// Takes one unit of `limit` for `ip`, or refuses with 429 and the seconds to wait.
    pub fn check(&self, limit: Limit, ip: IpAddr) -> Result<(), ApiError> {
        match self.limiter(limit).check_key(&bucket(ip)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::counter!(crate::metrics::RATE_LIMIT_HITS, "limit" => limit.label())
                    .increment(1);
                let wait = not_until.wait_time_from(self.clock.now());
                Err(ApiError::rate_limited(wait.as_secs() + 1))
            }
        }
    }

    /// Forgets keys whose limits have fully recovered.
    pub fn evict(&self) {
        for limiter in [&self.login, &self.register, &self.device_register] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys are tracked across all limits.
    pub fn len(&self) -> usize {
        self.login.len() + self.register.len() + self.device_register.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(login: u32) -> RateLimitConfig {
        RateLimitConfig {
            login_per_minute: login,
            register_per_hour: 5,
            device_register_per_hour: 10,
        }
    }

    #[test]
    fn allows_exactly_the_quota_then_refuses_with_a_wait() {
        let limits = RateLimits::new(&config(10));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            limits.check(Limit::Login, ip).unwrap();
        }
        let err = limits.check(Limit::Login, ip).unwrap_err();
        assert_eq!(err.status(), 429);
        // Another address and another limit are unaffected.
        limits
            .check(Limit::Login, "192.0.2.2".parse().unwrap())
            .unwrap();
        limits.check(Limit::Register, ip).unwrap();
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let limits = RateLimits::new(&config(1));
        limits
            .check(Limit::Login, "2001:db8::1".parse().unwrap())
            .unwrap();
        assert!(limits
            .check(Limit::Login, "2001:db8::ffff:2".parse().unwrap())
            .is_err());
        limits
            .check(Limit::Login, "2001:db8:0:1::1".parse().unwrap())
            .unwrap();
        // An IPv4-mapped address counts as its IPv4 address.
        limits
            .check(Limit::Login, "192.0.2.7".parse().unwrap())
            .unwrap();
        assert!(limits
            .check(Limit::Login, "::ffff:192.0.2.7".parse().unwrap())
            .is_err());
    }

    #[test]
    fn eviction_keeps_limited_keys() {
        let limits = RateLimits::new(&config(1));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        limits.check(Limit::Login, ip).unwrap();
        limits.evict();
        // Still limited: its state was recent, so it was kept.
        assert!(limits.check(Limit::Login, ip).is_err());
        assert!(!limits.is_empty());
    }
}

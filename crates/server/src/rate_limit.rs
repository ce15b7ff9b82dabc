//! Per-client-IP rate limits with `governor` (GCRA), keyed by address; IPv6 by /64, since
//! one host usually holds a whole /64. Limiter state is evicted periodically so memory stays
//! bounded however many addresses come by.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::http::ApiError;

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Login,
    Register,
    DeviceRegister,
    /// WebSocket handshakes from one address.
    WsConnect,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::DeviceRegister => "device_register",
            Self::WsConnect => "ws_connect_ip",
        }
    }
}

type Keyed<C, K = IpAddr> =
    RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limits, on the real clock in the server and a fake one in tests.
pub struct RateLimits<C: Clock = DefaultClock> {
    login: Keyed<C>,
    register: Keyed<C>,
    device_register: Keyed<C>,
    ws_connect: Keyed<C>,
    /// WebSocket handshakes per user id.
    ws_connect_user: Keyed<C, String>,
    clock: C,
}

impl<C: Clock + Clone> std::fmt::Debug for RateLimits<C> {
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
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let keyed = |quota| RateLimiter::dashmap_with_clock(quota, clock.clone());
        Self {
            login: keyed(Quota::per_minute(nonzero(config.login_per_minute))),
            register: keyed(Quota::per_hour(nonzero(config.register_per_hour))),
            device_register: keyed(Quota::per_hour(nonzero(config.device_register_per_hour))),
            ws_connect: keyed(Quota::per_minute(nonzero(
                config.ws_connect_per_minute_per_ip,
            ))),
            ws_connect_user: RateLimiter::dashmap_with_clock(
                Quota::per_minute(nonzero(config.ws_connect_per_minute_per_user)),
                clock.clone(),
            ),
            clock,
        }
    }

    fn limiter(&self, limit: Limit) -> &Keyed<C> {
        match limit {
            Limit::Login => &self.login,
            Limit::Register => &self.register,
            Limit::DeviceRegister => &self.device_register,
            Limit::WsConnect => &self.ws_connect,
        }
    }

    /// Takes one unit of `limit` for `ip`, or refuses with 429 and the seconds to wait.
    pub fn check(&self, limit: Limit, ip: IpAddr) -> Result<(), ApiError> {
        self.limiter(limit)
            .check_key(&bucket(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                match limit {
                    Limit::WsConnect => refuse_ws("connect_ip", wait),
                    _ => {
                        metrics::counter!(crate::metrics::RATE_LIMIT_HITS, "limit" => limit.label())
                            .increment(1);
                        ApiError::rate_limited(wait.as_secs() + 1)
                    }
                }
            })
    }

    /// Takes one WebSocket handshake of `user_id`'s allowance.
    pub fn check_ws_user(&self, user_id: &str) -> Result<(), ApiError> {
        self.ws_connect_user
            .check_key(&user_id.to_owned())
            .map_err(|not_until| {
                refuse_ws("connect_user", not_until.wait_time_from(self.clock.now()))
            })
    }

    /// Forgets keys whose limits have fully recovered (at most two replenish periods after
    /// their last use), so memory follows recent traffic, not every address ever seen.
    pub fn evict(&self) {
        for limiter in [
            &self.login,
            &self.register,
            &self.device_register,
            &self.ws_connect,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.ws_connect_user.retain_recent();
        self.ws_connect_user.shrink_to_fit();
    }

    /// How many keys are tracked across all limits.
    pub fn len(&self) -> usize {
        self.login.len()
            + self.register.len()
            + self.device_register.len()
            + self.ws_connect.len()
            + self.ws_connect_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A refused WebSocket handshake, counted under the gateway's metric.
fn refuse_ws(kind: &'static str, wait: std::time::Duration) -> ApiError {
    metrics::counter!(crate::metrics::GATEWAY_RATE_LIMIT_HITS, "kind" => kind).increment(1);
    ApiError::rate_limited(wait.as_secs() + 1)
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6.
pub(crate) fn bucket(ip: IpAddr) -> IpAddr {
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
            ..RateLimitConfig::default()
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
    fn eviction_keeps_limited_keys_and_forgets_recovered_ones() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&config(1), clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        limits.check(Limit::Login, ip).unwrap();
        limits.evict();
        // Still limited: its state was recent, so it was kept.
        assert!(limits.check(Limit::Login, ip).is_err());
        assert_eq!(limits.len(), 1);

        // A flood from many addresses, then quiet: governor forgets a key once its state is
        // indistinguishable from a fresh one, at most two replenish periods after its last use.
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limits.check(Limit::Login, ip).unwrap();
        }
        assert_eq!(limits.len(), 1001);
        clock.advance(std::time::Duration::from_secs(121));
        limits.evict();
        assert!(limits.is_empty(), "{} keys left", limits.len());
        // And the address that was limited may log in again.
        limits.check(Limit::Login, ip).unwrap();
    }
}

//! Exponential backoff with full jitter: the n-th retry waits a uniformly random time in
//! `[0, min(cap, base * 2^n)]` (AWS Architecture Blog, "Exponential Backoff And Jitter"), so
//! ten thousand devices dropped at once by a restarting server come back spread out instead
//! of in waves.

use crate::rng::Rng;

/// Backoff bounds, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first retry's delay.
    pub base_ms: u64,
    /// The largest ceiling.
    pub cap_ms: u64,
    /// No delay is shorter than this, so even an unlucky draw never spins (0 gives pure full
    /// jitter).
    pub floor_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            cap_ms: 60_000,
            floor_ms: 100,
        }
    }
}

/// The retry counter and its delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// Retries since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling for the current attempt: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> u64 {
        let factor = 1u64.checked_shl(self.attempt.min(63)).unwrap_or(u64::MAX);
        self.config
            .base_ms
            .saturating_mul(factor)
            .min(self.config.cap_ms)
    }

    /// The delay before the next retry, then one more attempt counted.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> u64 {
        let delay = rng.up_to(self.ceiling()).max(self.config.floor_ms);
        self.attempt = self.attempt.saturating_add(1).min(63);
        delay
    }

    /// Jumps to the cap: used when retrying soon is pointless (the key was refused).
    pub fn exhaust(&mut self) {
        while self.ceiling() < self.config.cap_ms && self.attempt < 63 {
            self.attempt += 1;
        }
    }

    /// Back to the first attempt (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig {
            base_ms: 1_000,
            cap_ms: 60_000,
            floor_ms: 0,
        });
        let mut rng = SplitMix64::new(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling());
            let d = b.next_delay(&mut rng);
            assert!(d <= *ceilings.last().unwrap());
        }
        assert_eq!(
            ceilings,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]
        );
        // Many more attempts never overflow.
        for _ in 0..1_000 {
            assert!(b.next_delay(&mut rng) <= 60_000);
        }
        b.reset();
        assert_eq!(b.ceiling(), 1_000);
        b.exhaust();
        assert_eq!(b.ceiling(), 60_000);
    }

    #[test]
    fn the_floor_holds() {
        let mut b = Backoff::new(BackoffConfig {
            base_ms: 10,
            cap_ms: 20,
            floor_ms: 15,
        });
        let mut rng = SplitMix64::new(2);
        for _ in 0..100 {
            let d = b.next_delay(&mut rng);
            assert!((15..=20).contains(&d), "{d}");
        }
    }
}

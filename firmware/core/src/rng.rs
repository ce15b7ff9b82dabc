//! Randomness for jitter, as a trait so tests are deterministic and the firmware can use the
//! hardware RNG (`esp_random`).

/// A source of random 64-bit numbers. Not for secrets: only for spreading out reconnects.
pub trait Rng {
    fn next_u64(&mut self) -> u64;

    /// A number in `0..=max`, uniform enough for jitter (the modulo bias is below 2^-40
    /// for the millisecond ranges used here).
    fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

/// SplitMix64: tiny, fast, and good enough for jitter; seed it from something that differs
/// per device (the hardware RNG, the device key, the MAC address), or reconnect storms
/// stay synchronized.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for max in [0, 1, 10, 1_000] {
            for _ in 0..1_000 {
                assert!(a.up_to(max) <= max);
            }
        }
        // u64::MAX does not overflow.
        let _ = a.up_to(u64::MAX);
    }
}

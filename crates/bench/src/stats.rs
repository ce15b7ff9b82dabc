//! Latency percentiles over a sorted `Vec<Duration>` and HTTP status tallies.
//!
//! A run keeps every sample (a 20-second login flood is a few thousand, a reconnect storm of
//! ten thousand devices is ten thousand), so exact nearest-rank percentiles are cheap and need
//! no histogram crate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `sorted`, which must be sorted
/// ascending; `None` when there are no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // Rank in 1..=len; the product is at most len, so the cast cannot overflow.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Milliseconds with fractional part, for printing and JSON.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A latency for people: microseconds below a millisecond, else milliseconds.
pub fn show_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Count, p50, p90, p99 and max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarises `samples` (sorted here).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |p| percentile(&samples, p).map_or(0.0, ms);
        Self {
            count: samples.len(),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            max_ms: samples.last().copied().map_or(0.0, ms),
        }
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "p50 {}, p90 {}, p99 {}, max {} ({} samples)",
            show_ms(self.p50_ms),
            show_ms(self.p90_ms),
            show_ms(self.p99_ms),
            show_ms(self.max_ms),
            self.count
        )
    }
}

/// Responses by HTTP status; transport failures (no response) under `error`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    pub by_status: BTreeMap<u16, u64>,
    pub error: u64,
}

impl StatusCounts {
    pub fn record(&mut self, status: Option<u16>) {
        match status {
            Some(code) => *self.by_status.entry(code).or_default() += 1,
            None => self.error += 1,
        }
    }

    pub fn get(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.error
    }

    /// Responses whose status is none of `known`, plus transport failures.
    pub fn other(&self, known: &[u16]) -> u64 {
        self.total()
            .saturating_sub(known.iter().map(|s| self.get(*s)).sum::<u64>())
    }
}

impl fmt::Display for StatusCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (status, n) in &self.by_status {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{status}: {n}")?;
        }
        if self.error > 0 {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "no response: {}", self.error)?;
        }
        Ok(())
    }
}

/// `n` events over `elapsed`, per second.
pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.0), Some(Duration::from_millis(1)));
        let one = millis(&[7]);
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = LatencySummary::of(millis(&[30, 10, 20]));
        assert_eq!(s.count, 3);
        assert!((s.p50_ms - 20.0).abs() < 1e-9);
        assert!((s.max_ms - 30.0).abs() < 1e-9);
    }

    #[test]
    fn status_counts_add_up() {
        let mut c = StatusCounts::default();
        for s in [Some(200), Some(200), Some(401), Some(500), None] {
            c.record(s);
        }
        assert_eq!(c.total(), 5);
        assert_eq!(c.get(200), 2);
        assert_eq!(c.other(&[200, 401, 503]), 2);
    }
}

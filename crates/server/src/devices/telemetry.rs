//! Checking a device's telemetry before it is accepted.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

/// Most metrics in one telemetry frame.
pub const MAX_METRICS: usize = 64;
/// How far a device's clock may be from the server's.
pub const MAX_SKEW: Duration = Duration::minutes(5);

/// Accepts names of 1–64 characters of `A-Z a-z 0-9 . _ -`, finite values, and a timestamp
/// within [`MAX_SKEW`] of `now`; returns the number of points.
pub fn validate(
    metrics: &BTreeMap<String, f64>,
    ts: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<u64, String> {
    if metrics.is_empty() || metrics.len() > MAX_METRICS {
        return Err(format!("metrics must hold 1 to {MAX_METRICS} entries"));
    }
    for (name, value) in metrics {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(format!("invalid metric name {name:?}"));
        }
        if !value.is_finite() {
            return Err(format!("metric {name} is not a finite number"));
        }
    }
    if let Some(ts) = ts {
        if (ts - now).abs() > MAX_SKEW {
            return Err("ts is more than 5 minutes from the server's clock".to_owned());
        }
    }
    Ok(metrics.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn good_telemetry_is_counted() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            validate(&m(&[("temp", 21.5), ("rssi", -60.0)]), Some(now), now),
            Ok(2)
        );
    }

    #[test]
    fn bad_telemetry_is_refused_with_a_reason() {
        let now = OffsetDateTime::now_utc();
        assert!(validate(&m(&[]), None, now).is_err());
        assert!(validate(&m(&[("bad name", 1.0)]), None, now)
            .unwrap_err()
            .contains("name"));
        assert!(validate(&m(&[("x", f64::NAN)]), None, now)
            .unwrap_err()
            .contains("finite"));
        assert!(validate(&m(&[("x", f64::INFINITY)]), None, now).is_err());
        let late = now - Duration::minutes(6);
        assert!(validate(&m(&[("x", 1.0)]), Some(late), now)
            .unwrap_err()
            .contains("ts"));
        let many: Vec<(String, f64)> = (0..65).map(|i| (format!("m{i}"), 1.0)).collect();
        let many: BTreeMap<String, f64> = many.into_iter().collect();
        assert!(validate(&many, None, now).is_err());
    }
}

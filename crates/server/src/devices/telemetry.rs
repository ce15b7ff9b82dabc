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
            return Err(format!("invalid metric name {}", quoted(name)));
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

/// A name as refusals quote it: its first 64 characters, so that a refusal stays short
/// whatever was sent.
fn quoted(name: &str) -> String {
    let mut chars = name.chars();
    let head: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
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

    #[test]
    fn a_refusal_quotes_at_most_64_characters_of_a_name() {
        let now = OffsetDateTime::now_utc();
        let name = "\u{7f}".repeat(10_000);
        let why = validate(&m(&[(name.as_str(), 1.0)]), None, now).unwrap_err();
        assert!(why.len() < 64 * 6 + 40, "{} bytes", why.len());
        assert!(why.ends_with('…'), "{why}");
        let why = validate(&m(&[("a b", 1.0)]), None, now).unwrap_err();
        assert_eq!(why, "invalid metric name \"a b\"");
    }
}

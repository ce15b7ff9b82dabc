//! What a run did, summed over its devices.

use std::time::Duration;

use serde::Serialize;
use unhidra_device_core::Stats;

/// Upper bounds (ms) of the buckets of [`Report::connect_ms`]; the last takes the rest.
pub const CONNECT_MS_BOUNDS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000,
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub devices: u64,
    pub connect_attempts: u64,
    pub welcomes: u64,
    /// How long welcomed connections took, from the start of the attempt (TCP connect) to
    /// `welcome` (WebSocket) or CONNACK (MQTT): a histogram, counts per bucket of
    /// [`CONNECT_MS_BOUNDS`] (one more for slower), and the slowest.
    pub connect_ms: Vec<u64>,
    pub connect_ms_max: u64,
    /// When the last device was first welcomed, in ms from the start of the run: with no
    /// ramp-up, how long it took until every device was connected.
    pub all_welcomed_after_ms: u64,
    pub disconnects: u64,
    pub refused: u64,
    pub dead_peers: u64,
    pub reboots: u64,
    pub telemetry_sent: u64,
    /// MQTT only: telemetry publishes (QoS 1) the server acknowledged, i.e. stored. The
    /// WebSocket protocol has no acks for telemetry; there it stays 0.
    pub telemetry_acked: u64,
    pub telemetry_dropped: u64,
    pub telemetry_expired: u64,
    pub anomalies_injected: u64,
    pub heartbeats: u64,
    pub commands_run: u64,
    pub commands_replayed: u64,
    pub commands_unknown: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub malformed: u64,
    pub server_errors: u64,
    pub overloaded: u64,
}

impl Report {
    /// A connection was welcomed `took` after its attempt began, and `since_start` after
    /// the run began.
    pub fn note_welcome(&mut self, took: Duration, since_start: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let bucket = CONNECT_MS_BOUNDS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(CONNECT_MS_BOUNDS.len());
        if self.connect_ms.len() <= bucket {
            self.connect_ms.resize(bucket + 1, 0);
        }
        if let Some(count) = self.connect_ms.get_mut(bucket) {
            *count += 1;
        }
        self.connect_ms_max = self.connect_ms_max.max(ms);
        if self.all_welcomed_after_ms == 0 {
            self.all_welcomed_after_ms = u64::try_from(since_start.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
        }
    }

    /// The bucket bound (ms) under which fraction `q` (0–1) of the welcomed connections
    /// were made; `None` with none, `u64::MAX` past the last bound.
    pub fn connect_ms_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.connect_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.connect_ms.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(CONNECT_MS_BOUNDS.get(bucket).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }

    /// Adds one device core's counters (a device that reboots has several cores).
    pub fn add_core(&mut self, s: &Stats) {
        self.connect_attempts += s.connect_attempts;
        self.welcomes += s.welcomes;
        self.disconnects += s.disconnects;
        self.refused += s.refused;
        self.dead_peers += s.dead_peers;
        self.telemetry_sent += s.telemetry_sent;
        self.telemetry_dropped += s.telemetry_dropped;
        self.telemetry_expired += s.telemetry_expired;
        self.heartbeats += s.heartbeats;
        self.commands_run += s.commands_run;
        self.commands_replayed += s.commands_replayed;
        self.commands_unknown += s.commands_unknown;
        self.frames_in += s.frames_in;
        self.frames_out += s.frames_out;
        self.malformed += s.malformed;
        self.server_errors += s.errors;
        self.overloaded += s.overloaded;
    }

    pub fn merge(&mut self, o: &Report) {
        self.devices += o.devices;
        self.reboots += o.reboots;
        self.anomalies_injected += o.anomalies_injected;
        self.connect_attempts += o.connect_attempts;
        self.welcomes += o.welcomes;
        if self.connect_ms.len() < o.connect_ms.len() {
            self.connect_ms.resize(o.connect_ms.len(), 0);
        }
        for (mine, theirs) in self.connect_ms.iter_mut().zip(&o.connect_ms) {
            *mine += theirs;
        }
        self.connect_ms_max = self.connect_ms_max.max(o.connect_ms_max);
        self.all_welcomed_after_ms = self.all_welcomed_after_ms.max(o.all_welcomed_after_ms);
        self.disconnects += o.disconnects;
        self.refused += o.refused;
        self.dead_peers += o.dead_peers;
        self.telemetry_sent += o.telemetry_sent;
        self.telemetry_acked += o.telemetry_acked;
        self.telemetry_dropped += o.telemetry_dropped;
        self.telemetry_expired += o.telemetry_expired;
        self.heartbeats += o.heartbeats;
        self.commands_run += o.commands_run;
        self.commands_replayed += o.commands_replayed;
        self.commands_unknown += o.commands_unknown;
        self.frames_in += o.frames_in;
        self.frames_out += o.frames_out;
        self.malformed += o.malformed;
        self.server_errors += o.server_errors;
        self.overloaded += o.overloaded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_times_add_up_across_devices() {
        let mut a = Report::default();
        a.note_welcome(Duration::from_millis(3), Duration::from_millis(100));
        a.note_welcome(Duration::from_millis(40), Duration::from_millis(9_000));
        let mut b = Report::default();
        b.note_welcome(Duration::from_millis(30_000), Duration::from_millis(31_000));
        let mut sum = Report::default();
        sum.merge(&a);
        sum.merge(&b);
        // The first welcome of each device counts for "all welcomed".
        assert_eq!(sum.all_welcomed_after_ms, 31_000);
        assert_eq!(sum.connect_ms_max, 30_000);
        assert_eq!(sum.connect_ms.iter().sum::<u64>(), 3);
        assert_eq!(sum.connect_ms_quantile(0.3), Some(5));
        assert_eq!(sum.connect_ms_quantile(0.5), Some(50));
        assert_eq!(sum.connect_ms_quantile(1.0), Some(u64::MAX));
        assert_eq!(Report::default().connect_ms_quantile(0.5), None);
    }
}

//! A plausible environmental sensor: temperature on a daily cycle plus a slow random walk,
//! humidity that falls as it warms, a battery that drains, a wobbling Wi-Fi signal, and
//! temperature spikes injected at a given rate for anomaly detection to find.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sensor metric names, as sent in telemetry.
pub const TEMPERATURE: &str = "temperature";
pub const HUMIDITY: &str = "humidity";
pub const BATTERY: &str = "battery";
pub const RSSI: &str = "rssi";

#[derive(Debug)]
pub struct Sensors {
    rng: StdRng,
    anomaly_rate: f64,
    drift: f64,
    humidity_bias: f64,
    battery: f64,
    rssi_base: f64,
    last: BTreeMap<String, f64>,
    anomalies: u64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Sensors {
    /// `anomaly_rate` is the probability (0–1) that a reading carries a temperature spike.
    pub fn new(seed: u64, anomaly_rate: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            drift: rng.gen_range(-1.5..1.5),
            humidity_bias: rng.gen_range(-8.0..8.0),
            battery: rng.gen_range(60.0..100.0),
            rssi_base: rng.gen_range(-80.0..-45.0),
            anomaly_rate: anomaly_rate.clamp(0.0, 1.0),
            rng,
            last: BTreeMap::new(),
            anomalies: 0,
        }
    }

    /// A reading at `unix_secs` (the daily cycle peaks mid-afternoon, UTC).
    pub fn sample(&mut self, unix_secs: f64) -> BTreeMap<String, f64> {
        let day_phase = (unix_secs.rem_euclid(86_400.0) - 9.0 * 3_600.0) / 86_400.0;
        let daily = 3.0 * (TAU * day_phase).sin();
        self.drift = (self.drift + self.rng.gen_range(-0.05..0.05)).clamp(-3.0, 3.0);
        let mut temperature = 21.0 + daily + self.drift + self.rng.gen_range(-0.1..0.1);
        if self.rng.gen_bool(self.anomaly_rate) {
            self.anomalies += 1;
            let spike = self.rng.gen_range(15.0..30.0);
            temperature += if self.rng.gen_bool(0.5) {
                spike
            } else {
                -spike
            };
        }
        let humidity = (50.0 - (temperature - 21.0) * 2.0
            + self.humidity_bias
            + self.rng.gen_range(-1.0..1.0))
        .clamp(5.0, 95.0);
        self.battery -= 0.01;
        if self.battery < 5.0 {
            self.battery = 100.0; // someone changed the batteries
        }
        let rssi = (self.rssi_base + self.rng.gen_range(-3.0..3.0)).round();
        self.last = BTreeMap::from([
            (TEMPERATURE.to_owned(), round2(temperature)),
            (HUMIDITY.to_owned(), round2(humidity)),
            (BATTERY.to_owned(), round2(self.battery)),
            (RSSI.to_owned(), rssi),
        ]);
        self.last.clone()
    }

    /// The last reading of one sensor.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.last.get(name).copied()
    }

    /// Spikes injected so far.
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible_and_anomalies_stand_out() {
        let mut calm = Sensors::new(1, 0.0);
        for i in 0..10_000 {
            let r = calm.sample(f64::from(i) * 10.0);
            assert!((14.0..28.0).contains(&r[TEMPERATURE]), "{r:?}");
            assert!((5.0..=95.0).contains(&r[HUMIDITY]));
            assert!((0.0..=100.0).contains(&r[BATTERY]));
            assert!((-85.0..=-40.0).contains(&r[RSSI]));
        }
        assert_eq!(calm.anomalies(), 0);
        let mut wild = Sensors::new(1, 0.1);
        let spikes = (0..10_000)
            .filter(|i| {
                let t = wild.sample(f64::from(*i) * 10.0)[TEMPERATURE];
                !(14.0..28.0).contains(&t)
            })
            .count() as u64;
        assert_eq!(spikes, wild.anomalies());
        assert!((800..1_200).contains(&spikes), "{spikes}");
    }
}

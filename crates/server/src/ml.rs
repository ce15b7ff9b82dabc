//! Machine learning at work in the server: the worker pool (`unhidra-ml-bridge`) started from
//! the `[ml]` configuration, and telemetry anomaly scoring.
//!
//! When Python or the worker's packages are missing the server runs without ML, and says so
//! once in the log. Scoring never sits on a device's acknowledgement path: stored readings are
//! offered to a bounded queue and scored in the background (a full queue drops readings from
//! scoring, counted in `ml_anomaly_readings_dropped_total`; they are stored all the same). An
//! anomaly becomes a device event in the device's linked channel (at most one per device and
//! metric per `anomaly_event_cooldown_secs`) and a count in `ml_anomalies_total`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use unhidra_ml_bridge::{MlBridge, Settings};
use unhidra_store::TelemetryPoint;

use crate::config::MlConfig;
use crate::state::SharedState;

/// Readings waiting to be scored.
const ANOMALY_QUEUE: usize = 8192;

pub const ANOMALIES: &str = "ml_anomalies_total";
pub const ANOMALY_READINGS_DROPPED: &str = "ml_anomaly_readings_dropped_total";

/// Starts the workers, or explains in the log why ML is off. Returns `None` then.
pub async fn start(config: &MlConfig, data_dir: &Path) -> Option<MlBridge> {
    if !config.enabled {
        tracing::info!("ML disabled by configuration (ml.enabled = false)");
        return None;
    }
    let mut settings = Settings::new(&config.python, data_dir.join("ml"));
    settings.workers = config.workers;
    settings.queue = config.queue;
    settings.request_timeout = Duration::from_millis(config.request_timeout_ms);
    match MlBridge::start(settings).await {
        Ok(bridge) => {
            tracing::info!(workers = config.workers, python = %config.python.display(), "ML workers ready");
            Some(bridge)
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                python = %config.python.display(),
                "ML disabled: the workers could not start (run scripts/setup-ml.sh and set ml.python, e.g. --ml-python .venv-ml/bin/python)"
            );
            None
        }
    }
}

pub const MODERATION_UNCHECKED: &str = "ml_moderation_unchecked_total";
pub const MODERATION_FLAGGED: &str = "ml_moderation_flagged_total";

/// What `moderation.score` answers (other fields are ignored).
#[derive(Debug, serde::Deserialize)]
struct Verdict {
    flagged: bool,
    #[serde(default)]
    reasons: Vec<String>,
}

/// The automatic check of a message's text, when `ml.moderation` is not `off`: the reasons
/// it was flagged for, or none. When the workers cannot answer (off, busy, failing), the
/// message goes through unchecked, counted in `ml_moderation_unchecked_total`: a chat that
/// stops when Python does would let the sidecar take the server down after all.
pub async fn moderate(state: &crate::state::AppState, text: &str) -> Vec<String> {
    if state.config.ml.moderation == crate::config::ModerationMode::Off || text.is_empty() {
        return Vec::new();
    }
    let Some(ml) = &state.ml else {
        metrics::counter!(MODERATION_UNCHECKED, "why" => "ml_off").increment(1);
        return Vec::new();
    };
    let verdict = match ml.call("moderation.score", json!({ "text": text })).await {
        Ok(answer) => serde_json::from_value::<Verdict>(answer).map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match verdict {
        Ok(v) if v.flagged => {
            metrics::counter!(MODERATION_FLAGGED).increment(1);
            let mut reasons: Vec<String> = v
                .reasons
                .into_iter()
                .take(8)
                .map(|r| r.chars().take(100).collect())
                .collect();
            if reasons.is_empty() {
                reasons.push("flagged".to_owned());
            }
            reasons
        }
        Ok(_) => Vec::new(),
        Err(why) => {
            tracing::debug!(error = %why, "moderation check failed; message not checked");
            metrics::counter!(MODERATION_UNCHECKED, "why" => "error").increment(1);
            Vec::new()
        }
    }
}

/// One stored reading, offered for scoring.
#[derive(Debug)]
struct Reading {
    device_id: String,
    metric: String,
    value: f64,
    ts: f64,
}

/// Where stored telemetry is offered for scoring; does nothing when ML is off.
pub struct AnomalyFeed {
    readings: Option<mpsc::Sender<Reading>>,
}

impl AnomalyFeed {
    /// A feed that scores nothing.
    pub fn off() -> Self {
        Self { readings: None }
    }

    /// Whether offered points are scored (ML running and `ml.anomaly` on).
    pub fn is_on(&self) -> bool {
        self.readings.is_some()
    }

    /// Offers stored points; never waits.
    pub fn offer(&self, points: &[TelemetryPoint]) {
        let Some(readings) = &self.readings else {
            return;
        };
        for point in points {
            let reading = Reading {
                device_id: point.device_id.clone(),
                metric: point.metric.clone(),
                value: point.value,
                ts: point.ts.unix_timestamp_nanos() as f64 / 1e9,
            };
            if readings.try_send(reading).is_err() {
                metrics::counter!(ANOMALY_READINGS_DROPPED).increment(1);
            }
        }
    }
}

/// The feed's other end: readings waiting to be scored.
pub struct AnomalyQueue {
    ml: MlBridge,
    rx: mpsc::Receiver<Reading>,
}

/// A feed for stored telemetry and, when ML is on and anomaly scoring enabled, the queue
/// to run.
pub fn anomaly_feed(ml: Option<&MlBridge>, enabled: bool) -> (AnomalyFeed, Option<AnomalyQueue>) {
    match ml {
        Some(ml) if enabled => {
            let (tx, rx) = mpsc::channel(ANOMALY_QUEUE);
            let queue = AnomalyQueue { ml: ml.clone(), rx };
            (AnomalyFeed { readings: Some(tx) }, Some(queue))
        }
        _ => (AnomalyFeed::off(), None),
    }
}

impl AnomalyQueue {
    /// Scores readings as they come and turns anomalies into device events, until `stop`.
    pub async fn run(self, state: SharedState, stop: tokio_util::sync::CancellationToken) {
        let Self { ml, rx } = self;
        let cooldown = Duration::from_secs(u64::from(state.config.ml.anomaly_event_cooldown_secs));
        let last_event = Arc::new(std::sync::Mutex::new(
            HashMap::<(String, String), Instant>::new(),
        ));
        let concurrency = state.config.ml.workers.max(1) * 8;
        let scoring = ReceiverStream::new(rx).for_each_concurrent(concurrency, |reading| {
            let (ml, state, last_event) = (&ml, &state, Arc::clone(&last_event));
            async move {
                let payload = json!({
                    "device_id": reading.device_id,
                    "metric": reading.metric,
                    "value": reading.value,
                    "ts": reading.ts,
                });
                // A series' model lives in one worker: keep a device on the same one.
                let score = match ml.call_keyed("anomaly.score", payload, &reading.device_id).await {
                    Ok(answer) => match serde_json::from_value::<AnomalyScore>(answer) {
                        Ok(score) => score,
                        Err(err) => {
                            tracing::warn!(error = %err, "an anomaly score not in the expected shape");
                            return;
                        }
                    },
                    Err(err) => {
                        tracing::debug!(error = %err, "anomaly scoring failed");
                        return;
                    }
                };
                if !score.is_anomaly {
                    return;
                }
                metrics::counter!(ANOMALIES).increment(1);
                let now = Instant::now();
                let due = {
                    let mut last = last_event.lock().unwrap_or_else(|p| p.into_inner());
                    if last.len() > 100_000 {
                        last.retain(|_, at| now.duration_since(*at) < cooldown);
                    }
                    let key = (reading.device_id.clone(), reading.metric.clone());
                    match last.get(&key) {
                        Some(at) if now.duration_since(*at) < cooldown => false,
                        _ => {
                            last.insert(key, now);
                            true
                        }
                    }
                };
                if due {
                    let body = anomaly_text(&reading.metric, reading.value, &score);
                    crate::devices::events::post(state, &reading.device_id, body).await;
                }
            }
        });
        tokio::select! {
            () = scoring => {}
            () = stop.cancelled() => {}
        }
    }
}

/// What `anomaly.score` answers (other fields are ignored).
#[derive(Debug, serde::Deserialize)]
struct AnomalyScore {
    score: f64,
    is_anomaly: bool,
    #[serde(default)]
    baseline: Option<f64>,
}

fn anomaly_text(metric: &str, value: f64, score: &AnomalyScore) -> String {
    let s = score.score;
    match score.baseline {
        Some(baseline) => {
            format!("anomaly in `{metric}`: {value} (usually about {baseline:.3}; score {s:.1})")
        }
        None => format!("anomaly in `{metric}`: {value} (score {s:.1})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_events_say_what_and_how_unusual() {
        let score = |v| serde_json::from_value::<AnomalyScore>(v).unwrap();
        let text = anomaly_text(
            "temp",
            500.0,
            &score(json!({"score": 42.123, "is_anomaly": true, "baseline": 20.2})),
        );
        assert_eq!(
            text,
            "anomaly in `temp`: 500 (usually about 20.200; score 42.1)"
        );
        assert_eq!(
            anomaly_text("t", 1.5, &score(json!({"score": 7, "is_anomaly": true}))),
            "anomaly in `t`: 1.5 (score 7.0)"
        );
    }
}

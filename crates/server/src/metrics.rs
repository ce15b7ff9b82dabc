//! Prometheus metrics: the recorder, its `/metrics` listener, and the names we record.
//!
//! The `metrics` facade has one global recorder per process, installed once; several servers
//! in one test process share it, so tests compare values before and after, never absolutes.
//!
//! Every metric is described (Prometheus' `# HELP`), and every counter whose label values are
//! known in advance is registered at 0 when the recorder is installed ([`KNOWN_SERIES`]): a
//! series that appeared only with its first event would be invisible to `rate()` and
//! `increase()` until then, so an alert on it could not fire on the first burst.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open connections per listener (`api`, `metrics`, `mqtt`), from accept to close.
pub const CONNECTIONS_OPEN: &str = "connections_open";
/// Connections closed at once because a limit was reached (`reason`: `server_full`,
/// `per_address`).
pub const CONNECTIONS_REFUSED: &str = "connections_refused_total";
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
pub const LOGIN_ATTEMPTS: &str = "auth_login_attempts_total";
pub const PASSWORD_HASH_DURATION: &str = "auth_password_hash_duration_seconds";
pub const PASSWORD_QUEUE_REJECTIONS: &str = "auth_password_queue_rejections_total";
pub const AUTH_FAILURES: &str = "auth_failures_total";
pub const RATE_LIMIT_HITS: &str = "http_rate_limit_hits_total";
pub const DEVICE_AUTH: &str = "device_auth_total";
pub const FILES_UPLOADED: &str = "files_uploaded_total";
pub const FILES_UPLOADED_BYTES: &str = "files_uploaded_bytes_total";

// The gateway's names are fixed: dashboards already expect them.
pub const GATEWAY_CONNECTIONS: &str = "gateway_connections_total";
pub const GATEWAY_CONNECTIONS_ACTIVE: &str = "gateway_connections_active";
pub const GATEWAY_MESSAGES: &str = "gateway_messages_total";
pub const GATEWAY_MESSAGE_LATENCY: &str = "gateway_message_latency_seconds";
pub const GATEWAY_RATE_LIMIT_HITS: &str = "gateway_rate_limit_hits_total";
pub const GATEWAY_AUTH_FAILURES: &str = "gateway_auth_failures_total";
pub const GATEWAY_TELEMETRY_POINTS: &str = "gateway_telemetry_points_total";
/// Telemetry points committed to the store.
pub const TELEMETRY_POINTS_STORED: &str = "telemetry_points_stored_total";
/// Telemetry points deleted for being older than the retention.
pub const TELEMETRY_POINTS_PRUNED: &str = "telemetry_points_pruned_total";
/// MQTT connections by protocol version and outcome (`ok`, `refused`, `bad_protocol`, …).
pub const MQTT_CONNECTIONS: &str = "mqtt_connections_total";
pub const MQTT_CONNECTIONS_ACTIVE: &str = "mqtt_connections_active";
/// MQTT publishes by direction (`in`, `out`, `bridge_in`, `bridge_out`).
pub const MQTT_PUBLISHES: &str = "mqtt_publishes_total";
/// MQTT publishes and subscriptions refused, by reason.
pub const MQTT_REFUSED: &str = "mqtt_refused_total";
/// Connections of the MQTT bridge to its broker.
pub const MQTT_BRIDGE_CONNECTS: &str = "mqtt_bridge_connects_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_REQUEST_DURATION.into()),
                    &latency_buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PASSWORD_HASH_DURATION.into()),
                        &latency_buckets,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(GATEWAY_MESSAGE_LATENCY.into()),
                        &[
                            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                            0.25, 0.5, 1.0,
                        ],
                    )
                });
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                // Only fails for an empty bucket list, which the constant above is not.
                Err(err) => {
                    tracing::error!(error = %err, "metric buckets refused; using defaults");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => describe_and_register(),
                Err(err) => {
                    tracing::warn!(error = %err, "a metrics recorder was already installed")
                }
            }
            handle
        })
        .clone()
}

/// What each metric counts, as `# HELP` says it (docs/api.md lists them too).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (CONNECTIONS_OPEN, "Open connections per listener (api, metrics, mqtt), from accept to close"),
    (CONNECTIONS_REFUSED, "Connections closed at once because a limit was reached, by listener and reason (server_full, per_address)"),
    (
        HTTP_REQUEST_DURATION,
        "API requests by route template, method and status",
    ),
    (
        LOGIN_ATTEMPTS,
        "Logins by result: ok, invalid_credentials, rate_limited",
    ),
    (PASSWORD_HASH_DURATION, "Argon2id work by op (hash, verify)"),
    (
        PASSWORD_QUEUE_REJECTIONS,
        "Password hashes refused with 503 because the hashing queue was full, by op",
    ),
    (
        AUTH_FAILURES,
        "Refused credentials on REST routes, by reason",
    ),
    (
        RATE_LIMIT_HITS,
        "Requests refused with 429 by a per-address limit, by limit",
    ),
    (DEVICE_AUTH, "Device key checks by result"),
    (FILES_UPLOADED, "Files stored"),
    (FILES_UPLOADED_BYTES, "Bytes of files stored"),
    (
        GATEWAY_CONNECTIONS,
        "WebSocket connections opened, by kind (user, device)",
    ),
    (GATEWAY_CONNECTIONS_ACTIVE, "WebSocket connections open now"),
    (GATEWAY_MESSAGES, "WebSocket frames by direction (in, out)"),
    (
        GATEWAY_MESSAGE_LATENCY,
        "From a publish frame read to its delivery queued for a subscriber; one sample per burst of deliveries to a connection (its oldest message)",
    ),
    (
        GATEWAY_RATE_LIMIT_HITS,
        "WebSocket handshakes and frames refused by a limit, by kind",
    ),
    (
        GATEWAY_AUTH_FAILURES,
        "WebSocket handshakes refused for their credential, protocol or origin, by reason",
    ),
    (
        GATEWAY_TELEMETRY_POINTS,
        "Telemetry points received from devices",
    ),
    (
        TELEMETRY_POINTS_STORED,
        "Telemetry points committed to the store",
    ),
    (
        TELEMETRY_POINTS_PRUNED,
        "Telemetry points deleted for being older than the retention",
    ),
    (
        MQTT_CONNECTIONS,
        "MQTT connections by protocol version and result",
    ),
    (MQTT_CONNECTIONS_ACTIVE, "MQTT connections open now"),
    (
        MQTT_PUBLISHES,
        "MQTT publishes by direction (in, out, bridge_in, bridge_out)",
    ),
    (
        MQTT_REFUSED,
        "MQTT publishes and subscriptions refused, by reason",
    ),
    (
        MQTT_BRIDGE_CONNECTS,
        "Connections of the MQTT bridge to its broker",
    ),
    (
        crate::ml::ANOMALIES,
        "Anomalies the ML workers found in telemetry",
    ),
    (
        crate::ml::ANOMALY_READINGS_DROPPED,
        "Telemetry points not scored because the scoring queue was full",
    ),
    (
        crate::ml::MODERATION_UNCHECKED,
        "Messages published without a moderation check, by why (ml_off, error)",
    ),
    (
        crate::ml::MODERATION_FLAGGED,
        "Messages the moderation check flagged or held",
    ),
    (
        unhidra_ml_bridge::metric::REQUEST_DURATION,
        "Calls to the ML workers by op",
    ),
    (
        unhidra_ml_bridge::metric::REQUEST_ERRORS,
        "Failed calls to the ML workers by op and kind",
    ),
    (
        unhidra_ml_bridge::metric::WORKER_RESTARTS,
        "ML worker restarts by reason",
    ),
    (
        unhidra_ml_bridge::metric::QUEUE_DEPTH,
        "Calls waiting for an ML worker",
    ),
    (
        unhidra_ml_bridge::metric::WORKERS_READY,
        "ML workers connected and ready",
    ),
];

/// One series' labels: (name, value) pairs.
pub type Labels = &'static [(&'static str, &'static str)];

/// The series registered at 0 on start: each counter with every label set it is recorded
/// with that is known in advance (reasons that come from elsewhere, such as a token's, appear
/// with their first event), and the gauges.
pub const KNOWN_SERIES: &[(&str, &[Labels])] = &[
    (
        CONNECTIONS_REFUSED,
        &[
            &[("listener", "api"), ("reason", "server_full")],
            &[("listener", "api"), ("reason", "per_address")],
            &[("listener", "metrics"), ("reason", "server_full")],
            &[("listener", "metrics"), ("reason", "per_address")],
            &[("listener", "mqtt"), ("reason", "server_full")],
            &[("listener", "mqtt"), ("reason", "per_address")],
        ],
    ),
    (
        LOGIN_ATTEMPTS,
        &[
            &[("result", "ok")],
            &[("result", "invalid_credentials")],
            &[("result", "rate_limited")],
        ],
    ),
    (
        PASSWORD_QUEUE_REJECTIONS,
        &[&[("op", "hash")], &[("op", "verify")]],
    ),
    (
        AUTH_FAILURES,
        &[
            &[("reason", "missing_token")],
            &[("reason", "device_key_on_user_route")],
        ],
    ),
    (
        RATE_LIMIT_HITS,
        &[
            &[("limit", "login")],
            &[("limit", "register")],
            &[("limit", "device_register")],
        ],
    ),
    (
        DEVICE_AUTH,
        &[
            &[("result", "ok")],
            &[("result", "device_key_malformed")],
            &[("result", "device_key_unknown")],
            &[("result", "device_key_mismatch")],
            &[("result", "device_revoked")],
            &[("result", "mqtt_username_mismatch")],
        ],
    ),
    (FILES_UPLOADED, &[&[]]),
    (FILES_UPLOADED_BYTES, &[&[]]),
    (
        GATEWAY_CONNECTIONS,
        &[&[("kind", "user")], &[("kind", "device")]],
    ),
    (
        GATEWAY_MESSAGES,
        &[&[("direction", "in")], &[("direction", "out")]],
    ),
    (
        GATEWAY_RATE_LIMIT_HITS,
        &[
            &[("kind", "message")],
            &[("kind", "connect_ip")],
            &[("kind", "connect_user")],
        ],
    ),
    (
        GATEWAY_AUTH_FAILURES,
        &[
            &[("reason", "missing_protocol")],
            &[("reason", "missing_credential")],
            &[("reason", "several_credentials")],
            &[("reason", "origin")],
        ],
    ),
    (GATEWAY_TELEMETRY_POINTS, &[&[]]),
    (TELEMETRY_POINTS_STORED, &[&[]]),
    (TELEMETRY_POINTS_PRUNED, &[&[]]),
    (
        MQTT_CONNECTIONS,
        &[
            &[("version", "3.1.1"), ("result", "ok")],
            &[("version", "3.1.1"), ("result", "refused")],
            &[("version", "5"), ("result", "ok")],
            &[("version", "5"), ("result", "refused")],
            &[("version", "3.1.1"), ("result", "bad_protocol")],
            &[("version", "unknown"), ("result", "no_connect")],
        ],
    ),
    (
        MQTT_PUBLISHES,
        &[
            &[("direction", "in")],
            &[("direction", "out")],
            &[("direction", "bridge_in")],
            &[("direction", "bridge_out")],
        ],
    ),
    (
        MQTT_REFUSED,
        &[
            &[("reason", "topic")],
            &[("reason", "payload")],
            &[("reason", "busy")],
            &[("reason", "subscribe")],
            &[("reason", "bridge_device")],
        ],
    ),
    (MQTT_BRIDGE_CONNECTS, &[&[]]),
    (crate::ml::ANOMALIES, &[&[]]),
    (crate::ml::ANOMALY_READINGS_DROPPED, &[&[]]),
    (
        crate::ml::MODERATION_UNCHECKED,
        &[&[("why", "ml_off")], &[("why", "error")]],
    ),
    (crate::ml::MODERATION_FLAGGED, &[&[]]),
];

/// Gauges with labels, registered at 0 with each label set.
const LABELLED_GAUGES: &[(&str, &[Labels])] = &[(
    CONNECTIONS_OPEN,
    &[
        &[("listener", "api")],
        &[("listener", "metrics")],
        &[("listener", "mqtt")],
    ],
)];

/// Gauges, registered at 0.
const GAUGES: &[&str] = &[
    GATEWAY_CONNECTIONS_ACTIVE,
    MQTT_CONNECTIONS_ACTIVE,
    unhidra_ml_bridge::metric::QUEUE_DEPTH,
    unhidra_ml_bridge::metric::WORKERS_READY,
];

const HISTOGRAMS: &[&str] = &[
    HTTP_REQUEST_DURATION,
    PASSWORD_HASH_DURATION,
    GATEWAY_MESSAGE_LATENCY,
    unhidra_ml_bridge::metric::REQUEST_DURATION,
];

fn describe_and_register() {
    for (name, help) in DESCRIPTIONS {
        if GAUGES.contains(name) || LABELLED_GAUGES.iter().any(|(gauge, _)| gauge == name) {
            metrics::describe_gauge!(*name, *help);
        } else if HISTOGRAMS.contains(name) {
            metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
        } else {
            metrics::describe_counter!(*name, *help);
        }
    }
    for (name, label_sets) in KNOWN_SERIES {
        for labels in *label_sets {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(key, value)| metrics::Label::new(*key, *value))
                .collect();
            metrics::counter!(*name, labels).increment(0);
        }
    }
    for name in GAUGES {
        metrics::gauge!(*name).set(0.0);
    }
    for (name, label_sets) in LABELLED_GAUGES {
        for labels in *label_sets {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(key, value)| metrics::Label::new(*key, *value))
                .collect();
            metrics::gauge!(*name, labels).set(0.0);
        }
    }
}

/// Counts a refused credential by reason (bad token, revoked device, …).
pub fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!(NAME, "key" => "literal", …)` in the server's source, as
    /// (metric name, labels), for the names this module declares.
    fn literal_counters() -> Vec<(String, Vec<(String, String)>)> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut names = std::collections::HashMap::new();
        let mut files = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        // `pub const IDENT: &str = "name";` wherever metric names are declared.
        for text in &files {
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("pub const ") else {
                    continue;
                };
                if let Some((ident, value)) = rest.split_once(": &str = \"") {
                    if let Some(value) = value.strip_suffix("\";") {
                        names.insert(ident.to_owned(), value.to_owned());
                    }
                }
            }
        }
        let mut found = Vec::new();
        for text in &files {
            for call in text.split("metrics::counter!(").skip(1) {
                let args = call.split(')').next().unwrap();
                let mut parts = args.split(',').map(str::trim);
                let ident = parts.next().unwrap().rsplit("::").next().unwrap();
                let Some(name) = names.get(ident) else {
                    continue;
                };
                let mut labels = Vec::new();
                let mut literal = true;
                for part in parts.filter(|p| !p.is_empty()) {
                    let (key, value) = part.split_once("=>").unwrap();
                    let value = value.trim();
                    if value.starts_with('"') {
                        labels.push((
                            key.trim().trim_matches('"').to_owned(),
                            value.trim_matches('"').to_owned(),
                        ));
                    } else {
                        literal = false;
                    }
                }
                if literal {
                    found.push((name.clone(), labels));
                }
            }
        }
        found
    }

    /// A label value written in the code but missing from [`KNOWN_SERIES`] would appear only
    /// with its first event again.
    #[test]
    fn every_literal_label_set_of_a_known_counter_is_registered_at_zero() {
        let found = literal_counters();
        assert!(found.len() > 15, "{found:?}");
        for (name, labels) in found {
            let Some((_, known)) = KNOWN_SERIES.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let registered = known.iter().any(|set| {
                set.len() == labels.len()
                    && set
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            });
            assert!(registered, "{name} {labels:?} is not in KNOWN_SERIES");
        }
    }

    /// A name declared here but not described would have no `# HELP` and no line in
    /// docs/api.md (whose test reads DESCRIPTIONS).
    #[test]
    fn every_declared_metric_and_known_series_is_described() {
        let described = |name: &str| DESCRIPTIONS.iter().any(|(d, _)| *d == name);
        let this_file = include_str!("metrics.rs");
        let mut declared = 0;
        for line in this_file.lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            if let Some((_, value)) = rest.split_once(": &str = \"") {
                let name = value.trim_end_matches("\";");
                assert!(
                    described(name),
                    "{name} is declared but not in DESCRIPTIONS"
                );
                declared += 1;
            }
        }
        assert!(declared > 20, "{declared}");
        for (name, _) in KNOWN_SERIES {
            assert!(described(name), "{name}");
        }
    }
}

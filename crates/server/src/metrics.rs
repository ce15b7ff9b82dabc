//! Prometheus metrics: the recorder, its `/metrics` listener, and the names we record.
//!
//! The `metrics` facade has one global recorder per process, installed once; several servers
//! in one test process share it, so tests compare values before and after, never absolutes.

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
            if let Err(err) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %err, "a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Counts a refused credential by reason (bad token, revoked device, …).
pub fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

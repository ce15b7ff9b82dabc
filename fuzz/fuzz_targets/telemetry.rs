//! A device's telemetry, as the WebSocket frame and as the MQTT payload, through the checks
//! every transport applies (`devices::telemetry::validate`).
//!
//! What is accepted holds 1–64 metrics with valid names and finite values, and survives being
//! written as JSON and read back unchanged: the values a reader gets are the values the
//! device sent, to the bit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use unhidra_proto::mqtt::TelemetryPayload;
use unhidra_proto::ws::ClientFrame;
use unhidra_server::devices::telemetry::{validate, MAX_METRICS};

fn check(payload: &TelemetryPayload) {
    let now =
        OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let Ok(points) = validate(&payload.metrics, payload.ts, now) else {
        return;
    };
    assert_eq!(points, payload.metrics.len() as u64);
    assert!((1..=MAX_METRICS).contains(&payload.metrics.len()));
    for (name, value) in &payload.metrics {
        assert!(value.is_finite(), "{name}: {value}");
        assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
    }
    let json = serde_json::to_string(payload).expect("accepted telemetry serializes");
    let back: TelemetryPayload = serde_json::from_str(&json).expect("and reads back");
    for ((name, sent), (_, read)) in payload.metrics.iter().zip(&back.metrics) {
        assert_eq!(
            sent.to_bits(),
            read.to_bits(),
            "{name}: {sent:e} was read back as {read:e} from {json}"
        );
    }
    assert_eq!(back.ts, payload.ts);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = serde_json::from_slice::<TelemetryPayload>(data) {
        check(&payload);
    }
    if let Ok(ClientFrame::Telemetry { metrics, ts }) = serde_json::from_slice(data) {
        check(&TelemetryPayload { metrics, ts });
    }
});

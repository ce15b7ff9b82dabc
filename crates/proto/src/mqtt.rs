//! Devices over MQTT: the topic tree and the payloads.
//!
//! Every device has five topics under `unhidra/devices/{device_id}/`. It publishes to
//! `telemetry`, `status` and `results`, and subscribes to `commands` and `errors`; nothing
//! else is allowed, on the native listener or through a bridge. Payloads are the JSON of the
//! WebSocket frames of the same meaning ([`crate::ws`]) without their `type`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ErrorCode;

/// The root of the topic tree.
pub const TOPIC_ROOT: &str = "unhidra/devices";

/// What a topic under a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Device → server: [`TelemetryPayload`].
    Telemetry,
    /// Device → server: [`StatusPayload`] (heartbeats, and the Last Will).
    Status,
    /// Device → server: [`ResultPayload`], the answer to a command.
    Results,
    /// Server → device: [`CommandPayload`].
    Commands,
    /// Server → device: [`ErrorPayload`], what was refused and why.
    Errors,
}

impl TopicKind {
    pub const ALL: [TopicKind; 5] = [
        Self::Telemetry,
        Self::Status,
        Self::Results,
        Self::Commands,
        Self::Errors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Status => "status",
            Self::Results => "results",
            Self::Commands => "commands",
            Self::Errors => "errors",
        }
    }

    /// Whether devices publish to it (the others the server publishes to).
    pub fn from_device(self) -> bool {
        matches!(self, Self::Telemetry | Self::Status | Self::Results)
    }
}

/// `unhidra/devices/{device_id}/{kind}`.
pub fn topic(device_id: &str, kind: TopicKind) -> String {
    format!("{TOPIC_ROOT}/{device_id}/{}", kind.as_str())
}

/// Splits a topic of the tree into its device id and kind; `None` for any other topic
/// (including wildcards and extra levels).
pub fn parse_topic(topic: &str) -> Option<(&str, TopicKind)> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
    let (device_id, kind) = rest.split_once('/')?;
    if device_id.is_empty() || device_id.contains(['+', '#']) {
        return None;
    }
    let kind = TopicKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    Some((device_id, kind))
}

/// Published to `telemetry`: the `telemetry` frame without `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryPayload {
    pub metrics: BTreeMap<String, f64>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ts: Option<OffsetDateTime>,
}

/// Published to `status`: the `heartbeat` frame without `type`, and `online`, which a Last
/// Will sets to `false` so that the broker's will marks the device offline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
}

/// Published to `results`: the `command_result` frame without `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultPayload {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub output: serde_json::Value,
}

/// Published by the server to `commands`: the `command` frame without `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandPayload {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

/// Published by the server to `errors`: the `error` frame without `type`, and the topic of
/// the publish it refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/corpus/telemetry/regress-float-roundtrip): serde_json's default
    /// float parsing may be one unit in the last place off, so a value a device sent was
    /// stored, and read back, as a neighbour. Values are read as Rust reads them, exactly.
    #[test]
    fn telemetry_values_are_read_exactly_and_survive_a_round_trip() {
        let texts = [
            "1.7976931348623187e304",
            "1.797693134862319e+304",
            "1e-300",
            "0.1",
            "2.2250738585072011e-308",
            "4.9e-324",
            "9007199254740993",
        ];
        for text in texts {
            let json = format!(r#"{{"metrics":{{"v":{text}}}}}"#);
            let p: TelemetryPayload = serde_json::from_str(&json).unwrap();
            let v = p.metrics["v"];
            assert_eq!(
                v.to_bits(),
                text.parse::<f64>().unwrap().to_bits(),
                "{text}"
            );
            let back: TelemetryPayload =
                serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back.metrics["v"].to_bits(), v.to_bits(), "{text}");
        }
    }

    #[test]
    fn topics_round_trip_and_nothing_else_parses() {
        for kind in TopicKind::ALL {
            let t = topic("dev-1", kind);
            assert_eq!(parse_topic(&t), Some(("dev-1", kind)));
        }
        for bad in [
            "unhidra/devices/dev-1",
            "unhidra/devices//telemetry",
            "unhidra/devices/+/telemetry",
            "unhidra/devices/#",
            "unhidra/devices/dev-1/telemetry/extra",
            "unhidra/devices/dev-1/other",
            "other/devices/dev-1/telemetry",
            "unhidra/devicesX/dev-1/telemetry",
        ] {
            assert_eq!(parse_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn payloads_are_the_frames_without_type() {
        let t: TelemetryPayload =
            serde_json::from_str(r#"{"metrics":{"temp":21.5},"ts":"2026-12-07T00:00:00Z"}"#)
                .unwrap();
        assert_eq!(t.metrics.get("temp"), Some(&21.5));
        assert!(t.ts.is_some());
        assert!(serde_json::from_str::<TelemetryPayload>(r#"{"metrics":{},"x":1}"#).is_err());
        let s: StatusPayload = serde_json::from_str(r#"{"online":false}"#).unwrap();
        assert_eq!(s.online, Some(false));
        let r: ResultPayload = serde_json::from_str(r#"{"id":"c","ok":true}"#).unwrap();
        assert_eq!(r.output, serde_json::Value::Null);
    }
}

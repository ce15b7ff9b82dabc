//! Device registry bodies under `/api/v1/devices` and `/api/v1/device`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDeviceRequest {
    /// 1–64 characters, no control characters (trimmed by the server).
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F])?$"
        )
    )]
    pub name: String,
    /// Free-form kind such as `esp32`: 1–32 characters of `A-Z a-z 0-9 . _ -`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,32}$"))]
    pub kind: Option<String>,
    /// A JSON object of at most 4 KiB when serialized.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
}

/// The registered device and its API key. The key is shown only in this response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedDevice {
    pub device_id: String,
    /// `unh_dk_…`: store it on the device now; the server keeps only a keyed hash of it.
    pub api_key: String,
}

/// A registered device as its owner sees it (never its key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    pub device_id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// The key's public part (`unh_dk_<key_id>_…`), to tell keys apart in logs and lists.
    pub key_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When the device was revoked; a revoked device can no longer authenticate.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<OffsetDateTime>,
    pub state: DeviceState,
    /// The channel the device's events are posted to, if linked.
    #[serde(default)]
    pub channel_id: Option<String>,
}

/// `PUT /api/v1/devices/{id}/channel`: post the device's events to this channel (`null`:
/// nowhere).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkChannelRequest {
    pub channel_id: Option<String>,
}

/// Whether a device is connected, and what it last reported in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceState {
    pub online: bool,
    /// When it was last connected (now, while online); absent if it never was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_seen_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub firmware_version: Option<String>,
    /// Bytes, from the last heartbeat.
    #[serde(default)]
    pub free_memory: Option<u64>,
    /// From the last heartbeat of the current connection.
    #[serde(default)]
    pub uptime_secs: Option<u64>,
}

/// `GET /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

/// One bucket of `GET /api/v1/devices/{id}/telemetry`: the points in
/// `[start, start + bucket)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryBucket {
    /// Unix seconds.
    pub start: i64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    /// The newest point's value.
    pub last: f64,
}

/// `GET /api/v1/devices/{id}/telemetry`: one metric summarised per bucket, oldest first;
/// buckets without points are left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetrySeries {
    pub device_id: String,
    pub metric: String,
    /// Unix seconds, inclusive.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
    /// Bucket width in seconds.
    pub bucket: i64,
    pub buckets: Vec<TelemetryBucket>,
}

/// `GET /api/v1/devices/{id}/metrics`: the names of the device's metrics that hold points
/// (within the retention period), by name; each can be asked for in
/// `GET /api/v1/devices/{id}/telemetry?metric=`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceMetrics {
    pub device_id: String,
    pub metrics: Vec<String>,
}

/// `POST /api/v1/devices/{id}/commands`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendCommandRequest {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    /// Any JSON value (at most 4 KiB serialized); default `null`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: serde_json::Value,
    /// Seconds the command may wait for an offline device (1 s to 7 days; default 3600).
    #[serde(default, deserialize_with = "crate::number::optional_integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604_800))]
    pub ttl_secs: Option<u32>,
}

/// A command and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandInfo {
    pub id: String,
    pub device_id: String,
    pub name: String,
    /// What the command was sent with: any JSON value, `null` when none was given.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: serde_json::Value,
    /// `queued` (not delivered yet), `delivered`, `completed` (answered) or `expired`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub completed_at: Option<OffsetDateTime>,
    /// The device's answer, once completed.
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    /// The device's answer: any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub output: Option<serde_json::Value>,
}

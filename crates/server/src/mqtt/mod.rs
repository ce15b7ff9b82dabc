//! Devices over MQTT, beside the WebSocket gateway.
//!
//! - [`listener`] + [`session`]: the native listener (`mqtt.listen`, `--mqtt-listen`), MQTT
//!   3.1.1 and 5, TLS whenever the API has a certificate. Username is the device id,
//!   password the device key; a device may only publish to and subscribe to its own topics
//!   (`unhidra/devices/{id}/…`, see [`unhidra_proto::mqtt`]); QoS 1 publishes are
//!   acknowledged after what they carry is stored.
//! - [`bridge`]: for sites that already run a broker (`mqtt.bridge`, `--mqtt-bridge`):
//!   the server subscribes to the same topic tree there and routes it the same way.
//! - [`packets`]: the two protocol versions behind one shape (`rumqttc`'s codecs).
//!
//! Both paths hand a device's messages to [`route`], which parses the payload and calls the
//! device's [`DeviceLink`], exactly as the WebSocket session does with frames.

pub mod bridge;
pub mod listener;
pub mod packets;
pub mod session;

use unhidra_proto::mqtt::{ResultPayload, StatusPayload, TelemetryPayload, TopicKind};
use unhidra_proto::ErrorCode;

use crate::devices::link::{DeviceLink, Refusal};
use crate::devices::live::Heartbeat;

/// Takes a message a device published on one of its topics. `Ok`: done (telemetry stored);
/// `Err`: refused, nothing stored, the refusal says why.
pub async fn route(link: &DeviceLink, kind: TopicKind, payload: &[u8]) -> Result<(), Refusal> {
    match kind {
        TopicKind::Telemetry => {
            let telemetry: TelemetryPayload = parse(payload)?;
            link.telemetry(telemetry.metrics, telemetry.ts)
                .await
                .map(|_| ())
        }
        TopicKind::Status => {
            let status: StatusPayload = parse(payload)?;
            if status.online == Some(false) {
                // A Last Will: the link's end marks the device offline.
                return Ok(());
            }
            link.heartbeat(Heartbeat {
                firmware_version: status.firmware_version,
                free_memory: status.free_memory,
                uptime_secs: status.uptime_secs,
            });
            Ok(())
        }
        TopicKind::Results => {
            let result: ResultPayload = parse(payload)?;
            link.answer(&result.id, result.ok, result.output).await
        }
        TopicKind::Commands | TopicKind::Errors => Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!("devices do not publish to {}", kind.as_str()),
        }),
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(payload).map_err(|err| Refusal {
        code: ErrorCode::InvalidJson,
        message: format!("invalid payload: {err}"),
    })
}

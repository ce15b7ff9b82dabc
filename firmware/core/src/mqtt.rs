//! The same [`Device`] over MQTT instead of a WebSocket, still sans-IO.
//!
//! [`MqttDevice`] wraps a [`Device`] and translates between its frames and MQTT: the driver
//! runs an MQTT client (3.1.1 is enough) and carries out [`MqttAction`]s instead of
//! [`Action`]s. The topics and payloads are `unhidra_proto::mqtt`'s:
//!
//! | the core's frame | over MQTT |
//! |---|---|
//! | `telemetry` (sent) | publish to `…/{id}/telemetry`, QoS 1: the server acknowledges after storing |
//! | `heartbeat` (sent) | publish to `…/{id}/status`, QoS 0, with `"online": true` |
//! | `command_result` (sent) | publish to `…/{id}/results`, QoS 1 |
//! | `welcome` (received) | made up from an accepted CONNACK |
//! | `command` (received) | a publish on `…/{id}/commands` (subscribed at QoS 1) |
//! | `error` (received) | a publish on `…/{id}/errors` (subscribed at QoS 0); its `topic` becomes `ref` |
//! | WebSocket ping and pong | the MQTT client's keep-alive (PINGREQ/PINGRESP) |
//!
//! CONNECT: client id and user name are the device id, the password is the device key, the
//! session is clean, the keep-alive is the core's ping interval, and the Last Will publishes
//! `{"online":false}` to the device's `status` topic. After every CONNACK the device first
//! subscribes to `commands` and `errors`; the server then sends the commands still waiting.
//!
//! The driver's loop is the one of [`Device`]: call [`MqttDevice::poll`] until it returns
//! [`MqttAction::Wait`], wait until that time or an event, report the event, poll again.
//! Report every packet from the server: a publish with [`MqttDevice::on_publish`], an accepted
//! or refused CONNACK with [`MqttDevice::on_connack`], a PUBACK with [`MqttDevice::on_puback`],
//! anything else (PINGRESP, SUBACK) with [`MqttDevice::on_activity`]; each keeps the dead-peer
//! timer fed.
//!
//! Flow control: the server acknowledges a QoS 1 publish once it is stored, so acks come at
//! the store's pace. While [`TELEMETRY_WINDOW`] QoS 1 publishes wait for theirs, telemetry
//! stays in the core's outbox (which keeps the newest points) instead of piling up in the
//! MQTT client; command answers and heartbeats still go.

use serde::Serialize;
use unhidra_proto::mqtt::{
    parse_topic, topic, CommandPayload, ErrorPayload, ResultPayload, StatusPayload,
    TelemetryPayload, TopicKind,
};
use unhidra_proto::ws::{ClientFrame, Principal, ServerFrame};

use crate::device::{Action, Device, Disconnect, Stats};
use crate::rng::{Rng, SplitMix64};

/// The Last Will's payload: the server marks the device offline when it is published.
pub const WILL_PAYLOAD: &[u8] = br#"{"online":false}"#;

/// What the topic and the fixed header take of an MQTT packet at most (a device id of up to
/// 64 characters); the rest is left for a frame's payload.
pub const PACKET_OVERHEAD: usize = 256;

/// QoS 1 publishes that may wait for their PUBACK before telemetry is held back.
pub const TELEMETRY_WINDOW: usize = 16;

/// One MQTT publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0 or 1.
    pub qos: u8,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttAction {
    /// Open a connection: CONNECT with [`MqttDevice::connect_options`] and the device key as
    /// password, then report [`MqttDevice::on_connack`] or [`MqttDevice::on_disconnected`].
    Connect,
    /// Subscribe to these topic filters, each with its maximum QoS.
    Subscribe(Vec<(String, u8)>),
    Publish(Publish),
    /// Drop the connection without DISCONNECT (so the server publishes the Last Will), or
    /// abandon the attempt in progress.
    Close,
    /// Nothing to do until this time (ms), unless an event comes first.
    Wait(u64),
}

/// What CONNECT carries besides the password (the device key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub client_id: String,
    pub username: String,
    pub keep_alive_secs: u16,
    pub clean_session: bool,
    /// Published to `status` by the server if the connection ends without DISCONNECT.
    pub will: Publish,
}

/// How the server answered CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAck {
    Accepted,
    /// The key was refused: bad user name or password, or not authorized (3.1.1 codes 4
    /// and 5; MQTT 5 0x86, 0x87, 0x8C). Waits long, like a WebSocket upgrade refused with 401.
    Unauthorized,
    /// Server unavailable, busy or connecting too often (3.1.1 code 3; MQTT 5 0x88, 0x89,
    /// 0x9F). An ordinary backoff, like an upgrade refused with 503.
    Unavailable,
    /// Any other refusal, with its code (protocol version, client id).
    Refused(u8),
}

impl ConnAck {
    /// From an MQTT 3.1.1 CONNACK return code.
    pub fn from_v311(code: u8) -> Self {
        match code {
            0 => Self::Accepted,
            3 => Self::Unavailable,
            4 | 5 => Self::Unauthorized,
            other => Self::Refused(other),
        }
    }

    /// From an MQTT 5 CONNACK reason code.
    pub fn from_v5(code: u8) -> Self {
        match code {
            0 => Self::Accepted,
            0x86 | 0x87 | 0x8C => Self::Unauthorized,
            0x88 | 0x89 | 0x9F => Self::Unavailable,
            other => Self::Refused(other),
        }
    }

    /// The refusal as the core knows refusals (HTTP statuses of the WebSocket upgrade).
    fn disconnect(self) -> Disconnect {
        let status = match self {
            Self::Unauthorized => 401,
            Self::Unavailable => 503,
            Self::Accepted | Self::Refused(_) => 400,
        };
        Disconnect::Refused {
            status,
            retry_after_ms: None,
        }
    }
}

/// Counters of the translation; the core's own are in [`MqttDevice::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Publishes handed to the driver (all QoS).
    pub publishes: u64,
    pub subscribes: u64,
    /// Frames of the core that have no MQTT topic (none today), dropped.
    pub untranslatable: u64,
}

/// A [`Device`] speaking MQTT.
pub struct MqttDevice<R: Rng = SplitMix64> {
    device: Device<R>,
    device_id: String,
    /// Set by an accepted CONNACK: the subscriptions go out before anything else.
    subscribe_due: bool,
    /// QoS 1 publishes of this connection not yet acknowledged.
    unacked: usize,
    stats: MqttStats,
}

impl<R: Rng> std::fmt::Debug for MqttDevice<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttDevice")
            .field("device_id", &self.device_id)
            .field("device", &self.device)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Rng> MqttDevice<R> {
    /// `device` (with its handlers registered, or register them through
    /// [`MqttDevice::device_mut`]) as device `device_id`, the MQTT user name.
    pub fn new(device: Device<R>, device_id: impl Into<String>) -> Self {
        Self {
            device,
            device_id: device_id.into(),
            subscribe_due: false,
            unacked: 0,
            stats: MqttStats::default(),
        }
    }

    pub fn device(&self) -> &Device<R> {
        &self.device
    }

    /// For [`Device::register`], [`Device::queue_telemetry`] and the like.
    pub fn device_mut(&mut self) -> &mut Device<R> {
        &mut self.device
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The core's counters.
    pub fn stats(&self) -> Stats {
        self.device.stats()
    }

    pub fn mqtt_stats(&self) -> MqttStats {
        self.stats.clone()
    }

    /// Something is waiting to go out (subscriptions, frames or pings).
    pub fn has_pending(&self) -> bool {
        self.subscribe_due || self.device.has_pending()
    }

    /// This device's topic of `kind`.
    pub fn topic(&self, kind: TopicKind) -> String {
        topic(&self.device_id, kind)
    }

    /// What to put in CONNECT (the password is the device key).
    pub fn connect_options(&self) -> ConnectOptions {
        let keep_alive_ms = self.device.config().ping_interval_ms;
        ConnectOptions {
            client_id: self.device_id.clone(),
            username: self.device_id.clone(),
            keep_alive_secs: u16::try_from(keep_alive_ms.div_ceil(1000).max(1)).unwrap_or(u16::MAX),
            clean_session: true,
            will: Publish {
                topic: self.topic(TopicKind::Status),
                payload: WILL_PAYLOAD.to_vec(),
                qos: 1,
            },
        }
    }

    /// The server answered CONNECT.
    pub fn on_connack(&mut self, now_ms: u64, ack: ConnAck) {
        self.unacked = 0;
        if ack != ConnAck::Accepted {
            self.device.on_disconnected(now_ms, ack.disconnect());
            return;
        }
        self.device.on_connected(now_ms);
        let max_message_bytes = self
            .device
            .config()
            .max_frame_bytes
            .saturating_sub(PACKET_OVERHEAD);
        self.device.on_frame(
            now_ms,
            ServerFrame::Welcome {
                connection_id: format!("mqtt:{}", self.device_id),
                principal: Principal::Device {
                    id: self.device_id.clone(),
                },
                max_message_bytes,
                // Devices do not publish chat messages.
                publish_window: 1,
            },
        );
        self.subscribe_due = self.device.is_connected();
    }

    /// A publish from the server arrived.
    pub fn on_publish(&mut self, now_ms: u64, topic: &str, payload: &[u8]) {
        let kind = match parse_topic(topic) {
            Some((id, kind)) if id == self.device_id => kind,
            _ => return self.device.on_ignored(now_ms),
        };
        match kind {
            TopicKind::Commands => match serde_json::from_slice::<CommandPayload>(payload) {
                Ok(command) => self.device.on_frame(
                    now_ms,
                    ServerFrame::Command {
                        id: command.id,
                        name: command.name,
                        args: command.args,
                    },
                ),
                Err(_) => self.device.on_malformed(now_ms),
            },
            TopicKind::Errors => match serde_json::from_slice::<ErrorPayload>(payload) {
                Ok(error) => self.device.on_frame(
                    now_ms,
                    ServerFrame::Error {
                        code: error.code,
                        message: error.message,
                        reference: error.topic,
                    },
                ),
                Err(_) => self.device.on_malformed(now_ms),
            },
            TopicKind::Telemetry | TopicKind::Status | TopicKind::Results => {
                self.device.on_ignored(now_ms);
            }
        }
    }

    /// A PUBACK: one QoS 1 publish less waits (telemetry: it is stored).
    pub fn on_puback(&mut self, now_ms: u64) {
        self.unacked = self.unacked.saturating_sub(1);
        self.device.on_pong(now_ms);
    }

    /// QoS 1 publishes of this connection still waiting for their PUBACK.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Any other packet from the server (PINGRESP, SUBACK): the peer is alive.
    pub fn on_activity(&mut self, now_ms: u64) {
        self.device.on_pong(now_ms);
    }

    /// The connection, or the attempt, ended (MQTT 3.1.1 says no more than that).
    pub fn on_disconnected(&mut self, now_ms: u64) {
        self.subscribe_due = false;
        self.unacked = 0;
        self.device.on_disconnected(now_ms, Disconnect::Lost);
    }

    /// The next thing to do at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> MqttAction {
        if self.subscribe_due && self.device.is_connected() {
            self.subscribe_due = false;
            self.stats.subscribes += 1;
            return MqttAction::Subscribe(vec![
                (self.topic(TopicKind::Commands), 1),
                (self.topic(TopicKind::Errors), 0),
            ]);
        }
        self.device.hold_telemetry(self.unacked >= TELEMETRY_WINDOW);
        // Each turn takes something off the core's queue, so this ends.
        loop {
            match self.device.poll(now_ms) {
                Action::Connect => return MqttAction::Connect,
                Action::Close => {
                    self.subscribe_due = false;
                    self.unacked = 0;
                    return MqttAction::Close;
                }
                Action::Wait(at) => return MqttAction::Wait(at),
                // The MQTT client's keep-alive pings; `on_activity` reports the answers.
                Action::SendPing => {}
                Action::Send(text) => match self.translate(&text) {
                    Some(publish) => {
                        self.stats.publishes += 1;
                        if publish.qos == 1 {
                            self.unacked += 1;
                        }
                        return MqttAction::Publish(publish);
                    }
                    None => self.stats.untranslatable += 1,
                },
            }
        }
    }

    /// A frame of the core as the publish that carries it; `None` for frames with no topic.
    fn translate(&self, text: &str) -> Option<Publish> {
        let (kind, qos, payload) = match serde_json::from_str::<ClientFrame>(text).ok()? {
            ClientFrame::Telemetry { metrics, ts } => (
                TopicKind::Telemetry,
                1,
                to_json(&TelemetryPayload { metrics, ts })?,
            ),
            ClientFrame::Heartbeat {
                firmware_version,
                free_memory,
                uptime_secs,
            } => (
                TopicKind::Status,
                0,
                to_json(&StatusPayload {
                    online: Some(true),
                    firmware_version,
                    free_memory,
                    uptime_secs,
                })?,
            ),
            ClientFrame::CommandResult { id, ok, output } => (
                TopicKind::Results,
                1,
                to_json(&ResultPayload { id, ok, output })?,
            ),
            _ => return None,
        };
        Some(Publish {
            topic: self.topic(kind),
            payload,
            qos,
        })
    }
}

fn to_json(value: &impl Serialize) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}

//! One connected device, whatever carries it: a WebSocket session, an MQTT session on the
//! native listener, or the MQTT bridge. Opening a link marks the device online and tells its
//! owner; dropping it marks the device offline (when it was its last link) and tells the owner
//! again. In between, the link takes what the device sends: telemetry (validated, then stored
//! through the batching writer, answered after the commit), heartbeats and command answers.
//! Each transport only turns its own framing into these calls and the [`Refusal`]s back into
//! its own way of saying no.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use unhidra_proto::devices::DeviceState;
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::ErrorCode;
use unhidra_store::{Command, StoreError, TelemetryPoint};

use crate::chat::events::{publish_passing, user_topic};
use crate::devices::ingest::IngestError;
use crate::devices::live::Heartbeat;
use crate::state::SharedState;

/// Why something a device sent was not taken; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Whether sending the same thing later may succeed (the server was busy or failing),
    /// as opposed to something wrong with what was sent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::StorageUnavailable
                | ErrorCode::Internal
        )
    }
}

/// A device's live connection, as the rest of the server sees it.
pub struct DeviceLink {
    state: SharedState,
    device_id: String,
    owner_id: String,
}

impl DeviceLink {
    /// The device connected: it is online, its owner is told, and if it was offline an
    /// "is online" event goes to its linked channel.
    pub fn open(state: &SharedState, device_id: &str, owner_id: &str) -> Self {
        let now = state.clock.now();
        let (device_state, came_online) = state.gateway.devices.connect(device_id, owner_id, now);
        announce(state, owner_id, device_id, device_state);
        if came_online {
            crate::devices::events::spawn_post(state, device_id, "is online".to_owned());
        }
        Self {
            state: state.clone(),
            device_id: device_id.to_owned(),
            owner_id: owner_id.to_owned(),
        }
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Validates and stores a telemetry reading; returns the number of points once they are
    /// committed. Awaiting it paces a device to the store's speed.
    pub async fn telemetry(
        &self,
        metrics: BTreeMap<String, f64>,
        ts: Option<OffsetDateTime>,
    ) -> Result<u64, Refusal> {
        let now = self.state.clock.now();
        let count = crate::devices::telemetry::validate(&metrics, ts, now)
            .map_err(|why| Refusal::new(ErrorCode::InvalidField, why))?;
        let at = ts.unwrap_or(now);
        let points: Vec<TelemetryPoint> = metrics
            .into_iter()
            .map(|(metric, value)| TelemetryPoint {
                device_id: self.device_id.clone(),
                metric,
                ts: at,
                value,
            })
            .collect();
        let scored = self.state.anomalies.is_on().then(|| points.clone());
        match self.state.telemetry.store(points).await {
            Ok(()) => {
                metrics::counter!(crate::metrics::GATEWAY_TELEMETRY_POINTS).increment(count);
                // Scored after the commit, off the acknowledgement path.
                if let Some(stored) = scored {
                    self.state.anomalies.offer(&stored);
                }
                Ok(count)
            }
            Err(err) => {
                tracing::debug!(error = %err, device = %self.device_id, "telemetry not stored");
                Err(match err {
                    IngestError::Overloaded => Refusal::new(ErrorCode::Overloaded, err.to_string()),
                    IngestError::Stopped => Refusal::new(ErrorCode::Unavailable, err.to_string()),
                    IngestError::Store(StoreError::Unavailable { outage, .. }) => Refusal::new(
                        ErrorCode::StorageUnavailable,
                        crate::http::error::storage_message(outage),
                    ),
                    IngestError::Store(_) => {
                        Refusal::new(ErrorCode::Internal, "the telemetry could not be stored")
                    }
                })
            }
        }
    }

    /// A heartbeat: the device's reported state is kept and its owner told.
    pub fn heartbeat(&self, beat: Heartbeat) {
        let beat = Heartbeat {
            firmware_version: beat.firmware_version.map(|v| v.chars().take(64).collect()),
            ..beat
        };
        let devices = &self.state.gateway.devices;
        if let Some(device_state) = devices.heartbeat(&self.device_id, beat, self.state.clock.now())
        {
            announce(&self.state, &self.owner_id, &self.device_id, device_state);
        }
    }

    /// The device's answer to command `id`; the sender is told. Answering again is accepted
    /// and changes nothing.
    pub async fn answer(
        &self,
        id: &str,
        ok: bool,
        output: serde_json::Value,
    ) -> Result<(), Refusal> {
        match crate::devices::commands::answer(&self.state, &self.device_id, id, ok, output).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::new(
                ErrorCode::NotFound,
                "no such command for this device",
            )),
            Err(err) => {
                tracing::error!(error = %err, "storing a command result failed");
                Err(Refusal::new(ErrorCode::Internal, "internal error"))
            }
        }
    }

    /// Commands waiting for the device, oldest first (at most `limit`).
    pub async fn pending_commands(&self, limit: u32) -> Result<Vec<Command>, StoreError> {
        self.state
            .store
            .pending_commands(&self.device_id, self.state.clock.now(), limit)
            .await
    }

    /// Records a command's first delivery without holding up the caller.
    pub fn note_delivered(&self, command_id: String) {
        let state = self.state.clone();
        tokio::spawn(async move {
            let now = state.clock.now();
            if let Err(err) = state.store.mark_command_delivered(&command_id, now).await {
                tracing::warn!(error = %err, "recording a command's delivery failed");
            }
        });
    }
}

impl Drop for DeviceLink {
    fn drop(&mut self) {
        let state = &self.state;
        if let Some(device_state) = state
            .gateway
            .devices
            .disconnect(&self.device_id, state.clock.now())
        {
            let went_offline = !device_state.online;
            announce(state, &self.owner_id, &self.device_id, device_state);
            if went_offline {
                crate::devices::events::spawn_post(state, &self.device_id, "is offline".to_owned());
            }
        }
    }
}

/// Tells the owner's connections about their device.
fn announce(state: &SharedState, owner: &str, device_id: &str, device_state: DeviceState) {
    let frame = ServerFrame::DeviceState {
        device: device_id.to_owned(),
        state: device_state,
    };
    publish_passing(state, &user_topic(owner), &frame);
}

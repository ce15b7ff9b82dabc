//! The portable core of an Unhidra device, shared by the ESP32 firmware (`firmware/esp32`)
//! and the simulator (`unhidra-sim`).
//!
//! Sans-IO: [`Device`] is a state machine fed with events and the current time in
//! milliseconds (monotonic), which answers with [`Action`]s for its driver to carry out.
//! Randomness (for jitter) comes from an [`Rng`]. Frames are the shared wire types of
//! `unhidra_proto::ws`; `docs/protocol.md` describes them.
//!
//! - [`device`]: the connection (backoff, welcome, pings, heartbeats, rate, errors);
//! - [`backoff`]: exponential backoff with full jitter;
//! - [`commands`]: handlers by name, answers remembered for re-deliveries;
//! - [`outbox`]: bounded telemetry queue that keeps the newest points;
//! - [`mqtt`]: the same device over MQTT instead of a WebSocket ([`MqttDevice`]);
//! - [`rng`]: the randomness trait and a seeded PRNG.

pub mod backoff;
pub mod commands;
pub mod device;
pub mod mqtt;
pub mod outbox;
pub mod rng;

pub use backoff::{Backoff, BackoffConfig};
pub use commands::{Answer, HandlerResult};
pub use device::{Action, Config, Device, Disconnect, State, Stats, TelemetryError};
pub use mqtt::{ConnAck, MqttAction, MqttDevice};
pub use outbox::Outbox;
pub use rng::{Rng, SplitMix64};
pub use {time, unhidra_proto};

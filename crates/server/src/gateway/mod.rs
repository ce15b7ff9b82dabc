//! The real-time gateway: one WebSocket endpoint, `GET /ws`, for people and devices.
//!
//! - [`handshake`]: rate limits, origin check and authentication from
//!   `Sec-WebSocket-Protocol`, all before the upgrade.
//! - [`session`]: one connection's loop: frames in, acks and deliveries out, pings, limits.
//! - [`socket`]: the WebSocket's settings, what a read means (close codes for protocol
//!   violations) and closing; shared with the conformance echo (`examples/ws_echo.rs`).
//! - [`early`]: deliveries held while an earlier seq of their channel is on its way.
//! - [`registry`]: every live connection, and closing them from the server side.
//! - [`hub`]: fan-out of stored messages to subscribed sessions (the seam for NATS).
//! - [`presence`]: who is online, away or offline.

pub mod early;
pub mod handshake;
pub mod hub;
pub mod presence;
pub mod registry;
pub mod session;
pub mod socket;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use hub::Hub;
use presence::Presence;
use registry::Registry;

/// The gateway's shared parts.
pub struct Gateway {
    pub registry: Registry,
    pub hub: Arc<dyn Hub>,
    pub presence: Presence,
    /// Connected devices and what they last reported.
    pub devices: crate::devices::live::LiveDevices,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Cancelled when the server shuts down; every session closes with 1001.
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub fn new(hub: Arc<dyn Hub>, shutdown: CancellationToken) -> Self {
        Self {
            registry: Registry::default(),
            hub,
            presence: Presence::default(),
            devices: Default::default(),
            sessions: TaskTracker::new(),
            shutdown,
        }
    }
}

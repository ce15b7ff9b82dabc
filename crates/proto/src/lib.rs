//! Unhidra's wire types.
//!
//! Everything a client, a device or the server puts on the wire is defined here, with serde
//! only (no async runtime), so that the server, the firmware core, the simulator and test
//! clients share one definition and cannot drift apart.

pub mod admin;
pub mod auth;
pub mod channels;
pub mod devices;
pub mod error;
pub mod files;
pub mod mqtt;
pub mod number;
pub mod ws;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

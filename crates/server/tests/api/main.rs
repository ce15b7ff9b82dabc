//! Integration tests of the HTTP API: the real server from `launch()` on port 0, a fresh
//! temp data dir per test, a real HTTP client over real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod helpers;

mod accounts;
mod chat;
mod commands;
mod connections;
mod devices;
mod edge;
mod events;
mod files;
mod limits;
mod ml;
mod mqtt;
mod mqtt_bridge;
mod openapi;
mod telemetry;
mod tls;
mod tokens;
mod ws;
mod ws_protocol;

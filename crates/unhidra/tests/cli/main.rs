//! End-to-end tests of the `unhidra` binary: each test runs the real executable (serve,
//! config, admin, keys) in a fresh temp dir and talks to it over HTTP, signals and files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod admin_cli;
mod audit_trail;
mod chaos_disk;
mod chaos_ml;
mod chaos_replay;
mod chaos_sigkill;
mod config_layering;
mod credential_errors;
mod data_files;
mod durability;
mod first_start;
mod helpers;
mod key_rotation;
mod login_memory;
mod metrics_names;
mod restart;
mod secrets_in_logs;
mod shutdown;
mod silent_sockets;
mod slow_consumer;
mod ws_shutdown;

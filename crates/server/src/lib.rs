//! The Unhidra server as a library.
//!
//! [`launch`] runs the whole server on listeners the caller bound (tests bind port 0) until
//! the shutdown token is cancelled, and returns only when every task it started has finished.
//! The `unhidra` binary is a thin CLI around it.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod clock;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod devices;
pub mod files;
pub mod gateway;
pub mod http;
mod launch;
pub mod metrics;
pub mod ml;
pub mod mqtt;
pub mod ops;
pub mod rate_limit;
pub mod state;
pub mod tls;
pub mod web;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use data_dir::{paths, prepare_data_dir};
pub use launch::{launch, launch_with_clock, LaunchError, Listeners};

//! Benchmarks of the Unhidra server, run by hand (never in tests); results are recorded in
//! `docs/benchmarks.md`.
//!
//! Each benchmark starts its own server in-process (see [`target`]) unless pointed at a running
//! one, drives it over real HTTP on loopback, and returns a report that prints as a human
//! summary or serialises to JSON. Every loop is bounded by a count or a duration.

pub mod api;
pub mod cpu;
pub mod device_keys;
pub mod login_flood;
pub mod stats;
pub mod target;
pub mod workers;

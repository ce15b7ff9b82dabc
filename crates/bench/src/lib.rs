//! Benchmarks of the Unhidra server, run by hand (never in tests); results are recorded in
//! `docs/benchmarks.md`.
//!
//! The HTTP benchmarks start their own server in-process (see [`target`]) unless pointed at a
//! running one; the gateway benchmarks, which hold thousands of connections, run the `unhidra`
//! binary as a separate process (see [`server_process`]) and read its memory and CPU from
//! `/proc`; so do the chat benchmarks, which first write a large history into the data dir
//! through the store (see [`chat_corpus`]). Each drives the server over loopback and returns
//! a report that prints as a human summary or serialises to JSON. [`ml`] starts no server: it
//! drives the Python ML workers through `unhidra-ml-bridge`, as the server does. Every loop is bounded by a count or a duration.
//!
//! The peer Unhidra is compared with is Debian's Mosquitto: [`mosquitto`] starts it for one
//! run, [`mqtt_load`] drives it with `rumqttc`, and [`peer`] puts Unhidra's figures next to
//! its as ratios. [`pinning`] gives the server and the load generator a CPU each.

pub mod api;
pub mod chat_corpus;
pub mod chat_history;
pub mod chat_throughput;
pub mod chat_traffic;
pub mod cpu;
pub mod device_keys;
pub mod gateway;
pub mod gateway_fanout;
pub mod gateway_idle;
pub mod gateway_reconnect;
pub mod login_flood;
pub mod login_memory;
pub mod ml;
pub mod mosquitto;
pub mod mosquitto_fanout;
pub mod mosquitto_idle;
pub mod mosquitto_pairs;
pub mod mqtt_load;
pub mod peer;
pub mod pinning;
pub mod procfs;
pub mod progress;
pub mod server_process;
pub mod stats;
pub mod store_append;
pub mod target;
pub mod telemetry_store;
pub mod workers;
pub mod ws_client;

//! What the fuzz targets share: a server running in-process on loopback for the targets that
//! reach it over real sockets ([`server`]), the fixed signing key of the token target
//! ([`jwt_key`]), and the MQTT target's input format ([`mqtt_input`]), in which
//! `examples/make_seeds.rs` writes seeds.
//!
//! A target fails on a panic anywhere in the process, the server's tasks included: libFuzzer's
//! panic hook aborts, and the input is saved under `artifacts/<target>/`.

pub mod jwt_key;
pub mod mqtt_input;
pub mod server;

/// Replaces the placeholders a seed may hold with what only the running server knows.
pub fn fill(text: &str, server: &server::Server) -> String {
    text.replace("$TOKEN", &server.access_token)
        .replace("$KEY", &server.device_key)
        .replace("$DEVICE", &server.device_id)
        .replace("$CHANNEL", &server.channel_id)
}

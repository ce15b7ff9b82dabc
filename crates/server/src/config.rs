//! The server's typed configuration.
//!
//! Layering (defaults, then a TOML file, then `UNHIDRA_*` environment variables, then CLI
//! flags) happens in the binary; this module defines the shape, the defaults and the checks.
//! Unknown keys in a file are refused, so a typo never silently falls back to a default.
//! Nothing here is a secret: keys live in files in the data dir, written 0600, and the TLS
//! key in a file of its own that group and others must not be able to read.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the API listener (REST and the WebSocket at `/ws`).
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first). With `tls_key`, the API listener speaks only
    /// HTTPS/WSS; without both, plain HTTP (for loopback or behind a TLS-terminating proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of `tls_cert`; refused unless group and
    /// others have no access to it (mode 0600 or 0400).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Directory holding the database and key files; created with mode 0700.
    pub data_dir: PathBuf,
    /// Address of the Prometheus metrics listener (path `/metrics`).
    pub metrics_listen: SocketAddr,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges). Empty: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, reading its body included, in seconds (408 beyond).
    /// File uploads have `files.upload_timeout_secs` instead.
    pub request_timeout_secs: u32,
    pub connections: ConnectionsConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub gateway: GatewayConfig,
    pub files: FilesConfig,
    pub telemetry: TelemetryConfig,
    pub mqtt: MqttConfig,
    pub ml: MlConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from("./data"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            connections: ConnectionsConfig::default(),
            auth: AuthConfig::default(),
            rate_limits: RateLimitConfig::default(),
            gateway: GatewayConfig::default(),
            files: FilesConfig::default(),
            telemetry: TelemetryConfig::default(),
            mqtt: MqttConfig::default(),
            ml: MlConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Limits on the connections of every listener (API, metrics, MQTT), so that sockets that
/// send nothing, or too little too slowly, cannot use up the server's file descriptors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Connections open at once over all listeners; beyond it new ones are closed at once.
    /// Unset: the process's open-file limit less 256 descriptors kept for the database,
    /// files and ML workers (see `docs/operations.md` for raising the limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open: Option<usize>,
    /// Connections open at once from one client address (IPv6 by /64). Unset: 1,000, or half
    /// of `max_open` if that is less, so that one address never takes everything. Addresses
    /// in `trusted_proxies` are not capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_ip: Option<usize>,
    /// A connection must send a complete HTTP request head within this many seconds of
    /// opening, and of its previous response (so it also ends idle keep-alive connections).
    pub header_timeout_secs: u32,
    /// A write to a client that makes no progress for this many seconds ends the connection
    /// (a client that stops reading its responses).
    pub send_timeout_secs: u32,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_open: None,
            max_per_ip: None,
            header_timeout_secs: 10,
            send_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of issued access tokens.
    pub issuer: String,
    /// `aud` of issued access tokens.
    pub audience: String,
    /// Access-token lifetime in seconds.
    pub access_token_ttl_secs: u32,
    /// A login session's (refresh-token family's) absolute lifetime in seconds.
    pub session_ttl_secs: u32,
    /// Password hashes computed at once; 0 means one per CPU core.
    pub hash_concurrency: usize,
    /// How long a login may wait for a hashing slot before getting 503 `overloaded`.
    pub hash_queue_timeout_secs: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "unhidra".into(),
            audience: "unhidra".into(),
            access_token_ttl_secs: 15 * 60,
            session_ttl_secs: 30 * 24 * 3600,
            hash_concurrency: 0,
            hash_queue_timeout_secs: 10,
        }
    }
}

/// Rate limits. Per client IP (IPv6 clients are counted per /64) unless named otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub login_per_minute: u32,
    pub register_per_hour: u32,
    pub device_register_per_hour: u32,
    /// WebSocket handshakes and MQTT connects per client IP.
    pub ws_connect_per_minute_per_ip: u32,
    /// WebSocket handshakes per user (devices are limited by IP only).
    pub ws_connect_per_minute_per_user: u32,
    /// Frames a client may send per second on one WebSocket connection; on MQTT, the pace
    /// publishes are read at.
    pub ws_messages_per_second: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            login_per_minute: 10,
            register_per_hour: 5,
            device_register_per_hour: 10,
            ws_connect_per_minute_per_ip: 60,
            ws_connect_per_minute_per_user: 30,
            ws_messages_per_second: 50,
        }
    }
}

/// The WebSocket gateway at `GET /ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Browser origins allowed besides the server's own (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Largest message (and frame) a client may send; larger closes with 1009.
    pub max_message_bytes: usize,
    /// How often the server pings; a peer that misses two pings is dropped.
    pub ping_interval_ms: u64,
    /// How long one write to a client may take before the client is dropped as stuck.
    pub write_timeout_ms: u64,
    /// How many deliveries a subscriber may fall behind before it is closed with 1013.
    pub channel_buffer: usize,
    /// Channels one connection may subscribe to at once.
    pub max_subscriptions: usize,
    /// How long shutdown waits for sessions to close before giving up on them.
    pub shutdown_grace_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_message_bytes: 64 * 1024,
            ping_interval_ms: 30_000,
            write_timeout_ms: 10_000,
            channel_buffer: 1024,
            max_subscriptions: 256,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// Files uploaded to channels (stored under `<data_dir>/files/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file accepted, in bytes; a larger upload is refused with 413.
    pub max_upload_bytes: u64,
    /// Longest an upload may take, in seconds (the default lets 25 MiB through at about
    /// 350 kbit/s); 408 beyond.
    pub upload_timeout_secs: u32,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 25 * 1024 * 1024,
            upload_timeout_secs: 600,
        }
    }
}

/// Device telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Points older than this many days are deleted in the background; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { retention_days: 30 }
    }
}

/// A configuration that cannot work.
/// Devices over MQTT: the native listener and the bridge to an existing broker (either,
/// both or neither).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address of the native MQTT 3.1.1/5 listener; off when unset. Speaks TLS when the API
    /// has a certificate (`tls_cert`/`tls_key`), plain MQTT otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Broker to bridge to (`mqtt://host:port` or `mqtts://host:port`, credentials as
    /// `user:password@`); off when unset. Shown redacted.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact_url_password"
    )]
    pub bridge: Option<String>,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_bytes: usize,
    /// Longest keep-alive a client may ask for, in seconds; a client asking for none (0)
    /// gets this one.
    pub max_keep_alive_secs: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: None,
            bridge: None,
            max_packet_bytes: 64 * 1024,
            max_keep_alive_secs: 600,
        }
    }
}

/// The ML sidecar: Python workers that score telemetry anomalies (and, later, messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlConfig {
    /// Start the workers. When they cannot start (no Python, or the worker's packages
    /// missing), the server runs without ML and says so in the log.
    pub enabled: bool,
    /// The interpreter that has the `unhidra_ml` package (`scripts/setup-ml.sh` makes
    /// `.venv-ml/bin/python`).
    pub python: PathBuf,
    pub workers: usize,
    /// Requests waiting or in flight, over all workers; beyond this, calls are refused.
    pub queue: usize,
    pub request_timeout_ms: u64,
    /// Score stored telemetry for anomalies.
    pub anomaly: bool,
    /// At most one anomaly event per device and metric in this many seconds.
    pub anomaly_event_cooldown_secs: u32,
    /// What the automatic check does with a message it flags: `off` (no check), `flag` (the
    /// message goes out carrying the reasons, and administrators see it listed) or `hold`
    /// (it is kept from the channel until an administrator releases it).
    pub moderation: ModerationMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModerationMode {
    #[default]
    Off,
    Flag,
    Hold,
}

impl Default for MlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            python: PathBuf::from("python3"),
            workers: 2,
            queue: 1024,
            request_timeout_ms: 2000,
            anomaly: true,
            anomaly_event_cooldown_secs: 300,
            moderation: ModerationMode::Off,
        }
    }
}

fn redact_url_password<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let shown = url.as_deref().map(|raw| match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => "(invalid URL)".to_owned(),
    });
    shown.serialize(serializer)
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_string()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return fail("tls_cert and tls_key must be set together (or neither, for plain HTTP)");
        }
        if self.max_body_bytes < 1024 {
            return fail("max_body_bytes must be at least 1024");
        }
        let conns = &self.connections;
        if conns.max_open.is_some_and(|n| n < 2) || conns.max_per_ip == Some(0) {
            return fail("connections.max_open must be at least 2 and max_per_ip at least 1");
        }
        if conns.header_timeout_secs == 0 || conns.send_timeout_secs == 0 {
            return fail(
                "connections.header_timeout_secs and send_timeout_secs must be at least 1",
            );
        }
        if self.auth.access_token_ttl_secs < 60 {
            return fail("auth.access_token_ttl_secs must be at least 60");
        }
        if self.auth.session_ttl_secs <= self.auth.access_token_ttl_secs {
            return fail("auth.session_ttl_secs must be longer than the access-token lifetime");
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return fail("auth.issuer and auth.audience must not be empty");
        }
        let limits = &self.rate_limits;
        if [
            limits.login_per_minute,
            limits.register_per_hour,
            limits.device_register_per_hour,
            limits.ws_connect_per_minute_per_ip,
            limits.ws_connect_per_minute_per_user,
            limits.ws_messages_per_second,
        ]
        .contains(&0)
        {
            return fail("rate limits must be at least 1");
        }
        let gw = &self.gateway;
        if gw.max_message_bytes < 1024 {
            return fail("gateway.max_message_bytes must be at least 1024");
        }
        if gw.ping_interval_ms < 100 || gw.write_timeout_ms < 100 {
            return fail("gateway.ping_interval_ms and write_timeout_ms must be at least 100");
        }
        if gw.channel_buffer == 0 || gw.max_subscriptions == 0 {
            return fail("gateway.channel_buffer and max_subscriptions must be at least 1");
        }
        if self.request_timeout_secs == 0 || self.files.upload_timeout_secs == 0 {
            return fail("request_timeout_secs and files.upload_timeout_secs must be at least 1");
        }
        if self.files.max_upload_bytes == 0 {
            return fail("files.max_upload_bytes must be at least 1");
        }
        if self.mqtt.max_packet_bytes < 1024 || self.mqtt.max_packet_bytes > 256 * 1024 * 1024 {
            return fail("mqtt.max_packet_bytes must be between 1024 and 268435456");
        }
        if self.mqtt.max_keep_alive_secs < 5 {
            return fail("mqtt.max_keep_alive_secs must be at least 5");
        }
        if self.ml.workers == 0 || self.ml.workers > 64 || self.ml.queue == 0 {
            return fail("ml.workers must be 1 to 64 and ml.queue at least 1");
        }
        if self.ml.request_timeout_ms < 10 {
            return fail("ml.request_timeout_ms must be at least 10");
        }
        if let Some(url) = &self.mqtt.bridge {
            if let Err(err) = crate::mqtt::bridge::check(url) {
                return Err(ConfigError(err.to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9091");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.rate_limits.login_per_minute, 10);
        assert_eq!(c.rate_limits.register_per_hour, 5);
        assert_eq!(c.rate_limits.device_register_per_hour, 10);
        assert_eq!(c.auth.access_token_ttl_secs, 900);
        assert_eq!(c.files.max_upload_bytes, 26_214_400);
        c.validate().unwrap();
    }

    #[test]
    fn a_partial_toml_file_keeps_the_other_defaults() {
        let c: Config =
            toml_from("listen = \"0.0.0.0:9000\"\n[rate_limits]\nlogin_per_minute = 3\n");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.rate_limits.login_per_minute, 3);
        assert_eq!(c.rate_limits.register_per_hour, 5);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<Config>("[rate_limits]\nlogin_per_hour = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        let mut c = Config::default();
        c.rate_limits.login_per_minute = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.auth.access_token_ttl_secs = 5;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.files.max_upload_bytes = 0;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("files.max_upload_bytes"), "{err}");
    }

    #[test]
    fn the_upload_limit_is_set_in_its_own_section() {
        let c: Config = toml_from("[files]\nmax_upload_bytes = 1048576\n");
        assert_eq!(c.files.max_upload_bytes, 1_048_576);
        assert_eq!(c.max_body_bytes, 65536);
        let err = toml::from_str::<Config>("[files]\nmax_bytes = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        let c: Config = toml_from("tls_cert = \"/etc/unhidra/cert.pem\"\n");
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("tls_cert and tls_key"), "{err}");
        let c: Config = toml_from("tls_key = \"/etc/unhidra/key.pem\"\n");
        assert!(c.validate().is_err());
        let c: Config =
            toml_from("tls_cert = \"/etc/unhidra/cert.pem\"\ntls_key = \"/etc/unhidra/key.pem\"\n");
        c.validate().unwrap();
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/unhidra/key.pem")));
    }

    #[test]
    fn plain_http_leaves_tls_out_of_the_rendered_config() {
        let text = toml::to_string_pretty(&Config::default()).unwrap();
        assert!(!text.contains("tls_"), "{text}");
        assert_eq!(toml_from(&text), Config::default());
    }

    fn toml_from(s: &str) -> Config {
        toml::from_str(s).unwrap()
    }
}

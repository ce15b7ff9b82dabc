//! `unhidra-sim`: N simulated devices, each running the firmware core
//! (`unhidra-device-core`) over a real WebSocket or MQTT connection to the server, with
//! realistic telemetry, injected anomalies and answers to commands. Used by tests and as a
//! load generator.

pub mod connection;
pub mod mqtt;
pub mod register;
pub mod report;
pub mod sensors;
pub mod virtual_device;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unhidra_device_core::Config as CoreConfig;

pub use report::Report;
pub use virtual_device::FIRMWARE_VERSION;

use virtual_device::LinkSpec;

/// How the devices reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `GET /ws` on the server's URL, the key offered as `device.<key>`.
    WebSocket,
    /// The server's MQTT listener at `host:port` (MQTT 3.1.1, plain TCP): the device id as
    /// user name, the key as password.
    Mqtt { addr: String },
}

/// A run of simulated devices.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The server's base URL (`http://host:port`).
    pub url: String,
    /// One API key per device.
    pub keys: Vec<String>,
    /// The devices' ids, in the order of `keys`; MQTT needs them (they are the user names).
    /// Left empty, they are asked for over REST (`GET /api/v1/device` with each key).
    pub device_ids: Vec<String>,
    pub transport: Transport,
    pub telemetry_interval: Duration,
    /// Probability (0–1) that a reading carries a temperature spike.
    pub anomaly_rate: f64,
    pub duration: Duration,
    /// Devices start spread over this window instead of all at once.
    pub ramp_up: Duration,
    /// Seeds jitter and sensors; devices use `seed + index`.
    pub seed: u64,
    /// The firmware core's settings (backoff, pings, heartbeats, outbox).
    pub core: CoreConfig,
}

impl SimConfig {
    pub fn new(url: impl Into<String>, keys: Vec<String>) -> Self {
        Self {
            url: url.into(),
            keys,
            device_ids: Vec::new(),
            transport: Transport::WebSocket,
            telemetry_interval: Duration::from_secs(10),
            anomaly_rate: 0.01,
            duration: Duration::from_secs(60),
            ramp_up: Duration::ZERO,
            seed: 0,
            core: CoreConfig {
                firmware_version: Some(FIRMWARE_VERSION.to_owned()),
                ..CoreConfig::default()
            },
        }
    }
}

/// Runs every device until the duration ends or `stop` is cancelled; the summed report.
pub async fn run(config: SimConfig, stop: CancellationToken) -> Result<Report, String> {
    if !(0.0..=1.0).contains(&config.anomaly_rate) {
        return Err("the anomaly rate is a probability, 0 to 1".into());
    }
    let links = links(&config).await?;
    let run_started = Instant::now();
    let until = run_started + config.duration;
    let count = u32::try_from(config.keys.len().max(1)).unwrap_or(u32::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (key, link)) in config.keys.iter().zip(links).enumerate() {
        let spec = virtual_device::DeviceSpec {
            link,
            key: key.clone(),
            seed: config.seed.wrapping_add(index as u64),
            telemetry_interval: config.telemetry_interval,
            anomaly_rate: config.anomaly_rate,
            core: config.core.clone(),
            run_started,
        };
        let delay = config.ramp_up / count * u32::try_from(index).unwrap_or(u32::MAX);
        let stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return Report::default(),
            }
            virtual_device::run(spec, until, stop).await
        });
    }
    let mut report = Report::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(one) => report.merge(&one),
            Err(err) => return Err(format!("a device task failed: {err}")),
        }
    }
    Ok(report)
}

/// Where each device connects, in the order of the keys.
async fn links(config: &SimConfig) -> Result<Vec<LinkSpec>, String> {
    match &config.transport {
        Transport::WebSocket => {
            let url = connection::ws_url(&config.url)?;
            Ok(config
                .keys
                .iter()
                .map(|_| LinkSpec::WebSocket { url: url.clone() })
                .collect())
        }
        Transport::Mqtt { addr } => {
            let (host, port) = mqtt::parse_addr(addr)?;
            let ids = if config.device_ids.len() == config.keys.len() {
                config.device_ids.clone()
            } else {
                register::device_ids(&config.url, &config.keys)
                    .await
                    .map_err(|err| format!("looking up the devices' ids: {err:#}"))?
            };
            Ok(ids
                .into_iter()
                .map(|device_id| LinkSpec::Mqtt {
                    host: host.clone(),
                    port,
                    device_id,
                })
                .collect())
        }
    }
}

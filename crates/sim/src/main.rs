//! `unhidra-sim`: parse the command line, find the device keys, run, print the report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;
use unhidra_sim::register::{parse_keys, register_devices};
use unhidra_sim::{run, SimConfig, Transport};

/// Simulated Unhidra devices over real WebSocket or MQTT connections.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's base URL (the REST API; the WebSocket endpoint with --transport ws).
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "UNHIDRA_SIM_URL")]
    url: String,
    /// How the devices connect: WebSocket (GET /ws) or MQTT (the server's MQTT listener).
    #[arg(long, value_enum, default_value_t = TransportArg::Ws)]
    transport: TransportArg,
    /// The server's MQTT listener, host:port (needed with --transport mqtt).
    #[arg(long, value_name = "ADDR", env = "UNHIDRA_SIM_MQTT")]
    mqtt: Option<String>,
    /// How many devices to run (default: every key in --keys-file).
    #[arg(long)]
    devices: Option<usize>,
    /// A file with one device API key per line.
    #[arg(long, conflicts_with = "register")]
    keys_file: Option<PathBuf>,
    /// Register --devices new devices with this user's login instead of reading keys.
    #[arg(long, requires = "username")]
    register: bool,
    #[arg(long, env = "UNHIDRA_SIM_USERNAME")]
    username: Option<String>,
    /// The user's password (better passed in the environment than on the command line).
    #[arg(long, env = "UNHIDRA_SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Time between readings: 500ms, 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    telemetry_interval: Duration,
    /// Probability that a reading carries a temperature spike (0 to 1).
    #[arg(long, default_value_t = 0.01)]
    anomaly_rate: f64,
    /// How long to run: 30s, 5m, 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Spread the devices' first connections over this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ramp_up: Duration,
    /// Seeds jitter and sensors (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Ws,
    Mqtt,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text}: expected a number and a unit (ms, s, m, h)"))?;
    let secs = match unit {
        "ms" => value / 1_000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(format!("{text}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let transport = match (args.transport, &args.mqtt) {
        (TransportArg::Ws, None) => Transport::WebSocket,
        (TransportArg::Ws, Some(_)) => bail!("--mqtt is for --transport mqtt"),
        (TransportArg::Mqtt, Some(addr)) => Transport::Mqtt { addr: addr.clone() },
        (TransportArg::Mqtt, None) => bail!("--transport mqtt needs --mqtt HOST:PORT"),
    };
    let mut device_ids = Vec::new();
    let keys = if args.register {
        let count = args.devices.context("--register needs --devices N")?;
        let username = args
            .username
            .as_deref()
            .context("--register needs --username")?;
        let password = args
            .password
            .as_deref()
            .context("--register needs UNHIDRA_SIM_PASSWORD (or --password)")?;
        let prefix = format!("sim-{}", std::process::id());
        let devices = register_devices(&args.url, username, password, count, &prefix).await?;
        eprintln!("registered {} devices as {prefix}-1…", devices.len());
        let (ids, keys) = devices
            .into_iter()
            .map(|d| (d.device_id, d.api_key))
            .unzip();
        device_ids = ids;
        keys
    } else {
        let path = args
            .keys_file
            .as_ref()
            .context("give --keys-file PATH or --register")?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut keys = parse_keys(&text);
        if let Some(n) = args.devices {
            if n > keys.len() {
                bail!("{} holds {} keys, not {n}", path.display(), keys.len());
            }
            keys.truncate(n);
        }
        keys
    };
    if keys.is_empty() {
        bail!("no devices to run");
    }
    let mut config = SimConfig::new(args.url, keys);
    config.device_ids = device_ids;
    config.transport = transport;
    config.telemetry_interval = args.telemetry_interval;
    config.anomaly_rate = args.anomaly_rate;
    config.duration = args.duration;
    config.ramp_up = args.ramp_up;
    config.seed = args.seed.unwrap_or_else(rand::random);

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        }
    });
    let report = run(config, stop).await.map_err(anyhow::Error::msg)?;
    if let (Some(p50), Some(p99)) = (
        report.connect_ms_quantile(0.5),
        report.connect_ms_quantile(0.99),
    ) {
        eprintln!(
            "{} welcomed; connect p50 <= {p50} ms, p99 <= {p99} ms, max {} ms; all first \
             welcomed {:.2} s after the start",
            report.welcomes,
            report.connect_ms_max,
            report.all_welcomed_after_ms as f64 / 1000.0
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            Duration::from_millis(1_500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3_600));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

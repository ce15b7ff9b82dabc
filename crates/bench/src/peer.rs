//! `--peer mosquitto`: Unhidra's figures as ratios to a peer's, measured in one sitting.
//!
//! `gateway-idle`, `gateway-fanout` and `chat-throughput --pairs` take `--peer mosquitto`.
//! The Unhidra scenario runs first, as without the flag; right after, the same scenario runs
//! against Mosquitto over MQTT (`mosquitto_idle`, `mosquitto_fanout`, `mosquitto_pairs`) with
//! the same sizes, rate, window and payload size, and the same pinning: unless `--pin` says
//! otherwise, the server and then the broker run on CPU 0 and this tool on CPU 1, so each side
//! gets one core. Both reports print, then a table of the headline figures with the ratio
//! Unhidra ÷ Mosquitto and which way is better, and a note where the load generator saturated
//! before the server did (the figure then measures the tool).

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;

use crate::chat_throughput::{self, ChatThroughputArgs, ThroughputReport};
use crate::gateway::GatewayArgs;
use crate::gateway_fanout::{self, FanoutReport, GatewayFanoutArgs};
use crate::gateway_idle::{self, GatewayIdleArgs, IdleReport};
use crate::mosquitto::{load_generator_saturated_first, BrokerArgs, DEFAULT_BINARY};
use crate::mosquitto_fanout::{self, MosquittoFanoutArgs, MqttFanoutReport};
use crate::mosquitto_idle::{self, MosquittoIdleArgs, MqttIdleReport};
use crate::mosquitto_pairs::{self, MosquittoPairsArgs, MqttPairsReport};
use crate::pinning::Pin;
use crate::stats::LatencySummary;

/// What Unhidra is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Debian's Mosquitto over MQTT 3.1.1, driven with `rumqttc`.
    Mosquitto,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Run the same scenario against this peer right after Unhidra's, in the same sitting and
    /// with the same pinning (default 0,1: see --pin), and print Unhidra's figures as ratios to
    /// the peer's.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// The Mosquitto binary for --peer mosquitto.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BINARY)]
    pub mosquitto_bin: PathBuf,
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One headline figure on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub unhidra: f64,
    pub mosquitto: f64,
    /// Unhidra ÷ Mosquitto; `None` when Mosquitto's figure is 0.
    pub ratio: Option<f64>,
}

impl Figure {
    fn new(name: &'static str, unit: &'static str, better: Better, u: f64, m: f64) -> Self {
        Self {
            name,
            unit,
            better,
            unhidra: u,
            mosquitto: m,
            ratio: (m != 0.0).then(|| u / m),
        }
    }
}

/// Both reports of one sitting and the figures side by side.
#[derive(Debug, Serialize)]
pub struct Comparison<U, M> {
    pub pinning: Pin,
    pub unhidra: U,
    pub mosquitto: M,
    pub figures: Vec<Figure>,
    /// What the reader should know to read the ratios (saturation, differences in setup).
    pub notes: Vec<String>,
}

/// The pinning both runs use: `--pin` if given, else CPU 0 for the server and 1 for this tool.
fn pin_for_peer(gateway: &mut GatewayArgs) -> Pin {
    *gateway.pin.get_or_insert_with(Pin::default_pair)
}

fn broker_args(peer: &PeerArgs, pin: Pin, gateway: &GatewayArgs, concurrency: u32) -> BrokerArgs {
    BrokerArgs {
        mosquitto_bin: peer.mosquitto_bin.clone(),
        pin: Some(pin),
        connect_timeout_secs: gateway.connect_timeout_secs,
        concurrency,
    }
}

/// `gateway-idle` then `mosquitto idle` with as many connections.
pub async fn gateway_idle(
    mut args: GatewayIdleArgs,
) -> anyhow::Result<Comparison<IdleReport, MqttIdleReport>> {
    let pinning = pin_for_peer(&mut args.gateway);
    let mqtt = MosquittoIdleArgs {
        connections: args.connections,
        settle_ms: args.settle_ms,
        hold_secs: args.hold_secs,
        broker: broker_args(&args.peer, pinning, &args.gateway, args.concurrency),
    };
    let unhidra = gateway_idle::run(args).await?;
    let mosquitto = mosquitto_idle::run(mqtt).await?;
    let (u, m) = (&unhidra, &mosquitto);
    let figures = vec![
        Figure::new(
            "memory per idle connection",
            "bytes",
            Better::Lower,
            u.held.per_connection_bytes,
            m.per_connection_bytes,
        ),
        Figure::new(
            "connections opened",
            "/s",
            Better::Higher,
            u.connect.per_sec,
            m.connects_per_sec,
        ),
        Figure::new(
            "connect latency p99",
            "ms",
            Better::Lower,
            u.connect.latency.p99_ms,
            m.connect_latency.p99_ms,
        ),
        Figure::new(
            "server CPU per connection",
            "ms",
            Better::Lower,
            u.connect.server_cpu_per_connection_ms,
            m.broker_cpu_per_connection_ms,
        ),
    ];
    let mut notes = vec![
        "Unhidra: authenticated WebSocket connections (bearer token, `welcome` frame); \
         Mosquitto: anonymous MQTT clients, each subscribed to a topic of its own"
            .to_owned(),
    ];
    if !u.subscribed {
        notes.push(
            "Unhidra's connections were not subscribed to a channel (--subscribe does that)"
                .to_owned(),
        );
    }
    Ok(Comparison {
        pinning,
        unhidra,
        mosquitto,
        figures,
        notes,
    })
}

/// `gateway-fanout` then `mosquitto fanout` with the same subscribers, messages, rate, window
/// and payload size.
pub async fn gateway_fanout(
    mut args: GatewayFanoutArgs,
) -> anyhow::Result<Comparison<FanoutReport, MqttFanoutReport>> {
    let pinning = pin_for_peer(&mut args.gateway);
    let mqtt = MosquittoFanoutArgs {
        subscribers: args.subscribers,
        messages: args.messages,
        publishers: args.publishers,
        rate: args.rate,
        window: Some(gateway_fanout::window(&args)),
        payload_bytes: args.body_bytes.max(20),
        timeout_secs: args.timeout_secs,
        broker: broker_args(&args.peer, pinning, &args.gateway, args.concurrency),
    };
    let unhidra = gateway_fanout::run(args).await?;
    let mosquitto = mosquitto_fanout::run(mqtt).await?;
    let (u, m) = (&unhidra, &mosquitto);
    let mut figures = vec![Figure::new(
        "deliveries",
        "/s",
        Better::Higher,
        u.delivery.per_sec,
        m.delivery.per_sec,
    )];
    figures.extend(latency_figures(
        RECEIVE,
        &u.delivery.latency,
        &m.delivery.latency,
        true,
    ));
    figures.push(Figure::new(
        "server CPU per delivery",
        "µs",
        Better::Lower,
        u.server_cpu_per_delivery_us,
        m.broker_cpu_per_delivery_us,
    ));
    figures.push(Figure::new(
        "server CPU",
        "cores",
        Better::Lower,
        u.server_cores,
        m.broker_cores,
    ));
    let u_load = u.load_generator_cpu_secs / u.delivery.wall_secs.max(f64::MIN_POSITIVE);
    figures.push(Figure::new(
        "load generator CPU",
        "cores",
        Better::Lower,
        u_load,
        m.load_generator_cores,
    ));
    let mut notes = vec![
        "Unhidra: every message is stored before its ack and fan-out; Mosquitto: QoS 1 \
         publishes (PUBACK), QoS 0 subscriptions, no persistence"
            .to_owned(),
    ];
    notes.extend(saturation_notes(
        (u.server_cores, u_load),
        (m.broker_cores, m.load_generator_cores),
    ));
    Ok(Comparison {
        pinning,
        unhidra,
        mosquitto,
        figures,
        notes,
    })
}

/// `chat-throughput --pairs` then `mosquitto pairs` with as many pairs, the same window,
/// rate, duration and payload size.
pub async fn chat_throughput(
    mut args: ChatThroughputArgs,
) -> anyhow::Result<Comparison<ThroughputReport, MqttPairsReport>> {
    if !args.pairs {
        bail!(
            "--peer mosquitto compares point-to-point pairs: add --pairs (e.g. --pairs \
             --channels 100 --publishers 100 --users 100 --subscribers-per-channel 1 --window 100)"
        );
    }
    let pinning = pin_for_peer(&mut args.gateway);
    let mqtt = MosquittoPairsArgs {
        pairs: args.publishers,
        window: args.window,
        rate: args.rate,
        duration_secs: args.duration_secs,
        drain_secs: args.drain_secs,
        messages_per_pair: 0,
        payload_bytes: args.body_bytes.max(20),
        broker: broker_args(&args.peer, pinning, &args.gateway, args.concurrency),
    };
    let unhidra = chat_throughput::run(args).await?;
    let mosquitto = mosquitto_pairs::run(mqtt).await?;
    let (u, m) = (&unhidra, &mosquitto);
    let mut figures = vec![Figure::new(
        "acknowledged messages",
        "/s",
        Better::Higher,
        u.publish.acked_per_sec,
        m.publish.acked_per_sec,
    )];
    figures.extend(latency_figures(
        ACK,
        &u.publish.ack_latency,
        &m.publish.ack_latency,
        false,
    ));
    figures.extend(latency_figures(
        RECEIVE,
        &u.delivery.latency,
        &m.delivery.latency,
        false,
    ));
    figures.push(Figure::new(
        "server CPU per message",
        "µs",
        Better::Lower,
        u.server_cpu_per_message_us,
        m.broker_cpu_per_message_us,
    ));
    let u_load = u.load_generator_cpu_secs / u.delivery.wall_secs.max(f64::MIN_POSITIVE);
    let mut notes = vec![
        "Unhidra: each message is stored (SQLite) before its ack; Mosquitto: QoS 1 both \
         ways, no persistence"
            .to_owned(),
    ];
    notes.extend(saturation_notes(
        (u.server_cores, u_load),
        (m.broker_cores, m.load_generator_cores),
    ));
    Ok(Comparison {
        pinning,
        unhidra,
        mosquitto,
        figures,
        notes,
    })
}

/// Names of the percentile figures of publish→ack latency.
const ACK: [&str; 4] = [
    "publish→ack p50",
    "publish→ack p90",
    "publish→ack p99",
    "publish→ack max",
];
/// Names of the percentile figures of publish→receive latency.
const RECEIVE: [&str; 4] = [
    "publish→receive p50",
    "publish→receive p90",
    "publish→receive p99",
    "publish→receive max",
];

/// p50 and p99 (with `all`: also p90 and max) of a latency on both sides.
fn latency_figures(
    names: [&'static str; 4],
    u: &LatencySummary,
    m: &LatencySummary,
    all: bool,
) -> Vec<Figure> {
    let [p50, p90, p99, max] = names;
    let mut out = vec![Figure::new(p50, "ms", Better::Lower, u.p50_ms, m.p50_ms)];
    if all {
        out.push(Figure::new(p90, "ms", Better::Lower, u.p90_ms, m.p90_ms));
    }
    out.push(Figure::new(p99, "ms", Better::Lower, u.p99_ms, m.p99_ms));
    if all {
        out.push(Figure::new(max, "ms", Better::Lower, u.max_ms, m.max_ms));
    }
    out
}

/// A note for each side whose load generator saturated before its server did.
fn saturation_notes(unhidra: (f64, f64), mosquitto: (f64, f64)) -> Vec<String> {
    let mut notes = Vec::new();
    for (side, (server, load)) in [("Unhidra", unhidra), ("Mosquitto", mosquitto)] {
        if load_generator_saturated_first(server, load) {
            notes.push(format!(
                "{side} run: load generator saturated first ({load:.2} cores against the \
                 server's {server:.2}): its figures measure the tool as much as the server"
            ));
        }
    }
    notes
}

impl<U: fmt::Display, M: fmt::Display> fmt::Display for Comparison<U, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.unhidra)?;
        write!(f, "{}", self.mosquitto)?;
        writeln!(
            f,
            "Unhidra against Mosquitto, one sitting ({}):",
            self.pinning
        )?;
        writeln!(
            f,
            "  {:<30} {:>12} {:>12} {:>9}  better",
            "figure", "Unhidra", "Mosquitto", "ratio"
        )?;
        for figure in &self.figures {
            let name = format!("{} ({})", figure.name, figure.unit);
            let ratio = figure
                .ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×"));
            let better = match figure.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            };
            writeln!(
                f,
                "  {:<30} {:>12} {:>12} {:>9}  {better}",
                name,
                number(figure.unhidra),
                number(figure.mosquitto),
                ratio
            )?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// A figure with as many decimals as it needs.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_unhidra_over_mosquitto() {
        let f = Figure::new("x", "ms", Better::Lower, 3.0, 2.0);
        assert_eq!(f.ratio, Some(1.5));
        assert_eq!(Figure::new("x", "ms", Better::Lower, 3.0, 0.0).ratio, None);
    }

    #[test]
    fn saturation_is_noted_per_side() {
        let notes = saturation_notes((0.5, 0.99), (0.9, 0.5));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("Unhidra run: load generator saturated first"));
    }
}

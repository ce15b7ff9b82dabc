//! `mosquitto idle`: Mosquitto's memory per idle client; the counterpart of `gateway-idle`.
//!
//! Starts Mosquitto (see [`mosquitto`](crate::mosquitto)), reads its resident memory
//! (`VmRSS`), then connects `--connections` clients (MQTT 3.1.1, clean session, keep-alive
//! 60 s), `--concurrency` at a time, each subscribed to a topic of its own. After a pause for
//! the broker to settle it samples again, holds every client idle for `--hold-secs` (each
//! event loop is polled, so keep-alive pings go out) and samples a last time. Growth over the
//! baseline divided by the clients is the broker's memory per idle connection.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::bail;
use rumqttc::QoS;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::gateway::mib;
use crate::mosquitto::{BrokerArgs, BrokerConfig, BrokerInfo, Mosquitto};
use crate::mqtt_load::{connect_many, hold, ClientSpec};
use crate::progress::Ticker;
use crate::server_process::Usage;
use crate::stats::{per_second, LatencySummary};
use crate::ws_client::Failures;

#[derive(Debug, Clone, clap::Args)]
pub struct MosquittoIdleArgs {
    /// Clients to connect and hold, each subscribed to its own topic.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Pause before each memory sample, so the broker finishes what the connections started.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
    /// How long every client is held idle before the last sample.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub hold_secs: u64,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Serialize)]
pub struct MqttIdleReport {
    pub broker: BrokerInfo,
    pub connections: u32,
    pub concurrency: u32,
    /// The broker before the first client.
    pub baseline: Usage,
    pub opened: u64,
    pub connect_failures: Failures,
    pub connect_wall_secs: f64,
    pub connects_per_sec: f64,
    /// Per client: TCP connect to SUBACK.
    pub connect_latency: LatencySummary,
    pub broker_cpu_connecting_secs: f64,
    pub broker_cpu_per_connection_ms: f64,
    /// After connecting and the settle pause.
    pub connected_rss_kib: u64,
    pub hold_secs: u64,
    pub held_rss_kib: u64,
    /// (held RSS − baseline) / clients.
    pub per_connection_bytes: f64,
    /// Broker CPU over the hold: what idle clients cost.
    pub broker_cpu_held_secs: f64,
    /// Clients whose connection ended while held (should be 0).
    pub lost_while_held: u64,
    pub broker_peak_rss_kib: Option<u64>,
    pub load_generator_rss_kib: Option<u64>,
    pub shutdown_secs: f64,
}

pub async fn run(args: MosquittoIdleArgs) -> anyhow::Result<MqttIdleReport> {
    let broker = Mosquitto::start(
        &args.broker,
        BrokerConfig::default(),
        u64::from(args.connections),
    )
    .await?;
    let result = measure(&args, &broker).await;
    let shutdown = broker.stop(Duration::from_secs(30)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

async fn measure(args: &MosquittoIdleArgs, broker: &Mosquitto) -> anyhow::Result<MqttIdleReport> {
    let settle = Duration::from_millis(args.settle_ms);
    let spec = ClientSpec::new(broker.address, args.broker.connect_timeout());
    let prefix = format!("bench/{}/idle", spec.run);

    tokio::time::sleep(settle).await;
    let baseline = broker.usage()?;
    let started = Instant::now();
    let (clients, connect_failures) = connect_many(
        &spec,
        args.connections,
        args.broker.concurrency,
        "client",
        move |i| Some(format!("{prefix}/{i}")),
        QoS::AtMostOnce,
    )
    .await?;
    let connect_wall = started.elapsed();
    let connected = broker.usage()?;
    let opened = clients.len() as u64;
    let latencies = clients.iter().map(|(_, c)| c.took).collect();

    // The handles stay alive until the end: dropping one ends its event loop.
    let stop = CancellationToken::new();
    let mut handles = Vec::with_capacity(clients.len());
    let mut holders = Vec::with_capacity(clients.len());
    for (_, client) in clients {
        handles.push(client.client);
        holders.push(tokio::spawn(hold(client.events, stop.clone())));
    }
    tokio::time::sleep(settle).await;
    let settled = broker.usage()?;
    let ticker = Ticker::timed(Duration::from_secs(args.hold_secs), "holding idle");
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    drop(ticker);
    let held = broker.usage()?;
    let load_generator_rss_kib = Usage::own().map(|u| u.rss_kib);
    stop.cancel();
    let mut lost_while_held = 0;
    for holder in holders {
        if let Ok(Some(_)) = holder.await {
            lost_while_held += 1;
        }
    }
    drop(handles);

    let connect_cpu = connected.cpu_secs - baseline.cpu_secs;
    let per_connection_bytes = if opened > 0 {
        (held.rss_kib as f64 - baseline.rss_kib as f64) * 1024.0 / opened as f64
    } else {
        0.0
    };
    Ok(MqttIdleReport {
        broker: broker.info.clone(),
        connections: args.connections,
        concurrency: args.broker.concurrency,
        baseline,
        opened,
        connect_failures,
        connect_wall_secs: connect_wall.as_secs_f64(),
        connects_per_sec: per_second(opened, connect_wall),
        connect_latency: LatencySummary::of(latencies),
        broker_cpu_connecting_secs: connect_cpu,
        broker_cpu_per_connection_ms: if opened > 0 {
            connect_cpu * 1000.0 / opened as f64
        } else {
            0.0
        },
        connected_rss_kib: settled.rss_kib,
        hold_secs: args.hold_secs,
        held_rss_kib: held.rss_kib,
        per_connection_bytes,
        broker_cpu_held_secs: held.cpu_secs - settled.cpu_secs,
        lost_while_held,
        broker_peak_rss_kib: broker.peak_rss_kib(),
        load_generator_rss_kib,
        shutdown_secs: 0.0,
    })
}

/// Fails when clients failed to connect or lost their connection while idle.
pub fn check(report: &MqttIdleReport) -> anyhow::Result<()> {
    if report.connect_failures.total() > 0 {
        bail!(
            "{} of {} clients failed to connect: {}",
            report.connect_failures.total(),
            report.connections,
            report.connect_failures
        );
    }
    if report.lost_while_held > 0 {
        bail!(
            "{} idle clients lost their connection",
            report.lost_while_held
        );
    }
    Ok(())
}

impl fmt::Display for MqttIdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mosquitto idle connections")?;
        writeln!(f, "  broker: {}", self.broker)?;
        writeln!(
            f,
            "  connected {} of {} clients (MQTT 3.1.1, clean session, keep-alive 60 s, each \
             subscribed to its own topic; {} at a time) in {:.2} s: {:.0}/s; failures: {}",
            self.opened,
            self.connections,
            self.concurrency,
            self.connect_wall_secs,
            self.connects_per_sec,
            self.connect_failures
        )?;
        writeln!(f, "    latency to SUBACK: {}", self.connect_latency)?;
        writeln!(
            f,
            "    broker CPU while connecting: {:.2} s, {:.3} ms per connection",
            self.broker_cpu_connecting_secs, self.broker_cpu_per_connection_ms
        )?;
        writeln!(
            f,
            "  broker RSS: {:.1} MiB before, {:.1} MiB connected, {:.1} MiB after {} s idle: \
             {:.0} bytes per connection over the baseline; broker CPU while idle {:.2} s",
            self.baseline.rss_mib(),
            mib(self.connected_rss_kib),
            mib(self.held_rss_kib),
            self.hold_secs,
            self.per_connection_bytes,
            self.broker_cpu_held_secs
        )?;
        writeln!(
            f,
            "    connections lost while held: {}; peak RSS {}; shutdown {:.2} s",
            self.lost_while_held,
            self.broker_peak_rss_kib
                .map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", mib(k))),
            self.shutdown_secs
        )?;
        if let Some(kib) = self.load_generator_rss_kib {
            writeln!(f, "  load generator RSS: {:.1} MiB", mib(kib))?;
        }
        Ok(())
    }
}

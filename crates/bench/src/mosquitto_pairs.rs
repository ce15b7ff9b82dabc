//! `mosquitto pairs`: acknowledged point-to-point messages, `--pairs` publisher→subscriber
//! pairs each on a topic of its own; the Mosquitto counterpart of `chat-throughput --pairs`.
//!
//! Starts Mosquitto (see [`mosquitto`](crate::mosquitto)), connects one subscriber per pair
//! (subscribed at QoS 1, so the broker waits for its PUBACKs, at most
//! `max_inflight_messages` = `--window` outstanding) and one publisher per pair. Each publisher
//! publishes at QoS 1 with at most `--window` unacknowledged publishes for `--duration-secs`:
//! as fast as PUBACKs come back, or at a fixed total `--rate`. After that the tool waits up to
//! `--drain-secs` for the outstanding PUBACKs and deliveries. Publish→PUBACK and
//! publish→receive latencies come from [`mqtt_load`](crate::mqtt_load); subscribers check
//! that every message arrives once, in order. Mosquitto's CPU time and resident memory are
//! read from `/proc/<pid>`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::QoS;
use serde::Serialize;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::chat_traffic::{summarise_delivery, summarise_publish, Delivery, Listen, Publish};
use crate::gateway::mib;
use crate::mosquitto::{
    load_generator_saturated_first, BrokerArgs, BrokerConfig, BrokerInfo, Mosquitto,
};
use crate::mosquitto_fanout::{saturation_note, write_delivery};
use crate::mqtt_load::{connect_many, publish, receive, ClientSpec, PublishPlan};
use crate::progress::Ticker;
use crate::server_process::Usage;
use crate::ws_client::Failures;

#[derive(Debug, Clone, clap::Args)]
pub struct MosquittoPairsArgs {
    /// Publisher→subscriber pairs, each on its own topic.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub pairs: u32,
    /// Unacknowledged QoS 1 publishes per publisher (and Mosquitto's max_inflight_messages
    /// towards each subscriber).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub window: u32,
    /// Messages per second over all publishers; 0: as fast as PUBACKs come back.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate: u32,
    /// How long the publishers publish.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// How long to wait after that for the outstanding PUBACKs and deliveries.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub drain_secs: u64,
    /// Stop each publisher after this many messages (0: no limit, only --duration-secs).
    #[arg(long, default_value_t = 0)]
    pub messages_per_pair: u64,
    /// Payload size in bytes (at least 20: send time, publisher and sequence number).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(20..=32_768))]
    pub payload_bytes: u32,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Serialize)]
pub struct MqttPairsReport {
    pub broker: BrokerInfo,
    pub pairs: u32,
    pub window: u32,
    pub rate: u32,
    pub duration_secs: u64,
    pub payload_bytes: u32,
    pub setup_secs: f64,
    pub connect_failures: Failures,
    pub publish: Publish,
    pub delivery: Delivery,
    /// Broker CPU from the first publish until the deliveries were in.
    pub broker_cpu_secs: f64,
    pub broker_cores: f64,
    /// Broker CPU per acknowledged message (its PUBACK, delivery and the subscriber's
    /// PUBACK), in microseconds.
    pub broker_cpu_per_message_us: f64,
    pub load_generator_cpu_secs: f64,
    pub load_generator_cores: f64,
    pub load_generator_saturated_first: bool,
    pub broker_rss_before_kib: u64,
    pub broker_rss_after_kib: u64,
    pub broker_peak_rss_kib: Option<u64>,
    pub shutdown_secs: f64,
}

pub async fn run(args: MosquittoPairsArgs) -> anyhow::Result<MqttPairsReport> {
    let config = BrokerConfig {
        max_inflight_messages: args.window,
    };
    let clients = 2 * u64::from(args.pairs);
    let broker = Mosquitto::start(&args.broker, config, clients).await?;
    let result = measure(&args, &broker).await;
    let shutdown = broker.stop(Duration::from_secs(10)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

async fn measure(args: &MosquittoPairsArgs, broker: &Mosquitto) -> anyhow::Result<MqttPairsReport> {
    let started = Instant::now();
    let mut spec = ClientSpec::new(broker.address, args.broker.connect_timeout());
    spec.inflight = u16::try_from(args.window).unwrap_or(u16::MAX);
    let prefix = format!("bench/{}/pair", spec.run);
    let topic = move |i: u32| format!("{prefix}/{i}");
    let concurrency = args.broker.concurrency;
    let (subscribers, connect_failures) = connect_many(
        &spec,
        args.pairs,
        concurrency,
        "subscriber",
        {
            let topic = topic.clone();
            move |i| Some(topic(i))
        },
        QoS::AtLeastOnce,
    )
    .await?;
    let (publishers, publisher_failures) = connect_many(
        &spec,
        args.pairs,
        concurrency,
        "publisher",
        |_| None,
        QoS::AtMostOnce,
    )
    .await?;
    if publisher_failures.total() > 0 {
        bail!("publishers failed to connect: {publisher_failures}");
    }
    let setup_secs = started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker_before = broker.usage()?;
    let client_before = Usage::own().unwrap_or_default();

    // Every time below is an offset from `base`.
    let base = Instant::now();
    let stop_sending = TokioInstant::now() + Duration::from_secs(args.duration_secs);
    let deadline = stop_sending + Duration::from_secs(args.drain_secs);
    let listen = Listen {
        expected: None,
        stop: CancellationToken::new(),
        deadline,
        delivered: Arc::new(AtomicU64::new(0)),
    };
    let ticker = Ticker::timed(Duration::from_secs(args.duration_secs), "publishing");
    // The handles stay alive until the end: dropping one ends its event loop.
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    for (_, client) in subscribers {
        handles.push(client.client);
        receivers.push(tokio::spawn(receive(client.events, listen.clone(), base)));
    }
    let mut senders = Vec::new();
    for (p, client) in publishers {
        let plan = PublishPlan {
            publisher: p,
            topic: topic(p),
            count: if args.messages_per_pair == 0 {
                u64::MAX
            } else {
                args.messages_per_pair
            },
            stop_sending,
            interval: (args.rate > 0)
                .then(|| Duration::from_secs_f64(f64::from(args.pairs) / f64::from(args.rate))),
            window: args.window,
            payload_bytes: args.payload_bytes as usize,
        };
        senders.push(tokio::spawn(publish(
            client.client,
            client.events,
            plan,
            base,
            deadline,
        )));
    }
    let mut published = Vec::new();
    for sender in senders {
        published.push(sender.await.context("a publisher task failed")?);
    }
    drop(ticker);
    // Every acknowledged message goes to its pair's subscriber.
    let acked: u64 = published.iter().map(|p| p.acked).sum();
    while listen.delivered.load(Ordering::Relaxed) < acked && TokioInstant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listen.stop.cancel();
    let mut received = Vec::new();
    for receiver in receivers {
        received.push(receiver.await.context("a subscriber task failed")?);
    }
    let broker_after = broker.usage()?;
    let client_after = Usage::own().unwrap_or_default();
    drop(handles);

    let publish = summarise_publish(&published);
    let first_send = published.iter().filter_map(|p| p.first_send).min();
    let delivery = summarise_delivery(received, acked, first_send.unwrap_or_default());
    let cpu = broker_after.cpu_secs - broker_before.cpu_secs;
    let client_cpu = client_after.cpu_secs - client_before.cpu_secs;
    let wall = delivery.wall_secs.max(f64::MIN_POSITIVE);
    let (broker_cores, load_generator_cores) = (cpu / wall, client_cpu / wall);
    Ok(MqttPairsReport {
        broker: broker.info.clone(),
        pairs: args.pairs,
        window: args.window,
        rate: args.rate,
        duration_secs: args.duration_secs,
        payload_bytes: args.payload_bytes,
        setup_secs,
        connect_failures,
        broker_cpu_secs: cpu,
        broker_cores,
        broker_cpu_per_message_us: if publish.acked > 0 {
            cpu * 1e6 / publish.acked as f64
        } else {
            0.0
        },
        load_generator_cpu_secs: client_cpu,
        load_generator_cores,
        load_generator_saturated_first: load_generator_saturated_first(
            broker_cores,
            load_generator_cores,
        ),
        broker_rss_before_kib: broker_before.rss_kib,
        broker_rss_after_kib: broker_after.rss_kib,
        broker_peak_rss_kib: broker.peak_rss_kib(),
        publish,
        delivery,
        shutdown_secs: 0.0,
    })
}

/// Fails when anything was refused, lost, repeated, out of order or cut off.
pub fn check(report: &MqttPairsReport) -> anyhow::Result<()> {
    let (p, d) = (&report.publish, &report.delivery);
    if report.connect_failures.total() > 0 {
        bail!("subscribers failed to connect: {}", report.connect_failures);
    }
    if !p.errors.is_empty() || p.acked != p.sent {
        bail!(
            "{} of {} publishes acknowledged; errors {:?}",
            p.acked,
            p.sent,
            p.errors
        );
    }
    if d.received != d.expected || !d.closed.is_empty() || d.out_of_order > 0 || d.unexpected > 0 {
        bail!(
            "received {} of {} deliveries; connections lost {:?}; out of order or repeated {}; \
             unreadable {}",
            d.received,
            d.expected,
            d.closed,
            d.out_of_order,
            d.unexpected
        );
    }
    Ok(())
}

impl fmt::Display for MqttPairsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mosquitto pairs")?;
        writeln!(f, "  broker: {}", self.broker)?;
        writeln!(
            f,
            "  setup ({:.1} s): {} publisher→subscriber pairs, a topic each; subscribers at \
             QoS 1 (MQTT 3.1.1, clean session); connect failures: {}",
            self.setup_secs, self.pairs, self.connect_failures
        )?;
        let pace = if self.rate > 0 {
            format!(
                "at {} messages/s in all (at most {} unacknowledged per publisher)",
                self.rate, self.window
            )
        } else {
            format!(
                "as fast as PUBACKs come ({} unacknowledged per publisher)",
                self.window
            )
        };
        let p = &self.publish;
        writeln!(
            f,
            "  published at QoS 1 for {} s, {}-byte payloads, {pace}: sent {}, acknowledged \
             {} ({:.0} acknowledged messages/s); errors {:?}",
            self.duration_secs, self.payload_bytes, p.sent, p.acked, p.acked_per_sec, p.errors
        )?;
        writeln!(f, "    publish→PUBACK latency: {}", p.ack_latency)?;
        write_delivery(f, &self.delivery)?;
        writeln!(
            f,
            "  broker CPU {:.2} s ({:.2} cores, {:.1} µs per acknowledged message); load \
             generator CPU {:.2} s ({:.2} cores){}",
            self.broker_cpu_secs,
            self.broker_cores,
            self.broker_cpu_per_message_us,
            self.load_generator_cpu_secs,
            self.load_generator_cores,
            saturation_note(self.load_generator_saturated_first)
        )?;
        writeln!(
            f,
            "  broker RSS: {:.1} MiB before, {:.1} MiB after (peak {:.1} MiB); shutdown {:.2} s",
            mib(self.broker_rss_before_kib),
            mib(self.broker_rss_after_kib),
            mib(self.broker_peak_rss_kib.unwrap_or(0)),
            self.shutdown_secs
        )?;
        Ok(())
    }
}

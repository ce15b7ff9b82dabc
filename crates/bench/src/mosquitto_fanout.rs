//! `mosquitto fanout`: one topic, many subscribers, every message delivered to all of them;
//! the Mosquitto counterpart of `gateway-fanout`.
//!
//! Starts Mosquitto (see [`mosquitto`](crate::mosquitto)) and connects `--subscribers`
//! clients, each subscribed to one topic at QoS 0 (the usual way brokers are compared on
//! fan-out: the broker writes each message to every subscriber without waiting for acks), and
//! `--publishers` more that publish `--messages` messages in all at QoS 1, so each publish is
//! acknowledged (PUBACK) as Unhidra acknowledges each chat message: at `--rate` messages per
//! second, or with `--rate 0` as fast as PUBACKs come back (at most `--window`
//! unacknowledged per publisher: 1 by default, 256 with a fixed rate, as `gateway-fanout`).
//! Payloads carry their send time and sequence number (see [`mqtt_load`](crate::mqtt_load)),
//! so every subscriber measures publish→receive latency and checks that it gets each message
//! once, in order. Mosquitto's CPU time and resident memory are read from `/proc/<pid>`
//! before and after, and this process's own CPU time as the load generator's.

use std::fmt;
use std::sync::atomic::AtomicU64;
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
use crate::mqtt_load::{connect_many, publish, receive, ClientSpec, PublishPlan};
use crate::progress::Ticker;
use crate::server_process::Usage;
use crate::ws_client::Failures;

/// The most deliveries one run may expect (latency samples are kept in memory, 8 bytes each).
const MAX_DELIVERIES: u64 = 50_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct MosquittoFanoutArgs {
    /// Clients subscribed to the topic (QoS 0).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub subscribers: u32,
    /// Messages published in all.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub messages: u32,
    /// Publishing clients, sharing the messages and the rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub publishers: u32,
    /// Messages per second over all publishers (50 × 1,000 subscribers: 50,000 deliveries/s);
    /// 0: as fast as PUBACKs come back.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate: u32,
    /// Most unacknowledged publishes per publisher (default: 1 with --rate 0, 256 with a
    /// fixed rate, as `gateway-fanout`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub window: Option<u32>,
    /// Payload size in bytes (at least 20: send time, publisher and sequence number).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(20..=32_768))]
    pub payload_bytes: u32,
    /// Longest the publishing and delivery phase may take.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

impl MosquittoFanoutArgs {
    /// Unacknowledged publishes allowed per publisher.
    pub fn window(&self) -> u32 {
        self.window.unwrap_or(if self.rate == 0 { 1 } else { 256 })
    }
}

#[derive(Debug, Serialize)]
pub struct MqttFanoutReport {
    pub broker: BrokerInfo,
    pub subscribers: u32,
    pub publishers: u32,
    pub messages: u32,
    pub rate: u32,
    pub window: u32,
    pub payload_bytes: u32,
    pub subscription_qos: u8,
    pub publish_qos: u8,
    pub setup_secs: f64,
    pub connect_failures: Failures,
    pub publish: Publish,
    pub delivery: Delivery,
    pub broker_cpu_secs: f64,
    pub broker_cores: f64,
    /// Broker CPU per delivery, in microseconds.
    pub broker_cpu_per_delivery_us: f64,
    pub load_generator_cpu_secs: f64,
    pub load_generator_cores: f64,
    pub load_generator_saturated_first: bool,
    pub broker_rss_before_kib: u64,
    pub broker_rss_after_kib: u64,
    pub broker_peak_rss_kib: Option<u64>,
    pub shutdown_secs: f64,
}

pub async fn run(args: MosquittoFanoutArgs) -> anyhow::Result<MqttFanoutReport> {
    let expected = u64::from(args.subscribers) * u64::from(args.messages);
    if expected > MAX_DELIVERIES {
        bail!("subscribers × messages is {expected}; at most {MAX_DELIVERIES} per run");
    }
    let clients = u64::from(args.subscribers) + u64::from(args.publishers);
    let broker = Mosquitto::start(&args.broker, BrokerConfig::default(), clients).await?;
    let result = measure(&args, &broker).await;
    let shutdown = broker.stop(Duration::from_secs(10)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

async fn measure(
    args: &MosquittoFanoutArgs,
    broker: &Mosquitto,
) -> anyhow::Result<MqttFanoutReport> {
    let started = Instant::now();
    let window = args.window();
    let mut spec = ClientSpec::new(broker.address, args.broker.connect_timeout());
    spec.inflight = u16::try_from(window).unwrap_or(u16::MAX);
    let topic = format!("bench/{}/fanout", spec.run);
    let concurrency = args.broker.concurrency;
    let (subscribers, connect_failures) = connect_many(
        &spec,
        args.subscribers,
        concurrency,
        "subscriber",
        {
            let topic = topic.clone();
            move |_| Some(topic.clone())
        },
        QoS::AtMostOnce,
    )
    .await?;
    let (publishers, publisher_failures) = connect_many(
        &spec,
        args.publishers,
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
    let deadline = TokioInstant::now() + Duration::from_secs(args.timeout_secs);
    let total = u64::from(args.messages);
    let listen = Listen {
        expected: Some(total),
        stop: CancellationToken::new(),
        deadline,
        delivered: Arc::new(AtomicU64::new(0)),
    };
    let expected = u64::from(args.subscribers) * total;
    let ticker = Ticker::counting(
        u64::try_from(subscribers.len()).unwrap_or(0) * total,
        "deliveries",
        Arc::clone(&listen.delivered),
    );
    // The handles stay alive until the end: dropping one ends its event loop.
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    for (_, client) in subscribers {
        handles.push(client.client);
        receivers.push(tokio::spawn(receive(client.events, listen.clone(), base)));
    }
    let count = |p: u32| {
        let (n, ps) = (u64::from(args.messages), u64::from(args.publishers));
        n / ps + u64::from(u64::from(p) < n % ps)
    };
    let mut senders = Vec::new();
    for (p, client) in publishers {
        let plan = PublishPlan {
            publisher: p,
            topic: topic.clone(),
            count: count(p),
            stop_sending: deadline,
            interval: (args.rate > 0).then(|| {
                Duration::from_secs_f64(f64::from(args.publishers) / f64::from(args.rate))
            }),
            window,
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
    let mut received = Vec::new();
    for receiver in receivers {
        received.push(receiver.await.context("a subscriber task failed")?);
    }
    drop(ticker);
    let broker_after = broker.usage()?;
    let client_after = Usage::own().unwrap_or_default();
    drop(handles);

    let publish = summarise_publish(&published);
    let first_send = published.iter().filter_map(|p| p.first_send).min();
    let delivery = summarise_delivery(received, expected, first_send.unwrap_or_default());
    let cpu = broker_after.cpu_secs - broker_before.cpu_secs;
    let client_cpu = client_after.cpu_secs - client_before.cpu_secs;
    let wall = delivery.wall_secs.max(f64::MIN_POSITIVE);
    let (broker_cores, load_generator_cores) = (cpu / wall, client_cpu / wall);
    Ok(MqttFanoutReport {
        broker: broker.info.clone(),
        subscribers: args.subscribers,
        publishers: args.publishers,
        messages: args.messages,
        rate: args.rate,
        window,
        payload_bytes: args.payload_bytes,
        subscription_qos: 0,
        publish_qos: 1,
        setup_secs,
        connect_failures,
        broker_cpu_secs: cpu,
        broker_cores,
        broker_cpu_per_delivery_us: if delivery.received > 0 {
            cpu * 1e6 / delivery.received as f64
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

/// Fails when anything was lost, repeated, out of order or cut off.
pub fn check(report: &MqttFanoutReport) -> anyhow::Result<()> {
    let (p, d) = (&report.publish, &report.delivery);
    if report.connect_failures.total() > 0 {
        bail!("subscribers failed to connect: {}", report.connect_failures);
    }
    if !p.errors.is_empty() || p.acked != u64::from(report.messages) {
        bail!(
            "{} of {} publishes acknowledged; errors {:?}",
            p.acked,
            report.messages,
            p.errors
        );
    }
    if d.received != d.expected
        || !d.closed.is_empty()
        || d.timed_out > 0
        || d.out_of_order > 0
        || d.unexpected > 0
    {
        bail!(
            "received {} of {} deliveries; connections lost {:?}; timed out {}; out of order \
             or repeated {}; unreadable {}",
            d.received,
            d.expected,
            d.closed,
            d.timed_out,
            d.out_of_order,
            d.unexpected
        );
    }
    Ok(())
}

impl fmt::Display for MqttFanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mosquitto fan-out")?;
        writeln!(f, "  broker: {}", self.broker)?;
        writeln!(
            f,
            "  setup ({:.1} s): one topic; {} subscribers (QoS {}, MQTT 3.1.1, clean \
             session); {} publisher(s) (QoS {}); connect failures: {}",
            self.setup_secs,
            self.subscribers,
            self.subscription_qos,
            self.publishers,
            self.publish_qos,
            self.connect_failures
        )?;
        let pace = if self.rate > 0 {
            format!(
                "at {} messages/s (at most {} unacknowledged per publisher)",
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
            "  published {} of {} messages ({}-byte payloads) {pace}: {:.2} s, {:.0} \
             messages/s; acknowledged {}; errors {:?}",
            p.sent, self.messages, self.payload_bytes, p.wall_secs, p.per_sec, p.acked, p.errors
        )?;
        writeln!(f, "    publish→PUBACK latency: {}", p.ack_latency)?;
        write_delivery(f, &self.delivery)?;
        writeln!(
            f,
            "  broker CPU {:.2} s ({:.2} cores, {:.2} µs per delivery); load generator CPU \
             {:.2} s ({:.2} cores){}",
            self.broker_cpu_secs,
            self.broker_cores,
            self.broker_cpu_per_delivery_us,
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

/// The delivery lines the MQTT reports share.
pub fn write_delivery(f: &mut fmt::Formatter<'_>, d: &Delivery) -> fmt::Result {
    writeln!(
        f,
        "  deliveries: {} received of {} expected ({} missing) in {:.2} s: {:.0} deliveries/s",
        d.received,
        d.expected,
        d.expected.saturating_sub(d.received),
        d.wall_secs,
        d.per_sec
    )?;
    writeln!(f, "    publish→receive latency: {}", d.latency)?;
    writeln!(
        f,
        "    subscriber connections lost: {}; timed out: {}; out of order or repeated: {}; \
         unreadable: {}",
        d.closed.values().sum::<u64>(),
        d.timed_out,
        d.out_of_order,
        d.unexpected
    )
}

/// "; load generator saturated first" when it did.
pub fn saturation_note(saturated_first: bool) -> &'static str {
    if saturated_first {
        "; load generator saturated first"
    } else {
        ""
    }
}

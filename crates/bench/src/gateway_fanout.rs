//! `gateway-fanout`: one channel, many subscribers, every message delivered to all of them.
//!
//! Registers `--users` users plus one per publisher and makes them all members of one public
//! channel. Opens `--subscribers` connections (round robin over the users), each subscribed
//! to the channel, and `--publishers` more that publish `--messages` messages in all: at
//! `--rate` messages per second, or with `--rate 0` as fast as acks come back (at most
//! `--window` unacknowledged per publisher: 1 by default, 256 with a fixed rate). Each
//! message body starts with its send time as an offset from an `Instant` shared by the whole
//! process, so every subscriber computes the publish→receive latency of each delivery.
//! Subscribers check that they receive every message exactly once, in seq order, and note
//! any close frame (1013: fell more than `gateway.channel_buffer` behind). The server's CPU
//! time and resident memory are read from `/proc/<pid>` before and after.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::chat_traffic::{
    publish, receive, summarise_delivery, summarise_publish, Delivery, Listen, Plan, Publish,
};
use crate::gateway::{
    channel_with_members, connect_publishers, mib, opened_or_failed, users, Bench, GatewayArgs,
    GatewayServerInfo,
};
use crate::gateway_idle::subscribe;
use crate::peer::PeerArgs;
use crate::progress::{self, Advance, Ticker};
use crate::server_process::{bench_config, Usage};
use crate::workers;
use crate::ws_client::{Credential, Failure, Failures};

/// The most deliveries one run may expect (latency samples are kept in memory, 8 bytes each).
const MAX_DELIVERIES: u64 = 50_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayFanoutArgs {
    /// Connections subscribed to the channel.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub subscribers: u32,
    /// Users the subscriber connections belong to, round robin.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// Messages published in all.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub messages: u32,
    /// Publishing connections (each its own user), sharing the messages and the rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub publishers: u32,
    /// Messages per second over all publishers; 0: as fast as acks come back.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate: u32,
    /// Most unacknowledged publishes per publisher (default: 1 with --rate 0, so each
    /// publish waits for the previous ack; 256 with a fixed rate, so slow acks do not slow
    /// the schedule).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub window: Option<u32>,
    /// Message body size in bytes (at least 17: the send time and a space).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(17..=32_768))]
    pub body_bytes: u32,
    /// The server's gateway.channel_buffer: deliveries a subscriber may fall behind before
    /// it is closed with 1013.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub channel_buffer: u32,
    /// Scrape the server's /metrics this often during the run (0: never). Scraping drains
    /// the histogram samples the server buffers in memory.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub scrape_every_ms: u64,
    /// Handshakes in flight at once while connecting the subscribers.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Longest the publishing and delivery phase may take.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub server: GatewayServerInfo,
    pub subscribers: u32,
    pub users: u32,
    pub publishers: u32,
    pub messages: u32,
    pub rate: u32,
    pub window: u32,
    pub body_bytes: u32,
    pub scrape_every_ms: u64,
    pub setup_secs: f64,
    pub connect_failures: Failures,
    pub publish: Publish,
    pub delivery: Delivery,
    pub server_cpu_secs: f64,
    pub server_cores: f64,
    /// Server CPU per delivery, in microseconds.
    pub server_cpu_per_delivery_us: f64,
    pub load_generator_cpu_secs: f64,
    pub server_rss_before_kib: u64,
    pub server_rss_after_kib: u64,
    /// After one scrape of /metrics once the run was over.
    pub server_rss_after_scrape_kib: u64,
    pub shutdown_secs: f64,
}

pub async fn run(args: GatewayFanoutArgs) -> anyhow::Result<FanoutReport> {
    let expected = u64::from(args.subscribers) * u64::from(args.messages);
    if expected > MAX_DELIVERIES {
        bail!("subscribers × messages is {expected}; at most {MAX_DELIVERIES} per run");
    }
    let mut config = bench_config();
    config.gateway.channel_buffer = args.channel_buffer as usize;
    let connections = u64::from(args.subscribers) + u64::from(args.publishers);
    let bench = Bench::start(&args.gateway, config, connections).await?;
    let result = measure(&args, &bench).await;
    let mut server = bench.server;
    let shutdown = server.stop(Duration::from_secs(60)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

async fn measure(args: &GatewayFanoutArgs, bench: &Bench) -> anyhow::Result<FanoutReport> {
    let started = Instant::now();
    let all_users = users(&bench.api, args.users + args.publishers).await?;
    let (publisher_users, subscriber_users) = all_users.split_at(args.publishers as usize);
    let owner = publisher_users.first().context("no publisher user")?;
    let channel = channel_with_members(&bench.api, owner, &all_users).await?;

    // Subscribers: connect and subscribe, remembering each one's starting seq.
    let credentials: Arc<Vec<Credential>> = Arc::new(
        subscriber_users
            .iter()
            .map(|u| Credential::Bearer(u.access.clone()))
            .collect(),
    );
    let bar = progress::bar(u64::from(args.subscribers), "connecting subscribers");
    let opened = workers::for_each(
        (0..args.subscribers as usize).collect(),
        args.concurrency as usize,
        {
            let connector = bench.connector.clone();
            let (credentials, channel, bar) =
                (Arc::clone(&credentials), channel.clone(), bar.clone());
            move |i: usize| {
                let (connector, credentials, channel, bar) = (
                    connector.clone(),
                    Arc::clone(&credentials),
                    channel.clone(),
                    bar.clone(),
                );
                async move {
                    let _advance = Advance(&bar);
                    let credential = credentials
                        .get(i % credentials.len().max(1))
                        .ok_or_else(|| Failure::WebSocket("no users".into()))?;
                    let mut ws = connector.connect(i, credential).await?;
                    let seq = subscribe(&mut ws, &channel, connector.timeout()).await?;
                    Ok::<_, Failure>((ws, seq))
                }
            }
        },
    )
    .await?;
    drop(bar);
    let (subscribers, connect_failures) = opened_or_failed(opened);
    let publishers =
        connect_publishers(&bench.connector, publisher_users, args.subscribers as usize).await?;
    let setup_secs = started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_before = bench.server.usage()?;
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
    let ticker = Ticker::counting(
        total * subscribers.len() as u64,
        "deliveries",
        Arc::clone(&listen.delivered),
    );
    let mut receivers = Vec::new();
    for (ws, seq) in subscribers {
        let seqs = HashMap::from([(channel.clone(), seq)]);
        receivers.push(tokio::spawn(receive(ws, seqs, listen.clone(), base)));
    }
    let scraping = CancellationToken::new();
    let scraper = (args.scrape_every_ms > 0).then(|| {
        let (url, stop) = (
            format!("http://{}/metrics", bench.server.metrics),
            scraping.clone(),
        );
        let every = Duration::from_millis(args.scrape_every_ms);
        tokio::spawn(scrape(url, every, stop, deadline))
    });
    let mut senders = Vec::new();
    let count = |p: u32| {
        let (n, ps) = (u64::from(args.messages), u64::from(args.publishers));
        n / ps + u64::from(u64::from(p) < n % ps)
    };
    for (p, ws) in (0u32..).zip(publishers) {
        let plan = Plan {
            publisher: p,
            channels: vec![channel.clone()],
            count: count(p),
            stop_sending: deadline,
            interval: (args.rate > 0).then(|| {
                Duration::from_secs_f64(f64::from(args.publishers) / f64::from(args.rate))
            }),
            window: window(args),
            body_bytes: args.body_bytes as usize,
        };
        senders.push(tokio::spawn(publish(ws, plan, base, deadline)));
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
    let server_after = bench.server.usage()?;
    let client_after = Usage::own().unwrap_or_default();
    scraping.cancel();
    if let Some(scraper) = scraper {
        let _ = scraper.await;
    }
    // One scrape drains what the recorder buffered.
    let _ = bench.server.scrape_metrics().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_rss_after_scrape_kib = bench.server.usage()?.rss_kib;

    let publish = summarise_publish(&published);
    let first_send = published.iter().filter_map(|p| p.first_send).min();
    let delivery = summarise_delivery(
        received,
        u64::from(args.subscribers) * total,
        first_send.unwrap_or_default(),
    );
    let cpu = server_after.cpu_secs - server_before.cpu_secs;
    let wall = delivery.wall_secs.max(f64::MIN_POSITIVE);
    Ok(FanoutReport {
        server: bench.info.clone(),
        subscribers: args.subscribers,
        users: args.users,
        publishers: args.publishers,
        messages: args.messages,
        rate: args.rate,
        window: window(args),
        body_bytes: args.body_bytes,
        scrape_every_ms: args.scrape_every_ms,
        setup_secs,
        connect_failures,
        server_cpu_secs: cpu,
        server_cores: cpu / wall,
        server_cpu_per_delivery_us: if delivery.received > 0 {
            cpu * 1e6 / delivery.received as f64
        } else {
            0.0
        },
        load_generator_cpu_secs: client_after.cpu_secs - client_before.cpu_secs,
        server_rss_before_kib: server_before.rss_kib,
        server_rss_after_kib: server_after.rss_kib,
        server_rss_after_scrape_kib,
        publish,
        delivery,
        shutdown_secs: 0.0,
    })
}

/// Unacknowledged publishes allowed per publisher.
pub fn window(args: &GatewayFanoutArgs) -> u32 {
    args.window.unwrap_or(if args.rate == 0 { 1 } else { 256 })
}

async fn scrape(url: String, every: Duration, stop: CancellationToken, deadline: TokioInstant) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => return,
            _ = tick.tick() => {
                if let Ok(r) = http.get(&url).send().await {
                    let _ = r.bytes().await;
                }
            }
        }
    }
}

/// Fails when anything was lost, refused, out of order or cut off.
pub fn check(report: &FanoutReport) -> anyhow::Result<()> {
    let d = &report.delivery;
    if report.connect_failures.total() > 0 {
        bail!("subscribers failed to connect: {}", report.connect_failures);
    }
    if !report.publish.errors.is_empty() || report.publish.acked != u64::from(report.messages) {
        bail!(
            "{} of {} publishes acked; errors {:?}",
            report.publish.acked,
            report.messages,
            report.publish.errors
        );
    }
    if d.received != d.expected
        || !d.closed.is_empty()
        || d.timed_out > 0
        || d.out_of_order > 0
        || d.unexpected > 0
    {
        bail!(
            "received {} of {} deliveries; closed {:?}; timed out {}; out of order {}",
            d.received,
            d.expected,
            d.closed,
            d.timed_out,
            d.out_of_order
        );
    }
    Ok(())
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gateway fan-out")?;
        writeln!(f, "  server: {}", self.server)?;
        writeln!(
            f,
            "  setup ({:.1} s): one public channel; {} subscriber connections ({} users, {} \
             each) subscribed to it; {} publisher connection(s); connect failures: {}",
            self.setup_secs,
            self.subscribers,
            self.users,
            self.subscribers.div_ceil(self.users.max(1)),
            self.publishers,
            self.connect_failures
        )?;
        let pace = if self.rate > 0 {
            format!(
                "at {} messages/s (at most {} unacknowledged per publisher)",
                self.rate, self.window
            )
        } else {
            format!(
                "as fast as acks come ({} unacknowledged per publisher)",
                self.window
            )
        };
        let p = &self.publish;
        writeln!(
            f,
            "  published {} of {} messages ({}-byte bodies) {pace}: {:.2} s, {:.0} messages/s; \
             acked {}; errors {:?}",
            p.sent, self.messages, self.body_bytes, p.wall_secs, p.per_sec, p.acked, p.errors
        )?;
        writeln!(f, "    publish→ack latency: {}", p.ack_latency)?;
        let d = &self.delivery;
        writeln!(
            f,
            "  deliveries: {} received of {} expected ({} missing) in {:.2} s: {:.0} \
             deliveries/s",
            d.received,
            d.expected,
            d.expected.saturating_sub(d.received),
            d.wall_secs,
            d.per_sec
        )?;
        writeln!(f, "    publish→receive latency: {}", d.latency)?;
        writeln!(
            f,
            "    subscribers closed by the server: {} (1013: {}); timed out: {}; out of \
             order: {}",
            if d.closed.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", d.closed)
            },
            d.closed_1013,
            d.timed_out,
            d.out_of_order
        )?;
        writeln!(
            f,
            "  server CPU {:.2} s ({:.2} cores, {:.2} µs per delivery); load generator CPU \
             {:.2} s",
            self.server_cpu_secs,
            self.server_cores,
            self.server_cpu_per_delivery_us,
            self.load_generator_cpu_secs
        )?;
        let growth = self.server_rss_after_kib as f64 - self.server_rss_before_kib as f64;
        writeln!(
            f,
            "  server RSS: {:.1} MiB before, {:.1} MiB after ({:+.1} MiB, {:.1} bytes per \
             delivery; /metrics scraped {}), {:.1} MiB after one more scrape",
            mib(self.server_rss_before_kib),
            mib(self.server_rss_after_kib),
            growth / 1024.0,
            if d.received > 0 {
                growth * 1024.0 / d.received as f64
            } else {
                0.0
            },
            if self.scrape_every_ms > 0 {
                format!("every {} ms", self.scrape_every_ms)
            } else {
                "never during the run".to_owned()
            },
            mib(self.server_rss_after_scrape_kib)
        )?;
        writeln!(
            f,
            "  server shutdown (SIGTERM to exit): {:.2} s",
            self.shutdown_secs
        )?;
        Ok(())
    }
}

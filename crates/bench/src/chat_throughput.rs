//! `chat-throughput`: many active channels at once, each with a few subscribers.
//!
//! Registers `--users` subscriber users and `--publishers` publisher users, creates
//! `--channels` public channels and gives each `--subscribers-per-channel` of the subscriber
//! users (so each user is in several channels) and every publisher. Each subscriber user
//! opens one connection and subscribes to all of its channels. Each publisher opens one
//! connection and publishes round robin over all channels (each starting at a different one)
//! for `--duration-secs`: as fast as acks allow with `--window` unacknowledged publishes, or
//! at a fixed total `--rate`. After that the tool waits up to `--drain-secs` for the
//! remaining acks and deliveries. Publish→ack and publish→receive latencies come from
//! [`chat_traffic`](crate::chat_traffic); subscribers check each channel's seq order. The
//! server's CPU time and resident memory are read from `/proc/<pid>`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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
    connect_publishers, mib, opened_or_failed, users, Bench, GatewayArgs, GatewayServerInfo, User,
};
use crate::gateway_idle::subscribe;
use crate::peer::PeerArgs;
use crate::progress::Ticker;
use crate::server_process::{bench_config, Usage};
use crate::workers;
use crate::ws_client::{Credential, Failure, Failures, Ws};

#[derive(Debug, Clone, clap::Args)]
pub struct ChatThroughputArgs {
    /// Active channels.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub channels: u32,
    /// Subscriber users, one connection each.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// Subscribers of each channel (at most --users); a user subscribes to
    /// channels × this / users channels.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub subscribers_per_channel: u32,
    /// Publishing connections, each its own user and a member of every channel. The server
    /// takes up to 64 unanswered publishes per connection (its `publish_window`), so
    /// publishers × min(window, 64) appends can wait for the store at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub publishers: u32,
    /// Unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub window: u32,
    /// Messages per second over all publishers; 0: as fast as acks come back.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate: u32,
    /// How long the publishers publish.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// How long to wait after that for the outstanding acks and deliveries.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub drain_secs: u64,
    /// Message body size in bytes (at least 17: the send time and a space).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(17..=32_768))]
    pub body_bytes: u32,
    /// Setup requests and handshakes in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// Point-to-point pairs: publisher p publishes only to channel p (and is a member of that
    /// one only), so with `--channels N --publishers N --users N --subscribers-per-channel 1`
    /// there are N independent publisher→subscriber pairs. Needs --channels = --publishers.
    #[arg(long)]
    pub pairs: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub server: GatewayServerInfo,
    pub channels: u32,
    pub users: u32,
    pub subscribers_per_channel: u32,
    pub subscriptions: u64,
    pub publishers: u32,
    pub pairs: bool,
    pub window: u32,
    pub rate: u32,
    pub duration_secs: u64,
    pub body_bytes: u32,
    pub setup_secs: f64,
    pub connect_failures: Failures,
    pub publish: Publish,
    pub delivery: Delivery,
    /// Server CPU from the first publish until the deliveries were in.
    pub server_cpu_secs: f64,
    pub server_cores: f64,
    /// Server CPU per acked message (its append, ack and deliveries), in microseconds.
    pub server_cpu_per_message_us: f64,
    pub load_generator_cpu_secs: f64,
    pub server_rss_before_kib: u64,
    pub server_rss_after_kib: u64,
    pub server_peak_rss_kib: Option<u64>,
    pub shutdown_secs: f64,
}

pub async fn run(args: ChatThroughputArgs) -> anyhow::Result<ThroughputReport> {
    if args.subscribers_per_channel > args.users {
        bail!("--subscribers-per-channel cannot exceed --users");
    }
    if args.pairs && args.channels != args.publishers {
        bail!("--pairs needs as many --channels as --publishers (one channel per pair)");
    }
    let connections = u64::from(args.users) + u64::from(args.publishers);
    let bench = Bench::start(&args.gateway, bench_config(), connections).await?;
    let result = measure(&args, &bench).await;
    let mut server = bench.server;
    let shutdown = server.stop(Duration::from_secs(60)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

/// Which subscriber users are in channel `c`: `per_channel` consecutive ones (modulo the
/// user count), so user `u` is in the channels of the slots `u`, `u + users`, ….
fn subscribers_of(c: usize, per_channel: usize, users: usize) -> impl Iterator<Item = usize> {
    (0..per_channel).map(move |j| (c * per_channel + j) % users.max(1))
}

async fn measure(args: &ChatThroughputArgs, bench: &Bench) -> anyhow::Result<ThroughputReport> {
    let started = Instant::now();
    let all_users = users(&bench.api, args.publishers + args.users).await?;
    let (publisher_users, subscriber_users) = all_users.split_at(args.publishers as usize);
    let owner = publisher_users.first().context("no publisher user")?;

    // Channels, made by the first publisher (their first member).
    let channel_ids = workers::for_each((0..args.channels).collect(), args.concurrency as usize, {
        let (api, access) = (bench.api.clone(), owner.access.clone());
        let prefix = format!("bench-{:08x}", rand::random::<u32>());
        move |c: u32| {
            let (api, access, name) = (api.clone(), access.clone(), format!("{prefix}-{c}"));
            async move { (c, api.create_channel(&access, &name, false).await) }
        }
    })
    .await?;
    let mut channels = vec![String::new(); args.channels as usize];
    for (c, id) in channel_ids {
        if let Some(slot) = channels.get_mut(c as usize) {
            *slot = id?;
        }
    }

    // Memberships: the subscribers of each channel, and every publisher but the owner.
    let per_channel = args.subscribers_per_channel as usize;
    let mut joins: Vec<(User, String)> = Vec::new();
    let mut channels_of: Vec<Vec<String>> = vec![Vec::new(); subscriber_users.len()];
    for (c, channel) in channels.iter().enumerate() {
        for u in subscribers_of(c, per_channel, subscriber_users.len()) {
            let user = subscriber_users.get(u).context("no such user")?;
            joins.push((user.clone(), channel.clone()));
            if let Some(list) = channels_of.get_mut(u) {
                list.push(channel.clone());
            }
        }
        for (p, user) in publisher_users.iter().enumerate().skip(1) {
            if !args.pairs || p == c {
                joins.push((user.clone(), channel.clone()));
            }
        }
    }
    let joined = workers::for_each(joins, args.concurrency as usize, {
        let api = bench.api.clone();
        move |(user, channel): (User, String)| {
            let api = api.clone();
            async move { api.add_member(&user.access, &channel, &user.id).await }
        }
    })
    .await?;
    joined.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    // Subscribers: one connection per user, subscribed to each of the user's channels.
    let subscriptions: u64 = channels_of.iter().map(|c| c.len() as u64).sum();
    let plans: Vec<(usize, User, Vec<String>)> = subscriber_users
        .iter()
        .cloned()
        .zip(channels_of)
        .enumerate()
        .map(|(i, (user, list))| (i, user, list))
        .collect();
    let opened = workers::for_each(plans, args.concurrency as usize, {
        let connector = bench.connector.clone();
        move |(i, user, list): (usize, User, Vec<String>)| {
            let connector = connector.clone();
            async move {
                let mut ws = connector
                    .connect(i, &Credential::Bearer(user.access.clone()))
                    .await?;
                let mut seqs = HashMap::new();
                for channel in list {
                    let seq = subscribe(&mut ws, &channel, connector.timeout()).await?;
                    seqs.insert(channel, seq);
                }
                Ok::<(Ws, HashMap<String, i64>), Failure>((ws, seqs))
            }
        }
    })
    .await?;
    let (subscribers, connect_failures) = opened_or_failed(opened);
    let publishers =
        connect_publishers(&bench.connector, publisher_users, args.users as usize).await?;
    let setup_secs = started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_before = bench.server.usage()?;
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
    let mut receivers = Vec::new();
    for (ws, seqs) in subscribers {
        receivers.push(tokio::spawn(receive(ws, seqs, listen.clone(), base)));
    }
    let ticker = Ticker::timed(Duration::from_secs(args.duration_secs), "publishing");
    let mut senders = Vec::new();
    let (count, publisher_count) = (channels.len(), publishers.len().max(1));
    for (p, ws) in (0u32..).zip(publishers) {
        let own = if args.pairs {
            // Its own channel only.
            channels.get(p as usize).cloned().into_iter().collect()
        } else {
            // Each publisher starts at a different channel.
            let mut own = channels.clone();
            own.rotate_left(p as usize * count / publisher_count);
            own
        };
        let plan = Plan {
            publisher: p,
            channels: own,
            count: u64::MAX,
            stop_sending,
            interval: (args.rate > 0).then(|| {
                Duration::from_secs_f64(f64::from(args.publishers) / f64::from(args.rate))
            }),
            window: args.window,
            body_bytes: args.body_bytes as usize,
        };
        senders.push(tokio::spawn(publish(ws, plan, base, deadline)));
    }
    let mut published = Vec::new();
    for sender in senders {
        published.push(sender.await.context("a publisher task failed")?);
    }
    drop(ticker);
    // Every acked message goes to each of its channel's subscribers.
    let acked: u64 = published.iter().map(|p| p.acked).sum();
    let expected = acked * u64::from(args.subscribers_per_channel);
    while listen.delivered.load(Ordering::Relaxed) < expected && TokioInstant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listen.stop.cancel();
    let mut received = Vec::new();
    for receiver in receivers {
        received.push(receiver.await.context("a subscriber task failed")?);
    }
    let server_after = bench.server.usage()?;
    let client_after = Usage::own().unwrap_or_default();

    let publish = summarise_publish(&published);
    let first_send = published.iter().filter_map(|p| p.first_send).min();
    let delivery = summarise_delivery(received, expected, first_send.unwrap_or_default());
    let cpu = server_after.cpu_secs - server_before.cpu_secs;
    let wall = delivery.wall_secs.max(f64::MIN_POSITIVE);
    Ok(ThroughputReport {
        server: bench.info.clone(),
        channels: args.channels,
        users: args.users,
        subscribers_per_channel: args.subscribers_per_channel,
        subscriptions,
        publishers: args.publishers,
        pairs: args.pairs,
        window: args.window,
        rate: args.rate,
        duration_secs: args.duration_secs,
        body_bytes: args.body_bytes,
        setup_secs,
        connect_failures,
        server_cpu_secs: cpu,
        server_cores: cpu / wall,
        server_cpu_per_message_us: if publish.acked > 0 {
            cpu * 1e6 / publish.acked as f64
        } else {
            0.0
        },
        load_generator_cpu_secs: client_after.cpu_secs - client_before.cpu_secs,
        server_rss_before_kib: server_before.rss_kib,
        server_rss_after_kib: server_after.rss_kib,
        server_peak_rss_kib: bench.server.peak_rss_kib(),
        publish,
        delivery,
        shutdown_secs: 0.0,
    })
}

/// Fails when anything was refused, lost, out of order or cut off.
pub fn check(report: &ThroughputReport) -> anyhow::Result<()> {
    let (p, d) = (&report.publish, &report.delivery);
    if report.connect_failures.total() > 0 {
        bail!("subscribers failed to connect: {}", report.connect_failures);
    }
    if !p.errors.is_empty() || p.acked != p.sent {
        bail!(
            "{} of {} publishes acked; errors {:?}",
            p.acked,
            p.sent,
            p.errors
        );
    }
    if d.received != d.expected || !d.closed.is_empty() || d.out_of_order > 0 || d.unexpected > 0 {
        bail!(
            "received {} of {} deliveries; closed {:?}; out of order {}; unexpected {}",
            d.received,
            d.expected,
            d.closed,
            d.out_of_order,
            d.unexpected
        );
    }
    Ok(())
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chat throughput")?;
        writeln!(f, "  server: {}", self.server)?;
        writeln!(
            f,
            "  setup ({:.1} s): {} public channels, {} subscribers each: {} subscriber \
             connections (one per user) with {} subscriptions; {} publisher connections, \
             members of every channel; connect failures: {}",
            self.setup_secs,
            self.channels,
            self.subscribers_per_channel,
            self.users,
            self.subscriptions,
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
        let spread = if self.pairs {
            "each publisher to its own channel (pairs)"
        } else {
            "round robin over the channels"
        };
        writeln!(
            f,
            "  published for {} s, {}-byte bodies, {spread}, {pace}: sent {}, acked {} ({:.0} \
             acked messages/s); errors {:?}",
            self.duration_secs, self.body_bytes, p.sent, p.acked, p.acked_per_sec, p.errors
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
            "    subscribers closed by the server: {}; out of order: {}; unexpected: {}",
            if d.closed.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", d.closed)
            },
            d.out_of_order,
            d.unexpected
        )?;
        writeln!(
            f,
            "  server CPU {:.2} s ({:.2} cores, {:.1} µs per acked message); load generator \
             CPU {:.2} s",
            self.server_cpu_secs,
            self.server_cores,
            self.server_cpu_per_message_us,
            self.load_generator_cpu_secs
        )?;
        writeln!(
            f,
            "  server RSS: {:.1} MiB before, {:.1} MiB after (peak {:.1} MiB); shutdown {:.2} s",
            mib(self.server_rss_before_kib),
            mib(self.server_rss_after_kib),
            mib(self.server_peak_rss_kib.unwrap_or(0)),
            self.shutdown_secs
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_gets_distinct_subscribers_and_users_share_the_load() {
        let (channels, per, users) = (100, 3, 100);
        let mut load = vec![0; users];
        for c in 0..channels {
            let mut subs: Vec<usize> = subscribers_of(c, per, users).collect();
            for u in &subs {
                load[*u] += 1;
            }
            subs.sort_unstable();
            subs.dedup();
            assert_eq!(subs.len(), per);
        }
        assert!(load.iter().all(|n| *n == 3));
    }
}

//! `gateway-idle`: the server's memory per idle, authenticated WebSocket connection.
//!
//! Registers `--users` users, then opens `--connections` user connections (round robin over
//! the users, `--concurrency` handshakes at a time) in `--steps` equal batches. After each
//! batch, and a pause for the server to settle, it reads the server's resident memory
//! (`VmRSS`). Then it holds every connection idle for `--hold-secs` (each is read, so the
//! server's pings are answered), samples again and asks the server how many connections it
//! holds. Last, it stops the server (SIGTERM) with every connection still open and times the
//! drain: each connection should get a 1001 close frame. With `--subscribe` every connection
//! also subscribes to one channel before it counts as open.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::gateway::{channel_with_members, mib, users, Bench, GatewayArgs, GatewayServerInfo};
use crate::peer::PeerArgs;
use crate::progress;
use crate::server_process::{bench_config, metric_value, Usage};
use crate::stats::{per_second, LatencySummary};
use crate::workers;
use crate::ws_client::{close_code, Credential, Failure, Failures, Incoming, Ws};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayIdleArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Users the connections belong to, round robin (each user holds connections/users).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Batches the connections are opened in; the server's memory is sampled after each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub steps: u32,
    /// Pause before each memory sample, so the server finishes what the batch started.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
    /// How long every connection is held idle before the last sample.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub hold_secs: u64,
    /// Subscribe every connection to one channel (every user is a member) before it counts.
    #[arg(long)]
    pub subscribe: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub server: GatewayServerInfo,
    pub connections: u32,
    pub users: u32,
    pub concurrency: u32,
    pub subscribed: bool,
    pub setup_secs: f64,
    /// The server before the first connection (after setup).
    pub baseline: Usage,
    pub steps: Vec<Step>,
    pub connect: Connect,
    pub held: Held,
    pub server_peak_rss_kib: Option<u64>,
    pub shutdown: Shutdown,
    pub load_generator_rss_kib: Option<u64>,
}

/// The server after a batch of connections.
#[derive(Debug, Serialize)]
pub struct Step {
    pub connections: u64,
    pub rss_kib: u64,
    /// (RSS − baseline) / connections.
    pub per_connection_kib: f64,
    /// RSS growth of this batch / its connections.
    pub batch_per_connection_kib: f64,
}

#[derive(Debug, Serialize)]
pub struct Connect {
    pub opened: u64,
    pub failures: Failures,
    /// Time spent connecting, settle pauses excluded.
    pub wall_secs: f64,
    pub per_sec: f64,
    /// Per connection: TCP connect to `welcome` (to `subscribed` with --subscribe).
    pub latency: LatencySummary,
    pub server_cpu_secs: f64,
    pub server_cpu_per_connection_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Held {
    pub hold_secs: u64,
    pub rss_kib: u64,
    pub per_connection_kib: f64,
    pub per_connection_bytes: f64,
    /// Server CPU over the hold: what idle connections cost.
    pub server_cpu_secs: f64,
    /// Connections the server closed while they were held (should be 0).
    pub closed_by_server: u64,
    /// `gateway_connections_active` from the server's /metrics.
    pub server_gauge: Option<f64>,
}

/// Stopping the server with every connection open.
#[derive(Debug, Serialize)]
pub struct Shutdown {
    /// SIGTERM to exit.
    pub secs: f64,
    /// Close codes the held connections got (0: none, the connection just ended; 65535:
    /// still open 10 s after the server exited).
    pub close_codes: BTreeMap<u16, u64>,
}

pub async fn run(args: GatewayIdleArgs) -> anyhow::Result<IdleReport> {
    let mut bench =
        Bench::start(&args.gateway, bench_config(), u64::from(args.connections)).await?;
    let result = measure(&args, &mut bench).await;
    if result.is_err() && bench.server.is_running() {
        let _ = bench.server.stop(Duration::from_secs(60)).await;
    }
    result
}

type Opened = Result<(Ws, Duration), Failure>;

async fn measure(args: &GatewayIdleArgs, bench: &mut Bench) -> anyhow::Result<IdleReport> {
    let settle = Duration::from_millis(args.settle_ms);
    let started = Instant::now();
    let users = users(&bench.api, args.users).await?;
    let channel = match (args.subscribe, users.first()) {
        (true, Some(owner)) => Some(channel_with_members(&bench.api, owner, &users).await?),
        _ => None,
    };
    let setup_secs = started.elapsed().as_secs_f64();
    let credentials: Arc<Vec<Credential>> = Arc::new(
        users
            .iter()
            .map(|u| Credential::Bearer(u.access.clone()))
            .collect(),
    );

    tokio::time::sleep(settle).await;
    let baseline = bench.server.usage()?;
    let stop = CancellationToken::new();
    let closed = Arc::new(AtomicU64::new(0));
    let mut holders: Vec<JoinHandle<Option<u16>>> = Vec::new();
    let mut steps = Vec::new();
    let mut failures = Failures::default();
    let mut latencies = Vec::new();
    let mut connecting = Duration::ZERO;
    let mut connect_cpu = 0.0;
    let mut previous = (0u64, baseline.rss_kib);

    let total = u64::from(args.connections);
    let bar = progress::bar(total, "connecting");
    let steps_count = u64::from(args.steps).min(total);
    for step in 1..=steps_count {
        let from = total * (step - 1) / steps_count;
        let to = total * step / steps_count;
        let before = bench.server.usage()?;
        let batch_started = Instant::now();
        let opened = workers::for_each((from..to).collect(), args.concurrency as usize, {
            let connector = bench.connector.clone();
            let (credentials, channel, bar) =
                (Arc::clone(&credentials), channel.clone(), bar.clone());
            move |i: u64| {
                let (connector, credentials, channel, bar) = (
                    connector.clone(),
                    Arc::clone(&credentials),
                    channel.clone(),
                    bar.clone(),
                );
                async move {
                    let opened = open(&connector, &credentials, channel.as_deref(), i).await;
                    bar.inc(1);
                    opened
                }
            }
        })
        .await?;
        connecting += batch_started.elapsed();
        connect_cpu += bench.server.usage()?.cpu_secs - before.cpu_secs;
        for result in opened {
            match result {
                Ok((ws, latency)) => {
                    latencies.push(latency);
                    holders.push(tokio::spawn(hold(ws, stop.clone(), Arc::clone(&closed))));
                }
                Err(failure) => failures.record(&failure),
            }
        }
        tokio::time::sleep(settle).await;
        let now = bench.server.usage()?;
        let open_now = holders.len() as u64;
        steps.push(Step {
            connections: open_now,
            rss_kib: now.rss_kib,
            per_connection_kib: per_connection(now.rss_kib, baseline.rss_kib, open_now),
            batch_per_connection_kib: per_connection(
                now.rss_kib,
                previous.1,
                open_now.saturating_sub(previous.0),
            ),
        });
        previous = (open_now, now.rss_kib);
    }
    drop(bar);
    let opened = holders.len() as u64;
    let connect = Connect {
        opened,
        failures,
        wall_secs: connecting.as_secs_f64(),
        per_sec: per_second(opened, connecting),
        latency: LatencySummary::of(latencies),
        server_cpu_secs: connect_cpu,
        server_cpu_per_connection_ms: if opened > 0 {
            connect_cpu * 1000.0 / opened as f64
        } else {
            0.0
        },
    };

    let hold_from = bench.server.usage()?;
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let held_usage = bench.server.usage()?;
    let closed_while_held = closed.load(Ordering::Relaxed);
    // Scraping drains buffered histogram samples, so it comes after the memory sample.
    let gauge = active_gauge(bench).await;
    let load_generator_rss_kib = Usage::own().map(|u| u.rss_kib);
    let server_peak_rss_kib = bench.server.peak_rss_kib();

    // Stop the server with everything open; each holder returns when its connection ends.
    let shutdown_secs = bench
        .server
        .stop(Duration::from_secs(60))
        .await?
        .as_secs_f64();
    let mut close_codes = BTreeMap::new();
    for holder in holders {
        let code = match tokio::time::timeout(Duration::from_secs(10), holder).await {
            Ok(Ok(code)) => code,
            _ => None,
        };
        *close_codes.entry(code.unwrap_or(u16::MAX)).or_insert(0u64) += 1;
    }
    stop.cancel();
    let per_kib = per_connection(held_usage.rss_kib, baseline.rss_kib, opened);
    Ok(IdleReport {
        server: bench.info.clone(),
        connections: args.connections,
        users: args.users,
        concurrency: args.concurrency,
        subscribed: args.subscribe,
        setup_secs,
        baseline,
        steps,
        connect,
        held: Held {
            hold_secs: args.hold_secs,
            rss_kib: held_usage.rss_kib,
            per_connection_kib: per_kib,
            per_connection_bytes: per_kib * 1024.0,
            server_cpu_secs: held_usage.cpu_secs - hold_from.cpu_secs,
            closed_by_server: closed_while_held,
            server_gauge: gauge,
        },
        server_peak_rss_kib,
        shutdown: Shutdown {
            secs: shutdown_secs,
            close_codes,
        },
        load_generator_rss_kib,
    })
}

fn per_connection(rss_kib: u64, base_kib: u64, connections: u64) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    (rss_kib as f64 - base_kib as f64) / connections as f64
}

async fn active_gauge(bench: &Bench) -> Option<f64> {
    let page = bench.server.scrape_metrics().await.ok()?;
    metric_value(&page, unhidra_server::metrics::GATEWAY_CONNECTIONS_ACTIVE)
}

/// Opens connection `i` (user `i mod users`) and subscribes it to `channel` if given.
async fn open(
    connector: &crate::ws_client::Connector,
    credentials: &[Credential],
    channel: Option<&str>,
    i: u64,
) -> Opened {
    let start = Instant::now();
    let index = usize::try_from(i).unwrap_or(usize::MAX);
    let credential = credentials
        .get(index % credentials.len().max(1))
        .ok_or_else(|| Failure::WebSocket("no users".into()))?;
    let mut ws = connector.connect(index, credential).await?;
    if let Some(channel) = channel {
        subscribe(&mut ws, channel, connector.timeout()).await?;
    }
    Ok((ws, start.elapsed()))
}

/// Subscribes and waits for `subscribed`; returns the channel's seq at that moment.
pub async fn subscribe(ws: &mut Ws, channel: &str, timeout: Duration) -> Result<i64, Failure> {
    let text = serde_json::json!({"type": "subscribe", "channel": channel}).to_string();
    let exchange = async {
        ws.send(Message::text(text))
            .await
            .map_err(|e| Failure::WebSocket(e.to_string()))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match Incoming::parse(&text) {
                    Some(f) if f.kind == "subscribed" => return Ok(f.seq.unwrap_or(0)),
                    Some(f) if f.kind == "error" => {
                        return Err(Failure::NoWelcome(format!(
                            "subscribe refused: {}",
                            f.code.as_deref().unwrap_or("?")
                        )))
                    }
                    _ => {}
                },
                Some(Ok(message)) => {
                    if let Some(code) = close_code(&message) {
                        return Err(Failure::NoWelcome(format!("closed with {code}")));
                    }
                }
                Some(Err(err)) => return Err(Failure::WebSocket(err.to_string())),
                None => return Err(Failure::NoWelcome("closed while subscribing".into())),
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// Reads an idle connection until `stop` (returns `None`) or until it ends: returns the
/// close code the server sent (0 when it just went away), after answering the close.
async fn hold(mut ws: Ws, stop: CancellationToken, closed: Arc<AtomicU64>) -> Option<u16> {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return None,
            message = ws.next() => message,
        };
        let code = match message {
            Some(Ok(message)) => close_code(&message),
            Some(Err(_)) | None => Some(0),
        };
        if let Some(code) = code {
            closed.fetch_add(1, Ordering::Relaxed);
            // tungstenite queued the answering close frame; send it.
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
            return Some(code);
        }
    }
}

/// Fails when connections failed or the server dropped any while idle.
pub fn check(report: &IdleReport) -> anyhow::Result<()> {
    if report.connect.failures.total() > 0 {
        bail!(
            "{} of {} connections failed: {}",
            report.connect.failures.total(),
            report.connections,
            report.connect.failures
        );
    }
    if report.held.closed_by_server > 0 {
        bail!(
            "the server closed {} idle connections",
            report.held.closed_by_server
        );
    }
    let going_away = report.shutdown.close_codes.get(&1001).copied().unwrap_or(0);
    if going_away != report.connect.opened {
        bail!(
            "at shutdown {going_away} of {} connections got 1001: {:?}",
            report.connect.opened,
            report.shutdown.close_codes
        );
    }
    Ok(())
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gateway idle connections")?;
        writeln!(f, "  server: {}", self.server)?;
        writeln!(
            f,
            "  setup: {} users registered and logged in{} in {:.1} s",
            self.users,
            if self.subscribed {
                ", one public channel with every user a member"
            } else {
                ""
            },
            self.setup_secs
        )?;
        let c = &self.connect;
        writeln!(
            f,
            "  opened {} of {} user connections ({} per user, {} handshakes at a time{}) in {:.2} \
             s: {:.0}/s; failures: {}",
            c.opened,
            self.connections,
            self.connections.div_ceil(self.users.max(1)),
            self.concurrency,
            if self.subscribed {
                ", each subscribed to the channel"
            } else {
                ""
            },
            c.wall_secs,
            c.per_sec,
            c.failures
        )?;
        writeln!(f, "    latency to welcome: {}", c.latency)?;
        writeln!(
            f,
            "    server CPU while connecting: {:.2} s, {:.3} ms per connection",
            c.server_cpu_secs, c.server_cpu_per_connection_ms
        )?;
        writeln!(f, "  server RSS (VmRSS) as the connections were opened:")?;
        writeln!(
            f,
            "    {:>11}  {:>9}  {:>24}  {:>22}",
            "connections", "RSS MiB", "KiB/conn since baseline", "KiB/conn in this batch"
        )?;
        writeln!(
            f,
            "    {:>11}  {:>9.1}  {:>24}  {:>22}",
            0,
            self.baseline.rss_mib(),
            "",
            ""
        )?;
        for s in &self.steps {
            writeln!(
                f,
                "    {:>11}  {:>9.1}  {:>24.2}  {:>22.2}",
                s.connections,
                mib(s.rss_kib),
                s.per_connection_kib,
                s.batch_per_connection_kib
            )?;
        }
        let h = &self.held;
        writeln!(
            f,
            "  after {} s idle: RSS {:.1} MiB, {:.2} KiB ({:.0} bytes) per connection over the \
             baseline; server CPU while idle {:.2} s",
            h.hold_secs,
            mib(h.rss_kib),
            h.per_connection_kib,
            h.per_connection_bytes,
            h.server_cpu_secs
        )?;
        writeln!(
            f,
            "    server says gateway_connections_active = {}; closed by the server while \
             held: {}; peak RSS {}",
            h.server_gauge
                .map_or_else(|| "?".to_owned(), |g| format!("{g:.0}")),
            h.closed_by_server,
            self.server_peak_rss_kib
                .map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", mib(k)))
        )?;
        writeln!(
            f,
            "  server shutdown with all connections open (SIGTERM to exit): {:.2} s; close \
             codes received: {:?}",
            self.shutdown.secs, self.shutdown.close_codes
        )?;
        if let Some(kib) = self.load_generator_rss_kib {
            writeln!(f, "  load generator RSS: {:.1} MiB", mib(kib))?;
        }
        Ok(())
    }
}

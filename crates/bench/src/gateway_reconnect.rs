//! `gateway-reconnect`: every device reconnecting at once, as after a server restart or a
//! network outage.
//!
//! Registers `--devices` devices through the REST API (setup), then, for each of `--rounds`
//! rounds, starts one task per device, releases them all at the same moment, and times until
//! every device has its `welcome` (or has failed, or hit the connect timeout). No attempt
//! waits for another: TCP connect, upgrade with `device.<key>`, welcome. The server's CPU
//! time is read from `/proc/<pid>/stat` before and after, and the kernel's listen-queue
//! counters show whether connection attempts were dropped at the listener. Then every
//! connection is closed and the next round starts after `--pause-secs`.
//!
//! The connections are closed with a TCP reset (zero linger). Ten thousand real devices are
//! ten thousand hosts; here one host holds every client socket, and closing them normally
//! would leave 10,000 of its own sockets in TIME_WAIT per round. Tens of thousands of those
//! make the load generator's port allocation slow and its rounds erratic.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::{fresh_username, PASSWORD};
use crate::gateway::{mib, Bench, GatewayArgs, GatewayServerInfo};
use crate::procfs::{self, ListenCounters};
use crate::server_process::{
    bench_config, histogram_buckets, metric_value, observations_above, Usage,
};
use crate::stats::{per_second, LatencySummary};
use crate::ws_client::{Credential, Failure, Failures, Ws};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayReconnectArgs {
    /// Devices to register and reconnect at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Storms to run, one after another on the same server.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Pause after closing every connection, before the next storm.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub pause_secs: u64,
    /// Device registrations in flight at once during setup.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub register_concurrency: u32,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Serialize)]
pub struct ReconnectReport {
    pub server: GatewayServerInfo,
    pub devices: u32,
    pub connect_timeout_secs: u64,
    pub registration_secs: f64,
    pub baseline_rss_kib: u64,
    pub rounds: Vec<Round>,
    pub shutdown_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct Round {
    pub connected: u64,
    pub failures: Failures,
    /// From the release of every attempt until the last one ended (welcome, failure or
    /// timeout).
    pub wall_secs: f64,
    pub per_sec: f64,
    /// Per device: release to `welcome`.
    pub latency: LatencySummary,
    /// Devices that took longer than one second (a dropped SYN is retried after 1 s).
    pub over_1s: u64,
    pub over_3s: u64,
    pub over_7s: u64,
    pub server_cpu_secs: f64,
    pub server_cores: f64,
    pub load_generator_cpu_secs: f64,
    /// TCP sockets in TIME_WAIT on the machine when the storm started.
    pub time_wait_before: Option<u64>,
    pub server_cpu_per_connection_ms: f64,
    /// With every device connected.
    pub server_rss_kib: u64,
    /// Two seconds after every connection was closed.
    pub server_rss_after_close_kib: u64,
    /// `gateway_connections_active` with every device connected.
    pub server_gauge: Option<f64>,
    /// Growth of the kernel's listen-queue counters during the storm (machine-wide).
    pub listen_counters: Option<ListenCounters>,
    /// The server's own view: its `http_request_duration_seconds` for `GET /ws` answered
    /// 101 during the storm, which covers the handler (key check, upgrade) but not the time
    /// before the request was read (TCP handshake, accept queue).
    pub server_side: Option<ServerSide>,
}

#[derive(Debug, Serialize)]
pub struct ServerSide {
    pub upgrades: f64,
    pub over_100ms: f64,
    pub over_1s: f64,
}

/// The 101 answers to `GET /ws` so far, as cumulative histogram buckets.
fn upgrade_buckets(page: &str) -> Vec<(f64, f64)> {
    histogram_buckets(
        page,
        unhidra_server::metrics::HTTP_REQUEST_DURATION,
        &[("route", "/ws"), ("status", "101")],
    )
}

fn server_side(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<ServerSide> {
    let (slow_after, total_after) = observations_above(after, 0.1)?;
    let (very_slow_after, _) = observations_above(after, 1.0)?;
    // Before the first storm there is no series yet.
    let (slow_before, total_before) = observations_above(before, 0.1).unwrap_or((0.0, 0.0));
    let (very_slow_before, _) = observations_above(before, 1.0).unwrap_or((0.0, 0.0));
    Some(ServerSide {
        upgrades: total_after - total_before,
        over_100ms: slow_after - slow_before,
        over_1s: very_slow_after - very_slow_before,
    })
}

pub async fn run(args: GatewayReconnectArgs) -> anyhow::Result<ReconnectReport> {
    let bench = Bench::start(&args.gateway, bench_config(), u64::from(args.devices)).await?;
    let result = measure(&args, &bench).await;
    let mut server = bench.server;
    let shutdown = server.stop(Duration::from_secs(60)).await;
    let mut report = result?;
    report.shutdown_secs = shutdown?.as_secs_f64();
    Ok(report)
}

async fn measure(args: &GatewayReconnectArgs, bench: &Bench) -> anyhow::Result<ReconnectReport> {
    let api = &bench.api;
    let username = fresh_username();
    api.register(&username, PASSWORD).await?;
    let access = api.login(&username, PASSWORD).await?.access_token;
    let started = Instant::now();
    let keys: Vec<Credential> = api
        .register_devices(&access, args.devices, args.register_concurrency as usize)
        .await?
        .into_iter()
        .map(Credential::Device)
        .collect();
    let registration_secs = started.elapsed().as_secs_f64();
    let keys = Arc::new(keys);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss_kib = bench.server.usage()?.rss_kib;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(args.pause_secs)).await;
        }
        rounds.push(storm(bench, &keys).await?);
    }
    Ok(ReconnectReport {
        server: bench.info.clone(),
        devices: args.devices,
        connect_timeout_secs: args.gateway.connect_timeout_secs,
        registration_secs,
        baseline_rss_kib,
        rounds,
        shutdown_secs: 0.0,
    })
}

/// One storm: every device connects at once; all connections are closed at the end.
async fn storm(bench: &Bench, keys: &Arc<Vec<Credential>>) -> anyhow::Result<Round> {
    let go = CancellationToken::new();
    let mut tasks = Vec::with_capacity(keys.len());
    for index in 0..keys.len() {
        let (connector, keys, go) = (bench.connector.clone(), Arc::clone(keys), go.clone());
        tasks.push(tokio::spawn(async move {
            go.cancelled().await;
            let start = Instant::now();
            let result = match keys.get(index) {
                Some(key) => connector.connect(index, key).await,
                None => Err(Failure::WebSocket("no key".into())),
            };
            (result, start.elapsed(), Instant::now())
        }));
    }
    // Let every task reach its wait before the release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let buckets_before = match bench.server.scrape_metrics().await {
        Ok(page) => upgrade_buckets(&page),
        Err(_) => Vec::new(),
    };
    let listen_before = ListenCounters::read();
    let time_wait_before = procfs::time_wait_sockets();
    let before = bench.server.usage()?;
    let client_before = Usage::own().unwrap_or_default();
    let released = Instant::now();
    go.cancel();

    let mut open: Vec<Ws> = Vec::with_capacity(keys.len());
    let mut failures = Failures::default();
    let mut latencies = Vec::with_capacity(keys.len());
    let mut last_end = released;
    for task in tasks {
        let (result, latency, ended) = task.await.context("a connecting task failed")?;
        last_end = last_end.max(ended);
        match result {
            Ok(ws) => {
                latencies.push(latency);
                open.push(ws);
            }
            Err(failure) => failures.record(&failure),
        }
    }
    let wall = last_end.duration_since(released);
    let after = bench.server.usage()?;
    let client_after = Usage::own().unwrap_or_default();
    let listen_counters = listen_before
        .zip(ListenCounters::read())
        .map(|(before, after)| after.since(&before));
    let page = bench.server.scrape_metrics().await.ok();
    let server_gauge = page
        .as_deref()
        .and_then(|page| metric_value(page, unhidra_server::metrics::GATEWAY_CONNECTIONS_ACTIVE));
    let server_side = page
        .as_deref()
        .and_then(|page| server_side(&buckets_before, &upgrade_buckets(page)));
    let connected = open.len() as u64;
    // Closing: a reset for every connection (see the module docs); the server sees each end
    // and unregisters it.
    for ws in open {
        let _ = ws.get_ref().set_zero_linger();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_rss_after_close_kib = bench.server.usage()?.rss_kib;

    let cpu = after.cpu_secs - before.cpu_secs;
    let over = |limit: Duration| latencies.iter().filter(|l| **l > limit).count() as u64;
    Ok(Round {
        connected,
        failures,
        wall_secs: wall.as_secs_f64(),
        per_sec: per_second(connected, wall),
        over_1s: over(Duration::from_secs(1)),
        over_3s: over(Duration::from_secs(3)),
        over_7s: over(Duration::from_secs(7)),
        latency: LatencySummary::of(latencies),
        server_cpu_secs: cpu,
        server_cores: cpu / wall.as_secs_f64().max(f64::MIN_POSITIVE),
        load_generator_cpu_secs: client_after.cpu_secs - client_before.cpu_secs,
        time_wait_before,
        server_cpu_per_connection_ms: if connected > 0 {
            cpu * 1000.0 / connected as f64
        } else {
            0.0
        },
        server_rss_kib: after.rss_kib,
        server_rss_after_close_kib,
        server_gauge,
        listen_counters,
        server_side,
    })
}

/// Fails when any device did not get through.
pub fn check(report: &ReconnectReport) -> anyhow::Result<()> {
    for (i, round) in report.rounds.iter().enumerate() {
        if round.connected != u64::from(report.devices) {
            bail!(
                "round {}: only {} of {} devices connected ({})",
                i + 1,
                round.connected,
                report.devices,
                round.failures
            );
        }
    }
    Ok(())
}

impl fmt::Display for ReconnectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gateway reconnect storm")?;
        writeln!(f, "  server: {}", self.server)?;
        writeln!(
            f,
            "  setup: registered {} devices over REST in {:.1} s; server RSS then {:.1} MiB",
            self.devices,
            self.registration_secs,
            mib(self.baseline_rss_kib)
        )?;
        writeln!(
            f,
            "  each round: all {} devices released at once (TCP connect, upgrade with \
             device.<key>, welcome; {} s timeout each), then all closed",
            self.devices, self.connect_timeout_secs
        )?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  round {}: {} connected in {:.2} s ({:.0}/s); failures: {}",
                i + 1,
                r.connected,
                r.wall_secs,
                r.per_sec,
                r.failures
            )?;
            writeln!(
                f,
                "    latency to welcome: {}; over 1 s: {}, over 3 s: {}, over 7 s: {}",
                r.latency, r.over_1s, r.over_3s, r.over_7s
            )?;
            writeln!(
                f,
                "    server CPU {:.2} s ({:.2} cores, {:.3} ms per connection); RSS with all \
                 connected {:.1} MiB, {:.1} MiB 2 s after closing them; \
                 gateway_connections_active {}",
                r.server_cpu_secs,
                r.server_cores,
                r.server_cpu_per_connection_ms,
                mib(r.server_rss_kib),
                mib(r.server_rss_after_close_kib),
                r.server_gauge
                    .map_or_else(|| "?".to_owned(), |g| format!("{g:.0}"))
            )?;
            writeln!(
                f,
                "    load generator CPU {:.2} s; TCP sockets in TIME_WAIT on the machine at the \
                 start: {}",
                r.load_generator_cpu_secs,
                r.time_wait_before
                    .map_or_else(|| "?".to_owned(), |n| n.to_string())
            )?;
            if let Some(counters) = &r.listen_counters {
                writeln!(f, "    kernel listen counters (machine-wide): {counters}")?;
            }
            if let Some(s) = &r.server_side {
                writeln!(
                    f,
                    "    server-side GET /ws handling (after the request was read): {:.0} \
                     upgrades, {:.0} over 100 ms, {:.0} over 1 s",
                    s.upgrades, s.over_100ms, s.over_1s
                )?;
            }
        }
        writeln!(
            f,
            "  server shutdown (SIGTERM to exit): {:.2} s",
            self.shutdown_secs
        )?;
        Ok(())
    }
}

//! `telemetry-store`: how many telemetry points a second the SQLite store commits, the way
//! the server's telemetry writer commits them (one writer, batches of points from many
//! devices per transaction), and what a bucketed query costs afterwards.
//!
//! Runs against the store directly in a fresh temporary data dir: the number is the store's
//! ceiling, which the WebSocket path (validation, one frame per device at a time) sits on.

use std::fmt;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;
use unhidra_server::paths;
use unhidra_store::{NewDevice, NewUser, Store, TelemetryPoint, TelemetryQuery};
use unhidra_store_sqlite::SqliteStore;

use crate::stats::{per_second, LatencySummary};

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryStoreArgs {
    /// Devices sending.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// Metrics per device (each point is one metric of one device at one time).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub metrics: u32,
    /// Points to store in all.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub points: u64,
    /// Points per write (the server's telemetry writer hands the store up to 8,192 at once).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Bucketed queries timed afterwards.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub queries: u32,
}

#[derive(Debug, Serialize)]
pub struct TelemetryStoreReport {
    pub devices: u32,
    pub metrics: u32,
    pub points: u64,
    pub batch: u32,
    pub wall_secs: f64,
    pub points_per_sec: f64,
    pub commit: LatencySummary,
    pub db_bytes: u64,
    pub bytes_per_point: f64,
    /// One device's metric over the whole run, in 60 buckets.
    pub query: LatencySummary,
    pub points_per_query: u64,
}

pub async fn run(args: TelemetryStoreArgs) -> anyhow::Result<TelemetryStoreReport> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let db = paths::database(dir.path());
    let store = SqliteStore::open(&db).await.context("opening the store")?;
    let now = OffsetDateTime::now_utc();
    store
        .create_user(NewUser {
            id: "bench-owner".into(),
            username: "bench-owner".into(),
            password_hash: "unused".into(),
            is_admin: false,
            created_at: now,
        })
        .await
        .context("creating the owner")?;
    let mut device_ids = Vec::with_capacity(args.devices as usize);
    for i in 0..args.devices {
        let id = uuid::Uuid::now_v7().to_string();
        store
            .create_device(NewDevice {
                id: id.clone(),
                owner_id: "bench-owner".into(),
                name: format!("sensor-{i}"),
                kind: None,
                metadata: serde_json::json!({}),
                key_id: format!("{i:016x}"),
                key_hash: vec![0; 32],
                created_at: now,
            })
            .await
            .context("registering a device")?;
        device_ids.push(id);
    }
    let metric_names: Vec<String> = (0..args.metrics).map(|m| format!("metric{m}")).collect();
    let per_round = u64::from(args.devices) * u64::from(args.metrics);
    let start_ts = now - time::Duration::seconds(i64::try_from(args.points / per_round + 1)?);
    let point = |i: u64| -> TelemetryPoint {
        let device = usize::try_from(i % u64::from(args.devices)).unwrap_or(0);
        let metric =
            usize::try_from((i / u64::from(args.devices)) % u64::from(args.metrics)).unwrap_or(0);
        let round = i64::try_from(i / per_round).unwrap_or(0);
        TelemetryPoint {
            device_id: device_ids.get(device).cloned().unwrap_or_default(),
            metric: metric_names.get(metric).cloned().unwrap_or_default(),
            ts: start_ts + time::Duration::seconds(round),
            value: 20.0 + (i % 1000) as f64 / 100.0,
        }
    };

    let mut commits = Vec::new();
    let started = Instant::now();
    let mut next = 0u64;
    while next < args.points {
        let end = (next + u64::from(args.batch)).min(args.points);
        let batch: Vec<TelemetryPoint> = (next..end).map(point).collect();
        let t = Instant::now();
        store
            .append_telemetry(&batch)
            .await
            .context("appending telemetry")?;
        commits.push(t.elapsed());
        next = end;
    }
    let wall = started.elapsed();

    let mut queries = Vec::new();
    let rounds = i64::try_from(args.points / per_round + 1)?;
    for q in 0..args.queries {
        let device = device_ids
            .get(q as usize % device_ids.len())
            .cloned()
            .unwrap_or_default();
        let t = Instant::now();
        let buckets = store
            .telemetry_buckets(TelemetryQuery {
                device_id: device,
                metric: "metric0".into(),
                from: start_ts,
                to: start_ts + time::Duration::seconds(rounds),
                bucket_secs: (rounds / 60).max(1),
            })
            .await
            .context("querying telemetry")?;
        queries.push(t.elapsed());
        std::hint::black_box(buckets);
    }
    store.close().await;
    let db_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            std::fs::metadata(format!("{}{suffix}", db.display()))
                .ok()
                .map(|m| m.len())
        })
        .sum::<u64>();
    Ok(TelemetryStoreReport {
        devices: args.devices,
        metrics: args.metrics,
        points: args.points,
        batch: args.batch,
        wall_secs: wall.as_secs_f64(),
        points_per_sec: per_second(args.points, wall),
        commit: LatencySummary::of(commits),
        db_bytes,
        bytes_per_point: db_bytes as f64 / args.points as f64,
        query: LatencySummary::of(queries),
        points_per_query: args.points / u64::from(args.devices) / u64::from(args.metrics),
    })
}

pub fn check(_report: &TelemetryStoreReport) -> anyhow::Result<()> {
    Ok(())
}

impl fmt::Display for TelemetryStoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "telemetry-store: {} points from {} devices × {} metrics, {} per transaction",
            self.points, self.devices, self.metrics, self.batch
        )?;
        writeln!(
            f,
            "  stored in {:.1} s: {:.0} points/s",
            self.wall_secs, self.points_per_sec
        )?;
        writeln!(
            f,
            "  commit per batch: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.commit.p50_ms, self.commit.p90_ms, self.commit.p99_ms, self.commit.max_ms
        )?;
        writeln!(
            f,
            "  database: {:.1} MiB, {:.0} bytes per point",
            self.db_bytes as f64 / 1_048_576.0,
            self.bytes_per_point
        )?;
        writeln!(
            f,
            "  bucketed query (60 buckets over {} points): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.points_per_query, self.query.p50_ms, self.query.p99_ms, self.query.max_ms
        )?;
        Ok(())
    }
}

//! `device-keys`: how fast the server checks device API keys, and why they are not
//! password-hashed.
//!
//! Registers `--devices` devices through the REST API (setup, timed but not the point), then:
//!
//! 1. a reconnect storm over HTTP: every device calls `GET /api/v1/device` once, at most
//!    `--concurrency` at a time over pooled connections;
//! 2. with the server stopped, `unhidra_server::devices::authenticate` called directly on the
//!    same database and pepper, one key at a time and from `--concurrency` tasks, plus the bare
//!    HMAC alone;
//! 3. what one Argon2id verification with the server's password parameters costs here, and
//!    what the storm would cost if device keys were password-hashed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::runtime::Handle;
use unhidra_server::auth::password::{ITERATIONS, MEMORY_KIB, PARALLELISM};
use unhidra_server::paths;
use unhidra_store_sqlite::SqliteStore;
use unhidra_tokens::opaque::{parse_device_key, DeviceKeyHasher};

use crate::api::{fresh_username, Api, PASSWORD};
use crate::cpu::{self, CpuUsage};
use crate::stats::{per_second, LatencySummary, StatusCounts};
use crate::target::{cpus, ServerArgs, ServerInfo, Target};
use crate::workers;

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceKeysArgs {
    /// Devices to register and authenticate.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// Devices authenticating at once (open connections in the HTTP storm, tasks in-process).
    /// Client and server share this process's open-file limit, so keep it well below it.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Device registrations in flight at once during setup.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub register_concurrency: u32,
    /// Argon2id verifications timed for the comparison; 0 skips it.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub argon2_samples: u32,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Serialize)]
pub struct DeviceKeysReport {
    pub server: ServerInfo,
    pub devices: u32,
    pub concurrency: u32,
    pub registration: Phase,
    pub http_storm: HttpStorm,
    /// `None` for an external server (its database and pepper are not reachable here).
    pub in_process: Option<InProcess>,
    /// `None` when skipped.
    pub argon2: Option<Argon2Comparison>,
}

/// A timed batch of `count` operations.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub count: u64,
    pub wall_secs: f64,
    pub per_sec: f64,
}

impl Phase {
    fn new(count: u64, wall: Duration) -> Self {
        Self {
            count,
            wall_secs: wall.as_secs_f64(),
            per_sec: per_second(count, wall),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HttpStorm {
    /// Successful verifications (200) over the wall time for all devices.
    pub verified: Phase,
    pub statuses: StatusCounts,
    pub latency: LatencySummary,
    pub cpu: Option<CpuUsage>,
}

#[derive(Debug, Serialize)]
pub struct InProcess {
    pub sequential: Phase,
    pub sequential_latency: LatencySummary,
    pub concurrent: Phase,
    /// Keys that did not verify (should be 0), over both runs.
    pub failures: u64,
    /// Parsing the key and computing its HMAC, without the store lookup.
    pub hmac_only: Phase,
}

#[derive(Debug, Serialize)]
pub struct Argon2Comparison {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub samples: u32,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// `devices` verifications one after another.
    pub projected_secs_one_core: f64,
    /// The same spread over every core, as the server's hashing pool would.
    pub projected_secs_all_cores: f64,
}

pub async fn run(
    args: DeviceKeysArgs,
    server_runtime: &Handle,
) -> anyhow::Result<DeviceKeysReport> {
    let mut target = Target::start(&args.server, server_runtime).await?;
    let http = over_http(&args, &target).await;
    target.stop().await?;
    let (registration, http_storm, keys) = http?;

    let in_process = match target.data_dir() {
        Some(dir) => Some(in_process(dir, keys, args.concurrency).await?),
        None => None,
    };
    let argon2 = if args.argon2_samples > 0 {
        Some(argon2_comparison(args.argon2_samples, args.devices).await?)
    } else {
        None
    };
    Ok(DeviceKeysReport {
        server: target.info.clone(),
        devices: args.devices,
        concurrency: args.concurrency,
        registration,
        http_storm,
        in_process,
        argon2,
    })
}

async fn over_http(
    args: &DeviceKeysArgs,
    target: &Target,
) -> anyhow::Result<(Phase, HttpStorm, Vec<String>)> {
    let api = Api::new(&target.info.url)?;
    let username = fresh_username();
    api.register(&username, PASSWORD).await?;
    let access = api.login(&username, PASSWORD).await?.access_token;

    let started = Instant::now();
    let keys = api
        .register_devices(&access, args.devices, args.register_concurrency as usize)
        .await?;
    let registration = Phase::new(keys.len() as u64, started.elapsed());

    // A fresh client: the storm opens its own connections, at most one per concurrent device.
    let storm_api = Api::new(&target.info.url)?;
    let cpu_before = target.info.in_process.then(cpu::sample).flatten();
    let started = Instant::now();
    let samples = workers::for_each(
        keys.clone(),
        args.concurrency as usize,
        move |key: String| {
            let api = storm_api.clone();
            async move {
                let start = Instant::now();
                let status = api.device_status(&key).await;
                (status, start.elapsed())
            }
        },
    )
    .await?;
    let wall = started.elapsed();
    let cpu_after = cpu::sample();

    let mut statuses = StatusCounts::default();
    for (status, _) in &samples {
        statuses.record(*status);
    }
    let storm = HttpStorm {
        verified: Phase::new(statuses.get(200), wall),
        latency: LatencySummary::of(samples.into_iter().map(|(_, latency)| latency).collect()),
        statuses,
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| cpu::usage(before, after, wall)),
    };
    Ok((registration, storm, keys))
}

async fn in_process(
    data_dir: &std::path::Path,
    keys: Vec<String>,
    concurrency: u32,
) -> anyhow::Result<InProcess> {
    let store = Arc::new(
        SqliteStore::open(&paths::database(data_dir))
            .await
            .context("opening the benchmark's database")?,
    );
    let hasher = Arc::new(
        DeviceKeyHasher::load_or_create(&paths::device_key_pepper(data_dir))
            .context("loading the device-key pepper")?,
    );
    let count = keys.len() as u64;
    let mut failures = 0;

    let mut latencies = Vec::with_capacity(keys.len());
    let started = Instant::now();
    for key in &keys {
        let start = Instant::now();
        let verified = unhidra_server::devices::authenticate(store.as_ref(), &hasher, key).await;
        latencies.push(start.elapsed());
        failures += u64::from(verified.is_err());
    }
    let sequential = Phase::new(count, started.elapsed());

    let started = Instant::now();
    let results = workers::for_each(keys.clone(), concurrency as usize, {
        let (store, hasher) = (Arc::clone(&store), Arc::clone(&hasher));
        move |key: String| {
            let (store, hasher) = (Arc::clone(&store), Arc::clone(&hasher));
            async move {
                unhidra_server::devices::authenticate(store.as_ref(), &hasher, &key)
                    .await
                    .is_ok()
            }
        }
    })
    .await?;
    let concurrent = Phase::new(count, started.elapsed());
    failures += results.iter().filter(|ok| !**ok).count() as u64;
    store.close().await;

    let started = Instant::now();
    for key in &keys {
        let (_, secret) = parse_device_key(key).context("a registered key did not parse")?;
        std::hint::black_box(hasher.hash(secret.expose_secret()));
    }
    let hmac_only = Phase::new(count, started.elapsed());

    Ok(InProcess {
        sequential,
        sequential_latency: LatencySummary::of(latencies),
        concurrent,
        failures,
        hmac_only,
    })
}

async fn argon2_comparison(samples: u32, devices: u32) -> anyhow::Result<Argon2Comparison> {
    let timings = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let phc = argon
            .hash_password(PASSWORD.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?
            .to_string();
        let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("argon2 PHC: {e}"))?;
        let mut timings = Vec::new();
        for _ in 0..samples {
            let start = Instant::now();
            argon
                .verify_password(PASSWORD.as_bytes(), &parsed)
                .map_err(|e| anyhow::anyhow!("argon2 verify: {e}"))?;
            timings.push(start.elapsed());
        }
        Ok(timings)
    })
    .await
    .context("the Argon2 timing task failed")??;
    let Some(min) = timings.iter().min().copied() else {
        bail!("no Argon2 samples");
    };
    let mean = timings.iter().sum::<Duration>() / samples;
    let one_core = mean.as_secs_f64() * f64::from(devices);
    Ok(Argon2Comparison {
        memory_kib: MEMORY_KIB,
        iterations: ITERATIONS,
        parallelism: PARALLELISM,
        samples,
        mean_ms: crate::stats::ms(mean),
        min_ms: crate::stats::ms(min),
        projected_secs_one_core: one_core,
        projected_secs_all_cores: one_core / cpus() as f64,
    })
}

/// Fails when the run measured nothing meaningful.
pub fn check(report: &DeviceKeysReport) -> anyhow::Result<()> {
    if report.http_storm.verified.count != u64::from(report.devices) {
        bail!(
            "only {} of {} devices verified over HTTP: statuses {}",
            report.http_storm.verified.count,
            report.devices,
            report.http_storm.statuses
        );
    }
    if let Some(p) = &report.in_process {
        if p.failures > 0 {
            bail!("{} in-process verifications failed", p.failures);
        }
    }
    Ok(())
}

impl fmt::Display for DeviceKeysReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device keys")?;
        writeln!(f, "  server: {}", self.server)?;
        if let Some(load) = &self.server.load_average_before {
            writeln!(f, "  load average before the run: {load}")?;
        }
        writeln!(
            f,
            "  setup: registered {} devices over REST in {:.1} s ({:.0}/s; not the measured part)",
            self.registration.count, self.registration.wall_secs, self.registration.per_sec
        )?;
        let storm = &self.http_storm;
        writeln!(
            f,
            "  reconnect storm over HTTP (GET /api/v1/device, {} at a time, pooled connections):",
            self.concurrency
        )?;
        writeln!(
            f,
            "    all {} devices in {:.2} s: {:.0} verifications/s  [{}]",
            self.devices, storm.verified.wall_secs, storm.verified.per_sec, storm.statuses
        )?;
        writeln!(f, "    latency: {}", storm.latency)?;
        if let Some(cpu) = &storm.cpu {
            writeln!(
                f,
                "    CPU: server {:.2} s ({:.2} cores), load generator {:.2} s ({:.2} cores)",
                cpu.server_cpu_secs,
                cpu.server_cores,
                cpu.load_generator_cpu_secs,
                cpu.load_generator_cores
            )?;
        }
        match &self.in_process {
            Some(p) => {
                writeln!(
                    f,
                    "  in-process devices::authenticate (server stopped, same database and pepper):"
                )?;
                writeln!(
                    f,
                    "    one at a time: {} keys in {:.3} s: {:.0} verifications/s; {}",
                    p.sequential.count,
                    p.sequential.wall_secs,
                    p.sequential.per_sec,
                    p.sequential_latency
                )?;
                writeln!(
                    f,
                    "    {} tasks: {} keys in {:.3} s: {:.0} verifications/s",
                    self.concurrency,
                    p.concurrent.count,
                    p.concurrent.wall_secs,
                    p.concurrent.per_sec
                )?;
                writeln!(
                    f,
                    "    HMAC alone (parse + HMAC-SHA256, no store): {:.0}/s",
                    p.hmac_only.per_sec
                )?;
                if p.failures > 0 {
                    writeln!(f, "    WARNING: {} keys did not verify", p.failures)?;
                }
            }
            None => writeln!(f, "  in-process verification: skipped (external server)")?,
        }
        if let Some(a) = &self.argon2 {
            writeln!(
                f,
                "  for comparison, Argon2id (m={} KiB, t={}, p={}) verification: mean {:.1} ms, \
                 min {:.1} ms over {} runs",
                a.memory_kib, a.iterations, a.parallelism, a.mean_ms, a.min_ms, a.samples
            )?;
            writeln!(
                f,
                "    {} password-hashed device keys would take {:.1} s on one core, {:.1} s on \
                 all {} cores",
                self.devices,
                a.projected_secs_one_core,
                a.projected_secs_all_cores,
                self.server.cpus
            )?;
        }
        Ok(())
    }
}

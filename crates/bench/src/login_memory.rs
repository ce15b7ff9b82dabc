//! `login-memory`: the server's resident memory across logins.
//!
//! Starts `unhidra serve` as its own process, registers one user, lets the server settle and
//! reads its resident memory (`VmRSS`): the start. Then `--logins` logins of that user,
//! `--concurrency` at a time (each an Argon2id hash of 19 MiB on one of the server's hashing
//! threads), and two more readings: right after, and after `--settle-secs` of quiet. An
//! allocator that keeps what hashing freed shows it as growth that does not go away.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::api::{fresh_username, PASSWORD};
use crate::gateway::{mib, Bench, GatewayArgs, GatewayServerInfo};
use crate::server_process::{bench_config, Usage};
use crate::workers;

#[derive(Debug, Clone, clap::Args)]
pub struct LoginMemoryArgs {
    /// Logins of the one user, after its registration.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub logins: u32,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub concurrency: u32,
    /// Quiet time before the last reading.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle_secs: u64,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Serialize)]
pub struct LoginMemoryReport {
    pub server: GatewayServerInfo,
    pub logins: u32,
    pub concurrency: u32,
    pub failed_logins: usize,
    pub logins_secs: f64,
    /// After the registration, settled: before any login.
    pub start: Usage,
    pub after_logins: Usage,
    pub settled: Usage,
    pub settle_secs: u64,
}

impl LoginMemoryReport {
    /// Settled RSS minus the start, MiB.
    pub fn growth_mib(&self) -> f64 {
        mib(self.settled.rss_kib) - mib(self.start.rss_kib)
    }
}

pub async fn run(args: LoginMemoryArgs) -> anyhow::Result<LoginMemoryReport> {
    let mut bench = Bench::start(&args.gateway, bench_config(), 64).await?;
    let username = fresh_username();
    bench.api.register(&username, PASSWORD).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = bench.server.pid();
    let sample = || Usage::of(pid).ok_or_else(|| anyhow::anyhow!("cannot read the server's usage"));
    let start = sample()?;
    let started = Instant::now();
    let results = workers::for_each((0..args.logins).collect(), args.concurrency as usize, {
        let api = bench.api.clone();
        let username = username.clone();
        move |_: u32| {
            let api = api.clone();
            let username = username.clone();
            async move { api.login(&username, PASSWORD).await.map(|_| ()) }
        }
    })
    .await?;
    let logins_secs = started.elapsed().as_secs_f64();
    let after_logins = sample()?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let settled = sample()?;
    bench.server.stop(Duration::from_secs(10)).await?;
    Ok(LoginMemoryReport {
        server: bench.info,
        logins: args.logins,
        concurrency: args.concurrency,
        failed_logins: results.iter().filter(|r| r.is_err()).count(),
        logins_secs,
        start,
        after_logins,
        settled,
        settle_secs: args.settle_secs,
    })
}

/// Every login must have succeeded; memory is reported, not judged.
pub fn check(report: &LoginMemoryReport) -> anyhow::Result<()> {
    if report.failed_logins > 0 {
        bail!(
            "{} of {} logins failed",
            report.failed_logins,
            report.logins
        );
    }
    Ok(())
}

impl fmt::Display for LoginMemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "login-memory: {} logins, {} at a time, in {:.1} s ({} failed); server {}{}",
            self.logins,
            self.concurrency,
            self.logins_secs,
            self.failed_logins,
            self.server.binary,
            if self.server.server_env.is_empty() {
                String::new()
            } else {
                format!(" with {}", self.server.server_env.join(" "))
            }
        )?;
        writeln!(f, "| moment | server RSS |")?;
        writeln!(f, "|---|---|")?;
        writeln!(
            f,
            "| start (one registration) | {:.1} MiB |",
            self.start.rss_mib()
        )?;
        writeln!(
            f,
            "| right after the logins | {:.1} MiB |",
            self.after_logins.rss_mib()
        )?;
        writeln!(
            f,
            "| after {} s of quiet | {:.1} MiB |",
            self.settle_secs,
            self.settled.rss_mib()
        )?;
        writeln!(f, "growth that stays: {:.1} MiB", self.growth_mib())
    }
}

//! `login-flood`: many clients logging in at once, for a fixed time.
//!
//! One user is registered; then `--concurrency` clients each log in back to back until
//! `--duration-secs` has passed (requests in flight then are finished and counted). A share of
//! the attempts (`--wrong-share`) uses a wrong password or an unknown user, half each. Meanwhile
//! a separate client polls `GET /healthz` every 100 ms, to show that the server keeps answering
//! while every hashing slot is busy. Afterwards a quiet sequential run times correct, wrong
//! password and unknown user logins side by side, to show that they cost the same.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{fresh_username, Api, PASSWORD};
use crate::cpu::{self, CpuUsage};
use crate::stats::{per_second, LatencySummary, StatusCounts};
use crate::target::{ServerArgs, ServerInfo, Target};

const HEALTHZ_EVERY: Duration = Duration::from_millis(100);
const WRONG_PASSWORD: &str = "not the password at all, sorry";

#[derive(Debug, Clone, clap::Args)]
pub struct LoginFloodArgs {
    /// Clients logging in at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// How long the flood lasts; requests still in flight then are awaited and counted.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Share of attempts (0 to 1) with wrong credentials, half a wrong password and half an
    /// unknown user.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub wrong_share: f64,
    /// Rounds of the quiet comparison after the flood (one correct, one wrong-password and one
    /// unknown-user login each, one at a time); 0 skips it.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub compare_rounds: u32,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

/// What a login attempt presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attempt {
    Correct,
    WrongPassword,
    UnknownUser,
}

impl Attempt {
    const ALL: [Self; 3] = [Self::Correct, Self::WrongPassword, Self::UnknownUser];

    fn label(self) -> &'static str {
        match self {
            Self::Correct => "correct",
            Self::WrongPassword => "wrong password",
            Self::UnknownUser => "unknown user",
        }
    }

    /// The status a well-behaved server answers when it is not overloaded.
    fn expected_status(self) -> u16 {
        match self {
            Self::Correct => 200,
            Self::WrongPassword | Self::UnknownUser => 401,
        }
    }

    fn pick(wrong_share: f64) -> Self {
        if rand::random::<f64>() >= wrong_share {
            Self::Correct
        } else if rand::random::<bool>() {
            Self::WrongPassword
        } else {
            Self::UnknownUser
        }
    }
}

/// Credentials for each kind of attempt.
#[derive(Debug, Clone)]
struct Credentials {
    username: String,
    unknown_username: String,
}

impl Credentials {
    fn for_attempt(&self, attempt: Attempt) -> (&str, &str) {
        match attempt {
            Attempt::Correct => (&self.username, PASSWORD),
            Attempt::WrongPassword => (&self.username, WRONG_PASSWORD),
            Attempt::UnknownUser => (&self.unknown_username, PASSWORD),
        }
    }
}

struct Sample {
    attempt: Attempt,
    status: Option<u16>,
    latency: Duration,
}

#[derive(Debug, Serialize)]
pub struct LoginFloodReport {
    pub server: ServerInfo,
    pub concurrency: u32,
    pub duration_secs: u64,
    pub wrong_share: f64,
    /// From the first request to the last response (the flood plus the in-flight tail).
    pub wall_secs: f64,
    pub requests: u64,
    pub successful_logins: u64,
    pub successful_logins_per_sec: f64,
    pub attempts_per_sec: f64,
    pub statuses: StatusCounts,
    /// Correct-credential attempts answered with something other than 200 or 503.
    pub unexpected_for_correct: u64,
    /// Every response (any status).
    pub latency: LatencySummary,
    /// Responses with the status expected for their kind (200 or 401), by kind.
    pub latency_by_attempt: BTreeMap<Attempt, LatencySummary>,
    pub healthz: HealthzReport,
    /// `None` when not measurable (external server, or no `/proc`).
    pub cpu: Option<CpuUsage>,
    /// The quiet sequential comparison; `None` when skipped.
    pub comparison: Option<Vec<ComparisonRow>>,
}

#[derive(Debug, Serialize)]
pub struct HealthzReport {
    pub every_ms: u64,
    pub statuses: StatusCounts,
    pub latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct ComparisonRow {
    pub attempt: Attempt,
    pub statuses: StatusCounts,
    pub latency: LatencySummary,
}

pub async fn run(
    args: LoginFloodArgs,
    server_runtime: &Handle,
) -> anyhow::Result<LoginFloodReport> {
    let mut target = Target::start(&args.server, server_runtime).await?;
    let result = flood(&args, &target).await;
    target.stop().await?;
    result
}

async fn flood(args: &LoginFloodArgs, target: &Target) -> anyhow::Result<LoginFloodReport> {
    let api = Api::new(&target.info.url)?;
    let credentials = Credentials {
        username: fresh_username(),
        unknown_username: fresh_username(),
    };
    api.register(&credentials.username, PASSWORD).await?;
    api.login(&credentials.username, PASSWORD)
        .await
        .context("the first login, before the flood")?;

    let stop_polling = CancellationToken::new();
    let poller = tokio::spawn(poll_healthz(
        Api::new(&target.info.url)?,
        stop_polling.clone(),
    ));

    let cpu_before = target.info.in_process.then(cpu::sample).flatten();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let clients: Vec<JoinHandle<Vec<Sample>>> = (0..args.concurrency)
        .map(|_| {
            let (api, credentials, wrong_share) =
                (api.clone(), credentials.clone(), args.wrong_share);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let attempt = Attempt::pick(wrong_share);
                    let (username, password) = credentials.for_attempt(attempt);
                    let start = Instant::now();
                    let status = api.login_status(username, password).await;
                    samples.push(Sample {
                        attempt,
                        status,
                        latency: start.elapsed(),
                    });
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(client.await.context("a login client failed")?);
    }
    let wall = started.elapsed();
    let cpu_after = cpu::sample();
    stop_polling.cancel();
    let healthz = poller.await.context("the /healthz poller failed")?;

    let comparison = if args.compare_rounds > 0 {
        Some(compare(&api, &credentials, args.compare_rounds).await)
    } else {
        None
    };

    let mut statuses = StatusCounts::default();
    let mut by_attempt: BTreeMap<Attempt, Vec<Duration>> = BTreeMap::new();
    let mut unexpected_for_correct = 0;
    for s in &samples {
        statuses.record(s.status);
        if s.status == Some(s.attempt.expected_status()) {
            by_attempt.entry(s.attempt).or_default().push(s.latency);
        } else if s.attempt == Attempt::Correct && s.status != Some(503) {
            unexpected_for_correct += 1;
        }
    }
    let successful_logins = statuses.get(200);
    let requests = statuses.total();
    Ok(LoginFloodReport {
        server: target.info.clone(),
        concurrency: args.concurrency,
        duration_secs: args.duration_secs,
        wrong_share: args.wrong_share,
        wall_secs: wall.as_secs_f64(),
        requests,
        successful_logins,
        successful_logins_per_sec: per_second(successful_logins, wall),
        attempts_per_sec: per_second(requests, wall),
        statuses,
        unexpected_for_correct,
        latency: LatencySummary::of(samples.iter().map(|s| s.latency).collect()),
        latency_by_attempt: by_attempt
            .into_iter()
            .map(|(attempt, latencies)| (attempt, LatencySummary::of(latencies)))
            .collect(),
        healthz,
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| cpu::usage(before, after, wall)),
        comparison,
    })
}

/// Polls `GET /healthz` every [`HEALTHZ_EVERY`] until `stop`; a slow answer delays the next
/// poll rather than bunching them up.
async fn poll_healthz(api: Api, stop: CancellationToken) -> HealthzReport {
    let mut statuses = StatusCounts::default();
    let mut latencies = Vec::new();
    let mut every = tokio::time::interval(HEALTHZ_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let start = Instant::now();
        let status = api.get_status("/healthz").await;
        latencies.push(start.elapsed());
        statuses.record(status);
    }
    HealthzReport {
        every_ms: u64::try_from(HEALTHZ_EVERY.as_millis()).unwrap_or(u64::MAX),
        statuses,
        latency: LatencySummary::of(latencies),
    }
}

/// One login at a time, rotating the order of the three kinds each round.
async fn compare(api: &Api, credentials: &Credentials, rounds: u32) -> Vec<ComparisonRow> {
    let mut results: BTreeMap<Attempt, (StatusCounts, Vec<Duration>)> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = Attempt::ALL;
        order.rotate_left(round as usize % Attempt::ALL.len());
        for attempt in order {
            let (username, password) = credentials.for_attempt(attempt);
            let start = Instant::now();
            let status = api.login_status(username, password).await;
            let latency = start.elapsed();
            let (statuses, latencies) = results.entry(attempt).or_default();
            statuses.record(status);
            if status == Some(attempt.expected_status()) {
                latencies.push(latency);
            }
        }
    }
    results
        .into_iter()
        .map(|(attempt, (statuses, latencies))| ComparisonRow {
            attempt,
            statuses,
            latency: LatencySummary::of(latencies),
        })
        .collect()
}

/// Fails when the run measured nothing meaningful.
pub fn check(report: &LoginFloodReport) -> anyhow::Result<()> {
    if report.successful_logins == 0 && report.wrong_share < 1.0 {
        bail!("no login succeeded: statuses {}", report.statuses);
    }
    Ok(())
}

impl fmt::Display for LoginFloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "login flood")?;
        writeln!(f, "  server: {}", self.server)?;
        if let Some(load) = &self.server.load_average_before {
            writeln!(f, "  load average before the run: {load}")?;
        }
        writeln!(
            f,
            "  load: {} clients for {} s, {:.0}% wrong credentials; wall time {:.1} s",
            self.concurrency,
            self.duration_secs,
            self.wrong_share * 100.0,
            self.wall_secs
        )?;
        writeln!(
            f,
            "  successful logins: {} ({:.1}/s); all attempts: {} ({:.1}/s)",
            self.successful_logins,
            self.successful_logins_per_sec,
            self.requests,
            self.attempts_per_sec
        )?;
        writeln!(
            f,
            "  statuses: 200: {}, 401: {}, 503: {}, other: {}  [{}]",
            self.statuses.get(200),
            self.statuses.get(401),
            self.statuses.get(503),
            self.statuses.other(&[200, 401, 503]),
            self.statuses
        )?;
        if self.unexpected_for_correct > 0 {
            writeln!(
                f,
                "  WARNING: {} correct logins got neither 200 nor 503",
                self.unexpected_for_correct
            )?;
        }
        writeln!(f, "  latency (all responses): {}", self.latency)?;
        for (attempt, latency) in &self.latency_by_attempt {
            writeln!(f, "    {:<15} {latency}", attempt.label())?;
        }
        writeln!(
            f,
            "  GET /healthz every {} ms during the flood: {}  [{}]",
            self.healthz.every_ms, self.healthz.latency, self.healthz.statuses
        )?;
        match &self.cpu {
            Some(cpu) => writeln!(
                f,
                "  CPU: server {:.1} s ({:.2} cores), load generator {:.1} s ({:.2} cores)",
                cpu.server_cpu_secs,
                cpu.server_cores,
                cpu.load_generator_cpu_secs,
                cpu.load_generator_cores
            )?,
            None => writeln!(f, "  CPU: not measured")?,
        }
        if let Some(rows) = &self.comparison {
            writeln!(f, "  quiet comparison, one login at a time:")?;
            for row in rows {
                writeln!(
                    f,
                    "    {:<15} p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms  [{}]",
                    row.attempt.label(),
                    row.latency.p50_ms,
                    row.latency.p90_ms,
                    row.latency.max_ms,
                    row.statuses
                )?;
            }
        }
        Ok(())
    }
}

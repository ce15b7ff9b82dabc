//! `ml`: what a call to the Python ML workers costs through `unhidra-ml-bridge`, over the real
//! Unix sockets to real workers (`python -m unhidra_ml` from `--python`, by default the
//! `.venv-ml` that `scripts/setup-ml.sh` makes).
//!
//! For a pool of 1 worker and one of `--workers` (default 2), each started fresh:
//!
//! - **sequential**: one call at a time, `--warmup` calls untimed then `--requests` timed one
//!   by one, for `health` (`call`) and `anomaly.score` (`call_keyed` by device, as the server
//!   calls it);
//! - **throughput**: `--concurrency` callers, each calling back to back for `--warmup-secs`
//!   untimed and then `--duration-secs`; calls finished in that window count. The CPU time of
//!   each worker process and of the bench process (the bridge and the callers) is read from
//!   `/proc/<pid>/stat` over the same window.
//!
//! `anomaly.score` goes to `--devices` series (UUID-shaped device ids, one metric), round
//! robin, so that keyed routing spreads them over the workers. Before it is measured every
//! series is filled to the model's full window (120 values): the steady state, where a score
//! sorts 120 values twice.
//!
//! Then the floors, the same work with parts of the path taken away:
//!
//! - **Python in-process**: `ml_floor.py`, run with the same interpreter, calls the worker's
//!   code directly in one process with no socket, at three depths: the model alone (anomaly
//!   only), the op handler (`Worker.op_*`: validation and the model), and the whole request
//!   (`Worker.handle` on a request body plus `encode_frame`: JSON decode, dispatch, handler,
//!   JSON encode, frame header), which is all the Python work a request costs except reading
//!   and writing the socket.
//! - **raw socket**: the bench itself speaks the protocol to one worker over a blocking Unix
//!   socket (no tokio, no bridge): encode the request, write the frame, read the answer frame,
//!   parse it. The bridge's sequential latency minus this is the bridge's own cost.
//! - **Rust in-process**: the bridge's plumbing with no socket and no Python: a caller sends
//!   a job to a task through a tokio `mpsc` and waits on a `oneshot`; bare, and with the rest
//!   of the per-call Rust work the bridge does (encoding the request to JSON, the request
//!   timeout, the pending-request map, decoding an answer frame).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use unhidra_ml_bridge::{MlBridge, Settings};

use crate::procfs;
use crate::stats::{per_second, LatencySummary};

/// Values the anomaly model keeps per series (`AnomalyConfig.window` in the worker).
const WINDOW: u32 = 120;
/// The metric every anomaly request names.
const METRIC: &str = "temperature";
/// A timestamp in milliseconds (the worker only checks that it is a number).
const TS_BASE: u64 = 1_700_000_000_000;
/// The Python side of the floor.
const FLOOR_SCRIPT: &str = include_str!("ml_floor.py");

#[derive(Debug, Clone, clap::Args)]
pub struct MlArgs {
    /// The workers' interpreter, with the `unhidra_ml` package installed.
    #[arg(long, default_value = ".venv-ml/bin/python")]
    pub python: PathBuf,
    /// The larger pool, compared with a single worker.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Timed calls per op and pool, one at a time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub requests: u32,
    /// Untimed calls before the sequential ones (and before each Python floor case).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub warmup: u32,
    /// Callers at once in the throughput runs (each waits for its answer before its next call).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Measured seconds of each throughput run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Untimed seconds of load before each throughput run is measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub warmup_secs: u64,
    /// Devices (anomaly series) the anomaly.score calls go to, round robin.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Timed calls per case of the Python floor.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub floor_calls: u32,
}

/// The two ops measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "health")]
    Health,
    #[serde(rename = "anomaly.score")]
    AnomalyScore,
}

impl Op {
    const ALL: [Op; 2] = [Op::Health, Op::AnomalyScore];

    fn name(self) -> &'static str {
        match self {
            Op::Health => "health",
            Op::AnomalyScore => "anomaly.score",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MlReport {
    pub python: String,
    pub python_version: String,
    /// `/proc/loadavg` (1, 5 and 15 minutes) when the run started.
    pub load_average_before: Option<String>,
    pub requests: u32,
    pub warmup: u32,
    pub concurrency: u32,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub devices: u32,
    pub pools: Vec<PoolReport>,
    pub floor: FloorReport,
}

/// One pool size.
#[derive(Debug, Serialize)]
pub struct PoolReport {
    pub workers: usize,
    /// Worker process start until every worker answered its first health check.
    pub start_secs: f64,
    pub sequential: Vec<Sequential>,
    pub throughput: Vec<Throughput>,
    /// Worker restarts during the run (should be 0).
    pub restarts: u64,
}

#[derive(Debug, Serialize)]
pub struct Sequential {
    pub op: Op,
    pub latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub op: Op,
    #[serde(flatten)]
    pub load: Load,
}

/// Many callers at once.
#[derive(Debug, Serialize)]
pub struct Load {
    pub concurrency: u32,
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub wall_secs: f64,
    pub per_sec: f64,
    /// Calls started and finished in the measured window.
    pub latency: LatencySummary,
    /// CPU seconds per wall second of each worker process (None without `/proc`).
    pub worker_cores: Vec<Option<f64>>,
    /// The same for the bench process: the bridge and the callers.
    pub bench_cores: Option<f64>,
    /// CPU time per completed call, all workers together, in microseconds.
    pub worker_cpu_us_per_call: Option<f64>,
    /// CPU time per completed call in the bench process, in microseconds.
    pub bench_cpu_us_per_call: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FloorReport {
    pub python: Vec<PythonCase>,
    pub raw_socket: Vec<Sequential>,
    pub rust: Vec<RustFloor>,
}

/// One case of `ml_floor.py`.
#[derive(Debug, Deserialize, Serialize)]
pub struct PythonCase {
    pub op: String,
    /// `model`, `handler` or `handle` (see the module documentation).
    pub level: String,
    pub calls: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Mean of a tight loop of the same calls (no clock around each).
    pub mean_ns: f64,
}

#[derive(Debug, Deserialize)]
struct PythonFloor {
    python: String,
    cases: Vec<PythonCase>,
}

#[derive(Debug, Serialize)]
pub struct RustFloor {
    pub variant: &'static str,
    pub sequential: LatencySummary,
    pub concurrent: Load,
}

fn device_id(i: u64, devices: u32) -> String {
    format!("00000000-0000-7000-8000-{:012x}", i % u64::from(devices))
}

/// The same values as `ml_floor.py`: 20.00 to 29.99, spread.
fn reading(i: u64) -> f64 {
    20.0 + ((i.wrapping_mul(7919)) % 1000) as f64 / 100.0
}

fn anomaly_payload(i: u64, devices: u32) -> (Value, String) {
    let device = device_id(i, devices);
    let payload = json!({
        "device_id": device,
        "metric": METRIC,
        "value": reading(i),
        "ts": TS_BASE + i,
    });
    (payload, device)
}

async fn call_op(bridge: &MlBridge, op: Op, i: u64, devices: u32) -> Result<(), String> {
    let answer = match op {
        Op::Health => bridge.call("health", json!({})).await,
        Op::AnomalyScore => {
            let (payload, device) = anomaly_payload(i, devices);
            bridge.call_keyed("anomaly.score", payload, &device).await
        }
    };
    answer.map(drop).map_err(|err| err.to_string())
}

pub async fn run(args: MlArgs) -> anyhow::Result<MlReport> {
    if !args.python.exists() {
        bail!(
            "{} does not exist: run scripts/setup-ml.sh (from the repository's root), or pass \
             --python",
            args.python.display()
        );
    }
    let load_average_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let dir = tempfile::tempdir().context("temporary socket directory")?;
    let mut sizes = vec![1usize];
    let larger = usize::try_from(args.workers)?;
    if larger > 1 {
        sizes.push(larger);
    }
    let mut pools = Vec::new();
    for (n, workers) in sizes.into_iter().enumerate() {
        pools.push(
            pool(&args, workers, &dir.path().join(format!("pool-{n}")))
                .await
                .with_context(|| format!("the pool of {workers} worker(s)"))?,
        );
    }
    let python_floor = python_floor(&args).await.context("the Python floor")?;
    let raw_socket = raw_socket_floor(&args, &dir.path().join("raw"))
        .await
        .context("the raw-socket floor")?;
    let rust = vec![
        rust_floor(&args, "mpsc + oneshot", false).await?,
        rust_floor(&args, "mpsc + oneshot + JSON + timeout + pending map", true).await?,
    ];
    Ok(MlReport {
        python: args.python.display().to_string(),
        python_version: python_floor.python,
        load_average_before,
        requests: args.requests,
        warmup: args.warmup,
        concurrency: args.concurrency,
        duration_secs: args.duration_secs,
        warmup_secs: args.warmup_secs,
        devices: args.devices,
        pools,
        floor: FloorReport {
            python: python_floor.cases,
            raw_socket,
            rust,
        },
    })
}

async fn pool(args: &MlArgs, workers: usize, socket_dir: &Path) -> anyhow::Result<PoolReport> {
    let mut settings = Settings::new(&args.python, socket_dir);
    settings.workers = workers;
    settings.queue = usize::try_from(args.concurrency)?
        .saturating_mul(2)
        .max(1024);
    settings.request_timeout = Duration::from_secs(30);
    let started = Instant::now();
    let bridge = MlBridge::start(settings)
        .await
        .context("starting the workers")?;
    let start_secs = started.elapsed().as_secs_f64();
    let ready = bridge.ready_workers();
    if ready != workers {
        bridge.shutdown().await;
        bail!("only {ready} of {workers} workers started");
    }
    let result = measure_pool(args, &bridge).await;
    let restarts = bridge.restarts().iter().sum();
    bridge.shutdown().await;
    let (sequential, throughput) = result?;
    Ok(PoolReport {
        workers,
        start_secs,
        sequential,
        throughput,
        restarts,
    })
}

async fn measure_pool(
    args: &MlArgs,
    bridge: &MlBridge,
) -> anyhow::Result<(Vec<Sequential>, Vec<Throughput>)> {
    let devices = args.devices;
    // Every series to its full window, many calls at once.
    let fill = u64::from(devices) * u64::from(WINDOW);
    let fill_bridge = bridge.clone();
    let filled = counted_calls(args.concurrency, fill, move |i| {
        let bridge = fill_bridge.clone();
        async move { call_op(&bridge, Op::AnomalyScore, i, devices).await }
    })
    .await?;
    if let Some(err) = filled {
        bail!("filling the anomaly series: {err}");
    }
    let mut sequential = Vec::new();
    for op in Op::ALL {
        let b = bridge.clone();
        let latency = sequential_calls(args.warmup, args.requests, move |i| {
            let bridge = b.clone();
            // Offset past the fill, so each series goes on from where it was.
            async move { call_op(&bridge, op, fill + i, devices).await }
        })
        .await
        .with_context(|| format!("sequential {}", op.name()))?;
        sequential.push(Sequential { op, latency });
    }
    let mut throughput = Vec::new();
    for op in Op::ALL {
        let b = bridge.clone();
        let pids: Vec<Option<u32>> = bridge.worker_pids();
        let load = concurrent_calls(args, &pids, move |i| {
            let bridge = b.clone();
            async move { call_op(&bridge, op, fill + i, devices).await }
        })
        .await;
        throughput.push(Throughput { op, load });
    }
    Ok((sequential, throughput))
}

/// `warmup` calls, then `requests` timed calls, one at a time, in a task of the runtime (as
/// the server's callers are).
async fn sequential_calls<F, Fut>(
    warmup: u32,
    requests: u32,
    call: F,
) -> anyhow::Result<LatencySummary>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
        let total = u64::from(warmup) + u64::from(requests);
        for i in 0..total {
            let t = Instant::now();
            call(i)
                .await
                .map_err(|err| anyhow::anyhow!("call {i}: {err}"))?;
            if i >= u64::from(warmup) {
                samples.push(t.elapsed());
            }
        }
        Ok(LatencySummary::of(samples))
    })
    .await
    .context("the sequential task failed")?
}

/// `count` calls by `concurrency` callers; the first error, if any.
async fn counted_calls<F, Fut>(
    concurrency: u32,
    count: u64,
    call: F,
) -> anyhow::Result<Option<String>>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return None;
                }
                if let Err(err) = call(i).await {
                    return Some(err);
                }
            }
        }));
    }
    let mut first = None;
    for task in tasks {
        let err = task.await.context("a caller task failed")?;
        first = first.or(err);
    }
    Ok(first)
}

/// What one caller saw in the measured window.
#[derive(Default)]
struct CallerTally {
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// `--concurrency` callers back to back for `--warmup-secs` + `--duration-secs`; calls that
/// finish in the measured window count. `pids`: worker processes whose CPU time is read.
async fn concurrent_calls<F, Fut>(args: &MlArgs, pids: &[Option<u32>], call: F) -> Load
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs(args.warmup_secs);
    let end = warm_end + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut tally = CallerTally::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    return tally;
                }
                let result = call(next.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if done < warm_end || done >= end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        tally.completed += 1;
                        if started >= warm_end {
                            tally.latencies.push(done - started);
                        }
                    }
                    Err(err) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(err);
                    }
                }
            }
        }));
    }
    let own = std::process::id();
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_time);
    tokio::time::sleep_until(warm_end.into()).await;
    let before: Vec<Option<Duration>> = pids.iter().map(|p| cpu(*p)).collect();
    let own_before = cpu(Some(own));
    let window_start = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let after: Vec<Option<Duration>> = pids.iter().map(|p| cpu(*p)).collect();
    let own_after = cpu(Some(own));
    let wall = window_start.elapsed();
    let cores = |b: Option<Duration>, a: Option<Duration>| match (b, a) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() / wall.as_secs_f64()),
        _ => None,
    };
    let mut total = CallerTally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => {
                total.completed += tally.completed;
                total.errors += tally.errors;
                total.first_error = total.first_error.or(tally.first_error);
                total.latencies.extend(tally.latencies);
            }
            Err(err) => {
                total.errors += 1;
                total.first_error.get_or_insert(err.to_string());
            }
        }
    }
    let measured = Duration::from_secs(args.duration_secs);
    let worker_cores: Vec<Option<f64>> = before
        .into_iter()
        .zip(after)
        .map(|(b, a)| cores(b, a))
        .collect();
    let bench_cores = cores(own_before, own_after);
    let per_call = |cores: f64| {
        (total.completed > 0).then(|| cores * wall.as_secs_f64() / total.completed as f64 * 1e6)
    };
    let all_workers: Option<f64> = if worker_cores.is_empty() {
        None
    } else {
        worker_cores.iter().copied().sum()
    };
    Load {
        concurrency: args.concurrency,
        completed: total.completed,
        errors: total.errors,
        first_error: total.first_error,
        wall_secs: measured.as_secs_f64(),
        per_sec: per_second(total.completed, measured),
        latency: LatencySummary::of(total.latencies),
        worker_cpu_us_per_call: all_workers.and_then(per_call),
        bench_cpu_us_per_call: bench_cores.and_then(per_call),
        worker_cores,
        bench_cores,
    }
}

/// Runs `ml_floor.py` with the workers' interpreter.
async fn python_floor(args: &MlArgs) -> anyhow::Result<PythonFloor> {
    let output = tokio::process::Command::new(&args.python)
        .arg("-c")
        .arg(FLOOR_SCRIPT)
        .arg(args.floor_calls.to_string())
        .arg(args.warmup.to_string())
        .arg(args.devices.to_string())
        .arg(WINDOW.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", args.python.display()))?;
    if !output.status.success() {
        bail!(
            "{} exited with {}: {}",
            args.python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the Python floor's output")
}

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    op: &'a str,
    payload: &'a Value,
}

/// An answer frame, as the bridge reads it.
#[derive(Deserialize)]
struct Answer {
    id: Value,
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<Value>,
}

/// One worker, spoken to directly over a blocking Unix socket, one request at a time.
async fn raw_socket_floor(args: &MlArgs, dir: &Path) -> anyhow::Result<Vec<Sequential>> {
    let (python, dir) = (args.python.clone(), dir.to_owned());
    let (warmup, requests, devices) = (args.warmup, args.requests, args.devices);
    tokio::task::spawn_blocking(move || {
        raw_socket_blocking(&python, &dir, warmup, requests, devices)
    })
    .await
    .context("the raw-socket task failed")?
}

fn raw_socket_blocking(
    python: &Path,
    dir: &Path,
    warmup: u32,
    requests: u32,
    devices: u32,
) -> anyhow::Result<Vec<Sequential>> {
    use std::io::{Read, Write};
    std::fs::create_dir_all(dir).context("the raw socket's directory")?;
    let path = dir.join("raw.sock");
    let listener = UnixListener::bind(&path).context("binding the raw socket")?;
    listener.set_nonblocking(true)?;
    let mut child = std::process::Command::new(python)
        .args(["-m", "unhidra_ml", "--connect"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let result = (|| -> anyhow::Result<Vec<Sequential>> {
        let started = Instant::now();
        let mut stream: UnixStream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait()? {
                        bail!("the worker exited before connecting: {status}");
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        bail!("the worker did not connect within 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => return Err(err).context("accepting the worker"),
            }
        };
        stream.set_nonblocking(false)?;
        let mut id = 0u64;
        let mut round_trip = |op: Op, i: u64| -> anyhow::Result<()> {
            id += 1;
            let payload = match op {
                Op::Health => json!({}),
                Op::AnomalyScore => anomaly_payload(i, devices).0,
            };
            let body = serde_json::to_vec(&Request {
                id,
                op: op.name(),
                payload: &payload,
            })?;
            let mut frame = Vec::with_capacity(body.len() + 4);
            frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
            frame.extend_from_slice(&body);
            stream.write_all(&frame)?;
            let mut header = [0u8; 4];
            stream.read_exact(&mut header)?;
            let mut answer = vec![0u8; usize::try_from(u32::from_be_bytes(header))?];
            stream.read_exact(&mut answer)?;
            let answer: Answer = serde_json::from_slice(&answer)?;
            if !answer.ok || answer.id.as_u64() != Some(id) {
                bail!("a bad answer to request {id}: {:?}", answer.error);
            }
            std::hint::black_box(answer.result);
            Ok(())
        };
        // Fill the series as in the pools, then time.
        let fill = u64::from(devices) * u64::from(WINDOW);
        for i in 0..fill {
            round_trip(Op::AnomalyScore, i)?;
        }
        let mut out = Vec::new();
        for op in Op::ALL {
            let mut samples = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
            for i in 0..u64::from(warmup) + u64::from(requests) {
                let t = Instant::now();
                round_trip(op, fill + i)?;
                if i >= u64::from(warmup) {
                    samples.push(t.elapsed());
                }
            }
            out.push(Sequential {
                op,
                latency: LatencySummary::of(samples),
            });
        }
        Ok(out)
    })();
    drop(listener);
    let _ = std::fs::remove_file(&path);
    // End of stream asks the worker to exit; it gets two seconds.
    let deadline = Instant::now() + Duration::from_secs(2);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

/// A job through the Rust-only floor.
struct FloorJob {
    id: u64,
    /// The encoded request (the bridge hands it to its writer task).
    frame: Option<Vec<u8>>,
    reply: oneshot::Sender<Result<Value, String>>,
}

/// The bridge's plumbing without the socket or Python: callers send jobs to one task over a
/// tokio `mpsc` and wait on a `oneshot`. With `full`, also the rest of the bridge's per-call
/// Rust work: the request encoded to JSON, the request timeout, the pending map, and an
/// `anomaly.score` answer frame decoded.
async fn rust_floor(args: &MlArgs, variant: &'static str, full: bool) -> anyhow::Result<RustFloor> {
    let (jobs_tx, mut jobs) =
        mpsc::channel::<FloorJob>(usize::try_from(args.concurrency)?.max(1024));
    let server = tokio::spawn(async move {
        let mut pending: HashMap<u64, oneshot::Sender<Result<Value, String>>> = HashMap::new();
        while let Some(job) = jobs.recv().await {
            if !full {
                let _ = job.reply.send(Ok(Value::Null));
                continue;
            }
            std::hint::black_box(job.frame);
            pending.insert(job.id, job.reply);
            let frame = format!(
                r#"{{"id":{},"ok":true,"result":{{"score":0.8125,"is_anomaly":false,"baseline":24.95,"points":120}}}}"#,
                job.id
            );
            let answer: Answer = match serde_json::from_str(&frame) {
                Ok(answer) => answer,
                Err(_) => continue,
            };
            if let Some(reply) = answer.id.as_u64().and_then(|id| pending.remove(&id)) {
                let _ = reply.send(if answer.ok {
                    Ok(answer.result)
                } else {
                    Err(format!("{:?}", answer.error))
                });
            }
        }
    });
    let next_id = Arc::new(AtomicU64::new(1));
    let devices = args.devices;
    let call = move |i: u64| {
        let (jobs, next_id) = (jobs_tx.clone(), Arc::clone(&next_id));
        async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let frame = if full {
                let (payload, device) = anomaly_payload(i, devices);
                std::hint::black_box(device);
                let body = serde_json::to_vec(&Request {
                    id,
                    op: "anomaly.score",
                    payload: &payload,
                })
                .map_err(|err| err.to_string())?;
                Some(body)
            } else {
                None
            };
            let (reply, answer) = oneshot::channel();
            jobs.try_send(FloorJob { id, frame, reply })
                .map_err(|err| err.to_string())?;
            let answer = if full {
                tokio::time::timeout(Duration::from_secs(30), answer)
                    .await
                    .map_err(|_| "timed out".to_owned())?
            } else {
                answer.await
            };
            answer
                .map_err(|_| "the floor task went away".to_owned())?
                .map(drop)
        }
    };
    let call = Arc::new(call);
    let seq_call = Arc::clone(&call);
    let sequential = sequential_calls(
        args.warmup.max(10_000),
        args.requests.max(100_000),
        move |i| {
            let call = Arc::clone(&seq_call);
            async move { call(i).await }
        },
    )
    .await
    .with_context(|| format!("the Rust floor ({variant})"))?;
    let concurrent = concurrent_calls(args, &[], move |i| {
        let call = Arc::clone(&call);
        async move { call(i).await }
    })
    .await;
    server.abort();
    Ok(RustFloor {
        variant,
        sequential,
        concurrent,
    })
}

pub fn check(report: &MlReport) -> anyhow::Result<()> {
    for pool in &report.pools {
        if pool.restarts > 0 {
            bail!(
                "{} worker restart(s) in the pool of {}",
                pool.restarts,
                pool.workers
            );
        }
        for t in &pool.throughput {
            let l = &t.load;
            if l.errors > 0 {
                bail!(
                    "{} failed {} of {} calls with {} worker(s): {}",
                    t.op.name(),
                    l.errors,
                    l.completed + l.errors,
                    pool.workers,
                    l.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

/// Microseconds with one decimal.
fn us(ms: f64) -> String {
    format!("{:.1} µs", ms * 1000.0)
}

fn latency(l: &LatencySummary) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {}",
        us(l.p50_ms),
        us(l.p90_ms),
        us(l.p99_ms),
        us(l.max_ms)
    )
}

fn cores(c: Option<f64>) -> String {
    c.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
}

fn one_decimal(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"))
}

impl fmt::Display for MlReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ml: {} (Python {}) over Unix sockets; anomaly.score over {} device series, each \
             filled to its {}-value window first; load average before: {}",
            self.python,
            self.python_version,
            self.devices,
            WINDOW,
            self.load_average_before.as_deref().unwrap_or("?")
        )?;
        for pool in &self.pools {
            writeln!(
                f,
                "  {} worker(s) (started in {:.2} s, restarts {}):",
                pool.workers, pool.start_secs, pool.restarts
            )?;
            writeln!(
                f,
                "    one call at a time ({} timed after {} untimed):",
                self.requests, self.warmup
            )?;
            for s in &pool.sequential {
                writeln!(f, "      {:<14} {}", s.op.name(), latency(&s.latency))?;
            }
            writeln!(
                f,
                "    {} callers, {} s measured after {} s:",
                self.concurrency, self.duration_secs, self.warmup_secs
            )?;
            for t in &pool.throughput {
                let l = &t.load;
                let workers: Vec<String> = l.worker_cores.iter().map(|c| cores(*c)).collect();
                writeln!(
                    f,
                    "      {:<14} {:.0}/s ({} calls, {} errors); {}",
                    t.op.name(),
                    l.per_sec,
                    l.completed,
                    l.errors,
                    latency(&l.latency),
                )?;
                writeln!(
                    f,
                    "        CPU: workers [{}] cores, {} µs a call; bench {} cores, {} µs a call",
                    workers.join(", "),
                    one_decimal(l.worker_cpu_us_per_call),
                    cores(l.bench_cores),
                    one_decimal(l.bench_cpu_us_per_call),
                )?;
                if let Some(err) = &l.first_error {
                    writeln!(f, "        first error: {err}")?;
                }
            }
        }
        writeln!(f, "  floor:")?;
        writeln!(
            f,
            "    Python in one process, no socket (per call: p50 / p99 / max, and the mean of a tight loop):"
        )?;
        for c in &self.floor.python {
            let u = |ns: f64| format!("{:.1} µs", ns / 1000.0);
            writeln!(
                f,
                "      {:<14} {:<8} {} / {} / {}, mean {} ({:.0}/s on one core)",
                c.op,
                c.level,
                u(c.p50_ns as f64),
                u(c.p99_ns as f64),
                u(c.max_ns as f64),
                u(c.mean_ns),
                if c.mean_ns > 0.0 {
                    1e9 / c.mean_ns
                } else {
                    0.0
                }
            )?;
        }
        writeln!(
            f,
            "    one worker over a blocking Unix socket, no bridge (one call at a time):"
        )?;
        for s in &self.floor.raw_socket {
            writeln!(f, "      {:<14} {}", s.op.name(), latency(&s.latency))?;
        }
        writeln!(f, "    Rust in-process, no socket, no Python:")?;
        for r in &self.floor.rust {
            writeln!(
                f,
                "      {}: one at a time {}; {} callers {:.0}/s (bench CPU {} cores)",
                r.variant,
                latency(&r.sequential),
                r.concurrent.concurrency,
                r.concurrent.per_sec,
                cores(r.concurrent.bench_cores)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_and_readings_match_the_python_floor() {
        // ml_floor.py: f"00000000-0000-7000-8000-{i % devices:012x}", 20 + (i*7919 % 1000)/100
        assert_eq!(device_id(257, 256), "00000000-0000-7000-8000-000000000001");
        assert_eq!(device_id(255, 256).len(), 36);
        assert!((reading(1) - 29.19).abs() < 1e-9);
        assert!((0..10_000).map(reading).all(|v| (20.0..30.0).contains(&v)));
    }

    /// The floors against the real worker, when `.venv-ml` is there (scripts/setup-ml.sh).
    #[tokio::test]
    async fn floors_run_against_the_real_worker() {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-ml/bin/python");
        if !python.exists() {
            eprintln!("no .venv-ml (run scripts/setup-ml.sh): skipped");
            return;
        }
        let args = MlArgs {
            python,
            workers: 1,
            requests: 20,
            warmup: 5,
            concurrency: 2,
            duration_secs: 1,
            warmup_secs: 0,
            devices: 2,
            floor_calls: 50,
        };
        let floor = python_floor(&args).await.unwrap();
        assert_eq!(floor.cases.len(), 5);
        assert!(floor.cases.iter().all(|c| c.calls == 50 && c.p50_ns > 0));
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_socket_floor(&args, dir.path()).await.unwrap();
        assert_eq!(raw.len(), 2);
        assert!(raw.iter().all(|s| s.latency.count == 20));
    }
}

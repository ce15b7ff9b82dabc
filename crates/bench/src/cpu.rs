//! CPU time of this process's threads, grouped into server and load generator.
//!
//! The in-process server runs on its own tokio runtime whose threads (async workers and the
//! blocking pool, where Argon2 runs) are named [`SERVER_THREAD`]; SQLite connections run on
//! sqlx's own `sqlx-sqlite-*` threads; the load generator's runtime is named
//! [`CLIENT_THREAD`]. Linux's `/proc/self/task/<tid>/schedstat` gives each thread's time on a
//! CPU in nanoseconds, so a before/after pair tells how much CPU the server itself used. Threads
//! that exit between the two samples are lost, so the server runtime keeps its blocking threads
//! alive for the whole run. Anywhere without `/proc`, sampling returns `None` and the CPU line is
//! skipped.

use std::time::Duration;

use serde::Serialize;

/// Thread-name prefix of the in-process server's runtime (at most 15 bytes: Linux's `comm`).
pub const SERVER_THREAD: &str = "unhidra-srv";
/// Thread-name prefix of the load generator's runtime.
pub const CLIENT_THREAD: &str = "bench-client";
/// sqlx runs each SQLite read connection on a thread of its own with this prefix; the
/// store's writer has a thread of its own too.
const SQLITE_THREADS: [&str; 2] = ["sqlx-sqlite", unhidra_store_sqlite::WRITER_THREAD];

/// CPU time used so far by the server's threads and by everything else in the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub server: Duration,
    pub client: Duration,
}

/// CPU used between two samples, and what it means over a wall-clock interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUsage {
    pub server_cpu_secs: f64,
    /// Server CPU seconds per wall-clock second: 2.0 means two cores busy all along.
    pub server_cores: f64,
    pub load_generator_cpu_secs: f64,
    pub load_generator_cores: f64,
}

/// Each live thread's name and time on a CPU; `None` where `/proc` is not available.
fn threads() -> Option<Vec<(String, Duration)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let dir = entry.path();
        // A thread may exit between listing and reading: skip it.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Ok(schedstat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let Some(on_cpu_ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((comm.trim().to_owned(), Duration::from_nanos(on_cpu_ns)));
    }
    Some(out)
}

/// Reads every thread's CPU time; `None` where `/proc` is not available.
pub fn sample() -> Option<CpuSample> {
    let mut out = CpuSample::default();
    for (name, on_cpu) in threads()? {
        if name.starts_with(SERVER_THREAD) || SQLITE_THREADS.iter().any(|t| name.starts_with(t)) {
            out.server += on_cpu;
        } else {
            out.client += on_cpu;
        }
    }
    Some(out)
}

/// CPU time of the live threads whose name starts with `prefix`.
pub fn thread_cpu(prefix: &str) -> Option<Duration> {
    Some(
        threads()?
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, on_cpu)| on_cpu)
            .sum(),
    )
}

/// CPU time of all live threads of this process.
pub fn process_cpu() -> Option<Duration> {
    thread_cpu("")
}

/// CPU used from `before` to `after` over `wall`.
pub fn usage(before: CpuSample, after: CpuSample, wall: Duration) -> CpuUsage {
    let server = after.server.saturating_sub(before.server).as_secs_f64();
    let client = after.client.saturating_sub(before.client).as_secs_f64();
    let wall = wall.as_secs_f64().max(f64::MIN_POSITIVE);
    CpuUsage {
        server_cpu_secs: server,
        server_cores: server / wall,
        load_generator_cpu_secs: client,
        load_generator_cores: client / wall,
    }
}

//! What Linux's `/proc` says about a process (this one or the server it spawned): resident
//! memory, CPU time, the open-file limit, and the kernel's TCP counters.
//!
//! The gateway benchmarks run the server as a separate process, so its memory and CPU are
//! read from `/proc/<pid>` rather than per thread as [`crate::cpu`] does in-process. Anywhere
//! without `/proc` these return `None`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

/// Resident set size (`VmRSS` of `/proc/<pid>/status`) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// User plus system CPU time of the whole process, threads that have exited included
/// (`utime` + `stime` of `/proc/<pid>/stat`, in clock ticks of usually 10 ms).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000 / ticks),
    ))
}

/// `getconf CLK_TCK`, asked once; 100 (Linux's usual value) if that fails.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|t| (1..=1_000_000).contains(t))
            .unwrap_or(100)
    })
}

/// This process's soft and hard limits on open files (`/proc/self/limits`).
pub fn open_file_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// TCP sockets in TIME_WAIT on the whole machine (`tw` in `/proc/net/sockstat`).
pub fn time_wait_sockets() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(word) = words.next() {
        if word == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Kernel-wide TCP counters that tell whether connection attempts were dropped at the
/// listener: `ListenOverflows` (accept queue full) and `ListenDrops`, plus SYN cookies sent
/// (`SyncookiesSent`, SYN queue full). They count for the whole machine, so anything else
/// connecting at the same time shows up too.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListenCounters(pub BTreeMap<String, u64>);

const LISTEN_COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "SyncookiesSent"];

impl ListenCounters {
    pub fn read() -> Option<Self> {
        let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
        let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
        let names = lines.next()?.split_whitespace().skip(1);
        let values = lines.next()?.split_whitespace().skip(1);
        Some(Self(
            names
                .zip(values)
                .filter(|(name, _)| LISTEN_COUNTERS.contains(name))
                .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
                .collect(),
        ))
    }

    /// How much each counter grew from `before` to `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(name, after)| {
                    let was = before.0.get(name).copied().unwrap_or(0);
                    (name.clone(), after.saturating_sub(was))
                })
                .collect(),
        )
    }
}

impl std::fmt::Display for ListenCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(n, v)| format!("{n} {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        if std::fs::metadata("/proc/self/status").is_err() {
            return; // not Linux
        }
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(peak_rss_kib(pid).unwrap() >= rss_kib(pid).unwrap() / 2);
        assert!(cpu_time(pid).is_some());
        let (soft, hard) = open_file_limits().unwrap();
        assert!(soft <= hard);
        assert!(time_wait_sockets().is_some());
    }
}

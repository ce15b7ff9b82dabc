//! Debian's Mosquitto as the peer Unhidra is compared with: a broker started for one run on a
//! spare loopback port, with a generated configuration and no persistence.
//!
//! The broker runs as a separate process, pinned like the Unhidra server (see
//! [`pinning`](crate::pinning)), so its CPU time and resident memory are read from
//! `/proc/<pid>` the same way (see [`procfs`](crate::procfs)). It logs errors and warnings to
//! a file in its temporary dir, shown if it fails. It is stopped with SIGTERM at the end of a
//! run, and killed if the run fails: the child is `kill_on_drop`, so dropping a
//! [`Mosquitto`] on an error path ends the broker too.
//!
//! `mosquitto idle|fanout|pairs` run the scenarios of `mosquitto_idle`, `mosquitto_fanout`
//! and `mosquitto_pairs` against it; `--peer mosquitto` on the Unhidra benchmarks runs them
//! right after Unhidra's (see [`peer`](crate::peer)).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::pinning::{self, Pin};
use crate::procfs;
use crate::server_process::{free_port, Usage};
use crate::target::{cpus, load_average};

/// Where Debian's `mosquitto` package installs the broker.
pub const DEFAULT_BINARY: &str = "/usr/sbin/mosquitto";

/// Messages Mosquitto may queue for one client (`max_queued_messages`): far more than any
/// scenario here leaves waiting, so a slow subscriber is measured, not dropped. Mosquitto
/// drops QoS 0 messages for a client whose queue is full.
pub const MAX_QUEUED_MESSAGES: u32 = 10_000_000;

/// How the broker is started, shared by the `mosquitto` subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// The Mosquitto binary (`apt-get install mosquitto`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BINARY)]
    pub mosquitto_bin: PathBuf,
    /// Pin the broker to one CPU and this tool (the load generator) to another, as SERVER,LOAD
    /// (e.g. 0,1), with `taskset`; `off` pins nothing. Default: 0,1 on a machine with two CPUs
    /// or more.
    #[arg(long, value_name = "SERVER,LOAD|off")]
    pub pin: Option<Pin>,
    /// How long one client may take from its TCP connect to its CONNACK (and SUBACK).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout_secs: u64,
    /// Clients connecting at once during setup.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
}

impl BrokerArgs {
    pub fn new(mosquitto_bin: PathBuf, pin: Pin) -> Self {
        Self {
            mosquitto_bin,
            pin: Some(pin),
            connect_timeout_secs: 30,
            concurrency: 128,
        }
    }

    pub fn pin(&self) -> Pin {
        self.pin.unwrap_or_else(Pin::default_pair)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

/// The broker's configuration for one run.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfig {
    /// `max_inflight_messages`: QoS 1 messages Mosquitto sends a client before it waits for
    /// PUBACKs.
    pub max_inflight_messages: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_inflight_messages: 100,
        }
    }
}

/// The broker under test and how it was run.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub binary: String,
    pub version: Option<String>,
    pub address: String,
    pub pid: u32,
    pub cpus: usize,
    pub pinning: Pin,
    pub load_average_before: Option<String>,
    pub open_file_limits: Option<(u64, u64)>,
    pub raised_open_file_limit: bool,
    pub max_inflight_messages: u32,
    pub max_queued_messages: u32,
}

impl fmt::Display for BrokerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, pid {}) at {}, separate process, no persistence, anonymous clients, \
             max_inflight_messages {}, max_queued_messages {}, TCP_NODELAY; {} CPUs, {}",
            self.binary,
            self.version.as_deref().unwrap_or("version unknown"),
            self.pid,
            self.address,
            self.max_inflight_messages,
            self.max_queued_messages,
            self.cpus,
            self.pinning
        )?;
        if let Some((soft, hard)) = self.open_file_limits {
            write!(f, "; open files {soft} (hard {hard})")?;
            if self.raised_open_file_limit {
                f.write_str(", soft limit raised by this tool")?;
            }
        }
        if let Some(load) = &self.load_average_before {
            write!(f, "\n  load average before the run: {load}")?;
        }
        Ok(())
    }
}

/// A running Mosquitto, killed when dropped.
pub struct Mosquitto {
    child: Child,
    pid: u32,
    pub address: SocketAddr,
    pub info: BrokerInfo,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Checks the open-file budget for `connections` (raising the soft limit if it must),
    /// starts the broker with `config` on a free 127.0.0.1 port, pinned as `args` says, waits
    /// until it accepts connections, then pins this process (the load generator).
    pub async fn start(
        args: &BrokerArgs,
        config: BrokerConfig,
        connections: u64,
    ) -> anyhow::Result<Self> {
        let binary = &args.mosquitto_bin;
        if !binary.is_file() {
            bail!(
                "no Mosquitto at {} (install it with `apt-get install mosquitto`, or pass \
                 --mosquitto-bin)",
                binary.display()
            );
        }
        let pin = args.pin();
        let cpus = cpus();
        let load_average_before = load_average();
        let raised = crate::gateway::ensure_open_files(connections + crate::gateway::FD_HEADROOM)?;
        let dir = tempfile::tempdir().context("creating a temporary dir")?;
        let address = free_port()?;
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config_text(address, config))
            .context("writing Mosquitto's configuration")?;
        let log = dir.path().join("mosquitto.log");
        let log_file = std::fs::File::create(&log).context("creating Mosquitto's log")?;
        let child = pinning::command(binary, pin.server())
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("Mosquitto exited at once")?;
        let mut broker = Self {
            child,
            pid,
            address,
            info: BrokerInfo {
                binary: binary.display().to_string(),
                version: version(binary).await,
                address: address.to_string(),
                pid,
                cpus,
                pinning: pin,
                load_average_before,
                open_file_limits: procfs::open_file_limits(),
                raised_open_file_limit: raised,
                max_inflight_messages: config.max_inflight_messages,
                max_queued_messages: MAX_QUEUED_MESSAGES,
            },
            log,
            _dir: dir,
        };
        broker.wait_ready().await?;
        pin.pin_load_generator()?;
        Ok(broker)
    }

    /// Waits until the broker accepts TCP connections on its port.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut last = String::from("no answer");
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().context("checking on Mosquitto")? {
                bail!(
                    "Mosquitto exited while starting ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            match tokio::net::TcpStream::connect(self.address).await {
                Ok(_) => return Ok(()),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "Mosquitto did not listen on {}: {last}; its log:\n{}",
            self.address,
            self.log_tail()
        )
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The broker's memory and CPU time so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid).context("reading Mosquitto's /proc entry")
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        procfs::peak_rss_kib(self.pid)
    }

    /// Whether the broker is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let count = text.lines().count();
        text.lines()
            .skip(count.saturating_sub(30))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the broker with SIGTERM and waits up to `grace` (then kills it). Fails if it had
    /// already exited, which would make the run's figures worthless.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if !self.is_running() {
            bail!(
                "Mosquitto had already exited; its log:\n{}",
                self.log_tail()
            );
        }
        // The broker is our child: signal it by its pid, nothing else.
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .context("running kill -TERM")?;
        if !signalled.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for Mosquitto")?;
                Ok(started.elapsed())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("Mosquitto did not exit within {grace:?} of SIGTERM; killed it")
            }
        }
    }
}

/// `mosquitto.conf` for one run: one listener on `address`, nothing written to disk.
fn config_text(address: SocketAddr, config: BrokerConfig) -> String {
    format!(
        "# Written by unhidra-bench for one run.\n\
         listener {port} {host}\n\
         allow_anonymous true\n\
         persistence false\n\
         max_inflight_messages {inflight}\n\
         max_queued_messages {queued}\n\
         set_tcp_nodelay true\n\
         connection_messages false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n",
        port = address.port(),
        host = address.ip(),
        inflight = config.max_inflight_messages,
        queued = MAX_QUEUED_MESSAGES,
    )
}

/// `mosquitto -h` prints its version on the first line ("mosquitto version 2.0.11").
async fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("version"))?;
    Some(line.trim().to_owned())
}

/// Says "load generator saturated first" when this tool used ≥ 0.95 cores while the server
/// (or broker) used fewer: the figures then measure the load generator, not the server.
pub fn load_generator_saturated_first(server_cores: f64, load_generator_cores: f64) -> bool {
    load_generator_cores >= 0.95 && server_cores < load_generator_cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_listens_on_loopback_only_and_keeps_nothing() {
        let text = config_text("127.0.0.1:18830".parse().unwrap(), BrokerConfig::default());
        assert!(text.contains("listener 18830 127.0.0.1\n"));
        assert!(text.contains("persistence false\n"));
        assert!(text.contains("max_inflight_messages 100\n"));
    }

    #[test]
    fn saturation_is_the_load_generator_at_a_full_core_ahead_of_the_server() {
        assert!(load_generator_saturated_first(0.4, 0.99));
        assert!(!load_generator_saturated_first(0.99, 0.97));
        assert!(!load_generator_saturated_first(0.4, 0.6));
    }
}

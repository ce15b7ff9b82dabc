//! The server as a separate process: `unhidra serve` with a fresh temporary data dir and a
//! generated configuration file.
//!
//! The gateway benchmarks hold thousands of connections. In one process the client and the
//! server ends would each take a file descriptor, twice what the open-file limit allows for
//! 10,000 connections, and the server's memory could not be told apart from the client's. A
//! separate process has its own limit (inherited from this one) and its own `/proc/<pid>`,
//! where its resident memory and CPU time are read.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::{Child, Command};
use unhidra_server::Config;

use crate::pinning;
use crate::procfs;

/// Rate limits of the spawned server: effectively off, since all load comes from a few
/// loopback addresses and a few users.
pub const RAISED_LIMIT: u32 = 1_000_000_000;

/// The configuration every gateway benchmark starts from: defaults, with the rate limits and
/// the per-address connection cap raised (all load comes from loopback) and access tokens
/// that outlive a long setup. Listen addresses and the data dir are
/// filled in by [`ServerProcess::start`].
pub fn bench_config() -> Config {
    let mut config = Config::default();
    let limits = &mut config.rate_limits;
    limits.login_per_minute = RAISED_LIMIT;
    limits.register_per_hour = RAISED_LIMIT;
    limits.device_register_per_hour = RAISED_LIMIT;
    limits.ws_connect_per_minute_per_ip = RAISED_LIMIT;
    limits.ws_connect_per_minute_per_user = RAISED_LIMIT;
    limits.ws_messages_per_second = 1_000_000;
    config.connections.max_per_ip = Some(RAISED_LIMIT as usize);
    config.auth.access_token_ttl_secs = 3600;
    config
}

/// CPU and memory of a process at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub rss_kib: u64,
    pub cpu_secs: f64,
}

impl Usage {
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            rss_kib: procfs::rss_kib(pid)?,
            cpu_secs: procfs::cpu_time(pid)?.as_secs_f64(),
        })
    }

    /// This process.
    pub fn own() -> Option<Self> {
        Self::of(std::process::id())
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// A running `unhidra serve`.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub binary: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `unhidra` binary next to this one (both are built into `target/release`).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me
        .parent()
        .context("this executable has no parent directory")?;
    Ok(dir.join("unhidra"))
}

/// A port nobody listens on right now (the server binds it a moment later).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading a free port")
}

impl ServerProcess {
    /// Writes `config` (with fresh ports and data dir) to a file, starts `binary serve` with
    /// it (and `env` added to its environment) and waits until `/readyz` answers. The server
    /// logs at `warn` to a file in the temporary dir, shown if it fails.
    pub async fn start(
        binary: &Path,
        config: Config,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_on(binary, config, env, None, None).await
    }

    /// Like [`start`](Self::start), but on `data_dir` when given: a data dir the caller
    /// prepared (and keeps; it is not removed when the server stops); and pinned to CPU
    /// `cpu` with `taskset` when given (see [`pinning`](crate::pinning)).
    pub async fn start_on(
        binary: &Path,
        mut config: Config,
        env: &[(String, String)],
        data_dir: Option<&Path>,
        cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "no server binary at {} (build it with `cargo build --release -p unhidra`, or \
                 pass --unhidra-bin)",
                binary.display()
            );
        }
        let dir = tempfile::tempdir().context("creating a temporary dir")?;
        config.data_dir = match data_dir {
            Some(data_dir) => data_dir.to_owned(),
            None => dir.path().join("data"),
        };
        config.listen = free_port()?;
        config.metrics_listen = free_port()?;
        let config_path = dir.path().join("unhidra.toml");
        let text = toml::to_string(&config).context("writing the server configuration")?;
        std::fs::write(&config_path, text).context("writing the server configuration")?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).context("creating the server log")?;

        let child = pinning::command(binary, cpu)
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("UNHIDRA_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = Self {
            child,
            pid,
            api: config.listen,
            metrics: config.metrics_listen,
            binary: binary.to_owned(),
            log,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.base_url());
        let mut last = String::from("no answer");
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().context("checking on the server")? {
                bail!(
                    "the server exited while starting ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("status {}", r.status()),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the server did not become ready: {last}; its log:\n{}",
            self.log_tail()
        )
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The server's memory and CPU time so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid).context("reading the server's /proc entry")
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        procfs::peak_rss_kib(self.pid)
    }

    /// Whether the server is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let count = text.lines().count();
        text.lines()
            .skip(count.saturating_sub(30))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `GET /metrics` on the metrics listener. Rendering also drains the histogram samples the
    /// recorder has buffered since the last scrape.
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://{}/metrics", self.metrics);
        let response = reqwest::get(&url).await.context("scraping /metrics")?;
        response.text().await.context("reading /metrics")
    }

    /// Asks the server to stop (SIGTERM, which drains: every session is closed with 1001) and
    /// waits up to `grace`; kills it after that. Returns how long it took to exit.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if !self.is_running() {
            bail!(
                "the server had already exited; its log:\n{}",
                self.log_tail()
            );
        }
        // The server is our child: signal it by its pid, nothing else.
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
                let status = status.context("waiting for the server")?;
                let took = started.elapsed();
                if !status.success() {
                    bail!(
                        "the server exited with {status}; its log:\n{}",
                        self.log_tail()
                    );
                }
                Ok(took)
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the server did not exit within {grace:?} of SIGTERM; killed it")
            }
        }
    }
}

/// The value of an unlabelled gauge or counter in a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            if key == name {
                value.trim().parse().ok()
            } else {
                None
            }
        })
}

/// The cumulative bucket counts (`le` bound → count) of a histogram in a Prometheus text
/// page, for the series whose labels include every pair in `labels`.
pub fn histogram_buckets(page: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets = Vec::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((label_text, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let pairs: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.trim(), value.trim().trim_matches('"')))
            })
            .collect();
        if !labels.iter().all(|wanted| pairs.contains(wanted)) {
            continue;
        }
        let Some(le) = pairs.iter().find(|(key, _)| *key == "le").map(|(_, v)| *v) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(bound) => bound,
                Err(_) => continue,
            }
        };
        if let Ok(count) = value.trim().parse() {
            buckets.push((bound, count));
        }
    }
    buckets
}

/// How many observations of cumulative `buckets` were above `bound` (which must be one of the
/// bucket bounds), and how many there were in all.
pub fn observations_above(buckets: &[(f64, f64)], bound: f64) -> Option<(f64, f64)> {
    let total = buckets.iter().find(|(le, _)| le.is_infinite())?.1;
    let below = buckets
        .iter()
        .find(|(le, _)| (*le - bound).abs() < 1e-12)?
        .1;
    Some((total - below, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_config_is_valid_and_serialises() {
        let config = bench_config();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn histogram_buckets_are_read_for_matching_labels() {
        let page = "h_bucket{route=\"/ws\",status=\"101\",le=\"0.1\"} 7\n\
                    h_bucket{route=\"/ws\",status=\"101\",le=\"1\"} 9\n\
                    h_bucket{route=\"/ws\",status=\"101\",le=\"+Inf\"} 10\n\
                    h_bucket{route=\"/x\",status=\"101\",le=\"+Inf\"} 99\n";
        let b = histogram_buckets(page, "h", &[("route", "/ws")]);
        assert_eq!(b.len(), 3);
        assert_eq!(observations_above(&b, 0.1), Some((3.0, 10.0)));
        assert_eq!(observations_above(&b, 1.0), Some((1.0, 10.0)));
        assert_eq!(observations_above(&b, 0.5), None);
    }

    #[test]
    fn metric_values_are_found_by_exact_name() {
        let page = "# TYPE a gauge\na 3\na_total 5\nb{x=\"y\"} 1\n";
        assert_eq!(metric_value(page, "a"), Some(3.0));
        assert_eq!(metric_value(page, "a_total"), Some(5.0));
        assert_eq!(metric_value(page, "b"), None);
    }
}

//! The server under load: by default one started in-process with `launch()` on 127.0.0.1:0
//! with a fresh temporary data dir, or an already running one given by `--server`.
//!
//! The in-process server runs on its own tokio runtime (threads named
//! [`cpu::SERVER_THREAD`](crate::cpu::SERVER_THREAD)), so the load generator's runtime does not
//! share async workers with it and the server's CPU time can be told apart. Both still share
//! the machine's cores, which the reports say.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use unhidra_server::{Config, LaunchError, Listeners};

/// Rate limits of the in-process server: effectively off, since every request of a benchmark
/// comes from 127.0.0.1 and the limits are per address.
const RAISED_LIMIT: u32 = 1_000_000_000;

/// Where the load goes, and how the in-process server is configured.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Benchmark an already running server at this base URL (e.g. http://127.0.0.1:8080)
    /// instead of starting one in-process. Its rate limits must allow the load from one
    /// address. In-process measurements (CPU, direct store calls) are then skipped.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// In-process server: password hashes computed at once (auth.hash_concurrency);
    /// 0 means one per CPU core, the default configuration.
    #[arg(long, default_value_t = 0)]
    pub hash_concurrency: usize,
    /// In-process server: how long a login may wait for a hashing slot before 503
    /// (auth.hash_queue_timeout_secs).
    #[arg(long, default_value_t = 10)]
    pub hash_queue_timeout_secs: u32,
}

/// What the report says about the server that was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub url: String,
    pub in_process: bool,
    /// `None` for an external server, whose configuration is not known here.
    pub hash_concurrency: Option<usize>,
    pub hash_queue_timeout_secs: Option<u32>,
    pub rate_limits_raised: bool,
    pub cpus: usize,
    /// The 1-, 5- and 15-minute load averages when the run started (`/proc/loadavg`), to tell
    /// whether something else was using the machine.
    pub load_average_before: Option<String>,
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.in_process {
            return write!(
                f,
                "external server at {} ({} CPUs here)",
                self.url, self.cpus
            );
        }
        write!(
            f,
            "in-process server at {} (fresh temp data dir; {} CPUs shared by server and load \
             generator; hash_concurrency {}, hash_queue_timeout_secs {}; per-address rate \
             limits raised to {RAISED_LIMIT} because all load comes from 127.0.0.1)",
            self.url,
            self.cpus,
            self.hash_concurrency.unwrap_or(0),
            self.hash_queue_timeout_secs.unwrap_or(0),
        )
    }
}

/// The first three fields of `/proc/loadavg`, where there is one.
pub fn load_average() -> Option<String> {
    let line = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        line.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

struct InProcess {
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), LaunchError>>>,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// The server a benchmark talks to.
pub struct Target {
    pub info: ServerInfo,
    in_process: Option<InProcess>,
}

impl Target {
    /// Starts the in-process server on `runtime` (or points at `--server`) and waits until it
    /// is ready.
    pub async fn start(args: &ServerArgs, runtime: &Handle) -> anyhow::Result<Self> {
        let target = match &args.server {
            Some(url) => Self {
                info: ServerInfo {
                    url: url.trim_end_matches('/').to_owned(),
                    in_process: false,
                    hash_concurrency: None,
                    hash_queue_timeout_secs: None,
                    rate_limits_raised: false,
                    cpus: cpus(),
                    load_average_before: load_average(),
                },
                in_process: None,
            },
            None => Self::launch(args, runtime)?,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    fn launch(args: &ServerArgs, runtime: &Handle) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary data dir")?;
        let data_dir = dir.path().join("data");
        let mut config = Config {
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        config.rate_limits.login_per_minute = RAISED_LIMIT;
        config.rate_limits.register_per_hour = RAISED_LIMIT;
        config.rate_limits.device_register_per_hour = RAISED_LIMIT;
        // Every client comes from loopback.
        config.connections.max_per_ip = Some(usize::MAX);
        config.auth.hash_concurrency = args.hash_concurrency;
        config.auth.hash_queue_timeout_secs = args.hash_queue_timeout_secs;
        // Registering ten thousand devices may outlast the default 15-minute access token.
        config.auth.access_token_ttl_secs = 3600;

        // Bound here, registered with the server runtime's reactor inside its task.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("reading the listener address")?;
        let shutdown = CancellationToken::new();
        let server = runtime.spawn({
            let shutdown = shutdown.clone();
            async move {
                let api =
                    tokio::net::TcpListener::from_std(listener).map_err(LaunchError::Serve)?;
                unhidra_server::launch(
                    config,
                    Listeners {
                        api,
                        metrics: None,
                        mqtt: None,
                    },
                    shutdown,
                )
                .await
            }
        });
        Ok(Self {
            info: ServerInfo {
                url: format!("http://{addr}"),
                in_process: true,
                hash_concurrency: Some(if args.hash_concurrency == 0 {
                    cpus()
                } else {
                    args.hash_concurrency
                }),
                hash_queue_timeout_secs: Some(args.hash_queue_timeout_secs),
                rate_limits_raised: true,
                cpus: cpus(),
                load_average_before: load_average(),
            },
            in_process: Some(InProcess {
                shutdown,
                server: Some(server),
                data_dir,
                _dir: dir,
            }),
        })
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.info.url);
        let mut last = String::from("no answer");
        for _ in 0..250 {
            if let Some(server) = self.in_process.as_ref().and_then(|p| p.server.as_ref()) {
                if server.is_finished() {
                    bail!("the in-process server stopped while starting (run with RUST_LOG=info to see why)");
                }
            }
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("status {}", r.status()),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("server at {} did not become ready: {last}", self.info.url)
    }

    /// The in-process server's data dir (kept until the target is dropped).
    pub fn data_dir(&self) -> Option<&Path> {
        self.in_process.as_ref().map(|p| p.data_dir.as_path())
    }

    /// Stops the in-process server and waits until `launch()` has returned. The data dir stays
    /// until the target is dropped. Does nothing for an external server or a second time.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(process) = self.in_process.as_mut() else {
            return Ok(());
        };
        process.shutdown.cancel();
        let Some(server) = process.server.take() else {
            return Ok(());
        };
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .context("launch() did not return within 30 s of shutdown")?
            .context("the server task failed")?
            .context("the server stopped with an error")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(process) = &self.in_process {
            process.shutdown.cancel();
        }
    }
}

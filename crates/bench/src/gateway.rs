//! What the gateway benchmarks share: the spawned server, the connector, users, and the
//! open-file budget.
//!
//! Each gateway benchmark starts `unhidra serve` as a separate process (see
//! [`server_process`](crate::server_process)) with its rate limits raised, connects to it over
//! loopback from several source addresses, and reads the server's memory and CPU time from
//! `/proc/<pid>`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use unhidra_server::Config;

use crate::api::{fresh_username, Api, PASSWORD};
use crate::pinning::Pin;
use crate::procfs;
use crate::server_process::{default_binary, ServerProcess};
use crate::target::{cpus, load_average};
use crate::workers;
use crate::ws_client::{Connector, Credential, Failure, Failures, Ws};

/// File descriptors this process needs besides its WebSocket connections (HTTP clients,
/// the runtime, stdio).
pub(crate) const FD_HEADROOM: u64 = 200;

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The `unhidra` binary run as the server (default: `unhidra` next to this executable,
    /// i.e. `target/release/unhidra` after `cargo build --release -p unhidra`).
    #[arg(long, value_name = "PATH")]
    pub unhidra_bin: Option<PathBuf>,
    /// Loopback source addresses the connections are spread over, 127.0.0.1 upwards (one
    /// address reaches the server's port only ~28,000 times).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,
    /// How long one connection may take from its TCP connect to the `welcome` frame.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout_secs: u64,
    /// An environment variable for the server process only, as NAME=VALUE (repeatable), e.g.
    /// MALLOC_MMAP_THRESHOLD_=131072 to see how glibc's allocator settings change its memory.
    #[arg(long = "server-env", value_name = "NAME=VALUE", value_parser = env_pair)]
    pub server_env: Vec<(String, String)>,
    /// Pin the server to one CPU and this tool (the load generator) to another, as
    /// SERVER,LOAD (e.g. 0,1), with `taskset`; `off` pins nothing. Default: off, but 0,1 with
    /// --peer on a machine with two CPUs or more.
    #[arg(long, value_name = "SERVER,LOAD|off")]
    pub pin: Option<Pin>,
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

/// The server under test and how it was run.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayServerInfo {
    pub binary: String,
    pub url: String,
    pub pid: u32,
    pub cpus: usize,
    /// The 1-, 5- and 15-minute load averages before the run.
    pub load_average_before: Option<String>,
    /// Soft and hard open-file limits of this process; the server inherits them.
    pub open_file_limits: Option<(u64, u64)>,
    /// Whether this tool raised its soft open-file limit (with `prlimit`) to fit the run.
    pub raised_open_file_limit: bool,
    pub source_addrs: Vec<String>,
    /// Environment variables set for the server process only.
    pub server_env: Vec<String>,
    pub pinning: Pin,
    pub channel_buffer: usize,
    pub max_message_bytes: usize,
    pub ping_interval_ms: u64,
}

impl fmt::Display for GatewayServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} serve (pid {}) at {}, separate process, fresh temp data dir, default gateway \
             settings except as noted (channel_buffer {}), rate limits raised; {} CPUs shared \
             with the load generator; clients from {}",
            self.binary,
            self.pid,
            self.url,
            self.channel_buffer,
            self.cpus,
            self.source_addrs.join(", ")
        )?;
        if self.pinning != Pin::Off {
            write!(f, "; {}", self.pinning)?;
        }
        if let Some((soft, hard)) = self.open_file_limits {
            write!(f, "; open files {soft} (hard {hard})")?;
            if self.raised_open_file_limit {
                f.write_str(", soft limit raised by this tool")?;
            }
        }
        if !self.server_env.is_empty() {
            write!(f, "; server environment: {}", self.server_env.join(" "))?;
        }
        if let Some(load) = &self.load_average_before {
            write!(f, "\n  load average before the run: {load}")?;
        }
        Ok(())
    }
}

/// A started server, a connector aimed at it, and a REST client.
pub struct Bench {
    pub server: ServerProcess,
    pub connector: Connector,
    pub api: Api,
    pub info: GatewayServerInfo,
}

impl Bench {
    /// Checks the open-file budget for `connections` (raising the soft limit up to the hard
    /// one if it must), then starts the server with `config`.
    pub async fn start(
        args: &GatewayArgs,
        config: Config,
        connections: u64,
    ) -> anyhow::Result<Self> {
        Self::start_on(args, config, connections, None).await
    }

    /// Like [`start`](Self::start), on a data dir the caller prepared when one is given.
    pub async fn start_on(
        args: &GatewayArgs,
        config: Config,
        connections: u64,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let load_average_before = load_average();
        let raised = ensure_open_files(connections + FD_HEADROOM)?;
        let binary = match &args.unhidra_bin {
            Some(path) => path.clone(),
            None => default_binary()?,
        };
        let channel_buffer = config.gateway.channel_buffer;
        let max_message_bytes = config.gateway.max_message_bytes;
        let ping_interval_ms = config.gateway.ping_interval_ms;
        let pinning = args.pin.unwrap_or(Pin::Off);
        let cpus = cpus();
        let server = ServerProcess::start_on(
            &binary,
            config,
            &args.server_env,
            data_dir,
            pinning.server(),
        )
        .await?;
        pinning.pin_load_generator()?;
        let connector = Connector::new(
            server.api,
            args.source_addrs,
            Duration::from_secs(args.connect_timeout_secs),
        );
        let api = Api::new(&server.base_url())?;
        let info = GatewayServerInfo {
            binary: binary.display().to_string(),
            url: server.base_url(),
            pid: server.pid(),
            cpus,
            load_average_before,
            open_file_limits: procfs::open_file_limits(),
            raised_open_file_limit: raised,
            source_addrs: connector.sources(),
            server_env: args
                .server_env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
            pinning,
            channel_buffer,
            max_message_bytes,
            ping_interval_ms,
        };
        Ok(Self {
            server,
            connector,
            api,
            info,
        })
    }
}

/// Makes sure this process may open `needed` files: raises the soft limit up to the hard
/// limit with `prlimit` if it must (returns whether it did), fails if even the hard limit
/// is too low. The server, started afterwards, inherits the limit.
pub(crate) fn ensure_open_files(needed: u64) -> anyhow::Result<bool> {
    let Some((soft, hard)) = procfs::open_file_limits() else {
        return Ok(false);
    };
    if needed <= soft {
        return Ok(false);
    }
    if needed > hard {
        bail!(
            "this run needs about {needed} open files but the hard limit is {hard}: use fewer \
             connections or raise the limit (ulimit -Hn)"
        );
    }
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .context("running prlimit to raise the open-file limit")?;
    if !status.success() {
        bail!("prlimit could not raise the open-file limit from {soft} to {hard}");
    }
    Ok(true)
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub access: String,
}

/// Registers and logs in `count` users, a few at a time (each costs two Argon2 hashes).
pub async fn users(api: &Api, count: u32) -> anyhow::Result<Vec<User>> {
    let prefix = fresh_username();
    let results = workers::for_each((0..count).collect(), 4, {
        let api = api.clone();
        move |i: u32| {
            let api = api.clone();
            let username = format!("{prefix}-{i}");
            async move {
                let id = api.register(&username, PASSWORD).await?;
                let access = api.login(&username, PASSWORD).await?.access_token;
                anyhow::Ok(User { id, access })
            }
        }
    })
    .await?;
    results.into_iter().collect()
}

/// Creates a public channel as `owner` and makes every other user a member; returns its id.
pub async fn channel_with_members(
    api: &Api,
    owner: &User,
    members: &[User],
) -> anyhow::Result<String> {
    let name = format!("bench-{:08x}", rand::random::<u32>());
    let channel = api.create_channel(&owner.access, &name, false).await?;
    // The owner is a member already.
    let joining: Vec<User> = members
        .iter()
        .filter(|u| u.id != owner.id)
        .cloned()
        .collect();
    let joined = workers::for_each(joining, 8, {
        let (api, channel) = (api.clone(), channel.clone());
        move |user: User| {
            let (api, channel) = (api.clone(), channel.clone());
            async move { api.add_member(&user.access, &channel, &user.id).await }
        }
    })
    .await?;
    joined.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(channel)
}

/// `bytes` KiB as MiB.
/// Keeps the connections that opened and counts the failures of those that did not.
pub fn opened_or_failed<T>(opened: Vec<Result<T, Failure>>) -> (Vec<T>, Failures) {
    let mut failures = Failures::default();
    let mut connections = Vec::new();
    for result in opened {
        match result {
            Ok(connection) => connections.push(connection),
            Err(failure) => failures.record(&failure),
        }
    }
    (connections, failures)
}

/// Connects one publisher per user, as connections `first_index`, `first_index + 1`, …
pub async fn connect_publishers(
    connector: &Connector,
    users: &[User],
    first_index: usize,
) -> anyhow::Result<Vec<Ws>> {
    let mut publishers = Vec::with_capacity(users.len());
    for (p, user) in users.iter().enumerate() {
        let ws = connector
            .connect(first_index + p, &Credential::Bearer(user.access.clone()))
            .await
            .map_err(|f| anyhow::anyhow!("connecting publisher {p}: {f}"))?;
        publishers.push(ws);
    }
    Ok(publishers)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

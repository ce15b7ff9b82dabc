//! `unhidra`: parse the command line, set up logging, load the configuration, and hand over
//! to the server library.

mod cli;

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use clap::Parser;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use unhidra_server::config::LogFormat;
use unhidra_server::{admin, Config, Listeners};

use cli::{AdminCommand, Cli, Command, KeysCommand};

/// jemalloc, chosen by measurement against glibc and mimalloc (docs/benchmarks.md): glibc kept
/// every login's 19 MiB Argon2 buffer resident (+438 MiB after 200 logins, jemalloc +21 MiB),
/// and jemalloc also needs the least per idle connection and CPU per delivery.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let serve_args = match &cli.command {
        Command::Serve(args) | Command::Config(args) => Some(args),
        _ => None,
    };
    let config = cli.load_config(serve_args)?;
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

/// Log lines go to stderr, so that command output on stdout stays clean for scripts; colour
/// only when stderr is a terminal.
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => serve(config).await,
        Command::Config(_) => {
            print!(
                "{}",
                toml::to_string_pretty(&config).context("rendering config")?
            );
            Ok(())
        }
        Command::Admin(AdminCommand::CreateUser { username, admin }) => {
            let password = read_password()?;
            let id = admin::create_user(&config, &username, password, admin).await?;
            println!(
                "created user {username} ({id}){}",
                if admin { " as administrator" } else { "" }
            );
            Ok(())
        }
        Command::Keys(KeysCommand::List) => {
            let Some(keys) = admin::list_signing_keys(&config)? else {
                println!("no signing keys yet; the first is created when the server starts");
                return Ok(());
            };
            for kid in &keys.kids {
                println!("{kid}{}", key_mark(&keys, kid));
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate) => {
            let (kid, running) = admin::rotate_signing_key(&config).await?;
            match running {
                Some(server) if server.signing_kid != kid => println!(
                    "added signing key {kid}; the running server (pid {}) signs with {} \
                     until it restarts",
                    server.pid, server.signing_kid
                ),
                Some(_) => println!("added signing key {kid}; the running server signs with it"),
                None => println!(
                    "added signing key {kid}; the server signs with it from its next start"
                ),
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Retire { kid, force }) => {
            admin::retire_signing_key(&config, &kid, force).await?;
            println!("retired signing key {kid}");
            Ok(())
        }
    }
}

/// What `keys list` says of a key: `(active)` for the key that signs, or, while a running
/// server still signs with an older key, which one signs now and which from its restart.
fn key_mark(keys: &admin::SigningKeys, kid: &str) -> String {
    match &keys.running {
        Some(server) if server.signing_kid != keys.newest => {
            if kid == server.signing_kid {
                format!(
                    "  (active: the running server, pid {}, signs with it)",
                    server.pid
                )
            } else if kid == keys.newest {
                "  (newest: signs from the server's next start)".to_owned()
            } else {
                String::new()
            }
        }
        _ if kid == keys.newest => "  (active)".to_owned(),
        _ => String::new(),
    }
}

/// Binds with a listen backlog of 4096 (the kernel caps it at `net.core.somaxconn`): tokio's
/// `TcpListener::bind` uses 128, which overflows when thousands of devices reconnect at once
/// and costs each dropped SYN a one-second retry.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Raises the soft open-file limit to the hard one, as Go's runtime and many servers do:
/// the usual soft default (1024) is meant to be raised by programs that need more, and
/// every connection is a descriptor. The connection limits are derived from the result.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit")
        }
        Err(err) => {
            tracing::warn!(error = %err, soft = ?limit.current, "could not raise the open-file limit")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let api = bind(config.listen)
        .with_context(|| format!("binding the API listener on {}", config.listen))?;
    let metrics = bind(config.metrics_listen)
        .with_context(|| format!("binding the metrics listener on {}", config.metrics_listen))?;
    let mqtt = match config.mqtt.listen {
        Some(addr) => {
            Some(bind(addr).with_context(|| format!("binding the MQTT listener on {addr}"))?)
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    // Handlers are installed before serving starts, so an early SIGTERM drains too.
    let signals = Signals::install()?;
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    unhidra_server::launch(
        config,
        Listeners {
            api,
            metrics: Some(metrics),
            mqtt,
        },
        shutdown,
    )
    .await
    .context("server failed")
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Cancels `shutdown` on the first signal.
    async fn cancel_on_signal(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: draining"),
            _ = self.int.recv() => tracing::info!("SIGINT: draining"),
            () = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    }
}

/// The password for `admin create-user`: prompted for twice on a terminal, otherwise the
/// first line of standard input.
fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading password")?;
        let second = rpassword::prompt_password("Again: ").context("reading password")?;
        if first != second {
            bail!("the passwords differ");
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(SecretString::from(password))
}

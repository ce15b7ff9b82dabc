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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
            let (kids, active) = admin::list_signing_keys(&config)?;
            for kid in kids {
                let mark = if kid == active { "  (active)" } else { "" };
                println!("{kid}{mark}");
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate) => {
            let kid = admin::rotate_signing_key(&config).await?;
            println!("added signing key {kid}; restart the server to sign with it");
            Ok(())
        }
        Command::Keys(KeysCommand::Retire { kid }) => {
            admin::retire_signing_key(&config, &kid).await?;
            println!("retired signing key {kid}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let api = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API listener on {}", config.listen))?;
    let metrics = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener on {}", config.metrics_listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    unhidra_server::launch(
        config,
        Listeners {
            api,
            metrics: Some(metrics),
        },
        shutdown,
    )
    .await
    .context("server failed")
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "cannot listen for signals; stop with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
        () = shutdown.cancelled() => return,
    }
    shutdown.cancel();
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

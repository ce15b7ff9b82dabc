//! The command line, and how it layers the configuration: defaults, then the TOML file
//! (`--config`), then `UNHIDRA_*` environment variables, then flags. clap reads each flag
//! from its environment variable when the flag is absent, so "flag or env" is one value that
//! overrides the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use unhidra_server::config::LogFormat;
use unhidra_server::Config;

#[derive(Debug, Parser)]
#[command(
    name = "unhidra",
    version,
    about = "Self-hosted real-time platform for people and devices"
)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(long, env = "UNHIDRA_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the database and key files (created 0700). Default ./data
    #[arg(long, env = "UNHIDRA_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "UNHIDRA_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Print the effective configuration (after file, environment and flags) as TOML.
    Config(ServeArgs),
    /// Administer users.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the API listener. Default 127.0.0.1:8080
    #[arg(long, env = "UNHIDRA_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus listener (path /metrics). Default 127.0.0.1:9091
    #[arg(long, env = "UNHIDRA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain: with --tls-key, the API listener serves HTTPS and WSS only.
    /// Default none (plain HTTP, for loopback or behind a TLS-terminating proxy)
    #[arg(long, env = "UNHIDRA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; refused unless group and others cannot read it (0600)
    #[arg(long, env = "UNHIDRA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Address of the native MQTT 3.1.1/5 listener for devices (TLS when --tls-cert is set).
    /// Default none (off)
    #[arg(long, env = "UNHIDRA_MQTT_LISTEN", value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Bridge to an existing MQTT broker: mqtt://host:port or mqtts://host:port. Put
    /// credentials (user:password@) in the environment variable or the config file, not on
    /// the command line. Default none (off)
    #[arg(long, env = "UNHIDRA_MQTT_BRIDGE", value_name = "URL")]
    pub mqtt_bridge: Option<String>,
    /// The Python interpreter with the ML worker's packages (scripts/setup-ml.sh makes
    /// .venv-ml/bin/python). Default python3; without the packages the server runs without ML
    #[arg(long, env = "UNHIDRA_ML_PYTHON", value_name = "FILE")]
    pub ml_python: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password is read from standard input (prompted for on a terminal).
    CreateUser {
        username: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys; the active one is marked.
    List,
    /// Add a new signing key. The server signs with it from its next start; tokens signed
    /// with older keys keep verifying until those keys are retired.
    Rotate,
    /// Remove an old signing key: tokens it signed stop verifying. The key a running server
    /// signs with is refused unless `--force` (its sessions would end at its next restart).
    Retire {
        kid: String,
        /// Retire it even though the running server signs with it.
        #[arg(long)]
        force: bool,
    },
}

impl Cli {
    /// The effective configuration for this invocation.
    pub fn load_config(&self, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.log_format = match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        if let Some(serve) = serve {
            if let Some(listen) = serve.listen {
                config.listen = listen;
            }
            if let Some(metrics) = serve.metrics_listen {
                config.metrics_listen = metrics;
            }
            if let Some(cert) = &serve.tls_cert {
                config.tls_cert = Some(cert.clone());
            }
            if let Some(key) = &serve.tls_key {
                config.tls_key = Some(key.clone());
            }
            if let Some(addr) = serve.mqtt_listen {
                config.mqtt.listen = Some(addr);
            }
            if let Some(url) = &serve.mqtt_bridge {
                config.mqtt.bridge = Some(url.clone());
            }
            if let Some(python) = &serve.ml_python {
                config.ml.python = python.clone();
            }
        }
        config.validate()?;
        Ok(config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

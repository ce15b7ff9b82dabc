//! `unhidra-bench`: parse the command line, run one benchmark, print its report.
//!
//! The in-process server gets a tokio runtime of its own, so its CPU time can be measured
//! apart from the load generator's (see `unhidra_bench::cpu`).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tracing_subscriber::EnvFilter;
use unhidra_bench::cpu::{CLIENT_THREAD, SERVER_THREAD};
use unhidra_bench::{
    chat_history, chat_throughput, device_keys, gateway_fanout, gateway_idle, gateway_reconnect,
    login_flood, login_memory, ml, mosquitto_fanout, mosquitto_idle, mosquitto_pairs, peer,
    progress, store_append, telemetry_store,
};

/// Benchmarks of the Unhidra server. Each starts a server on 127.0.0.1 with a fresh temporary
/// data dir and its rate limits raised (all load comes from loopback): in-process for the HTTP
/// benchmarks, as a separate `unhidra serve` process for the gateway and chat ones. It loads the server,
/// prints a summary and stops it. `ml` starts no server, only the Python ML workers.
/// `mosquitto` runs the same scenarios against Debian's Mosquitto, the peer Unhidra is compared
/// with; `--peer mosquitto` on `gateway-idle`, `gateway-fanout` and `chat-throughput --pairs`
/// runs both in one sitting and prints Unhidra's figures as ratios to Mosquitto's.
#[derive(Debug, Parser)]
#[command(name = "unhidra-bench", version)]
struct Cli {
    /// Print the results as JSON on stdout (the human summary then goes to stderr, and no
    /// progress bars are drawn).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Many clients logging in at once: throughput, latency, and /healthz during the flood.
    LoginFlood(login_flood::LoginFloodArgs),
    /// The server's resident memory before and after --logins logins (Argon2id hashes).
    LoginMemory(login_memory::LoginMemoryArgs),
    /// Device-key verifications per second: a reconnect storm over HTTP and direct calls.
    DeviceKeys(device_keys::DeviceKeysArgs),
    /// Server memory per idle authenticated WebSocket connection, up to --connections.
    GatewayIdle(gateway_idle::GatewayIdleArgs),
    /// One channel with --subscribers subscribers: deliveries/s and publish→receive latency.
    GatewayFanout(gateway_fanout::GatewayFanoutArgs),
    /// Telemetry points/s the SQLite store commits, in the server's batches, and query cost.
    TelemetryStore(telemetry_store::TelemetryStoreArgs),
    /// Messages/s the store takes through post_message with no network: the floor of a
    /// publish's durable part (run it under `taskset -c 1`).
    StoreAppend(store_append::StoreAppendArgs),
    /// --devices devices reconnecting over WebSocket at once: time until all are welcomed.
    GatewayReconnect(gateway_reconnect::GatewayReconnectArgs),
    /// History pages and search over --messages generated messages (default a million).
    ChatHistory(chat_history::ChatHistoryArgs),
    /// --channels active channels with a few subscribers each: messages and deliveries/s.
    ChatThroughput(chat_throughput::ChatThroughputArgs),
    /// Calls to the Python ML workers over their Unix sockets: latency one at a time and
    /// calls/s with many callers, for 1 and --workers workers, against in-process floors.
    Ml(ml::MlArgs),
    /// Debian's Mosquitto (started on a spare loopback port, no persistence) under the same
    /// scenarios over MQTT with `rumqttc`: the peer Unhidra is compared with.
    Mosquitto {
        #[command(subcommand)]
        scenario: MosquittoScenario,
    },
}

#[derive(Debug, Subcommand)]
enum MosquittoScenario {
    /// Broker memory per idle client (each subscribed to its own topic), --connections of them.
    Idle(mosquitto_idle::MosquittoIdleArgs),
    /// One topic with --subscribers QoS 0 subscribers: deliveries/s and publish→receive latency.
    Fanout(mosquitto_fanout::MosquittoFanoutArgs),
    /// --pairs QoS 1 publisher→subscriber pairs: acknowledged messages/s and latencies.
    Pairs(mosquitto_pairs::MosquittoPairsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.json {
        progress::hide();
    }
    // Quiet by default: an overloaded server logs a line per refused login (tower_http's trace
    // layer at ERROR for every 503), which would bury the report.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("error,tower_http=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREAD)
        // Blocking threads (Argon2) must outlive the run, or their CPU time is lost.
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .context("starting the load generator runtime")?;
    let server = server_runtime.handle().clone();

    let result = client_runtime.block_on(async move {
        match cli.command {
            Command::LoginFlood(args) => {
                let report = login_flood::run(args, &server).await?;
                output(&report, cli.json)?;
                login_flood::check(&report)
            }
            Command::DeviceKeys(args) => {
                let report = device_keys::run(args, &server).await?;
                output(&report, cli.json)?;
                device_keys::check(&report)
            }
            Command::LoginMemory(args) => {
                let report = login_memory::run(args).await?;
                output(&report, cli.json)?;
                login_memory::check(&report)
            }
            Command::GatewayIdle(args) if args.peer.peer.is_some() => {
                let report = peer::gateway_idle(args).await?;
                output(&report, cli.json)?;
                gateway_idle::check(&report.unhidra)?;
                mosquitto_idle::check(&report.mosquitto)
            }
            Command::GatewayIdle(args) => {
                let report = gateway_idle::run(args).await?;
                output(&report, cli.json)?;
                gateway_idle::check(&report)
            }
            Command::GatewayFanout(args) if args.peer.peer.is_some() => {
                let report = peer::gateway_fanout(args).await?;
                output(&report, cli.json)?;
                gateway_fanout::check(&report.unhidra)?;
                mosquitto_fanout::check(&report.mosquitto)
            }
            Command::GatewayFanout(args) => {
                let report = gateway_fanout::run(args).await?;
                output(&report, cli.json)?;
                gateway_fanout::check(&report)
            }
            Command::TelemetryStore(args) => {
                let report = telemetry_store::run(args).await?;
                output(&report, cli.json)?;
                telemetry_store::check(&report)
            }
            Command::StoreAppend(args) => {
                let report = store_append::run(args).await?;
                output(&report, cli.json)?;
                store_append::check(&report)
            }
            Command::GatewayReconnect(args) => {
                let report = gateway_reconnect::run(args).await?;
                output(&report, cli.json)?;
                gateway_reconnect::check(&report)
            }
            Command::ChatHistory(args) => {
                let report = chat_history::run(args).await?;
                output(&report, cli.json)?;
                chat_history::check(&report)
            }
            Command::ChatThroughput(args) if args.peer.peer.is_some() => {
                let report = peer::chat_throughput(args).await?;
                output(&report, cli.json)?;
                chat_throughput::check(&report.unhidra)?;
                mosquitto_pairs::check(&report.mosquitto)
            }
            Command::ChatThroughput(args) => {
                let report = chat_throughput::run(args).await?;
                output(&report, cli.json)?;
                chat_throughput::check(&report)
            }
            Command::Ml(args) => {
                let report = ml::run(args).await?;
                output(&report, cli.json)?;
                ml::check(&report)
            }
            Command::Mosquitto { scenario } => match scenario {
                MosquittoScenario::Idle(args) => {
                    let report = mosquitto_idle::run(args).await?;
                    output(&report, cli.json)?;
                    mosquitto_idle::check(&report)
                }
                MosquittoScenario::Fanout(args) => {
                    let report = mosquitto_fanout::run(args).await?;
                    output(&report, cli.json)?;
                    mosquitto_fanout::check(&report)
                }
                MosquittoScenario::Pairs(args) => {
                    let report = mosquitto_pairs::run(args).await?;
                    output(&report, cli.json)?;
                    mosquitto_pairs::check(&report)
                }
            },
        }
    });
    client_runtime.shutdown_timeout(Duration::from_secs(5));
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

fn output(report: &(impl Serialize + std::fmt::Display), json: bool) -> anyhow::Result<()> {
    if json {
        eprint!("{report}");
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("serialising the report")?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}

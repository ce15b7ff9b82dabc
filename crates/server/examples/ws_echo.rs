//! An echo WebSocket on exactly the gateway's stack, for conformance testing: not part of
//! the server, and never served by it.
//!
//! It accepts upgrades on any path with the gateway's settings
//! ([`unhidra_server::gateway::socket::configure`]: buffer sizes, message and frame limits,
//! the `unhidra.v1` subprotocol when offered) and reads with the gateway's logic
//! ([`socket::inbound`]: close 1002 for protocol violations, 1007 for invalid UTF-8, 1009 for
//! a message over the limit; [`socket::close`] and [`socket::answer_close`] for the closing
//! handshake), echoing every text and binary message. `scripts/ci-autobahn.sh` runs
//! Autobahn|Testsuite's fuzzing client against it.
//!
//! ```text
//! cargo run -p unhidra-server --example ws_echo -- --listen 127.0.0.1:0 --max-message-bytes 16777216
//! ```
//!
//! It prints `listening on ws://ADDR` once it accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use unhidra_server::gateway::socket::{self, Inbound};

#[derive(Parser)]
struct Args {
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The largest message and frame, as `gateway.max_message_bytes` (default: the
    /// gateway's). Autobahn's case 9 sends up to 16 MiB.
    #[arg(long)]
    max_message_bytes: Option<usize>,
}

#[derive(Clone, Copy)]
struct Settings {
    max_message_bytes: usize,
    write_timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let gateway = unhidra_server::Config::default().gateway;
    let settings = Settings {
        max_message_bytes: args.max_message_bytes.unwrap_or(gateway.max_message_bytes),
        write_timeout: Duration::from_millis(gateway.write_timeout_ms),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app = Router::new().fallback(any(upgrade)).with_state(settings);
    println!(
        "listening on ws://{addr} (max message {} bytes)",
        settings.max_message_bytes
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

async fn upgrade(State(settings): State<Settings>, upgrade: WebSocketUpgrade) -> Response {
    socket::configure(upgrade, settings.max_message_bytes)
        .on_upgrade(move |ws| echo(ws, settings.write_timeout))
}

/// Echoes messages until the peer closes, breaks the protocol or goes away.
async fn echo(ws: WebSocket, write_timeout: Duration) {
    let (mut sink, mut stream) = ws.split();
    loop {
        let reply = match socket::inbound(stream.next().await) {
            Inbound::Text(text) => Message::Text(text),
            Inbound::Binary(data) => Message::Binary(data),
            Inbound::Control => continue,
            Inbound::PeerClosed => return socket::answer_close(&mut sink, write_timeout).await,
            Inbound::Gone => return,
            Inbound::Violation(v) => {
                return socket::close(&mut sink, &mut stream, v.code, v.reason, write_timeout).await
            }
        };
        match tokio::time::timeout(write_timeout, sink.send(reply)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

//! A WebSocket client for the gateway (`GET /ws`, protocol `unhidra.v1`), built on
//! tokio-tungstenite.
//!
//! Each connection binds its socket to one of several loopback source addresses (127.0.0.1,
//! 127.0.0.2, …) before connecting: one source address reaches one server port only about
//! 28,000 times (the ephemeral port range), and sockets in TIME_WAIT from an earlier round
//! still hold their ports. The connection counts as open once the server's `welcome` frame
//! has arrived.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use unhidra_proto::ws::{BEARER_PREFIX, DEVICE_PREFIX, PROTOCOL};

pub type Ws = WebSocketStream<TcpStream>;

/// The client's read buffer. tungstenite's default (128 KiB, zero-filled on the first read)
/// would cost the load generator over a gigabyte for 10,000 connections; frames here are a
/// few hundred bytes.
const READ_BUFFER: usize = 4 * 1024;

/// What a connection authenticates as.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A user's access token.
    Bearer(String),
    /// A device's API key.
    Device(String),
}

impl Credential {
    fn subprotocol(&self) -> String {
        match self {
            Self::Bearer(token) => format!("{BEARER_PREFIX}{token}"),
            Self::Device(key) => format!("{DEVICE_PREFIX}{key}"),
        }
    }
}

/// Why a connection did not reach `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Not open (welcome received) within the connect timeout.
    Timeout,
    /// Binding or connecting the TCP socket failed (its error kind).
    Tcp(String),
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    /// The WebSocket handshake or first read failed otherwise.
    WebSocket(String),
    /// The first frame was not `welcome`, or the connection closed before it.
    NoWelcome(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Tcp(kind) => write!(f, "tcp: {kind}"),
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::WebSocket(err) => write!(f, "websocket: {err}"),
            Self::NoWelcome(what) => write!(f, "no welcome: {what}"),
        }
    }
}

/// Failures by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failures(pub BTreeMap<String, u64>);

impl Failures {
    pub fn record(&mut self, failure: &Failure) {
        *self.0.entry(failure.to_string()).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Opens connections to one server from a rotating set of source addresses.
#[derive(Debug, Clone)]
pub struct Connector {
    server: SocketAddr,
    sources: Vec<IpAddr>,
    timeout: Duration,
}

impl Connector {
    /// `source_addrs` loopback addresses, 127.0.0.1 upwards.
    pub fn new(server: SocketAddr, source_addrs: u8, timeout: Duration) -> Self {
        let sources = (1..=source_addrs.max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect();
        Self {
            server,
            sources,
            timeout,
        }
    }

    /// How long a connection may take to open.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn sources(&self) -> Vec<String> {
        self.sources.iter().map(ToString::to_string).collect()
    }

    /// Connection number `index` (which picks its source address): TCP connect, upgrade with
    /// `credential`, then wait for `welcome`, all within the timeout.
    pub async fn connect(&self, index: usize, credential: &Credential) -> Result<Ws, Failure> {
        let source = self
            .sources
            .get(index % self.sources.len().max(1))
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        match tokio::time::timeout(self.timeout, self.open(source, credential)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn open(&self, source: IpAddr, credential: &Credential) -> Result<Ws, Failure> {
        let tcp = |err: std::io::Error| Failure::Tcp(format!("{:?}", err.kind()));
        let socket = TcpSocket::new_v4().map_err(tcp)?;
        socket.bind(SocketAddr::new(source, 0)).map_err(tcp)?;
        let stream = socket.connect(self.server).await.map_err(tcp)?;
        stream.set_nodelay(true).map_err(tcp)?;

        let mut request = format!("ws://{}/ws", self.server)
            .into_client_request()
            .map_err(|err| Failure::WebSocket(err.to_string()))?;
        let protocols = format!("{PROTOCOL}, {}", credential.subprotocol());
        let value = HeaderValue::from_str(&protocols)
            .map_err(|_| Failure::WebSocket("credential is not a header value".into()))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|err| match err {
                    WsError::Http(response) => Failure::Status(response.status().as_u16()),
                    WsError::Io(err) => tcp(err),
                    other => Failure::WebSocket(other.to_string()),
                })?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match Incoming::parse(&text) {
                Some(frame) if frame.kind == "welcome" => Ok(ws),
                _ => Err(Failure::NoWelcome(format!("first frame {text}"))),
            },
            Some(Ok(Message::Close(frame))) => Err(Failure::NoWelcome(format!(
                "closed with {}",
                frame.map_or(0, |f| u16::from(f.code))
            ))),
            Some(Ok(other)) => Err(Failure::NoWelcome(format!("first frame {other:?}"))),
            Some(Err(err)) => Err(Failure::WebSocket(err.to_string())),
            None => Err(Failure::NoWelcome("connection closed".into())),
        }
    }
}

/// The fields of a server frame the benchmarks look at; the rest is skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(default, borrow)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub client_msg_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

impl<'a> Incoming<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The close code of a close frame (0 when it carried none).
pub fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(frame) => Some(frame.as_ref().map_or(0, |f| u16::from(f.code))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_parse_into_the_fields_we_need() {
        let m = Incoming::parse(
            r#"{"type":"message","channel":"c","id":"i","seq":7,"sender":"u","body":"123 x","ts":"2026-11-28T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(m.kind, "message");
        assert_eq!(m.seq, Some(7));
        assert_eq!(m.channel.as_deref(), Some("c"));
        assert_eq!(m.body.as_deref(), Some("123 x"));
        let w = Incoming::parse(
            r#"{"type":"welcome","connection_id":"x","principal":{"kind":"user","id":"u"},"max_message_bytes":65536}"#,
        )
        .unwrap();
        assert_eq!(w.kind, "welcome");
        let e = Incoming::parse(
            r#"{"type":"error","code":"rate_limited","message":"a \"b\"","ref":"m1"}"#,
        )
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("rate_limited"));
        assert_eq!(e.message.as_deref(), Some("a \"b\""));
    }

    #[test]
    fn sources_rotate_over_loopback_addresses() {
        let c = Connector::new("127.0.0.1:1".parse().unwrap(), 3, Duration::from_secs(1));
        assert_eq!(c.sources(), ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    }
}

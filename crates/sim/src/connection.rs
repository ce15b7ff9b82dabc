//! Opening a device's WebSocket: TCP, then the upgrade offering `unhidra.v1` and
//! `device.<key>` (as in `docs/protocol.md`), turned into the core's [`Disconnect`] when it
//! fails.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use unhidra_device_core::Disconnect;
use unhidra_proto::ws::{DEVICE_PREFIX, PROTOCOL};

pub type Ws = WebSocketStream<TcpStream>;

/// Frames here are small; tungstenite's default 128 KiB read buffer per connection would
/// make a thousand simulated devices cost more than a hundred megabytes.
const READ_BUFFER: usize = 8 * 1024;

/// Connects to `ws_url` (`ws://host:port/ws`) as the device with `key`.
pub async fn connect(ws_url: &str, key: &str) -> Result<Ws, Disconnect> {
    let mut request = ws_url.into_client_request().map_err(|_| Disconnect::Lost)?;
    let protocols = format!("{PROTOCOL}, {DEVICE_PREFIX}{key}");
    let value = HeaderValue::from_str(&protocols).map_err(|_| Disconnect::Lost)?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", value);
    let host = request.uri().host().unwrap_or("localhost").to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|_| Disconnect::Lost)?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let retry_after_ms = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.saturating_mul(1000));
            Err(Disconnect::Refused {
                status: response.status().as_u16(),
                retry_after_ms,
            })
        }
        Err(_) => Err(Disconnect::Lost),
    }
}

/// `http://host:port` or `ws://host:port` (with or without a path) → `ws://host:port/ws`.
pub fn ws_url(base: &str) -> Result<String, String> {
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        rest
    } else if let Some(rest) = base.strip_prefix("ws://") {
        rest
    } else if base.starts_with("https://") || base.starts_with("wss://") {
        return Err(
            "TLS (https/wss) is not supported by the simulator yet; use a plain \
                    listener or a TLS-terminating proxy's backend address"
                .into(),
        );
    } else {
        return Err(format!(
            "{base}: expected http://host:port or ws://host:port"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{base}: no host"));
    }
    Ok(format!("ws://{authority}/ws"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_the_ws_endpoint() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(ws_url("ws://h:1/ws").unwrap(), "ws://h:1/ws");
        assert_eq!(ws_url("http://h:1/api/").unwrap(), "ws://h:1/ws");
        assert!(ws_url("https://h").is_err());
        assert!(ws_url("h:1").is_err());
        assert!(ws_url("http://").is_err());
    }
}

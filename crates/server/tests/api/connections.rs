//! Connections that send nothing, or a partial request head and then nothing, are closed after
//! `connections.header_timeout_secs`, idle keep-alive connections too; one address cannot hold
//! more than `connections.max_per_ip` connections (an upgraded WebSocket counts), and others
//! are answered meanwhile. (The same with 1,100 sockets against the real binary under a
//! 1,024-file limit: crates/unhidra/tests/cli/silent_sockets.rs.)

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// Connects to `to` from the loopback address `from` (Linux routes all of 127/8 to lo).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// How long until the server closes `stream` (EOF or reset), reading and discarding what it
/// sends; `None` if it is still open after `within`.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A plain-HTTP GET /healthz from the loopback address `from`.
async fn healthz_from(from: &str, app: &TestApp) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn silent_partial_and_idle_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.connections.header_timeout_secs = 1).await;
    let limit = Duration::from_secs(10);

    let mut silent = connect_from("127.0.0.1", app.addr).await;
    let mut partial = connect_from("127.0.0.1", app.addr).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Slowloris: a byte of header now and then never completes the head in time either.
    let mut trickle = connect_from("127.0.0.1", app.addr).await;
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..40 {
            if trickle.write_all(b"X").await.is_err() {
                return Some(trickle);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let mut idle = connect_from("127.0.0.1", app.addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = [0u8; 15];
    idle.read_exact(&mut response).await.unwrap();
    assert_eq!(&response, b"HTTP/1.1 200 OK");

    for (what, stream) in [
        ("silent", &mut silent),
        ("partial head", &mut partial),
        ("idle keep-alive", &mut idle),
    ] {
        let closed = closed_after(stream, limit).await;
        assert!(closed.is_some(), "the {what} connection is still open");
    }
    assert!(
        trickling.await.unwrap().is_some(),
        "a head sent a byte at a time was never cut off"
    );
}

#[tokio::test]
async fn one_address_is_capped_and_others_are_still_answered() {
    let app = spawn_app_with(|c| {
        c.connections.max_per_ip = Some(3);
        c.connections.header_timeout_secs = 60;
    })
    .await;
    // From 127.0.0.3, which nothing else in the test uses (the client's pooled connections
    // come from 127.0.0.1).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.3", app.addr).await);
    }
    // The fourth from the same address is closed at once, long before the header timeout.
    let mut fourth = connect_from("127.0.0.3", app.addr).await;
    assert!(
        closed_after(&mut fourth, Duration::from_secs(5))
            .await
            .is_some(),
        "a fourth connection from a capped address stayed open"
    );
    // The held ones are still open, and another address is served.
    for stream in &mut held {
        assert!(closed_after(stream, Duration::from_millis(200))
            .await
            .is_none());
    }
    assert_eq!(healthz_from("127.0.0.2", &app).await, StatusCode::OK);
    // Closing one gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from("127.0.0.3", app.addr).await;
        if closed_after(&mut stream, Duration::from_millis(100))
            .await
            .is_none()
        {
            again = Some(stream);
            break;
        }
    }
    assert!(
        again.is_some(),
        "the closed connection's place never came back"
    );
}

#[tokio::test]
async fn an_upgraded_websocket_outlives_the_header_timeout_and_keeps_its_place() {
    let app = spawn_app_with(|c| {
        c.connections.max_per_ip = Some(2);
        c.connections.header_timeout_secs = 1;
        c.rate_limits.login_per_minute = 100;
        c.rate_limits.register_per_hour = 100;
    })
    .await;
    let alice = app.user("alice").await;
    // Let the requests' keep-alive connections run out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = crate::ws::user_ws(&app, &alice).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Still open after more than twice the header timeout: it answers a ping.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"still there?");
    // It holds one of the address's two places: one more connection fits, a second does not.
    let _second = connect_from("127.0.0.1", app.addr).await;
    let mut third = connect_from("127.0.0.1", app.addr).await;
    assert!(
        closed_after(&mut third, Duration::from_millis(800))
            .await
            .is_some(),
        "the WebSocket's place was given back at the upgrade"
    );
}

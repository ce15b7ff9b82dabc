//! A subscriber that stops reading is cut off, and the server's memory stays flat while it
//! is: measured on the server's own process, so nothing else shares the heap. Also checks the
//! gateway's metric names, which dashboards expect exactly.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{metric, rss_kib, ws_recv_json, ws_send, ws_subscribe, Server, PASSWORD};

#[tokio::test]
async fn a_slow_consumer_is_closed_while_server_memory_stays_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = crate::helpers::write_config(
        tmp.path(),
        &format!(
            "{}\n[gateway]\nchannel_buffer = 32\nwrite_timeout_ms = 1000\n",
            crate::helpers::RAISED_WS_LIMITS
        ),
    );
    let server = Server::start(&data, &["--config", config.to_str().unwrap()], &[]).await;
    let pid = server.process.pid();
    server.register("alice", PASSWORD).await;
    let bob_id = server.register("bob", PASSWORD).await;
    let alice = server.login("alice", PASSWORD).await;
    let bob = server.login("bob", PASSWORD).await;
    let room = server
        .create_channel(&alice.access, "firehose", &[&bob_id])
        .await;
    let (mut publisher, _) = server.ws_connect(&alice.access).await;
    let (mut fast, _) = server.ws_connect(&bob.access).await;
    // Bob's joining took seq 1; messages follow the subscribed seq.
    let (_, mut seq) = ws_subscribe(&mut fast, &room, None).await;

    let body = "z".repeat(30 * 1024);
    // Publishes `count` 30 KiB messages, each acked, each read by the fast subscriber.
    macro_rules! publish_round {
        ($tag:expr, $count:expr) => {
            for i in 0..$count {
                ws_send(
                    &mut publisher,
                    &json!({"type": "publish", "channel": room, "body": body,
                            "client_msg_id": format!("{}-{i}", $tag)}),
                )
                .await;
                let ack = ws_recv_json(&mut publisher).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                seq += 1;
                let got = ws_recv_json(&mut fast).await;
                assert_eq!(got["seq"], seq);
            }
        };
    }

    // Warm-up: caches and the allocator reach their working size with everyone keeping up.
    publish_round!("warm", 300);
    let before = rss_kib(pid);

    // The same again, plus a subscriber that never reads: 9 MB it does not take.
    let (mut slow, _) = server.ws_connect(&bob.access).await;
    ws_subscribe(&mut slow, &room, None).await;
    publish_round!("slow", 300);
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    assert!(
        growth < 4 * 1024,
        "server RSS grew by {growth} KiB ({before} → {after}) while a reader fell 9 MB behind"
    );

    // The slow reader was cut off: its stream ends before it has everything.
    let mut received = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = slow.next().await {
            match frame {
                Ok(WsMessage::Text(_)) => received += 1,
                Ok(WsMessage::Close(frame)) => return Some(frame.map(|f| u16::from(f.code))),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the slow consumer was never cut off");
    assert!(
        received < 300,
        "the slow reader got all {received} messages"
    );
    if let Some(code) = outcome {
        assert_eq!(code, Some(1013));
    }

    // A refused handshake, to be counted by reason.
    let mut request = format!("ws://{}/ws", server.api)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "unhidra.v1, bearer.not-a-token".parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    // The gateway's metrics, under the names dashboards expect.
    let text = server.metrics().await;
    for (name, labels) in [
        ("gateway_connections_total", vec![("kind", "user")]),
        ("gateway_connections_active", vec![]),
        ("gateway_messages_total", vec![("direction", "in")]),
        ("gateway_messages_total", vec![("direction", "out")]),
        ("gateway_message_latency_seconds_count", vec![]),
        ("gateway_auth_failures_total", vec![("reason", "malformed")]),
    ] {
        let value = metric(&text, name, &labels);
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{name} {labels:?}: {value:?}"
        );
    }
    ws_send(&mut publisher, &json!({"type": "ping"})).await;
    assert_eq!(ws_recv_json(&mut publisher).await["type"], "pong");
    server.stop().await;
}

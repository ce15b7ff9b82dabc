//! SIGTERM with WebSocket clients connected: every client gets a close frame with 1001
//! (going away), every publish acked before it is stored, and the process exits 0.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    publish_until_closed, str_field, wait_until, ws_drain, ws_subscribe, Ack, Server, Ws, PASSWORD,
};

/// Bob and carol joining the channel take its first seqs; messages follow.
const JOINS: i64 = 2;

/// Acks the publisher collects before the signal.
const ACKS_BEFORE_SIGNAL: usize = 30;
/// How long the process, and each client's close, may take after SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// What a listening client saw until the server closed the connection.
struct Listened {
    messages: Vec<Value>,
    close: Option<CloseFrame>,
    end: String,
}

/// Reads until the connection ends, keeping `message` frames and the close frame (and
/// skipping presence frames).
async fn listen_until_closed(mut ws: Ws, limit: Duration) -> Listened {
    let deadline = tokio::time::Instant::now() + limit;
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("the connection was still open after {limit:?}"));
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                if frame["type"] == "presence" {
                    // People coming online: not part of the channel.
                    continue;
                }
                assert_eq!(frame["type"], "message", "unexpected frame {frame}");
                messages.push(frame);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(close))) => {
                ws_drain(&mut ws, Duration::from_secs(5)).await;
                return Listened {
                    messages,
                    end: format!("close frame {close:?}"),
                    close,
                };
            }
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(e)) => {
                return Listened {
                    messages,
                    close: None,
                    end: format!("read failed: {e}"),
                }
            }
            None => {
                return Listened {
                    messages,
                    close: None,
                    end: "end of stream".to_owned(),
                }
            }
        }
    }
}

fn assert_going_away(who: &str, close: Option<&CloseFrame>, end: &str) {
    let frame = close.unwrap_or_else(|| panic!("{who} got no close frame: {end}"));
    assert_eq!(frame.code, CloseCode::Away, "{who}: {frame:?}");
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn sigterm_closes_every_websocket_with_1001_and_keeps_acked_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;

    server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let carol = server.register("carol", PASSWORD).await;
    let alice_tokens = server.login("alice", PASSWORD).await;
    let bob_tokens = server.login("bob", PASSWORD).await;
    let carol_tokens = server.login("carol", PASSWORD).await;
    let channel = server
        .create_channel(&alice_tokens.access, "lobby", &[&bob, &carol])
        .await;

    // Three subscribers (with and without `since`), one idle connection, one publisher.
    let mut listeners = Vec::new();
    for (who, token, since) in [
        ("alice (subscribed since 0)", &alice_tokens.access, Some(0)),
        ("bob (subscribed)", &bob_tokens.access, None),
        ("carol (subscribed since 0)", &carol_tokens.access, Some(0)),
    ] {
        let (mut ws, _) = server.ws_connect(token).await;
        let (replayed, seq) = ws_subscribe(&mut ws, &channel, since).await;
        assert!(replayed.is_empty());
        assert_eq!(seq, JOINS);
        listeners.push((who, ws));
    }
    let (idle, welcome) = server.ws_connect(&carol_tokens.access).await;
    assert_eq!(welcome["principal"]["id"], carol.as_str(), "{welcome}");
    listeners.push(("carol (idle)", idle));
    let listeners: Vec<_> = listeners
        .into_iter()
        .map(|(who, ws)| {
            (
                who,
                tokio::spawn(listen_until_closed(ws, Duration::from_secs(120))),
            )
        })
        .collect();

    let (publisher_ws, _) = server.ws_connect(&bob_tokens.access).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_until_closed(
        publisher_ws,
        channel.clone(),
        "bob".to_owned(),
        4,
        Arc::clone(&acked),
        Duration::from_secs(120),
    ));
    wait_until(
        "the publisher's first acks",
        Duration::from_secs(30),
        || acked.load(Ordering::SeqCst) >= ACKS_BEFORE_SIGNAL,
    )
    .await;

    server.sigterm();
    let signalled = Instant::now();

    let log = tokio::time::timeout(EXIT_WITHIN, publisher)
        .await
        .expect("the publisher was not closed within 10 s of SIGTERM")
        .expect("publisher task");
    assert_going_away("the publisher", log.close.as_ref(), &log.end);
    let mut heard = Vec::new();
    for (who, listener) in listeners {
        let listened = tokio::time::timeout(EXIT_WITHIN, listener)
            .await
            .unwrap_or_else(|_| panic!("{who} was not closed within 10 s of SIGTERM"))
            .expect("listener task");
        assert_going_away(who, listened.close.as_ref(), &listened.end);
        heard.push((who, listened.messages));
    }

    let status = server
        .wait_exit(EXIT_WITHIN.saturating_sub(signalled.elapsed()))
        .await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; output:\n{}",
        server.logs().join("\n")
    );
    eprintln!(
        "{} acks, {} in flight at SIGTERM; exited {:?} after the signal",
        log.acks.len(),
        log.in_flight().len(),
        signalled.elapsed()
    );

    // ---- After a restart: every acked publish is stored as acked ----
    let server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;
    let (mut ws, _) = server.ws_connect(&alice_tokens.access).await;
    let (messages, last) = ws_subscribe(&mut ws, &channel, Some(0)).await;
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (JOINS + 1..=JOINS + i64::try_from(messages.len()).unwrap()).collect();
    assert_eq!(
        seqs, expected,
        "stored seqs are not exactly gap-free after the joins"
    );
    assert_eq!(last, JOINS + i64::try_from(messages.len()).unwrap());
    let stored: HashMap<String, Ack> = messages
        .iter()
        .map(|m| {
            assert_eq!(m["sender"], bob.as_str(), "{m}");
            (str_field(m, "body"), Ack::of_message(m))
        })
        .collect();
    assert_eq!(stored.len(), messages.len(), "a body is stored twice");
    for (client_msg_id, ack) in &log.acks {
        assert_eq!(
            stored.get(client_msg_id),
            Some(ack),
            "acked {client_msg_id} is not stored as acked"
        );
    }
    // A graceful shutdown finishes the publish it is handling and flushes its ack before
    // the close frame, so nothing is stored that the publisher was not told about.
    assert_eq!(
        stored.len(),
        log.acks.len(),
        "stored but never acked: {:?}",
        log.in_flight()
            .iter()
            .filter(|id| stored.contains_key(*id))
            .collect::<Vec<_>>()
    );

    // What the subscribers heard before the close is each a gap-free prefix of the channel.
    for (who, heard) in heard {
        for (i, message) in heard.iter().enumerate() {
            assert_eq!(
                message["seq"].as_i64(),
                Some(JOINS + i64::try_from(i).unwrap() + 1),
                "{who} heard seqs out of order or with a gap"
            );
            assert_eq!(
                stored.get(&str_field(message, "body")),
                Some(&Ack::of_message(message)),
                "{who} heard {message}, which is not what is stored"
            );
        }
    }
    drop(ws);
    server.stop().await;
}

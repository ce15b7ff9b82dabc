//! The WebSocket gateway with a real client (tokio-tungstenite) over real sockets.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn open(
    app: &TestApp,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
}

/// The HTTP status a refused handshake got.
pub(crate) async fn refused_with(
    app: &TestApp,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> u16 {
    match open(app, protocols, headers).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

/// A connected client that has read its `welcome`.
pub(crate) async fn connect(app: &TestApp, credential: &str) -> (Ws, Value) {
    let (mut ws, response) = open(app, &["unhidra.v1", credential], &[])
        .await
        .expect("handshake refused");
    assert_eq!(response.headers()["sec-websocket-protocol"], "unhidra.v1");
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

pub(crate) async fn user_ws(app: &TestApp, user: &User) -> Ws {
    connect(app, &format!("bearer.{}", user.access)).await.0
}

/// Frames with no place in a channel's timeline, sent as things happen.
pub(crate) const PASSING: [&str; 6] = [
    "presence",
    "typing",
    "receipt",
    "channel_added",
    "channel_removed",
    "device_state",
];

/// The next JSON frame, skipping pings and passing frames (see [`next_any`]).
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = next_any(ws).await;
        if !PASSING.contains(&frame["type"].as_str().unwrap_or_default()) {
            return frame;
        }
    }
}

/// The next frame of this type, skipping any other.
pub(crate) async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = next_any(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// The next JSON frame, skipping pings only.
pub(crate) async fn next_any(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("stream ended")
            .expect("read failed");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code.
pub(crate) async fn closed_with(ws: &mut Ws, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("not closed in time");
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("read failed before a close frame: {err}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

pub(crate) async fn channel(app: &TestApp, owner: &User, name: &str, members: &[&User]) -> String {
    let r = app
        .post_as(
            &owner.access,
            "/api/v1/channels",
            &json!({"name": name, "private": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_str().unwrap().to_owned();
    for member in members {
        let r = app
            .post_as(
                &owner.access,
                &format!("/api/v1/channels/{id}/members"),
                &json!({"user_id": member.id}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    id
}

pub(crate) async fn subscribe(ws: &mut Ws, channel: &str, since: Option<i64>) -> Vec<Value> {
    let mut frame = json!({"type": "subscribe", "channel": channel});
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    send(ws, frame).await;
    let mut replayed = Vec::new();
    loop {
        let f = next(ws).await;
        match f["type"].as_str().unwrap() {
            "message" => replayed.push(f),
            // Channel events (members joining…) replay too; these tests look at messages.
            _ if f["seq"].is_i64() && f["type"] != "subscribed" => {}
            "subscribed" => {
                assert_eq!(f["channel"], channel);
                return replayed;
            }
            _ => panic!("unexpected {f}"),
        }
    }
}

pub(crate) async fn publish(ws: &mut Ws, channel: &str, body: &str, client_msg_id: &str) -> Value {
    send(
        ws,
        json!({"type": "publish", "channel": channel, "body": body, "client_msg_id": client_msg_id}),
    )
    .await;
    next(ws).await
}

/// The channel's newest seq, as `user`'s channel list shows it (members joining take seqs,
/// so a channel's first message is not always 1).
pub(crate) async fn last_seq(app: &TestApp, user: &User, channel: &str) -> i64 {
    let list = body(app.get_as(&user.access, "/api/v1/channels").await).await;
    list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == channel)
        .expect("a member's channel")["last_seq"]
        .as_i64()
        .unwrap()
}

pub(crate) fn seqs(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn users_and_devices_connect_and_the_credential_is_never_echoed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (_device_id, key) = app.device(&alice, "sensor").await;

    let (_ws, welcome) = connect(&app, &format!("bearer.{}", alice.access)).await;
    assert_eq!(
        welcome["principal"],
        json!({"kind": "user", "id": alice.id})
    );
    assert_eq!(welcome["max_message_bytes"], 65536);
    assert_eq!(welcome["publish_window"], 64);

    let (ws, response) = open(&app, &["unhidra.v1", &format!("device.{key}")], &[])
        .await
        .unwrap();
    let answered = response.headers()["sec-websocket-protocol"]
        .to_str()
        .unwrap();
    assert_eq!(answered, "unhidra.v1");
    assert!(!format!("{:?}", response.headers()).contains(&key[8..]));
    let mut ws = ws;
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["principal"]["kind"], "device");
}

#[tokio::test]
async fn bad_credentials_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let bearer = format!("bearer.{}", alice.access);

    assert_eq!(refused_with(&app, &[], &[]).await, 400);
    assert_eq!(refused_with(&app, &[&bearer], &[]).await, 400);
    assert_eq!(refused_with(&app, &["unhidra.v1"], &[]).await, 401);
    assert_eq!(
        refused_with(&app, &["unhidra.v1", "bearer.not-a-jwt"], &[]).await,
        401
    );
    assert_eq!(
        refused_with(&app, &["unhidra.v1", "device.unh_dk_nope"], &[]).await,
        401
    );
    let device = format!("device.{key}");
    assert_eq!(
        refused_with(&app, &["unhidra.v1", &bearer, &device], &[]).await,
        401
    );

    // Revoked device key.
    app.delete_as(&alice.access, &format!("/api/v1/devices/{device_id}"))
        .await;
    assert_eq!(refused_with(&app, &["unhidra.v1", &device], &[]).await, 401);

    // Expired access token.
    app.clock.advance(time::Duration::minutes(16));
    assert_eq!(refused_with(&app, &["unhidra.v1", &bearer], &[]).await, 401);

    // A token whose session was logged out.
    app.clock.advance(time::Duration::minutes(-16));
    app.post(
        "/api/v1/auth/logout",
        &json!({"refresh_token": alice.refresh}),
    )
    .await;
    assert_eq!(refused_with(&app, &["unhidra.v1", &bearer], &[]).await, 401);
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused() {
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 100;
        c.gateway.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let alice = app.user("alice").await;
    let bearer = format!("bearer.{}", alice.access);
    let protocols = ["unhidra.v1", bearer.as_str()];
    assert_eq!(
        refused_with(&app, &protocols, &[("origin", "https://evil.example")]).await,
        403
    );
    let own = format!("http://{}", app.addr);
    assert!(open(&app, &protocols, &[("origin", &own)]).await.is_ok());
    assert!(
        open(&app, &protocols, &[("origin", "https://chat.example.com")])
            .await
            .is_ok()
    );
    // No Origin: not a browser.
    assert!(open(&app, &protocols, &[]).await.is_ok());
}

#[tokio::test]
async fn only_members_subscribe_and_publish() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let room = channel(&app, &alice, "room", &[]).await;
    let mut ws = user_ws(&app, &mallory).await;
    send(&mut ws, json!({"type": "subscribe", "channel": room})).await;
    let e = next(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    assert_eq!(e["ref"], room.as_str());
    let e = publish(&mut ws, &room, "let me in", "m-1").await;
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["ref"], "m-1");
    // An oversized id is refused, and echoed only in part.
    let long_id = "i".repeat(1000);
    let e = publish(&mut ws, &room, "x", &long_id).await;
    assert_eq!(e["code"], "invalid_field");
    assert_eq!(e["ref"].as_str().unwrap().len(), 64);
    // Nothing was stored.
    let mut owner = user_ws(&app, &alice).await;
    assert!(subscribe(&mut owner, &room, Some(0)).await.is_empty());

    // A private channel cannot be joined by oneself; a public one can.
    let r = app
        .post_as(
            &mallory.access,
            &format!("/api/v1/channels/{room}/members"),
            &json!({"user_id": mallory.id}),
        )
        .await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .post_as(
            &alice.access,
            "/api/v1/channels",
            &json!({"name": "lobby", "private": false}),
        )
        .await;
    let lobby = body(r).await["id"].as_str().unwrap().to_owned();
    let r = app
        .post_as(
            &mallory.access,
            &format!("/api/v1/channels/{lobby}/members"),
            &json!({"user_id": mallory.id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    subscribe(&mut ws, &lobby, None).await;
    assert_eq!(
        publish(&mut ws, &lobby, "hi all", "m-2").await["type"],
        "ack"
    );
}

#[tokio::test]
async fn a_publish_is_acked_once_stored_and_a_retry_is_stored_once() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    assert!(subscribe(&mut b, &room, None).await.is_empty());
    let base = last_seq(&app, &alice, &room).await;
    assert_eq!(base, 1, "bob's joining");

    let ack = publish(&mut a, &room, "hello", "c-1").await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["client_msg_id"], "c-1");
    assert_eq!(ack["seq"], base + 1);
    let got = next(&mut b).await;
    assert_eq!(got["type"], "message");
    assert_eq!(got["id"], ack["id"]);
    assert_eq!(
        (got["seq"].as_i64(), got["body"].as_str()),
        (Some(base + 1), Some("hello"))
    );
    assert_eq!(got["sender"], alice.id.as_str());
    assert_eq!(got["channel"], room.as_str());
    assert_eq!(got["client_msg_id"], "c-1");

    // The same client_msg_id again (a retry after a lost ack): same id and seq, stored once.
    let retry = publish(&mut a, &room, "hello", "c-1").await;
    assert_eq!(
        (retry["id"].clone(), retry["seq"].clone()),
        (ack["id"].clone(), ack["seq"].clone())
    );
    // Reusing an id for a different message is a client bug, refused rather than hidden.
    let conflict = publish(&mut a, &room, "something else", "c-1").await;
    assert_eq!(
        (conflict["code"].as_str(), conflict["ref"].as_str()),
        (Some("conflict"), Some("c-1"))
    );
    let second = publish(&mut a, &room, "again", "c-2").await;
    assert_eq!(second["seq"], base + 2);
    // Bob sees the second message next: the retry was not fanned out again.
    assert_eq!(next(&mut b).await["seq"], base + 2);
    let mut fresh = user_ws(&app, &bob).await;
    assert_eq!(
        seqs(&subscribe(&mut fresh, &room, Some(0)).await),
        [base + 1, base + 2]
    );
}

/// A connection may send publishes without waiting for their acks: the server keeps reading
/// while up to `publish_window` wait for the store, stores them in the order they were sent,
/// and answers each (in whatever order) by its client_msg_id.
#[tokio::test]
async fn publishes_sent_without_waiting_are_all_acked_and_stored_in_the_order_sent() {
    const COUNT: usize = 300;
    let app = spawn_app_with(|config| config.rate_limits.ws_messages_per_second = 100_000).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    assert!(subscribe(&mut b, &room, None).await.is_empty());
    let base = last_seq(&app, &alice, &room).await;

    for i in 0..COUNT {
        let frame = json!({"type": "publish", "channel": room, "body": format!("m{i}"),
                           "client_msg_id": format!("p-{i}")});
        a.feed(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    let mut acked = HashMap::new();
    while acked.len() < COUNT {
        let answer = next(&mut a).await;
        assert_eq!(answer["type"], "ack", "{answer}");
        let id = answer["client_msg_id"].as_str().unwrap().to_owned();
        assert!(acked.insert(id, answer["seq"].as_i64().unwrap()).is_none());
    }
    let in_send_order: Vec<i64> = (0..COUNT).map(|i| acked[&format!("p-{i}")]).collect();
    let expected: Vec<i64> = (1..=COUNT as i64).map(|n| base + n).collect();
    assert_eq!(
        in_send_order, expected,
        "stored in the order sent, gap-free"
    );
    let mut delivered = Vec::new();
    while delivered.len() < COUNT {
        let frame = next(&mut b).await;
        assert_eq!(frame["type"], "message");
        delivered.push((
            frame["seq"].as_i64().unwrap(),
            frame["body"].as_str().unwrap().to_owned(),
        ));
    }
    let sent: Vec<(i64, String)> = (0..COUNT)
        .map(|i| (base + 1 + i as i64, format!("m{i}")))
        .collect();
    assert_eq!(delivered, sent, "delivered once each, in seq order");
}

#[tokio::test]
async fn seqs_are_gap_free_and_replay_resumes_after_a_disconnect() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;
    let base = last_seq(&app, &alice, &room).await;
    for i in 1..=2 {
        publish(&mut a, &room, &format!("m{i}"), &format!("id{i}")).await;
    }
    assert_eq!(next(&mut b).await["seq"], base + 1);
    assert_eq!(next(&mut b).await["seq"], base + 2);
    drop(b);
    for i in 3..=5 {
        publish(&mut a, &room, &format!("m{i}"), &format!("id{i}")).await;
    }
    let mut b = user_ws(&app, &bob).await;
    let replayed = subscribe(&mut b, &room, Some(base + 2)).await;
    assert_eq!(seqs(&replayed), [base + 3, base + 4, base + 5]);
    assert_eq!(replayed[0]["body"], "m3");
    publish(&mut a, &room, "m6", "id6").await;
    assert_eq!(next(&mut b).await["seq"], base + 6);

    // A `since` past the newest message is clamped, and nothing that follows is hidden.
    let mut c = user_ws(&app, &bob).await;
    send(
        &mut c,
        json!({"type": "subscribe", "channel": room, "since": 99}),
    )
    .await;
    let subscribed = next(&mut c).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["seq"].as_i64()),
        (Some("subscribed"), Some(base + 6))
    );
    publish(&mut a, &room, "m7", "id7").await;
    assert_eq!(next(&mut c).await["seq"], base + 7);
}

#[tokio::test]
async fn concurrent_publishers_are_delivered_in_seq_order_without_gaps() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let mut writers = Vec::new();
    for i in 0..4 {
        writers.push(app.user(&format!("writer{i}")).await);
    }
    let refs: Vec<&User> = writers.iter().collect();
    let room = channel(&app, &owner, "busy", &refs).await;
    let mut reader = user_ws(&app, &owner).await;
    subscribe(&mut reader, &room, None).await;
    let base = last_seq(&app, &owner, &room).await;
    let mut tasks = Vec::new();
    for (w, writer) in writers.iter().enumerate() {
        let mut ws = user_ws(&app, writer).await;
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let ack = publish(&mut ws, &room, "x", &format!("w{w}-{i}")).await;
                assert_eq!(ack["type"], "ack", "{ack}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(next(&mut reader).await["seq"].as_i64().unwrap());
    }
    assert_eq!(got, (base + 1..=base + 100).collect::<Vec<i64>>());
}

#[tokio::test]
async fn revoking_a_device_closes_its_socket_within_a_second() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (_other_id, other_key) = app.device(&alice, "other").await;
    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    let (mut other, _) = connect(&app, &format!("device.{other_key}")).await;
    let r = app
        .delete_as(&alice.access, &format!("/api/v1/devices/{device_id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(closed_with(&mut ws, Duration::from_secs(1)).await, 1008);
    // The other device is still connected.
    send(&mut other, json!({"type": "ping"})).await;
    assert_eq!(next(&mut other).await["type"], "pong");
}

#[tokio::test]
async fn logging_out_everywhere_closes_the_users_sockets() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut a1 = user_ws(&app, &alice).await;
    let mut a2 = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    let r = app
        .post_as(&alice.access, "/api/v1/auth/logout-all", &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(closed_with(&mut a1, Duration::from_secs(1)).await, 1008);
    assert_eq!(closed_with(&mut a2, Duration::from_secs(1)).await, 1008);
    send(&mut b, json!({"type": "ping"})).await;
    assert_eq!(next(&mut b).await["type"], "pong");
}

#[tokio::test]
async fn handshakes_are_limited_to_30_a_minute_per_user_and_60_per_address() {
    let app = spawn_app_with(|c| c.rate_limits.register_per_hour = 100).await;
    let alice = app.user("alice").await;
    let bearer = format!("bearer.{}", alice.access);
    let mut open_sockets = Vec::new();
    for _ in 0..30 {
        open_sockets.push(open(&app, &["unhidra.v1", &bearer], &[]).await.unwrap());
    }
    assert_eq!(refused_with(&app, &["unhidra.v1", &bearer], &[]).await, 429);
    // Other users from the same address still get in, until the address has used 60.
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    for _ in 0..20 {
        open_sockets.push(
            open(
                &app,
                &["unhidra.v1", &format!("bearer.{}", bob.access)],
                &[],
            )
            .await
            .unwrap(),
        );
    }
    for _ in 0..9 {
        open_sockets.push(
            open(
                &app,
                &["unhidra.v1", &format!("bearer.{}", carol.access)],
                &[],
            )
            .await
            .unwrap(),
        );
    }
    // 30 + 1 refused + 20 + 9 = 60 handshakes from this address so far.
    assert_eq!(
        refused_with(
            &app,
            &["unhidra.v1", &format!("bearer.{}", carol.access)],
            &[]
        )
        .await,
        429
    );
}

#[tokio::test]
async fn frames_are_limited_to_50_a_second_and_floods_are_closed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    // A burst of 55: the first 50 are answered; the rest that arrive within the same
    // instant are refused with rate_limited, each answered, none dropped silently.
    for _ in 0..55 {
        ws.feed(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..55 {
        replies.push(next(&mut ws).await);
    }
    assert!(
        replies[..50].iter().all(|r| r["type"] == "pong"),
        "{:?}",
        &replies[..50]
    );
    let refused = replies
        .iter()
        .filter(|r| r["code"] == "rate_limited")
        .count();
    assert!(refused >= 1, "no frame was refused");
    assert_eq!(
        replies.iter().filter(|r| r["type"] == "pong").count() + refused,
        55
    );
    let metrics = unhidra_server::metrics::install().render();
    assert!(
        metrics.contains("gateway_rate_limit_hits_total{kind=\"message\"}"),
        "{metrics}"
    );

    // Sustained abuse (far past twice the allowance) is closed with 1008.
    let mut flood = user_ws(&app, &alice).await;
    for _ in 0..300 {
        if flood
            .feed(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = flood.flush().await;
    assert_eq!(closed_with(&mut flood, WAIT).await, 1008);
}

#[tokio::test]
async fn a_message_over_64_kib_is_closed_with_1009() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    let big = "x".repeat(65 * 1024);
    ws.send(Message::Text(big.into())).await.unwrap();
    assert_eq!(closed_with(&mut ws, WAIT).await, 1009);
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    for (raw, code) in [
        ("not json", "invalid_json"),
        ("{\"type\":\"nope\"}", "invalid_json"),
        ("{\"type\":\"subscribe\"}", "invalid_json"),
        (
            "{\"type\":\"telemetry\",\"metrics\":{\"t\":1}}",
            "forbidden",
        ),
    ] {
        ws.send(Message::Text(raw.into())).await.unwrap();
        let e = next(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{raw}"
        );
    }
    ws.send(Message::Binary(vec![0xff, 0xfe, 0x00].into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["code"], "unsupported_frame");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn invalid_utf8_gets_an_error_then_close_1007() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    // A raw text frame with invalid UTF-8, written below tungstenite's checks.
    let frame = tungstenite::protocol::frame::Frame::message(
        vec![0xc3, 0x28],
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(frame)).await.unwrap();
    let e = next(&mut ws).await;
    assert_eq!(e["code"], "unsupported_frame");
    assert_eq!(closed_with(&mut ws, WAIT).await, 1007);
}

#[tokio::test]
async fn devices_send_telemetry_and_cannot_use_channels() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", &[]).await;
    let (_id, key) = app.device(&alice, "sensor").await;
    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"temp": 21.5, "rssi": -61}}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "heartbeat", "firmware_version": "1.2.0", "free_memory": 40000}),
    )
    .await;
    // Good frames get no answer; the ping proves they were processed without error.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"bad name": 1}}),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "invalid_field");
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"t": 1}, "ts": "2000-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "invalid_field");
    send(&mut ws, json!({"type": "subscribe", "channel": room})).await;
    assert_eq!(next(&mut ws).await["code"], "forbidden");
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_and_publishers_are_not_held_up() {
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 100;
        c.rate_limits.ws_messages_per_second = 10_000;
        c.gateway.channel_buffer = 16;
        c.gateway.write_timeout_ms = 500;
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "firehose", &[&bob]).await;
    let mut fast = user_ws(&app, &bob).await;
    subscribe(&mut fast, &room, None).await;
    let mut publisher = user_ws(&app, &alice).await;
    let body = "y".repeat(30 * 1024);
    let count = 400; // 12 MB a round, far more than socket buffers hold
    let mut seq = last_seq(&app, &alice, &room).await;
    // Round one, everyone keeping up.
    for i in 0..count {
        let ack = publish(&mut publisher, &room, &body, &format!("warm{i}")).await;
        assert_eq!(ack["type"], "ack");
        seq += 1;
        assert_eq!(next(&mut fast).await["seq"], seq);
    }
    // Round two, with a subscriber that never reads.
    let mut slow = user_ws(&app, &bob).await;
    subscribe(&mut slow, &room, None).await;
    for i in 0..count {
        let ack = publish(&mut publisher, &room, &body, &format!("p{i}")).await;
        assert_eq!(ack["type"], "ack");
        // The fast reader keeps up; the publisher is never held up by the slow one.
        seq += 1;
        assert_eq!(next(&mut fast).await["seq"], seq);
    }
    // That the server's memory stays flat meanwhile is measured on the binary, in its own
    // process (crates/unhidra/tests/cli/slow_consumer.rs): here other tests share the heap.

    // The slow reader finds the stream cut short, not hanging and not complete.
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = slow.next().await {
            match frame {
                Ok(Message::Text(_)) => received += 1,
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the slow consumer was never cut off");
    assert!(
        received < count,
        "the slow reader got all {received} messages"
    );
    if let Some(code) = ended {
        assert_eq!(code, 1013);
    }
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (_id, key) = app.device(&alice, "sensor").await;
    let mut user = user_ws(&app, &alice).await;
    let (mut device, _) = connect(&app, &format!("device.{key}")).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(closed_with(&mut user, WAIT).await, 1001);
    assert_eq!(closed_with(&mut device, WAIT).await, 1001);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 100;
        c.gateway.ping_interval_ms = 200;
    })
    .await;
    let alice = app.user("alice").await;
    // A raw TCP peer that completes the handshake and then never reads or answers.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: unhidra.v1, bearer.{}\r\n\r\n",
        app.addr, alice.access
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    // Meanwhile a live client keeps reading (tungstenite answers pings as it reads) and
    // stays.
    let mut live = user_ws(&app, &alice).await;
    let silent_dropped = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the 101, the welcome, pings
            }
        }
    };
    // Reads for ten ping intervals, long enough for the silent peer to be dropped.
    let live_reads = async {
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(frame)) = tokio::time::timeout_at(until, live.next()).await {
            assert!(frame.is_ok(), "the live client was dropped: {frame:?}");
        }
    };
    let (dropped, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(5), silent_dropped),
        live_reads
    );
    assert!(dropped.is_ok(), "the silent peer was not dropped");
    send(&mut live, json!({"type": "ping"})).await;
    assert_eq!(next(&mut live).await["type"], "pong");
}

#[tokio::test]
async fn administrators_list_and_close_live_connections() {
    let app = spawn_app().await;
    unhidra_server::admin::create_user(&app.config, "root", PASSWORD.to_owned().into(), true)
        .await
        .unwrap();
    let root = body(app.login("root", PASSWORD).await).await;
    let root_token = root["access_token"].as_str().unwrap().to_owned();
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (mut user_socket, welcome) = connect(&app, &format!("bearer.{}", alice.access)).await;
    let (_device_socket, _) = connect(&app, &format!("device.{key}")).await;
    send(&mut user_socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut user_socket).await["type"], "pong");

    // Regular users may not look.
    assert_error(
        app.get_as(&alice.access, "/api/v1/admin/connections").await,
        403,
        "forbidden",
    )
    .await;

    let list = body(app.get_as(&root_token, "/api/v1/admin/connections").await).await;
    let connections = list["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2, "{list}");
    let mine = connections
        .iter()
        .find(|c| c["connection_id"] == welcome["connection_id"])
        .unwrap();
    assert_eq!(mine["kind"], "user");
    assert_eq!(mine["principal_id"], alice.id.as_str());
    assert_eq!(mine["ip"], "127.0.0.1");
    assert_eq!(mine["frames_in"], 1);
    assert!(mine["frames_out"].as_u64().unwrap() >= 2, "{mine}");
    assert!(connections
        .iter()
        .any(|c| c["kind"] == "device" && c["principal_id"] == device_id.as_str()));

    let id = welcome["connection_id"].as_str().unwrap();
    let r = app
        .delete_as(&root_token, &format!("/api/v1/admin/connections/{id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        closed_with(&mut user_socket, Duration::from_secs(1)).await,
        1008
    );
    let r = app
        .delete_as(&root_token, &format!("/api/v1/admin/connections/{id}"))
        .await;
    assert_error(r, 404, "not_found").await;
}

//! Chaos: a client asks for the whole history of a channel with a very long timeline
//! (`subscribe{since: 0}`) and reads it slowly. The server pages through the store and
//! writes under back-pressure, so its memory stays bounded however long the timeline is, and
//! the client gets every message once, in seq order, then the `subscribed` frame, and the
//! connection goes on working.
//!
//! The timeline is written straight into the database while the server is stopped, in one
//! transaction (a million `append_message` calls would take minutes): messages with their
//! seqs after the member's joining, and the channel's `last_seq`. These rows are not in the
//! search index, which the replay does not use.
//!
//! `UNHIDRA_CHAOS_REPLAY` sets the number of messages (default 20,000, so `cargo test` stays
//! quick; scripts/ci-chaos.sh runs 200,000). The figures are printed (`--nocapture`).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::rss_kib;
use crate::helpers::{ws_recv_json, ws_send, Server, PASSWORD, RAISED_WS_LIMITS};

const DEFAULT_MESSAGES: i64 = 20_000;
/// How much the server's RSS may grow while it replays, whatever the timeline's length: a
/// page of the replay (500 frames of about 250 bytes), the socket's write buffer (at most
/// 1 MiB), SQLite's page caches (2 MB per connection, five connections) and the allocator's
/// slack. A replay held in memory whole would take some 300 bytes per message (300 MB for
/// a million).
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;
/// The client reads this many frames, then pauses for `PAUSE`: about 20,000 frames a
/// second at most, slower than the server writes them, so the server waits on the socket.
const READ_BURST: u64 = 500;
const PAUSE: Duration = Duration::from_millis(25);

fn messages() -> i64 {
    match std::env::var("UNHIDRA_CHAOS_REPLAY") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("UNHIDRA_CHAOS_REPLAY={text:?} is not a number")),
        Err(_) => DEFAULT_MESSAGES,
    }
}

/// Writes `count` messages from `sender` into `channel` after its last seq, in one
/// transaction; returns the channel's new last seq.
async fn write_timeline(data_dir: &Path, channel: &str, sender: &str, count: i64) -> i64 {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("unhidra.db"))
        .connect()
        .await
        .expect("opening the database");
    let mut tx = conn.begin().await.unwrap();
    let (last,): (i64,) = sqlx::query_as("SELECT last_seq FROM channels WHERE id = ?")
        .bind(channel)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO messages (channel_id, seq, id, sender_id, client_msg_id, body, created_at)
         SELECT ?2, ?3 + i, printf('replay-%09d', i), ?4, printf('r%d', i),
                printf('message %d of a long timeline, replayed to a slow reader', i),
                ?5 - ?1 + i
         FROM n",
    )
    .bind(count)
    .bind(channel)
    .bind(last)
    .bind(sender)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE channels SET last_seq = ? WHERE id = ?")
        .bind(last + count)
        .bind(channel)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
    last + count
}

#[tokio::test]
async fn replaying_a_long_timeline_to_a_slow_reader_keeps_server_memory_bounded() {
    let count = messages();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Pings every 3 s: CI's replay (200,000 messages, some 15 s) spans several ping
    // intervals, as the full million does with the default 30 s. The session does not ping
    // while it replays, and must not take the ticks it missed for unanswered pings. (Much
    // shorter would be wrong the other way: a reader still working through what the socket
    // buffers, a second or two, cannot answer a ping sooner.)
    let config = crate::helpers::write_config(
        tmp.path(),
        &format!("{RAISED_WS_LIMITS}\n[gateway]\nping_interval_ms = 3000\n"),
    );
    let args = ["--config", config.to_str().unwrap()];

    let server = Server::start(&data, &args, &[]).await;
    let alice_id = server.register("alice", PASSWORD).await;
    let bob_id = server.register("bob", PASSWORD).await;
    let alice = server.login("alice", PASSWORD).await;
    let channel = server
        .create_channel(&alice.access, "long", &[&bob_id])
        .await;
    server.stop().await;
    let written = Instant::now();
    let last = write_timeline(&data, &channel, &alice_id, count).await;
    let write_secs = written.elapsed().as_secs_f64();

    let server = Server::start(&data, &args, &[]).await;
    let pid = server.process.pid();
    // Warm up: a short replay, so caches and the allocator reach their working size.
    let (mut warm, _) = server.ws_connect(&alice.access).await;
    let first_seq = last - count + 1;
    ws_send(
        &mut warm,
        &json!({"type": "subscribe", "channel": channel, "since": last - 1000}),
    )
    .await;
    loop {
        if ws_recv_json(&mut warm).await["type"] == "subscribed" {
            break;
        }
    }
    drop(warm);
    let before = rss_kib(pid);

    let (mut ws, _) = server.ws_connect(&alice.access).await;
    let started = Instant::now();
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "channel": channel, "since": 0}),
    )
    .await;
    let mut expected = first_seq;
    let mut received = 0u64;
    let mut peak = before;
    let subscribed = loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("no frame within 60 s")
            .expect("the stream ended during the replay")
            .expect("a read error during the replay");
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            Some("message") => {
                assert_eq!(frame["seq"], expected, "out of order: {frame}");
                expected += 1;
            }
            Some("subscribed") => break frame,
            // Bob's joining (seq 1) is an event before the messages.
            Some("member_joined") => assert_eq!(frame["seq"], 1, "{frame}"),
            _ => {}
        }
        received += 1;
        if received.is_multiple_of(READ_BURST) {
            tokio::time::sleep(PAUSE).await;
        }
        if received.is_multiple_of(10_000) {
            peak = peak.max(rss_kib(pid));
        }
    };
    let replay_secs = started.elapsed().as_secs_f64();
    peak = peak.max(rss_kib(pid));
    assert_eq!(expected, last + 1, "messages missing from the replay");
    assert_eq!(subscribed["seq"], last, "{subscribed}");

    // The connection goes on: a ping is answered, and a new message arrives live.
    ws_send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(ws_recv_json(&mut ws).await["type"], "pong");
    let (mut publisher, _) = server.ws_connect(&alice.access).await;
    ws_send(
        &mut publisher,
        &json!({"type": "publish", "channel": channel, "body": "after", "client_msg_id": "after"}),
    )
    .await;
    assert_eq!(ws_recv_json(&mut publisher).await["type"], "ack");
    let live = ws_recv_json(&mut ws).await;
    assert_eq!(live["seq"], last + 1, "{live}");

    let growth = peak.saturating_sub(before);
    eprintln!(
        "chaos replay: {count} messages written in {write_secs:.1} s, replayed in order to a \
         slow reader in {replay_secs:.1} s ({:.0} frames/s); server RSS {} MiB before, peak {} \
         MiB (+{} KiB, bound {} KiB)",
        received as f64 / replay_secs,
        before / 1024,
        peak / 1024,
        growth,
        RSS_GROWTH_BOUND_KIB
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "server RSS grew by {growth} KiB ({before} → {peak}) while replaying {count} messages"
    );
    server.stop().await;
}

//! An ack means "durably stored": SIGKILL the server while several clients publish, restart
//! it on the same data dir, and every acked message is there with its acked id and seq, in a
//! gap-free seq sequence; retries of what was in flight are stored once.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{
    publish_until_closed, str_field, wait_until, ws_publish, ws_subscribe, Ack, PublishLog, Server,
    Tokens, PASSWORD,
};

/// Publishers, each its own user on its own connection.
const CLIENTS: usize = 4;
/// Every writer but the channel's creator joins it: the first seqs are those joins.
const JOINS: i64 = CLIENTS as i64 - 1;
/// Publishes each client keeps unacknowledged.
const WINDOW: usize = 8;
/// The kill comes after this many acks in all, or `KILL_AFTER` after the first ack.
const KILL_AT_ACKS: usize = 400;
const KILL_AFTER: Duration = Duration::from_millis(1500);

/// Replays the whole channel; checks the message seqs are exactly `joins`+1..=`joins`+N in
/// order (the members' joining came first) and the bodies (each a `client_msg_id`) unique,
/// and returns body → (sender, id/seq/ts).
pub async fn replay_all(
    server: &Server,
    token: &str,
    channel: &str,
    joins: i64,
) -> HashMap<String, (String, Ack)> {
    let (mut ws, _) = server.ws_connect(token).await;
    let (messages, last) = ws_subscribe(&mut ws, channel, Some(0)).await;
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let count = i64::try_from(messages.len()).unwrap();
    let expected: Vec<i64> = (joins + 1..=joins + count).collect();
    assert_eq!(
        seqs, expected,
        "stored seqs are not exactly gap-free after the joins"
    );
    assert_eq!(last, joins + count, "subscribed seq");
    let mut stored = HashMap::new();
    for message in &messages {
        let body = str_field(message, "body");
        let entry = (str_field(message, "sender"), Ack::of_message(message));
        if let Some(earlier) = stored.insert(body.clone(), entry) {
            panic!("{body} is stored twice: {earlier:?} and {message}");
        }
    }
    stored
}

#[tokio::test]
async fn acked_messages_survive_sigkill_and_retries_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;

    let mut users: Vec<(String, Tokens)> = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("writer{i}");
        let id = server.register(&name, PASSWORD).await;
        users.push((id, server.login(&name, PASSWORD).await));
    }
    let others: Vec<&str> = users[1..].iter().map(|(id, _)| id.as_str()).collect();
    let channel = server
        .create_channel(&users[0].1.access, "durable", &others)
        .await;

    // Everyone connects before anyone publishes, so the kill hits them all mid-stream.
    let mut sockets = Vec::new();
    for (_, tokens) in &users {
        sockets.push(server.ws_connect(&tokens.access).await.0);
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::spawn(publish_until_closed(
                ws,
                channel.clone(),
                format!("c{i}"),
                WINDOW,
                Arc::clone(&acked),
                Duration::from_secs(120),
            ))
        })
        .collect();

    wait_until("the first ack", Duration::from_secs(30), || {
        acked.load(Ordering::SeqCst) > 0
    })
    .await;
    let first_ack = Instant::now();
    wait_until(
        "enough acks before the kill",
        KILL_AFTER + Duration::from_secs(1),
        || acked.load(Ordering::SeqCst) >= KILL_AT_ACKS || first_ack.elapsed() >= KILL_AFTER,
    )
    .await;
    let mut server = server;
    server.sigkill();
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.signal(), Some(9), "{status}");

    let mut logs: Vec<PublishLog> = Vec::new();
    for publisher in publishers {
        let log = tokio::time::timeout(Duration::from_secs(30), publisher)
            .await
            .expect("a publisher did not notice the kill within 30 s")
            .expect("publisher task");
        assert!(
            log.close.is_none(),
            "a SIGKILLed server cannot send a close frame: {}",
            log.end
        );
        logs.push(log);
    }
    let total_acks: usize = logs.iter().map(|l| l.acks.len()).sum();
    let total_in_flight: usize = logs.iter().map(|l| l.in_flight().len()).sum();
    eprintln!("killed after {total_acks} acks with {total_in_flight} publishes in flight");
    assert!(total_acks > 0);

    // ---- After the restart: every ack is kept, nothing else but what was in flight ----
    let server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;
    let owner = users[0].1.access.clone();
    let stored = replay_all(&server, &owner, &channel, JOINS).await;

    let mut stored_before_kill: HashMap<String, Ack> = HashMap::new();
    for (i, log) in logs.iter().enumerate() {
        let user_id = &users[i].0;
        for (client_msg_id, ack) in &log.acks {
            let (sender, found) = stored
                .get(client_msg_id)
                .unwrap_or_else(|| panic!("acked {client_msg_id} ({ack:?}) was lost"));
            assert_eq!(found, ack, "{client_msg_id} is stored other than acked");
            assert_eq!(sender, user_id, "{client_msg_id}: sender");
        }
        // The store keeps a connection's order (its publishes are pipelined, not
        // reordered), so what was stored of the in-flight publishes is a prefix of them.
        let in_flight = log.in_flight();
        let kept = in_flight
            .iter()
            .take_while(|id| stored.contains_key(*id))
            .count();
        for id in &in_flight[kept..] {
            assert!(
                !stored.contains_key(id),
                "{id} is stored although an earlier publish on its connection is not"
            );
        }
        for id in &in_flight[..kept] {
            let (sender, found) = &stored[id];
            assert_eq!(sender, user_id, "{id}: sender");
            stored_before_kill.insert(id.clone(), found.clone());
        }
    }
    let sent: HashSet<&String> = logs.iter().flat_map(|l| &l.sent).collect();
    for body in stored.keys() {
        assert!(sent.contains(body), "{body} is stored but was never sent");
    }
    assert_eq!(stored.len(), total_acks + stored_before_kill.len());
    eprintln!(
        "{} of the in-flight publishes were stored before the kill",
        stored_before_kill.len()
    );

    // ---- Each client retries what was in flight, with the same client_msg_id ----
    let mut next_seq = JOINS + i64::try_from(stored.len()).unwrap() + 1;
    for (i, log) in logs.iter().enumerate() {
        let (mut ws, _) = server.ws_connect(&users[i].1.access).await;
        for id in &log.in_flight() {
            let ack = ws_publish(&mut ws, &channel, id).await;
            match stored_before_kill.get(id) {
                Some(before) => assert_eq!(&ack, before, "retry of stored {id}"),
                None => {
                    assert_eq!(ack.seq, next_seq, "retry of unstored {id}");
                    next_seq += 1;
                }
            }
        }
        // A retry of an acked publish answers with the original ack, too.
        if let Some((id, original)) = log.acks.last() {
            let ack = ws_publish(&mut ws, &channel, id).await;
            assert_eq!(&ack, original, "retry of acked {id}");
        }
    }

    // Every publish is now stored exactly once, seqs still gap-free.
    let after = replay_all(&server, &owner, &channel, JOINS).await;
    let expected: HashSet<&String> = sent;
    let found: HashSet<&String> = after.keys().collect();
    assert_eq!(found, expected, "after the retries");
    assert_eq!(
        JOINS + i64::try_from(after.len()).unwrap(),
        next_seq - 1,
        "seqs after the retries"
    );
    for (id, (_, ack)) in &stored {
        assert_eq!(&after[id].1, ack, "{id} changed after the retries");
    }
    server.stop().await;
}

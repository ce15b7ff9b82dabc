//! Chaos: the server is SIGKILLed again and again while several clients publish, each
//! keeping as many unacknowledged messages as the server's `welcome` allows
//! (`publish_window`, 64: the session pipelines them to the store), and restarted on the same data dir each time.
//! After every restart each client first resends what was in flight when its connection died,
//! with the same `client_msg_id`, then goes on with new messages. In the end every acked
//! message is stored exactly once, with the id, seq and time it was acked with; the seqs are
//! gap-free; and every message any client sent is stored (once).
//!
//! `UNHIDRA_CHAOS_KILLS` sets the number of kills (default 3, so `cargo test` stays quick;
//! scripts/ci-chaos.sh runs 10). The totals are printed (`--nocapture` shows them).

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::durability::replay_all;
use crate::helpers::{publish_ids, wait_until, Ack, Server, Tokens, PASSWORD};

/// Publishers, each its own user on its own connection.
const CLIENTS: usize = 4;
/// Every writer but the channel's creator joins it: the first seqs are those joins.
const JOINS: i64 = CLIENTS as i64 - 1;
/// Publishes each client keeps unacknowledged at least: more when the server allows it.
const MIN_WINDOW: usize = 8;
/// Kills when `UNHIDRA_CHAOS_KILLS` is not set.
const DEFAULT_KILLS: usize = 3;
/// How long a publisher may run before its connection must have ended (it ends at the kill).
const PUBLISHER_LIMIT: Duration = Duration::from_secs(120);

/// The publishes a connection may keep unanswered, as the server's `welcome` says: the
/// window these publishers use, so that the kills land while the store holds many of one
/// connection's publishes at once.
fn announced_window(welcome: &serde_json::Value) -> usize {
    let window = welcome["publish_window"]
        .as_u64()
        .unwrap_or_else(|| panic!("welcome without publish_window: {welcome}"));
    usize::try_from(window).unwrap().max(MIN_WINDOW)
}

fn kills() -> usize {
    match std::env::var("UNHIDRA_CHAOS_KILLS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("UNHIDRA_CHAOS_KILLS={text:?} is not a number")),
        Err(_) => DEFAULT_KILLS,
    }
}

/// When round `round` kills the server, counted from its first ack: spread over 0.1–1.5 s so
/// that kills land at different points of a round (a fixed spread, so a failure reproduces).
fn kill_delay(round: usize) -> Duration {
    Duration::from_millis(100 + (round as u64 * 389) % 1400)
}

/// One publishing user and what it knows: what the server acked, and what it must resend.
struct Client {
    user_id: String,
    tokens: Tokens,
    prefix: String,
    /// The number of the next new message (`<prefix>-<n>`).
    next: usize,
    /// Sent but never acked: resent first on the next connection.
    pending: Vec<String>,
    acked: HashMap<String, Ack>,
}

impl Client {
    /// What the next connection publishes: the pending ids, then new ones without end.
    fn ids(&self) -> impl Iterator<Item = String> + Send + 'static {
        let prefix = self.prefix.clone();
        self.pending
            .clone()
            .into_iter()
            .chain((self.next..).map(move |n| format!("{prefix}-{n}")))
    }

    /// Takes in what one connection's publisher saw.
    fn record(&mut self, log: &crate::helpers::PublishLog) {
        let resent = self.pending.len();
        for (id, ack) in &log.acks {
            if let Some(earlier) = self.acked.insert(id.clone(), ack.clone()) {
                panic!("{id} was acked twice: {earlier:?}, then {ack:?}");
            }
        }
        // New ids came after the resent ones; an id counts as used once it was sent.
        self.next += log.sent.len().saturating_sub(resent);
        let mut pending: Vec<String> = self.pending.iter().skip(log.sent.len()).cloned().collect();
        pending.splice(0..0, log.in_flight().iter().cloned());
        self.pending = pending;
    }

    fn sent(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.next).map(|n| format!("{}-{n}", self.prefix))
    }
}

#[tokio::test]
async fn repeated_sigkills_under_pipelined_publishing_lose_and_duplicate_nothing() {
    let kills = kills();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("writer{i}");
        let user_id = server.register(&name, PASSWORD).await;
        clients.push(Client {
            user_id,
            tokens: server.login(&name, PASSWORD).await,
            prefix: format!("c{i}"),
            next: 0,
            pending: Vec::new(),
            acked: HashMap::new(),
        });
    }
    let others: Vec<&str> = clients[1..].iter().map(|c| c.user_id.as_str()).collect();
    let channel = server
        .create_channel(&clients[0].tokens.access, "chaos", &others)
        .await;

    let mut in_flight_at_kills = 0;
    let mut window = MIN_WINDOW;
    for round in 0..kills {
        if round > 0 {
            server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;
        }
        // Everyone connects before anyone publishes, so the kill hits them all mid-stream.
        let mut sockets = Vec::new();
        for client in &clients {
            let (ws, welcome) = server.ws_connect(&client.tokens.access).await;
            window = announced_window(&welcome);
            sockets.push(ws);
        }
        let acked = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = sockets
            .into_iter()
            .zip(&clients)
            .map(|(ws, client)| {
                let (channel, label, ids) = (channel.clone(), client.prefix.clone(), client.ids());
                let acked = Arc::clone(&acked);
                tokio::spawn(async move {
                    publish_ids(ws, channel, &label, ids, window, acked, PUBLISHER_LIMIT).await
                })
            })
            .collect();
        wait_until("the round's first ack", Duration::from_secs(30), || {
            acked.load(Ordering::SeqCst) > 0
        })
        .await;
        tokio::time::sleep(kill_delay(round)).await;
        server.sigkill();
        let status = server.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.signal(), Some(9), "round {round}: {status}");

        for (publisher, client) in publishers.into_iter().zip(&mut clients) {
            let log = tokio::time::timeout(Duration::from_secs(30), publisher)
                .await
                .expect("a publisher did not notice the kill within 30 s")
                .expect("publisher task");
            assert!(
                log.close.is_none(),
                "a SIGKILLed server cannot send a close frame: {}",
                log.end
            );
            in_flight_at_kills += log.in_flight().len();
            client.record(&log);
        }
    }

    // ---- The last restart: each client resends what it has pending, and nothing new ----
    let server = Server::start_with_raised_ws_limits(&data, tmp.path()).await;
    let mut resent_last = 0;
    for client in &mut clients {
        let (ws, _) = server.ws_connect(&client.tokens.access).await;
        let pending = client.pending.clone();
        resent_last += pending.len();
        let log = publish_ids(
            ws,
            channel.clone(),
            &client.prefix,
            pending.into_iter(),
            window,
            Arc::new(AtomicUsize::new(0)),
            PUBLISHER_LIMIT,
        )
        .await;
        assert_eq!(log.end, "every publish acked", "{}", client.prefix);
        client.record(&log);
        assert!(
            client.pending.is_empty(),
            "{}: {:?}",
            client.prefix,
            client.pending
        );
    }

    // ---- Everything sent is stored exactly once, as acked, in a gap-free sequence ----
    let owner = clients[0].tokens.access.clone();
    let stored = replay_all(&server, &owner, &channel, JOINS).await;
    let mut sent: HashSet<String> = HashSet::new();
    let mut total_acked = 0;
    for client in &clients {
        for (id, ack) in &client.acked {
            let (sender, found) = stored
                .get(id)
                .unwrap_or_else(|| panic!("acked {id} ({ack:?}) was lost"));
            assert_eq!(found, ack, "{id} is stored other than it was acked");
            assert_eq!(sender, &client.user_id, "{id}: sender");
        }
        total_acked += client.acked.len();
        sent.extend(client.sent());
    }
    let found: HashSet<String> = stored.keys().cloned().collect();
    assert_eq!(found, sent, "what is stored is not what was sent");
    assert_eq!(
        total_acked,
        sent.len(),
        "every message was acked in the end"
    );
    eprintln!(
        "chaos sigkill: {kills} kills, {total_acked} messages acked and stored exactly once \
         (seqs {}..={} gap-free), {in_flight_at_kills} publishes in flight at the kills, \
         {resent_last} resent after the last, window {window}, in {:.1} s",
        JOINS + 1,
        JOINS + i64::try_from(total_acked).unwrap(),
        started.elapsed().as_secs_f64()
    );
    server.stop().await;
}

//! `store-append`: the floor of a publish's durable part — how many messages a second the
//! SQLite store takes through `Store::post_message` (membership and archive check, duplicate
//! check, seq, insert, search entry, in the writer's batches with `synchronous=FULL`), with
//! no network, sessions or fan-out in front of it.
//!
//! `--callers` tasks each post to their own channel (as the point-to-point pairs do), each
//! keeping `--window` posts waiting, for `--duration-secs`. Run it pinned to one core
//! (`taskset -c 1`) to compare with a server pinned the same way. Afterwards every channel is
//! read back: each acknowledged post must be stored once, at the seq it was acked with.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use time::OffsetDateTime;
use unhidra_server::paths;
use unhidra_store::{NewChannel, NewMessage, NewUser, Store};
use unhidra_store_sqlite::SqliteStore;

use crate::chat_corpus::Vocabulary;
use crate::stats::{per_second, LatencySummary};

#[derive(Debug, Clone, clap::Args)]
pub struct StoreAppendArgs {
    /// Concurrent posters, each its own user posting to its own channel.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub callers: u32,
    /// Posts each caller keeps waiting for the store.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub window: u32,
    /// How long the callers post.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    pub body_bytes: u32,
    /// Bodies of words (20,000 of them, Zipf-distributed, as `chat-corpus` writes) instead
    /// of one repeated letter, so that the search index does a real message's work.
    #[arg(long)]
    pub prose: bool,
}

/// Distinct bodies the callers take turns with under `--prose`.
const PROSE_BODIES: usize = 4096;

#[derive(Debug, Serialize)]
pub struct StoreAppendReport {
    pub callers: u32,
    pub window: u32,
    pub body_bytes: u32,
    pub prose: bool,
    pub messages: u64,
    pub wall_secs: f64,
    pub messages_per_sec: f64,
    /// Time from `post_message` to its answer (after the commit).
    pub latency: LatencySummary,
    /// CPU of the whole process (callers, runtime and the store's threads) per message.
    pub process_cpu_us_per_message: f64,
    /// CPU of the store's writer thread alone per message.
    pub writer_cpu_us_per_message: f64,
    pub process_cores: f64,
    /// Acknowledged posts found stored once at their acked seq, of all acknowledged.
    pub verified: u64,
}

pub async fn run(args: StoreAppendArgs) -> anyhow::Result<StoreAppendReport> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let store = SqliteStore::open(&paths::database(dir.path()))
        .await
        .context("opening the store")?;
    let now = OffsetDateTime::now_utc();
    let mut channels = Vec::new();
    for c in 0..args.callers {
        let user = format!("bench-user-{c}");
        store
            .create_user(NewUser {
                id: user.clone(),
                username: user.clone(),
                password_hash: "unused".into(),
                is_admin: false,
                created_at: now,
            })
            .await
            .context("creating a user")?;
        let channel = store
            .create_channel(NewChannel {
                id: format!("bench-channel-{c}"),
                name: format!("bench-{c}"),
                private: false,
                created_by: user.clone(),
                created_at: now,
            })
            .await
            .context("creating a channel")?;
        channels.push((user, channel.id));
    }

    let bodies = bodies(&args);
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let process_before = crate::cpu::process_cpu();
    let writer_before = crate::cpu::thread_cpu(unhidra_store_sqlite::WRITER_THREAD);
    let started = Instant::now();
    let callers = channels.iter().enumerate().map(|(c, (user, channel))| {
        caller(&store, user, channel, &bodies, c, args.window, deadline)
    });
    let results = futures::future::join_all(callers).await;
    let wall = started.elapsed();
    let process_cpu = crate::cpu::process_cpu()
        .zip(process_before)
        .map(|(after, before)| after.saturating_sub(before));
    let writer_cpu = crate::cpu::thread_cpu(unhidra_store_sqlite::WRITER_THREAD)
        .zip(writer_before)
        .map(|(after, before)| after.saturating_sub(before));

    let mut latencies = Vec::new();
    let mut messages = 0u64;
    let mut verified = 0u64;
    for ((_, channel), result) in channels.iter().zip(results) {
        let acked = result?;
        messages += acked.len() as u64;
        // Read back: every acked post stored once, at its acked seq, and nothing else.
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let page = store.messages_after(channel, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            stored.extend(page.into_iter().map(|m| (m.client_msg_id, m.seq)));
        }
        let expected: Vec<(String, i64)> = acked
            .iter()
            .map(|(id, seq, _)| (id.clone(), *seq))
            .collect();
        ensure!(
            stored == expected,
            "channel {channel}: stored {} messages, acked {}; or not at their acked seqs",
            stored.len(),
            expected.len()
        );
        verified += expected.len() as u64;
        latencies.extend(acked.into_iter().map(|(_, _, latency)| latency));
    }
    store.close().await;
    let per_message = |cpu: Option<Duration>| {
        cpu.map_or(f64::NAN, |cpu| {
            cpu.as_secs_f64() * 1e6 / messages.max(1) as f64
        })
    };
    Ok(StoreAppendReport {
        callers: args.callers,
        window: args.window,
        body_bytes: args.body_bytes,
        prose: args.prose,
        messages,
        wall_secs: wall.as_secs_f64(),
        messages_per_sec: per_second(messages, wall),
        latency: LatencySummary::of(latencies),
        process_cpu_us_per_message: per_message(process_cpu),
        writer_cpu_us_per_message: per_message(writer_cpu),
        process_cores: process_cpu.map_or(f64::NAN, |cpu| {
            cpu.as_secs_f64() / wall.as_secs_f64().max(f64::MIN_POSITIVE)
        }),
        verified,
    })
}

/// The bodies to post: one of `x`s, or under `--prose` [`PROSE_BODIES`] of words, each
/// `--body-bytes` long (cut at a character boundary).
fn bodies(args: &StoreAppendArgs) -> Vec<String> {
    let bytes = args.body_bytes as usize;
    if !args.prose {
        return vec!["x".repeat(bytes)];
    }
    let vocabulary = Vocabulary::new(20_000, 1.0, 7);
    let mut rng = StdRng::seed_from_u64(7);
    (0..PROSE_BODIES)
        .map(|_| {
            let mut body = String::with_capacity(bytes + 16);
            while body.len() < bytes {
                if !body.is_empty() {
                    body.push(' ');
                }
                body.push_str(vocabulary.sample(&mut rng));
            }
            let mut end = bytes;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body
        })
        .collect()
}

/// Posts to `channel` with `window` posts waiting until `deadline`, taking bodies in turn
/// from `start`; returns each acked post's client id, seq and latency, in the order posted.
async fn caller(
    store: &SqliteStore,
    user: &str,
    channel: &str,
    bodies: &[String],
    start: usize,
    window: u32,
    deadline: Instant,
) -> anyhow::Result<Vec<(String, i64, Duration)>> {
    let mut waiting = FuturesUnordered::new();
    let mut acked = Vec::new();
    let mut next = 0u64;
    loop {
        while waiting.len() < window as usize && Instant::now() < deadline {
            let client_msg_id = format!("m{next}");
            next += 1;
            let message = NewMessage {
                id: uuid::Uuid::now_v7().to_string(),
                channel_id: channel.to_owned(),
                sender_id: user.to_owned(),
                client_msg_id: client_msg_id.clone(),
                body: bodies
                    .get((start + next as usize) % bodies.len().max(1))
                    .cloned()
                    .unwrap_or_default(),
                created_at: OffsetDateTime::now_utc(),
                thread_root_id: None,
                mentions: Vec::new(),
                attachments: Vec::new(),
                flag_reasons: Vec::new(),
            };
            let sent = Instant::now();
            waiting.push(async move {
                let appended = store.post_message(message).await;
                (client_msg_id, appended, sent.elapsed())
            });
        }
        let Some((client_msg_id, appended, latency)) = waiting.next().await else {
            break;
        };
        let appended = appended.with_context(|| format!("posting {client_msg_id}"))?;
        acked.push((client_msg_id, appended.message.seq, latency));
    }
    acked.sort_by_key(|(_, seq, _)| *seq);
    Ok(acked)
}

pub fn check(report: &StoreAppendReport) -> anyhow::Result<()> {
    ensure!(
        report.verified == report.messages,
        "{} of {} acknowledged posts were found as acked",
        report.verified,
        report.messages
    );
    Ok(())
}

impl fmt::Display for StoreAppendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "store-append: {} callers × {} waiting, {}-byte bodies of {}, each to its own channel",
            self.callers,
            self.window,
            self.body_bytes,
            if self.prose { "words" } else { "one letter" }
        )?;
        writeln!(
            f,
            "  {} posts stored in {:.1} s: {:.0} messages/s; {} verified stored once at their acked seq",
            self.messages, self.wall_secs, self.messages_per_sec, self.verified
        )?;
        writeln!(
            f,
            "  post → answer: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.latency.p50_ms, self.latency.p99_ms, self.latency.max_ms
        )?;
        writeln!(
            f,
            "  CPU per message: {:.1} µs in the process ({:.2} cores), {:.1} µs on the writer thread",
            self.process_cpu_us_per_message, self.process_cores, self.writer_cpu_us_per_message
        )?;
        Ok(())
    }
}

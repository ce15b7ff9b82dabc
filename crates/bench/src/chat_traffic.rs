//! Chat traffic over the gateway: publishers that keep a window of unacknowledged publishes,
//! and subscribers that check order and measure latency.
//!
//! Each message body starts with its send time as an offset from an `Instant` shared by the
//! whole process (`base`), so a subscriber computes the publish→receive latency of every
//! delivery without asking the publisher. A publisher sends round robin over its channels,
//! on a fixed schedule or as fast as its window allows, until it has sent `count` messages or
//! its sending time is over; it then waits for the outstanding acks. A subscriber follows the
//! seq of each channel it subscribed to and counts every delivery that is not the next one.
//! Used by `gateway-fanout` (one channel) and `chat-throughput` (many channels).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::stats::{per_second, LatencySummary};
use crate::ws_client::{close_code, Incoming, Ws};

/// What one publisher sends.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Distinguishes this publisher's `client_msg_id`s.
    pub publisher: u32,
    /// Message `i` goes to `channels[i % len]`.
    pub channels: Vec<String>,
    /// The most messages to send.
    pub count: u64,
    /// No message is sent after this; acks are awaited until the deadline.
    pub stop_sending: TokioInstant,
    /// Time between two sends; `None`: as fast as the window allows.
    pub interval: Option<Duration>,
    /// Most unacknowledged publishes.
    pub window: u32,
    pub body_bytes: usize,
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct Published {
    pub sent: u64,
    pub acked: u64,
    pub errors: BTreeMap<String, u64>,
    pub ack_latencies: Vec<Duration>,
    /// Offsets from `base`.
    pub first_send: Option<Duration>,
    pub last_send: Option<Duration>,
}

/// The body of a message sent `sent` after `base`: the offset in nanoseconds as 16 hex
/// digits, a space, and padding up to `bytes`.
pub fn body(sent: Duration, bytes: usize) -> String {
    let nanos = u64::try_from(sent.as_nanos()).unwrap_or(u64::MAX);
    let mut body = format!("{nanos:016x} ");
    let pad = bytes.saturating_sub(body.len());
    body.extend(std::iter::repeat_n('x', pad));
    body
}

/// The send offset a body carries.
pub fn sent_offset(body: &str) -> Option<Duration> {
    let hex = body.get(..16)?;
    u64::from_str_radix(hex, 16).ok().map(Duration::from_nanos)
}

/// Publishes on `ws` as `plan` says; returns when every sent publish is answered (ack or
/// error), the connection ends, or at `deadline`.
pub async fn publish(ws: Ws, plan: Plan, base: Instant, deadline: TokioInstant) -> Published {
    let (mut sink, mut stream) = ws.split();
    let window = Semaphore::new(plan.window as usize);
    // Send offsets of the unanswered publishes, by index; at most `window` entries.
    let sent_at: Mutex<HashMap<u64, Duration>> = Mutex::new(HashMap::new());
    let sent_count = AtomicU64::new(0);
    let sending_done = AtomicBool::new(false);
    let finished = Notify::new();
    let prefix = format!("p{}-", plan.publisher);
    let start = TokioInstant::now();
    let stop = plan.stop_sending.min(deadline);

    let send = async {
        let (mut first, mut last) = (None, None);
        for i in 0..plan.count {
            if TokioInstant::now() >= stop {
                break;
            }
            if let Some(interval) = plan.interval {
                let due = start + interval.mul_f64(i as f64);
                if due >= stop {
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
            match tokio::time::timeout_at(stop, window.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => break,
            }
            let Some(channel) = plan
                .channels
                .get((i % plan.channels.len().max(1) as u64) as usize)
            else {
                break;
            };
            let now = base.elapsed();
            // Written as JSON directly (the documented wire form), not through the proto
            // types, so the tool keeps building while optional fields are added to them.
            let frame = serde_json::json!({
                "type": "publish",
                "channel": channel,
                "body": body(now, plan.body_bytes),
                "client_msg_id": format!("{prefix}{i}"),
            });
            sent_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(i, now);
            if sink.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
            sent_count.fetch_add(1, Ordering::Relaxed);
            first.get_or_insert(now);
            last = Some(now);
        }
        sending_done.store(true, Ordering::Release);
        finished.notify_one();
        (first, last)
    };

    let acks = async {
        let (mut acked, mut errors) = (0u64, BTreeMap::<String, u64>::new());
        let mut latencies = Vec::new();
        loop {
            let answered = acked + errors.values().sum::<u64>();
            if sending_done.load(Ordering::Acquire)
                && answered >= sent_count.load(Ordering::Relaxed)
            {
                break;
            }
            let message = tokio::select! {
                next = tokio::time::timeout_at(deadline, stream.next()) => match next {
                    Ok(Some(Ok(message))) => message,
                    _ => break,
                },
                // Wakes the loop to check whether everything is answered.
                () = finished.notified() => continue,
            };
            let Message::Text(text) = message else {
                if close_code(&message).is_some() {
                    break;
                }
                continue;
            };
            let Some(frame) = Incoming::parse(&text) else {
                continue;
            };
            let now = base.elapsed();
            let sent = frame
                .client_msg_id
                .as_deref()
                .and_then(|id| id.strip_prefix(&prefix))
                .and_then(|i| i.parse::<u64>().ok())
                .and_then(|i| sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&i));
            match frame.kind.as_ref() {
                "ack" => {
                    acked += 1;
                    if let Some(sent) = sent {
                        latencies.push(now.saturating_sub(sent));
                    }
                }
                "error" => {
                    let code = frame.code.as_deref().unwrap_or("?").to_owned();
                    *errors.entry(code).or_default() += 1;
                }
                _ => continue,
            }
            window.add_permits(1);
        }
        (acked, errors, latencies)
    };

    let ((first_send, last_send), (acked, errors, ack_latencies)) = futures::join!(send, acks);
    Published {
        sent: sent_count.load(Ordering::Relaxed),
        acked,
        errors,
        ack_latencies,
        first_send,
        last_send,
    }
}

/// What one subscriber connection received.
#[derive(Debug, Default)]
pub struct Received {
    /// Publish→receipt, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Deliveries out of seq order, repeated, or after a gap (per channel).
    pub out_of_order: u64,
    /// Deliveries of channels this connection did not subscribe to.
    pub unexpected: u64,
    pub closed: Option<u16>,
    pub timed_out: bool,
    /// Offset from `base` of the last delivery.
    pub last_at: Option<Duration>,
}

/// How long a subscriber listens.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Stop after this many deliveries (`None`: until `stop` or the deadline).
    pub expected: Option<u64>,
    pub stop: CancellationToken,
    pub deadline: TokioInstant,
    /// Counts every delivery of every subscriber, for whoever waits for them all.
    pub delivered: Arc<AtomicU64>,
}

/// Reads deliveries on `ws`, subscribed to the channels of `seqs` (channel → the seq its
/// `subscribed` frame gave), until `listen` says to stop.
pub async fn receive(
    mut ws: Ws,
    mut seqs: HashMap<String, i64>,
    listen: Listen,
    base: Instant,
) -> Received {
    let mut out = Received {
        latencies_ns: Vec::with_capacity(listen.expected.unwrap_or(1024).min(1 << 24) as usize),
        ..Received::default()
    };
    while listen
        .expected
        .is_none_or(|n| (out.latencies_ns.len() as u64) < n)
    {
        let next = tokio::select! {
            () = listen.stop.cancelled() => break,
            next = tokio::time::timeout_at(listen.deadline, ws.next()) => next,
        };
        let message = match next {
            Err(_) => {
                out.timed_out = listen.expected.is_some();
                break;
            }
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(_)) | None) => {
                out.closed = Some(0);
                break;
            }
        };
        let Message::Text(text) = &message else {
            if let Some(code) = close_code(&message) {
                out.closed = Some(code);
                break;
            }
            continue;
        };
        let now = base.elapsed();
        let Some(frame) = Incoming::parse(text) else {
            continue;
        };
        if frame.kind != "message" {
            continue;
        }
        let got = frame.seq.unwrap_or(0);
        match frame.channel.as_deref().and_then(|c| seqs.get_mut(c)) {
            Some(seq) => {
                if got != *seq + 1 {
                    out.out_of_order += 1;
                }
                *seq = (*seq).max(got);
            }
            None => out.unexpected += 1,
        }
        let sent = frame.body.as_deref().and_then(sent_offset).unwrap_or(now);
        out.latencies_ns
            .push(u64::try_from(now.saturating_sub(sent).as_nanos()).unwrap_or(u64::MAX));
        out.last_at = Some(now);
        listen.delivered.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// All publishers together.
#[derive(Debug, Serialize)]
pub struct Publish {
    pub sent: u64,
    pub acked: u64,
    /// Refusals by error code.
    pub errors: BTreeMap<String, u64>,
    pub wall_secs: f64,
    pub per_sec: f64,
    /// Acked messages per second over the sending time.
    pub acked_per_sec: f64,
    /// Publish to ack (the message is stored and handed to the hub).
    pub ack_latency: LatencySummary,
}

/// All subscribers together.
#[derive(Debug, Serialize)]
pub struct Delivery {
    pub expected: u64,
    pub received: u64,
    /// First publish to last delivery.
    pub wall_secs: f64,
    pub per_sec: f64,
    /// Publish (send time at the publisher) to receipt at the subscriber.
    pub latency: LatencySummary,
    /// Subscribers closed by the server, by close code (0: without a close frame).
    pub closed: BTreeMap<u16, u64>,
    /// Subscribers that closed with 1013 (fell behind by more than channel_buffer).
    pub closed_1013: u64,
    /// Subscribers still waiting for deliveries at the timeout.
    pub timed_out: u64,
    /// Deliveries out of seq order, repeated, or after a gap.
    pub out_of_order: u64,
    /// Deliveries of a channel the connection had not subscribed to.
    pub unexpected: u64,
}

pub fn summarise_publish(published: &[Published]) -> Publish {
    let sent = published.iter().map(|p| p.sent).sum();
    let acked = published.iter().map(|p| p.acked).sum();
    let first = published.iter().filter_map(|p| p.first_send).min();
    let last = published.iter().filter_map(|p| p.last_send).max();
    let wall = match (first, last) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => Duration::ZERO,
    };
    let mut errors = BTreeMap::new();
    for p in published {
        for (code, n) in &p.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
    }
    Publish {
        sent,
        acked,
        errors,
        wall_secs: wall.as_secs_f64(),
        // n sends span n − 1 intervals.
        per_sec: per_second(sent.saturating_sub(1), wall),
        acked_per_sec: per_second(acked.saturating_sub(1), wall),
        ack_latency: LatencySummary::of(
            published
                .iter()
                .flat_map(|p| p.ack_latencies.iter().copied())
                .collect(),
        ),
    }
}

pub fn summarise_delivery(
    received: Vec<Received>,
    expected: u64,
    first_send: Duration,
) -> Delivery {
    let mut closed = BTreeMap::new();
    let (mut timed_out, mut out_of_order, mut unexpected, mut count) = (0, 0, 0, 0u64);
    let mut last = first_send;
    let mut latencies = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    for r in received {
        if let Some(code) = r.closed {
            *closed.entry(code).or_insert(0u64) += 1;
        }
        timed_out += u64::from(r.timed_out);
        out_of_order += r.out_of_order;
        unexpected += r.unexpected;
        count += r.latencies_ns.len() as u64;
        if let Some(at) = r.last_at {
            last = last.max(at);
        }
        latencies.extend(r.latencies_ns.into_iter().map(Duration::from_nanos));
    }
    let wall = last.saturating_sub(first_send);
    Delivery {
        expected,
        received: count,
        wall_secs: wall.as_secs_f64(),
        per_sec: per_second(count, wall),
        latency: LatencySummary::of(latencies),
        closed_1013: closed.get(&1013).copied().unwrap_or(0),
        closed,
        timed_out,
        out_of_order,
        unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_send_time_and_size() {
        let sent = Duration::from_nanos(123_456_789);
        let b = body(sent, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(sent_offset(&b), Some(sent));
        assert_eq!(body(sent, 17).len(), 17);
        assert_eq!(sent_offset("nope"), None);
    }
}

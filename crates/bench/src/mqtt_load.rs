//! MQTT load over `rumqttc` (MQTT 3.1.1 over TCP, clean sessions): clients that connect and
//! subscribe, then hold the connection idle, receive and check deliveries, or publish at QoS 1
//! with a window of unacknowledged publishes. The MQTT counterpart of
//! [`ws_client`](crate::ws_client) and [`chat_traffic`](crate::chat_traffic), whose summaries
//! ([`Published`], [`Received`]) it fills in, so the reports read alike.
//!
//! Each payload starts with its send time as an offset from an `Instant` shared by the whole
//! process (`base`), the publisher's number and the message's sequence number (see
//! [`payload`]). A subscriber computes the publish→receive latency of each delivery and checks
//! that every publisher's messages arrive once each and in order. A publisher matches each
//! PUBACK to its publish by packet id (rumqttc announces the id it gave each publish as an
//! `Outgoing::Publish` event, in the order the publishes were made), so publish→PUBACK
//! latency is measured from the same send time. Every client sets TCP_NODELAY, as the
//! WebSocket clients do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::chat_traffic::{Listen, Published, Received};
use crate::progress;
use crate::workers;
use crate::ws_client::Failures;

/// The fixed part of a payload: send offset (8 bytes), publisher (4), sequence number (8).
pub const PAYLOAD_HEADER_BYTES: usize = 20;

/// The payload of message `seq` of `publisher`, sent `sent` after `base`: the offset in
/// nanoseconds, the publisher and the sequence number (big-endian), padded to `bytes`.
pub fn payload(sent: Duration, publisher: u32, seq: u64, bytes: usize) -> Vec<u8> {
    let nanos = u64::try_from(sent.as_nanos()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(bytes.max(PAYLOAD_HEADER_BYTES));
    out.extend_from_slice(&nanos.to_be_bytes());
    out.extend_from_slice(&publisher.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(bytes.max(PAYLOAD_HEADER_BYTES), b'x');
    out
}

/// What a payload carries: send offset, publisher, sequence number.
pub fn parse_payload(payload: &[u8]) -> Option<(Duration, u32, u64)> {
    let nanos = u64::from_be_bytes(payload.get(0..8)?.try_into().ok()?);
    let publisher = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((Duration::from_nanos(nanos), publisher, seq))
}

/// How every client of a run connects.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub broker: SocketAddr,
    /// Distinguishes this run's client ids from any other run's on the same broker.
    pub run: String,
    pub keep_alive: Duration,
    /// rumqttc's window of unacknowledged QoS 1 publishes (at least the publisher's window).
    pub inflight: u16,
    pub max_packet_bytes: usize,
    /// CONNECT to CONNACK (and SUBACK) at most; also rumqttc's network timeout.
    pub timeout: Duration,
}

impl ClientSpec {
    pub fn new(broker: SocketAddr, timeout: Duration) -> Self {
        Self {
            broker,
            run: format!("{:08x}", rand::random::<u32>()),
            keep_alive: Duration::from_secs(60),
            inflight: 100,
            max_packet_bytes: 64 * 1024,
            timeout,
        }
    }
}

/// Why a client did not get connected (and subscribed).
#[derive(Debug, Clone)]
pub enum MqttFailure {
    Timeout,
    /// The broker refused the CONNECT.
    Refused(String),
    /// The broker refused the SUBSCRIBE.
    SubscribeRefused,
    /// The connection failed (rumqttc's error).
    Connection(String),
}

impl fmt::Display for MqttFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Refused(code) => write!(f, "CONNECT refused: {code}"),
            Self::SubscribeRefused => f.write_str("SUBSCRIBE refused"),
            Self::Connection(err) => write!(f, "connection: {err}"),
        }
    }
}

impl MqttFailure {
    pub fn record(&self, failures: &mut Failures) {
        *failures.0.entry(self.to_string()).or_default() += 1;
    }
}

/// A connected client: the handle that makes requests and the event loop that must be polled
/// for anything to happen. Dropping the handle ends the event loop.
pub struct Connected {
    pub client: AsyncClient,
    pub events: EventLoop,
    /// TCP connect to CONNACK (to SUBACK when subscribing).
    pub took: Duration,
}

/// Connects client `name` of this run and, when `subscribe` is given, subscribes it to that
/// topic; returns once the broker has acknowledged both.
pub async fn connect(
    spec: &ClientSpec,
    name: &str,
    subscribe: Option<(&str, QoS)>,
) -> Result<Connected, MqttFailure> {
    let started = Instant::now();
    let mut options = MqttOptions::new(
        format!("ub-{}-{name}", spec.run),
        spec.broker.ip().to_string(),
        spec.broker.port(),
    );
    options
        .set_keep_alive(spec.keep_alive)
        .set_clean_session(true)
        .set_inflight(spec.inflight.max(1))
        .set_max_packet_size(spec.max_packet_bytes, spec.max_packet_bytes);
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(spec.timeout.as_secs().max(1));
    events.set_network_options(network);
    if let Some((topic, qos)) = subscribe {
        // Queued now, sent once connected.
        client
            .subscribe(topic, qos)
            .await
            .map_err(|e| MqttFailure::Connection(e.to_string()))?;
    }
    let handshake = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(MqttFailure::Refused(format!("{:?}", ack.code)));
                    }
                    if subscribe.is_none() {
                        return Ok(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        return Err(MqttFailure::SubscribeRefused);
                    }
                    return Ok(());
                }
                Ok(_) => {}
                Err(err) => return Err(MqttFailure::Connection(err.to_string())),
            }
        }
    };
    tokio::time::timeout(spec.timeout, handshake)
        .await
        .unwrap_or(Err(MqttFailure::Timeout))?;
    Ok(Connected {
        client,
        events,
        took: started.elapsed(),
    })
}

/// Connects clients `0..count` named `{role}-{i}`, `concurrency` at a time, each subscribed
/// to `topic(i)` at `qos` when that is given, with a progress bar saying `what`. Returns the
/// connected clients with their numbers (in no particular order) and the failures.
pub async fn connect_many(
    spec: &ClientSpec,
    count: u32,
    concurrency: u32,
    role: &'static str,
    topic: impl Fn(u32) -> Option<String> + Send + Sync + 'static,
    qos: QoS,
) -> anyhow::Result<(Vec<(u32, Connected)>, Failures)> {
    let bar = progress::bar(u64::from(count), &format!("connecting {role}s"));
    let opened = workers::for_each((0..count).collect(), concurrency as usize, {
        let (spec, bar, topic) = (Arc::new(spec.clone()), bar.clone(), Arc::new(topic));
        move |i: u32| {
            let (spec, bar, topic) = (Arc::clone(&spec), bar.clone(), Arc::clone(&topic));
            async move {
                let topic = topic(i);
                let subscribe = topic.as_deref().map(|t| (t, qos));
                let connected = connect(&spec, &format!("{role}-{i}"), subscribe).await;
                bar.inc(1);
                (i, connected)
            }
        }
    })
    .await?;
    let mut failures = Failures::default();
    let mut clients = Vec::with_capacity(opened.len());
    for (i, result) in opened {
        match result {
            Ok(connected) => clients.push((i, connected)),
            Err(failure) => failure.record(&mut failures),
        }
    }
    Ok((clients, failures))
}

/// Polls an idle client's event loop (so its pings go out) until `stop`; returns why the
/// connection ended if it ended before.
pub async fn hold(mut events: EventLoop, stop: CancellationToken) -> Option<String> {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return None,
            event = events.poll() => event,
        };
        if let Err(err) = event {
            return Some(err.to_string());
        }
    }
}

/// Reads deliveries until `listen` says to stop, checking each publisher's sequence numbers
/// (the first expected is 0) and measuring publish→receive latency.
pub async fn receive(mut events: EventLoop, listen: Listen, base: Instant) -> Received {
    let mut out = Received {
        latencies_ns: Vec::with_capacity(listen.expected.unwrap_or(1024).min(1 << 24) as usize),
        ..Received::default()
    };
    let mut next_seq: HashMap<u32, u64> = HashMap::new();
    while listen
        .expected
        .is_none_or(|n| (out.latencies_ns.len() as u64) < n)
    {
        let event = tokio::select! {
            () = listen.stop.cancelled() => break,
            event = tokio::time::timeout_at(listen.deadline, events.poll()) => event,
        };
        let publish = match event {
            Err(_) => {
                out.timed_out = listen.expected.is_some();
                break;
            }
            Ok(Err(_)) => {
                out.closed = Some(0);
                break;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => publish,
            Ok(Ok(_)) => continue,
        };
        let now = base.elapsed();
        let Some((sent, publisher, seq)) = parse_payload(&publish.payload) else {
            out.unexpected += 1;
            continue;
        };
        let expected = next_seq.entry(publisher).or_insert(0);
        if seq != *expected {
            out.out_of_order += 1;
        }
        *expected = (*expected).max(seq + 1);
        out.latencies_ns
            .push(u64::try_from(now.saturating_sub(sent).as_nanos()).unwrap_or(u64::MAX));
        out.last_at = Some(now);
        listen.delivered.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// What one publisher sends, all at QoS 1 to one topic.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub publisher: u32,
    pub topic: String,
    /// The most messages to send.
    pub count: u64,
    /// No message is sent after this; PUBACKs are awaited until the deadline.
    pub stop_sending: TokioInstant,
    /// Time between two sends; `None`: as fast as the window allows.
    pub interval: Option<Duration>,
    /// Most unacknowledged publishes.
    pub window: u32,
    pub payload_bytes: usize,
}

/// Publishes on `client` as `plan` says while polling its event loop; returns when every
/// sent publish is acknowledged, the connection ends, or at `deadline`.
pub async fn publish(
    client: AsyncClient,
    mut events: EventLoop,
    plan: PublishPlan,
    base: Instant,
    deadline: TokioInstant,
) -> Published {
    let window = Semaphore::new(plan.window.max(1) as usize);
    // Send offsets of publishes made but not yet given a packet id by the event loop.
    let unnumbered: Mutex<VecDeque<Duration>> = Mutex::new(VecDeque::new());
    let sent_count = AtomicU64::new(0);
    let sending_done = AtomicBool::new(false);
    let finished = Notify::new();
    let gave_up = CancellationToken::new();
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
            let now = base.elapsed();
            unnumbered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(now);
            let body = payload(now, plan.publisher, i, plan.payload_bytes);
            let published = tokio::select! {
                published = client.publish(plan.topic.as_str(), QoS::AtLeastOnce, false, body) => published,
                // Nobody polls the event loop any more, so its request queue may stay full.
                () = gave_up.cancelled() => break,
            };
            if published.is_err() {
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
        let mut sent_at: HashMap<u16, Duration> = HashMap::new();
        let all_answered = |acked: u64| {
            sending_done.load(Ordering::Acquire) && acked >= sent_count.load(Ordering::Relaxed)
        };
        'events: while !all_answered(acked) {
            // rumqttc's poll is not cancel-safe: keep one poll going until it completes, and
            // give it up only when everything is answered or the deadline passed.
            let poll = tokio::time::timeout_at(deadline, events.poll());
            tokio::pin!(poll);
            let event = loop {
                tokio::select! {
                    event = &mut poll => break event,
                    () = finished.notified() => {
                        if all_answered(acked) {
                            break 'events;
                        }
                    }
                }
            };
            match event {
                Err(_) => break,
                Ok(Err(err)) => {
                    *errors.entry(format!("connection: {err}")).or_default() += 1;
                    break;
                }
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    let sent = unnumbered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    if let Some(sent) = sent {
                        sent_at.insert(pkid, sent);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    let now = base.elapsed();
                    acked += 1;
                    if let Some(sent) = sent_at.remove(&ack.pkid) {
                        latencies.push(now.saturating_sub(sent));
                    }
                    window.add_permits(1);
                }
                Ok(Ok(_)) => {}
            }
        }
        // Whatever is not sent yet will not be: the connection is gone or time is up.
        window.close();
        gave_up.cancel();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_time_publisher_and_seq_and_have_their_size() {
        let sent = Duration::from_nanos(987_654_321);
        let p = payload(sent, 7, 42, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p), Some((sent, 7, 42)));
        assert_eq!(payload(sent, 0, 0, 3).len(), PAYLOAD_HEADER_BYTES);
        assert_eq!(parse_payload(b"short"), None);
    }
}

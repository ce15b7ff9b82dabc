//! One WebSocket connection, from welcome to close.
//!
//! The loop waits on, in order of priority: shutdown (close 1001), a server-side kick
//! (revocation, logout: its code), answers from the store, the next client frame, the next
//! delivery from a subscribed channel, and the ping timer. A turn takes everything of its
//! kind that is ready (up to a bound), and outgoing frames are fed to the socket and flushed
//! only when a turn finds nothing more ready (the session yields once first, so that the
//! tasks woken with it add theirs; see [`UNFLUSHED_FRAMES`]): a burst of deliveries, the
//! answers of one commit, or the frames a client pipelined cost one write.
//!
//! Publishes are pipelined: a publish is checked, handed to the store (which takes its
//! place in line at once) and answered when its commit is done, while the loop goes on
//! reading frames, up to [`PUBLISH_WINDOW`] unanswered publishes per connection. Answers may
//! come in any order; a connection's messages are stored in the order it sent them.
//!
//! Per subscribed channel the session remembers the last seq it sent. Deliveries at or below
//! it are duplicates and skipped; a delivery past `last + 1` means an earlier one is still on
//! its way (publishers race to the hub): it is held until the gap fills from the hub, and
//! only a gap still open after a short grace is read from the store ([`super::early`]). The client
//! therefore sees every message and channel event exactly once, in seq order. Passing frames
//! (typing, receipts, presence; seq 0) are delivered as they come. A user's session also
//! listens on the user's own topic, for presence and changes to their channel list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamMap;
use unhidra_proto::ws::{close, ClientFrame, Principal, ServerFrame};
use unhidra_proto::ErrorCode;

use super::early::{self, Early};
use super::hub::Delivery;
use super::registry::{Connection, Control, Controls, NewConnection};
use super::socket::{self, Inbound, Violation};
use crate::chat;
use crate::chat::events::{announce_presence, event_frame, publish_passing, user_topic};
use crate::state::SharedState;

/// Typing frames from one connection per channel: at most one per this interval.
const TYPING_INTERVAL: Duration = Duration::from_secs(2);

/// Stored messages read per page when replaying or filling a gap.
const REPLAY_PAGE: u32 = 500;

/// Most publishes of one connection waiting for the store; the session reads no further
/// frames while this many are unanswered (announced in `welcome`).
pub const PUBLISH_WINDOW: usize = 64;

/// Most client frames handled in one turn of the loop.
const INBOUND_BURST: usize = 32;

/// Most frames fed to the socket before it is flushed.
///
/// After a turn that fed frames, the session yields once before it flushes: the tasks that
/// were woken with it run first (the other publishes of the commit that answered this one,
/// the other publishes that reach a subscriber in the same wave), and what they make ready
/// is fed in the next turn and goes out in the same write. The flush comes when a turn
/// finds nothing ready, or once this many frames wait. Without the yield, tokio runs a task
/// woken by another at once (its LIFO slot), so each answer and each delivery woke the
/// session alone and cost a `send` of its own: about one per message in the pairs
/// benchmark (docs/benchmarks.md).
const UNFLUSHED_FRAMES: u64 = 64;

/// A publish waiting for the store: its reference (`client_msg_id`) and what became of it.
/// The outcome is boxed: it is large, and the loop's future keeps room for whatever a turn
/// may yield.
type Publishing = futures::future::BoxFuture<'static, (String, Box<Published>)>;

type Published = Result<unhidra_store::Appended, chat::ChatError>;

/// A connection's publishes waiting for the store. The set is made at the first publish:
/// even empty it costs two allocations, and most connections never publish.
#[derive(Default)]
struct Waiting(Option<futures::stream::FuturesUnordered<Publishing>>);

impl Waiting {
    fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, futures::stream::FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, publishing: Publishing) {
        self.0.get_or_insert_with(Default::default).push(publishing);
    }

    /// The next publish answered by the store; `None` when none is waiting.
    async fn next(&mut self) -> Option<(String, Box<Published>)> {
        match &mut self.0 {
            Some(waiting) => waiting.next().await,
            None => None,
        }
    }
}

/// Who connected, as the handshake established it.
pub struct SessionStart {
    pub principal: Principal,
    pub session_id: Option<String>,
    /// For devices: the owner, who is told of the device's state.
    pub device_owner: Option<String>,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

/// Why the loop ended.
enum End {
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// The peer sent its Close: answer it, then close.
    PeerClosed,
    /// The peer is gone or stuck: just drop the connection.
    Drop,
}

struct Out {
    sink: SplitSink<WebSocket, Message>,
    connection: Arc<Connection>,
    write_timeout: Duration,
    fed: u64,
}

impl Out {
    async fn feed(&mut self, message: Message) -> Result<(), End> {
        let mut feeding = self.sink.feed(message);
        // Usually the write buffer has room and this is done at once; only a full buffer
        // (a slow reader) needs the timer.
        let fed = match (&mut feeding).now_or_never() {
            Some(fed) => fed.is_ok(),
            None => matches!(
                tokio::time::timeout(self.write_timeout, feeding).await,
                Ok(Ok(()))
            ),
        };
        if !fed {
            return Err(End::Drop);
        }
        self.fed += 1;
        Ok(())
    }

    async fn frame(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let text = serde_json::to_string(frame).map_err(|_| End::Drop)?;
        self.feed(Message::Text(Utf8Bytes::from(text))).await
    }

    async fn error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<String>,
    ) -> Result<(), End> {
        self.frame(&ServerFrame::Error {
            code,
            message: message.into(),
            reference,
        })
        .await
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.fed == 0 {
            return Ok(());
        }
        match tokio::time::timeout(self.write_timeout, self.sink.flush()).await {
            Ok(Ok(())) => {
                metrics::counter!(crate::metrics::GATEWAY_MESSAGES, "direction" => "out")
                    .increment(self.fed);
                self.connection.count_out(self.fed);
                self.fed = 0;
                Ok(())
            }
            _ => Err(End::Drop),
        }
    }
}

struct Session {
    state: SharedState,
    principal: Principal,
    out: Out,
    subscriptions: StreamMap<String, BroadcastStream<Arc<Delivery>>>,
    last_sent: HashMap<String, i64>,
    /// The user's own topic (users only), kept apart from channel subscriptions.
    own_topic: Option<String>,
    /// When this connection last sent `typing` per channel.
    typing_sent: HashMap<String, Instant>,
    limiter: DefaultDirectRateLimiter,
    /// Frames refused by the limiter in the current one-second window.
    refused: (Instant, u32),
    /// For devices: the device's link (online while it is held).
    device: Option<crate::devices::link::DeviceLink>,
    /// Publishes waiting for the store, at most [`PUBLISH_WINDOW`].
    publishing: Waiting,
    /// Deliveries that came ahead of a gap, and when the wait for the gap ends.
    early: Early,
    gap_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Runs a connection to its end.
pub async fn run(socket: WebSocket, state: SharedState, start: SessionStart) {
    let kind = match start.principal {
        Principal::User { .. } => "user",
        Principal::Device { .. } => "device",
    };
    let registration = state.gateway.registry.register(NewConnection {
        principal: start.principal.clone(),
        session_id: start.session_id,
        ip: start.ip,
        user_agent: start.user_agent,
        connected_at: state.clock.now(),
    });
    let connection = Arc::clone(&registration.connection);
    metrics::counter!(crate::metrics::GATEWAY_CONNECTIONS, "kind" => kind).increment(1);
    metrics::gauge!(crate::metrics::GATEWAY_CONNECTIONS_ACTIVE).increment(1.0);
    tracing::debug!(connection = %connection.id, kind, "websocket connected");

    let (sink, stream) = socket.split();
    let per_second =
        NonZeroU32::new(state.config.rate_limits.ws_messages_per_second).unwrap_or(NonZeroU32::MIN);
    let mut session = Session {
        out: Out {
            sink,
            connection: Arc::clone(&connection),
            write_timeout: Duration::from_millis(state.config.gateway.write_timeout_ms),
            fed: 0,
        },
        principal: start.principal,
        subscriptions: StreamMap::new(),
        last_sent: HashMap::new(),
        own_topic: None,
        typing_sent: HashMap::new(),
        limiter: RateLimiter::direct(Quota::per_second(per_second)),
        refused: (Instant::now(), 0),
        device: None,
        publishing: Default::default(),
        early: Early::default(),
        gap_deadline: None,
        state: state.clone(),
    };
    let user_id = match &session.principal {
        Principal::User { id } => Some(id.clone()),
        Principal::Device { .. } => None,
    };
    if let Some(user_id) = &user_id {
        let topic = user_topic(user_id);
        let receiver = state.gateway.hub.subscribe(&topic);
        session
            .subscriptions
            .insert(topic.clone(), BroadcastStream::new(receiver));
        session.own_topic = Some(topic);
        if state
            .gateway
            .presence
            .connect(user_id, &connection.id)
            .is_some()
        {
            spawn_presence_announcement(&state, user_id);
        }
    }
    if let (Principal::Device { id }, Some(owner)) = (&session.principal, &start.device_owner) {
        // Listen before reading pending commands, so none stored in between is missed.
        let topic = crate::devices::commands::device_topic(id);
        let receiver = state.gateway.hub.subscribe(&topic);
        session
            .subscriptions
            .insert(topic.clone(), BroadcastStream::new(receiver));
        session.own_topic = Some(topic);
        session.device = Some(crate::devices::link::DeviceLink::open(&state, id, owner));
    }
    let mut stream = stream;
    let end = session.serve(&mut stream, registration.controls).await;
    // Gone from the registry as soon as the session decides to end, not after the closing
    // handshake: a second close or a listing must not find it.
    state.gateway.registry.unregister(&connection.id);
    if let Some(user_id) = &user_id {
        if state
            .gateway
            .presence
            .disconnect(user_id, &connection.id)
            .is_some()
        {
            spawn_presence_announcement(&state, user_id);
        }
    }
    // The device goes offline with its last link.
    drop(session.device.take());
    let write_timeout = session.out.write_timeout;
    match end {
        End::Close(code, reason) => {
            socket::close(
                &mut session.out.sink,
                &mut stream,
                code,
                reason,
                write_timeout,
            )
            .await;
        }
        End::PeerClosed => socket::answer_close(&mut session.out.sink, write_timeout).await,
        End::Drop => {}
    }
    metrics::gauge!(crate::metrics::GATEWAY_CONNECTIONS_ACTIVE).decrement(1.0);
    tracing::debug!(connection = %connection.id, "websocket closed");
}

/// Waits for `deadline`; never when there is none.
async fn expiry(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Announces the user's presence without holding up the session.
fn spawn_presence_announcement(state: &SharedState, user_id: &str) {
    let (state, user_id) = (state.clone(), user_id.to_owned());
    tokio::spawn(async move { announce_presence(&state, &user_id).await });
}

impl Session {
    async fn serve(&mut self, stream: &mut SplitStream<WebSocket>, mut controls: Controls) -> End {
        let shutdown = self.state.gateway.shutdown.clone();
        // Waited on across turns, not made anew in each (which registers and unregisters
        // with the token's waiter list every turn).
        let shutting_down = shutdown.cancelled();
        tokio::pin!(shutting_down);
        let ping_every = Duration::from_millis(self.state.config.gateway.ping_interval_ms);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        // A long turn (replaying a long timeline to a slow reader) must not be followed by a
        // burst of the ticks it missed: three pings back to back, none answerable in time,
        // would close a healthy connection as dead.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unanswered_pings = 0u32;

        // In a block of its own, so the frame is not kept in the session's future for life.
        let welcomed = {
            let welcome = ServerFrame::Welcome {
                connection_id: self.out.connection.id.clone(),
                principal: self.principal.clone(),
                max_message_bytes: self.state.config.gateway.max_message_bytes,
                publish_window: PUBLISH_WINDOW as u32,
            };
            self.out.frame(&welcome).await
        };
        if let Err(end) = welcomed {
            return end;
        }
        if let Principal::Device { id } = &self.principal {
            let id = id.clone();
            if let Err(end) = Box::pin(self.send_pending_commands(&id)).await {
                return end;
            }
        }
        loop {
            // What the last turn fed waits while more is ready, so that it goes out in one
            // write with what follows: see [`UNFLUSHED_FRAMES`].
            if self.out.fed >= UNFLUSHED_FRAMES {
                if let Err(end) = self.out.flush().await {
                    return end;
                }
            } else if self.out.fed > 0 {
                tokio::task::yield_now().await;
            }
            if self
                .out
                .connection
                .must_resync
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return End::Close(
                    close::POLICY_VIOLATION,
                    "membership changed; reconnect and resync",
                );
            }
            // The handlers of heavier or rarer turns are boxed: a session's future is as large
            // as its largest await, and every idle connection holds one (5.4 KB when they
            // were inline; each box is one allocation per turn of that kind).
            let turn = tokio::select! {
                biased;
                () = &mut shutting_down => Err(End::Close(close::GOING_AWAY, "server shutting down")),
                control = controls.recv() => match control {
                    Control::Close(kick) => Err(End::Close(kick.code, kick.reason)),
                    Control::Unsubscribe { channel } => Box::pin(self.unsubscribe(channel)).await,
                },
                Some((reference, result)) = self.publishing.next(), if !self.publishing.is_empty() => {
                    Box::pin(self.answer_ready_publishes(reference, result)).await
                }
                frame = stream.next(), if self.publishing.len() < PUBLISH_WINDOW => {
                    unanswered_pings = 0;
                    Box::pin(self.inbound_burst(stream, frame)).await
                }
                Some((channel, item)) = self.subscriptions.next(), if !self.subscriptions.is_empty() => {
                    self.deliver_burst(channel, item).await
                }
                () = expiry(&mut self.gap_deadline), if self.gap_deadline.is_some() => {
                    Box::pin(self.fill_gaps()).await
                }
                // Nothing else is ready: write what was fed.
                () = std::future::ready(()), if self.out.fed > 0 => self.out.flush().await,
                _ = ping.tick() => {
                    if unanswered_pings >= 2 {
                        tracing::debug!(connection = %self.out.connection.id, "missed two pings");
                        Err(End::Drop)
                    } else {
                        unanswered_pings += 1;
                        self.out.feed(Message::Ping(Default::default())).await
                    }
                }
            };
            if let Err(end) = turn {
                if matches!(end, End::Close(..)) {
                    Box::pin(self.answer_pending_publishes()).await;
                }
                return end;
            }
        }
    }

    /// Before a deliberate close, answers the publishes still waiting for the store (for as
    /// long as a write may take), so that a client is not left to retry what was stored.
    async fn answer_pending_publishes(&mut self) {
        let deadline = tokio::time::Instant::now() + self.out.write_timeout;
        while let Ok(Some((reference, result))) =
            tokio::time::timeout_at(deadline, self.publishing.next()).await
        {
            if self.answer_publish(reference, *result).await.is_err() {
                return;
            }
        }
        let _ = self.out.flush().await;
    }

    /// Answers a publish, then every other whose store write is done by now: the answers of
    /// one commit go out in one write.
    async fn answer_ready_publishes(
        &mut self,
        reference: String,
        result: Box<Published>,
    ) -> Result<(), End> {
        self.answer_publish(reference, *result).await?;
        while let Some(Some((reference, result))) = self.publishing.next().now_or_never() {
            self.answer_publish(reference, *result).await?;
        }
        Ok(())
    }

    /// Handles a frame, then those already read behind it (at most [`INBOUND_BURST`], and
    /// while the publish window has room), so that a client's pipelined frames are answered
    /// with one write rather than one each.
    async fn inbound_burst(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Result<(), End> {
        self.inbound(frame).await?;
        for _ in 1..INBOUND_BURST {
            if self.publishing.len() >= PUBLISH_WINDOW {
                break;
            }
            match stream.next().now_or_never() {
                Some(frame) => self.inbound(frame).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Sends a publish's answer: its `ack`, or why it was refused.
    async fn answer_publish(&mut self, reference: String, result: Published) -> Result<(), End> {
        match result {
            Ok(appended) => {
                self.out
                    .frame(&ServerFrame::Ack {
                        client_msg_id: reference,
                        id: appended.message.id,
                        seq: appended.message.seq,
                        ts: appended.message.created_at,
                    })
                    .await
            }
            Err(err) => {
                self.out
                    .error(err.code(), err.client_message(), Some(reference))
                    .await
            }
        }
    }

    async fn inbound(&mut self, frame: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        let text = match socket::inbound(frame) {
            Inbound::Text(text) => text,
            Inbound::Binary(_) => {
                self.count_in();
                self.admit()?;
                return self
                    .out
                    .error(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    )
                    .await;
            }
            // tungstenite answers pings itself; a pong is liveness, already noted.
            Inbound::Control => return Ok(()),
            Inbound::PeerClosed => return Err(End::PeerClosed),
            Inbound::Gone => return Err(End::Drop),
            Inbound::Violation(violation) => return self.violation(violation).await,
        };
        self.count_in();
        if !self.admit()? {
            return self
                .out
                .error(
                    ErrorCode::RateLimited,
                    "too many frames; this one was not processed",
                    None,
                )
                .await;
        }
        let frame: ClientFrame = match serde_json::from_str(&text) {
            Ok(frame) => frame,
            Err(err) => {
                return self
                    .out
                    .error(
                        ErrorCode::InvalidJson,
                        format!("invalid frame: {err}"),
                        None,
                    )
                    .await
            }
        };
        self.handle(frame).await
    }

    fn count_in(&self) {
        self.out.connection.count_in();
        metrics::counter!(crate::metrics::GATEWAY_MESSAGES, "direction" => "in").increment(1);
    }

    /// Takes one frame of the connection's allowance. `Ok(false)`: over the limit, refuse
    /// the frame. A client that keeps sending at twice its allowance for a second is closed.
    fn admit(&mut self) -> Result<bool, End> {
        if self.limiter.check().is_ok() {
            return Ok(true);
        }
        metrics::counter!(crate::metrics::GATEWAY_RATE_LIMIT_HITS, "kind" => "message")
            .increment(1);
        let now = Instant::now();
        if now.duration_since(self.refused.0) >= Duration::from_secs(1) {
            self.refused = (now, 0);
        }
        self.refused.1 += 1;
        if self.refused.1 > self.state.config.rate_limits.ws_messages_per_second {
            return Err(End::Close(close::POLICY_VIOLATION, "rate limit exceeded"));
        }
        Ok(false)
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), End> {
        let received_at = Instant::now();
        match (frame, self.principal.clone()) {
            (ClientFrame::Ping {}, _) => self.out.frame(&ServerFrame::Pong {}).await,
            (ClientFrame::Subscribe { channel, since }, Principal::User { id }) => {
                self.subscribe(&id, channel, since).await
            }
            (ClientFrame::Unsubscribe { channel }, Principal::User { .. }) => {
                self.unsubscribe(channel).await
            }
            (
                ClientFrame::Publish {
                    channel,
                    body,
                    client_msg_id,
                    thread_root,
                    attachments,
                },
                Principal::User { id },
            ) => {
                // Echo at most 64 characters of an id, whatever the client sent.
                let reference: String = client_msg_id.chars().take(64).collect();
                let post = chat::Post {
                    channel_id: channel,
                    body,
                    client_msg_id,
                    thread_root,
                    attachments,
                };
                match chat::prepare(&self.state, &id, post, received_at).await {
                    Ok(chat::Prepared::Ready(ready)) => {
                        let state = self.state.clone();
                        let mut storing = Box::pin(chat::store(state, ready));
                        // The first poll takes the message's place in the store's line, so
                        // the connection's messages are stored in the order it sent them.
                        match futures::poll!(storing.as_mut()) {
                            std::task::Poll::Ready(result) => {
                                self.answer_publish(reference, result).await
                            }
                            std::task::Poll::Pending => {
                                // The rest (commit, fan-out) runs as a task of its own, so a
                                // stored message reaches its subscribers even when this
                                // connection goes away before the commit.
                                let task = tokio::spawn(storing);
                                self.publishing.push(Box::pin(async move {
                                    let result = task.await.unwrap_or_else(|err| {
                                        Err(chat::ChatError::Store(
                                            unhidra_store::StoreError::backend(
                                                std::io::Error::other(format!(
                                                    "the publish task failed: {err}"
                                                )),
                                            ),
                                        ))
                                    });
                                    (reference, Box::new(result))
                                }));
                                Ok(())
                            }
                        }
                    }
                    Ok(chat::Prepared::Held(held)) => {
                        self.out
                            .frame(&ServerFrame::Held {
                                client_msg_id: reference,
                                id: held.id,
                            })
                            .await
                    }
                    Err(err) => {
                        self.out
                            .error(err.code(), err.client_message(), Some(reference))
                            .await
                    }
                }
            }
            (ClientFrame::Telemetry { metrics, ts }, Principal::Device { .. }) => {
                let Some(link) = &self.device else {
                    return Err(End::Drop);
                };
                match link.telemetry(metrics, ts).await {
                    Ok(_) => Ok(()),
                    Err(refusal) => self.out.error(refusal.code, refusal.message, None).await,
                }
            }
            (
                ClientFrame::Heartbeat {
                    firmware_version,
                    free_memory,
                    uptime_secs,
                },
                Principal::Device { .. },
            ) => {
                if let Some(link) = &self.device {
                    link.heartbeat(crate::devices::live::Heartbeat {
                        firmware_version,
                        free_memory,
                        uptime_secs,
                    });
                }
                Ok(())
            }
            (
                ClientFrame::Command {
                    device,
                    name,
                    args,
                    ttl_secs,
                    reference,
                },
                Principal::User { id },
            ) => {
                let order = crate::devices::commands::Order {
                    device_id: device.clone(),
                    name,
                    args,
                    ttl_secs,
                };
                let reference = reference.map(|r| r.chars().take(64).collect::<String>());
                match crate::devices::commands::send(&self.state, &id, order).await {
                    Ok(command) => {
                        self.out
                            .frame(&ServerFrame::CommandAccepted {
                                id: command.id,
                                device: command.device_id,
                                reference,
                            })
                            .await
                    }
                    Err(err) => {
                        if let crate::devices::commands::CommandError::Store(cause) = &err {
                            tracing::error!(error = %cause, "storing a command failed");
                        }
                        let message = match &err {
                            crate::devices::commands::CommandError::Store(_) => {
                                "internal error".to_owned()
                            }
                            other => other.to_string(),
                        };
                        self.out
                            .error(err.code(), message, reference.or(Some(device)))
                            .await
                    }
                }
            }
            (ClientFrame::CommandResult { id, ok, output }, Principal::Device { .. }) => {
                let Some(link) = &self.device else {
                    return Err(End::Drop);
                };
                match link.answer(&id, ok, output).await {
                    Ok(()) => Ok(()),
                    Err(refusal) => {
                        self.out
                            .error(refusal.code, refusal.message, Some(id))
                            .await
                    }
                }
            }
            (ClientFrame::Command { device, .. }, Principal::Device { .. }) => {
                self.out
                    .error(
                        ErrorCode::Forbidden,
                        "devices do not send commands",
                        Some(device),
                    )
                    .await
            }
            (ClientFrame::CommandResult { id, .. }, Principal::User { .. }) => {
                self.out
                    .error(
                        ErrorCode::Forbidden,
                        "only devices answer commands",
                        Some(id),
                    )
                    .await
            }
            (ClientFrame::Typing { channel }, Principal::User { id }) => {
                self.typing(&id, channel).await
            }
            (ClientFrame::Presence { status }, Principal::User { id }) => {
                use unhidra_proto::channels::PresenceStatus;
                let away = match status {
                    PresenceStatus::Online => false,
                    PresenceStatus::Away => true,
                    PresenceStatus::Offline => {
                        return self
                            .out
                            .error(
                                ErrorCode::InvalidField,
                                "status is online or away (close the socket to go offline)",
                                None,
                            )
                            .await
                    }
                };
                let presence = &self.state.gateway.presence;
                if presence
                    .set_away(&id, &self.out.connection.id, away)
                    .is_some()
                {
                    spawn_presence_announcement(&self.state, &id);
                }
                Ok(())
            }
            (
                ClientFrame::Subscribe { channel, .. }
                | ClientFrame::Unsubscribe { channel }
                | ClientFrame::Publish { channel, .. }
                | ClientFrame::Typing { channel },
                Principal::Device { .. },
            ) => {
                self.out
                    .error(
                        ErrorCode::Forbidden,
                        "devices cannot use chat channels",
                        Some(channel),
                    )
                    .await
            }
            (ClientFrame::Presence { .. }, Principal::Device { .. }) => {
                self.out
                    .error(
                        ErrorCode::Forbidden,
                        "a device's state comes from its heartbeats",
                        None,
                    )
                    .await
            }
            (
                ClientFrame::Telemetry { .. } | ClientFrame::Heartbeat { .. },
                Principal::User { .. },
            ) => {
                self.out
                    .error(
                        ErrorCode::Forbidden,
                        "only devices send telemetry and heartbeats",
                        None,
                    )
                    .await
            }
        }
    }

    /// Sends the device its pending commands, oldest first, and notes where it is.
    async fn send_pending_commands(&mut self, device_id: &str) -> Result<(), End> {
        let Some(link) = &self.device else {
            return Ok(());
        };
        let topic = crate::devices::commands::device_topic(device_id);
        let pending = match link
            .pending_commands(crate::devices::commands::PENDING_PAGE)
            .await
        {
            Ok(pending) => pending,
            Err(err) => {
                tracing::error!(error = %err, "reading pending commands failed");
                return Err(End::Close(
                    close::TRY_AGAIN_LATER,
                    "store unavailable; reconnect later",
                ));
            }
        };
        // More than a page waiting: the rest follow on the next connection, after these
        // are answered (a device does not need hundreds of queued commands at once).
        for command in pending {
            let frame = crate::devices::commands::device_frame(&command);
            self.out
                .feed(Message::Text(chat::frame_text(&frame)))
                .await?;
            self.last_sent.insert(topic.clone(), command.seq);
            self.note_delivered(command.id);
        }
        Ok(())
    }

    /// A command published while the device is connected; skipped if the pending replay
    /// sent it already.
    async fn deliver_command(&mut self, topic: &str, delivery: &Delivery) -> Result<(), End> {
        if delivery.seq <= self.last_sent.get(topic).copied().unwrap_or(0) {
            return Ok(());
        }
        self.out.feed(Message::Text(delivery.frame.clone())).await?;
        self.last_sent.insert(topic.to_owned(), delivery.seq);
        if let Ok(ServerFrame::Command { id, .. }) = serde_json::from_str(&delivery.frame) {
            self.note_delivered(id);
        }
        Ok(())
    }

    fn note_delivered(&self, id: String) {
        if let Some(link) = &self.device {
            link.note_delivered(id);
        }
    }

    /// Tells the channel's other subscribers that the user is typing (at most once per
    /// [`TYPING_INTERVAL`] per channel; extra frames are ignored, typing is a hint).
    async fn typing(&mut self, user_id: &str, channel: String) -> Result<(), End> {
        if !self.is_channel_subscription(&channel) {
            return self
                .out
                .error(
                    ErrorCode::BadRequest,
                    "subscribe to the channel before typing in it",
                    Some(channel),
                )
                .await;
        }
        let now = Instant::now();
        if self
            .typing_sent
            .get(&channel)
            .is_some_and(|at| now.duration_since(*at) < TYPING_INTERVAL)
        {
            return Ok(());
        }
        self.typing_sent.insert(channel.clone(), now);
        let frame = ServerFrame::Typing {
            channel: channel.clone(),
            user: user_id.to_owned(),
        };
        publish_passing(&self.state, &channel, &frame);
        Ok(())
    }

    /// Whether `key` is a channel this connection subscribed to (not its own user topic).
    fn is_channel_subscription(&self, key: &str) -> bool {
        self.own_topic.as_deref() != Some(key) && self.subscriptions.contains_key(key)
    }

    async fn unsubscribe(&mut self, channel: String) -> Result<(), End> {
        if self.own_topic.as_deref() == Some(channel.as_str()) {
            // Not a channel; the user's own topic stays.
            return self.out.frame(&ServerFrame::Unsubscribed { channel }).await;
        }
        self.typing_sent.remove(&channel);
        self.subscriptions.remove(&channel);
        self.last_sent.remove(&channel);
        self.early.forget(&channel);
        self.out.frame(&ServerFrame::Unsubscribed { channel }).await
    }

    async fn subscribe(
        &mut self,
        user_id: &str,
        channel: String,
        since: Option<i64>,
    ) -> Result<(), End> {
        let forbidden = || "no such channel, or not a member";
        match chat::is_member(&self.state, user_id, &channel).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .out
                    .error(ErrorCode::Forbidden, forbidden(), Some(channel))
                    .await
            }
            Err(err) => {
                return self
                    .out
                    .error(err.code(), err.client_message(), Some(channel))
                    .await
            }
        }
        let resubscribe = self.subscriptions.contains_key(&channel);
        let channels = self.subscriptions.len() - usize::from(self.own_topic.is_some());
        if !resubscribe && channels >= self.state.config.gateway.max_subscriptions {
            return self
                .out
                .error(
                    ErrorCode::BadRequest,
                    "too many subscriptions on this connection",
                    Some(channel),
                )
                .await;
        }
        // Listen before reading the store, so nothing committed in between is missed; the
        // seq filter drops what both paths carry.
        let receiver = self.state.gateway.hub.subscribe(&channel);
        let last_seq = match self.state.store.channel_by_id(&channel).await {
            Ok(Some(c)) => c.last_seq,
            Ok(None) => {
                return self
                    .out
                    .error(ErrorCode::Forbidden, forbidden(), Some(channel))
                    .await
            }
            Err(err) => return self.store_error(err, channel).await,
        };
        // A `since` past the newest message (a client with stale state, or a typo) must not
        // hide the messages that come next: it is clamped, and `subscribed` says where the
        // channel really is.
        let baseline = since.map_or(last_seq, |since| since.clamp(0, last_seq));
        self.last_sent.insert(channel.clone(), baseline);
        if since.is_some() {
            self.send_stored(&channel, i64::MAX).await?;
        }
        let seq = self.last_sent.get(&channel).copied().unwrap_or(baseline);
        self.subscriptions
            .insert(channel.clone(), BroadcastStream::new(receiver));
        self.out
            .frame(&ServerFrame::Subscribed { channel, seq })
            .await
    }

    /// Sends stored messages and events after the channel's last sent seq, up to `until`
    /// (inclusive).
    async fn send_stored(&mut self, channel: &str, until: i64) -> Result<(), End> {
        loop {
            let after = self.last_sent.get(channel).copied().unwrap_or(0);
            if after >= until {
                return Ok(());
            }
            let page = match self
                .state
                .store
                .events_after(channel, after, REPLAY_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::error!(error = %err, channel, "reading stored events failed");
                    return Err(End::Close(
                        close::TRY_AGAIN_LATER,
                        "store unavailable; resync with since",
                    ));
                }
            };
            let full = page.len() == REPLAY_PAGE as usize;
            for event in page.into_iter().take_while(|e| e.seq() <= until) {
                let seq = event.seq();
                let frame = event_frame(channel, event);
                self.out
                    .feed(Message::Text(chat::frame_text(&frame)))
                    .await?;
                self.last_sent.insert(channel.to_owned(), seq);
            }
            if !full {
                return Ok(());
            }
            // Keep replays from piling up unflushed in memory.
            self.out.flush().await?;
        }
    }

    /// Delivers `item` and whatever else is ready right now, up to a burst, so that the
    /// loop's single flush writes them together instead of one write per delivery.
    async fn deliver_burst(
        &mut self,
        channel: String,
        item: Result<Arc<Delivery>, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        const BURST: usize = 32;
        let mut burst = vec![(channel, item)];
        while burst.len() < BURST {
            match self.subscriptions.next().now_or_never() {
                Some(Some(next)) => burst.push(next),
                _ => break,
            }
        }
        // One latency sample per burst, its oldest message's: a sample per delivery would
        // cost as much as the rest of the delivery.
        let oldest = burst
            .iter()
            .filter_map(|(_, item)| item.as_ref().ok())
            .filter(|delivery| delivery.seq > 0)
            .map(|delivery| delivery.received_at)
            .min();
        for (channel, item) in burst {
            self.deliver(channel, item).await?;
        }
        if let Some(received_at) = oldest {
            metrics::histogram!(crate::metrics::GATEWAY_MESSAGE_LATENCY)
                .record(received_at.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        channel: String,
        item: Result<Arc<Delivery>, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        let delivery = match item {
            Ok(delivery) => delivery,
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::info!(connection = %self.out.connection.id, missed, "subscriber fell behind; closing");
                return Err(End::Close(
                    close::TRY_AGAIN_LATER,
                    "too slow; reconnect and resync with since",
                ));
            }
        };
        if delivery.seq == 0 {
            // A passing frame: no place in the timeline, nothing to order it against.
            return self.out.feed(Message::Text(delivery.frame.clone())).await;
        }
        if matches!(self.principal, Principal::Device { .. })
            && self.own_topic.as_deref() == Some(channel.as_str())
        {
            return self.deliver_command(&channel, &delivery).await;
        }
        let last = self.last_sent.get(&channel).copied().unwrap_or(0);
        if delivery.seq <= last {
            return Ok(());
        }
        if delivery.seq > last + 1 {
            if !self.early.is_full() {
                // Most likely the missing seqs are right behind it on the hub.
                self.early.hold(&channel, delivery);
                if self.gap_deadline.is_none() {
                    self.gap_deadline = Some(Box::pin(tokio::time::sleep(early::GAP_GRACE)));
                }
                return Ok(());
            }
            // Boxed: a rare path whose store read would otherwise size every session.
            Box::pin(self.send_stored(&channel, delivery.seq - 1)).await?;
        }
        self.send_timeline(&channel, &delivery).await?;
        self.send_held(&channel).await
    }

    /// Sends what was held for `channel` and now follows its last sent seq without a gap;
    /// drops what was held but is sent already (read from the store meanwhile).
    async fn send_held(&mut self, channel: &str) -> Result<(), End> {
        if self.early.is_empty() {
            // The usual case, on every delivery.
            return Ok(());
        }
        let last = self.last_sent.get(channel).copied().unwrap_or(0);
        self.early.drop_through(channel, last);
        let mut next = last + 1;
        while let Some(held) = self.early.take(channel, next) {
            self.send_timeline(channel, &held).await?;
            next += 1;
        }
        Ok(())
    }

    /// Sends a channel's timeline item (the seqs before it are sent).
    async fn send_timeline(&mut self, channel: &str, delivery: &Delivery) -> Result<(), End> {
        self.out.feed(Message::Text(delivery.frame.clone())).await?;
        match self.last_sent.get_mut(channel) {
            Some(last) => *last = delivery.seq,
            None => {
                self.last_sent.insert(channel.to_owned(), delivery.seq);
            }
        }
        Ok(())
    }

    /// The grace for held deliveries is over: what is still missing before them is read
    /// from the store, then they follow.
    async fn fill_gaps(&mut self) -> Result<(), End> {
        self.gap_deadline = None;
        while let Some((channel, lowest)) = self.early.first_gap() {
            self.send_stored(&channel, lowest - 1).await?;
            // The store has every seq before `lowest` (it was committed first), so this sends
            // `lowest` at least, and the loop ends; a further gap among the held ones goes
            // round again.
            if let Some(held) = self.early.take(&channel, lowest) {
                if held.seq > self.last_sent.get(&channel).copied().unwrap_or(0) {
                    self.send_timeline(&channel, &held).await?;
                }
            }
            self.send_held(&channel).await?;
        }
        Ok(())
    }

    async fn store_error(
        &mut self,
        err: unhidra_store::StoreError,
        channel: String,
    ) -> Result<(), End> {
        tracing::error!(error = %err, "store failure in a session");
        let (code, message) = match err {
            unhidra_store::StoreError::Unavailable { outage, .. } => (
                ErrorCode::StorageUnavailable,
                crate::http::error::storage_message(outage),
            ),
            _ => (ErrorCode::Internal, "internal error"),
        };
        self.out.error(code, message, Some(channel)).await
    }
}

impl Session {
    /// A read that broke the protocol ends the connection with its close code (1002, 1009,
    /// 1007); a text frame that is not UTF-8 also gets an `error` frame first, so the client
    /// reads why in the gateway's own terms.
    async fn violation(&mut self, violation: Violation) -> Result<(), End> {
        if violation.code == close::INVALID_PAYLOAD {
            self.out
                .error(
                    ErrorCode::UnsupportedFrame,
                    "text frames must be valid UTF-8",
                    None,
                )
                .await?;
        }
        Err(End::Close(violation.code, violation.reason))
    }
}

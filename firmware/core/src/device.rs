//! The device's connection, as a sans-IO state machine (in the manner of `quinn-proto`):
//! the driver feeds it events with the current time in milliseconds and carries out the
//! [`Action`]s it returns. It owns no socket, no clock and no thread.
//!
//! ```text
//! Disconnected ──Connect──▶ Connecting ──on_connected──▶ AwaitingWelcome ──welcome──▶ Connected
//!      ▲                        │ timeout / failure            │ timeout / close        │ close, dead peer
//!      └──── delay over ─── Backoff ◀──────────────────────────┴────────────────────────┘
//! ```
//!
//! The driver's loop: call [`Device::poll`] until it returns [`Action::Wait`], then wait until
//! that time or an event (a frame, a pong, the connection's outcome, a new reading), report the
//! event, and poll again. After [`Action::Close`] the driver drops the connection (or the
//! attempt in progress) and reports nothing more about it.

use std::collections::{BTreeMap, VecDeque};

use serde_json::json;
use time::OffsetDateTime;
use unhidra_proto::ws::{close, ClientFrame, ServerFrame};
use unhidra_proto::ErrorCode;

use crate::backoff::{Backoff, BackoffConfig};
use crate::commands::{Dispatcher, HandlerResult, Outcome};
use crate::outbox::Outbox;
use crate::rng::{Rng, SplitMix64};

/// Tunables, in milliseconds where they are times.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// From `Connect` to `welcome`; longer and the attempt is abandoned.
    pub connect_timeout_ms: u64,
    /// A connection welcomed this long ago resets the backoff when it drops.
    pub stable_after_ms: u64,
    /// WebSocket ping interval (the server pings every 30 s too).
    pub ping_interval_ms: u64,
    /// Nothing received for this many ping intervals: the peer is dead, reconnect.
    pub dead_after_pings: u32,
    /// Application `heartbeat` interval (firmware version, free memory, uptime).
    pub heartbeat_interval_ms: u64,
    /// Telemetry points kept while offline; the oldest is dropped when full.
    pub outbox_capacity: usize,
    /// A queued point older than this is dropped instead of sent: the server refuses a `ts`
    /// more than 5 minutes from its clock.
    pub outbox_max_age_ms: u64,
    /// Text frames per second this device sends at most (the server allows 50 with a burst
    /// of 50 and closes a connection that keeps exceeding it).
    pub frames_per_sec: u32,
    /// Frames that may go out at once after a quiet period.
    pub frame_burst: u32,
    /// Answered command ids remembered, to answer a re-delivery without running it again.
    pub remember_commands: usize,
    /// Largest frame accepted or sent until `welcome` tells the server's limit.
    pub max_frame_bytes: usize,
    /// How long telemetry pauses after `overloaded` or `rate_limited`.
    pub overload_backoff: BackoffConfig,
    /// Sent in heartbeats.
    pub firmware_version: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            connect_timeout_ms: 15_000,
            stable_after_ms: 30_000,
            ping_interval_ms: 20_000,
            dead_after_pings: 2,
            heartbeat_interval_ms: 60_000,
            outbox_capacity: 256,
            outbox_max_age_ms: 280_000,
            frames_per_sec: 20,
            frame_burst: 20,
            remember_commands: 64,
            max_frame_bytes: 65_536,
            overload_backoff: BackoffConfig {
                base_ms: 1_000,
                cap_ms: 30_000,
                floor_ms: 500,
            },
            firmware_version: None,
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection (TCP, TLS, WebSocket upgrade offering `unhidra.v1` and
    /// `device.<key>`), then report [`Device::on_connected`] or [`Device::on_disconnected`].
    Connect,
    /// Send this text frame.
    Send(String),
    /// Send a WebSocket ping; report the pong with [`Device::on_pong`].
    SendPing,
    /// Close the connection, or abandon the attempt in progress.
    Close,
    /// Nothing to do until this time (ms), unless an event comes first.
    Wait(u64),
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Failed or dropped without a close frame (I/O, DNS, TLS, timeout).
    Lost,
    /// The server closed it with this code.
    Closed(u16),
    /// The server refused the upgrade with this HTTP status (401: the key is unknown or
    /// revoked; 429: too many handshakes, with `Retry-After`).
    Refused {
        status: u16,
        retry_after_ms: Option<u64>,
    },
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// About to connect (the next `poll` says `Connect`).
    Disconnected,
    Connecting {
        since_ms: u64,
    },
    /// Upgraded; the server's `welcome` has not come yet.
    AwaitingWelcome {
        since_ms: u64,
    },
    /// Welcomed: telemetry, heartbeats and commands flow.
    Connected {
        welcomed_at_ms: u64,
    },
    /// Waiting before the next attempt.
    Backoff {
        until_ms: u64,
    },
}

/// A reading the server would refuse; nothing of it is queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    #[error("a telemetry frame holds 1 to 64 metrics")]
    Count,
    #[error("metric names are 1-64 characters of A-Z a-z 0-9 . _ -: {0:?}")]
    Name(String),
    #[error("metric {0:?} is not a finite number")]
    NotFinite(String),
}

/// What happened so far; counters only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connect_attempts: u64,
    pub welcomes: u64,
    pub disconnects: u64,
    pub connect_timeouts: u64,
    pub dead_peers: u64,
    pub refused: u64,
    /// The delay chosen at the last disconnect.
    pub last_backoff_ms: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub pings: u64,
    pub heartbeats: u64,
    pub telemetry_sent: u64,
    /// Telemetry dropped because the outbox was full (the oldest went).
    pub telemetry_dropped: u64,
    /// Telemetry dropped because it waited longer than `outbox_max_age_ms`.
    pub telemetry_expired: u64,
    pub commands_run: u64,
    pub commands_replayed: u64,
    pub commands_unknown: u64,
    /// Text that was not JSON, or not a frame of the protocol (unknown type, wrong fields).
    pub malformed: u64,
    /// Frames larger than the limit, ignored unparsed.
    pub oversized: u64,
    /// Valid frames with no meaning for a device, or out of place (chat frames, a second
    /// `welcome`, a command before `welcome`).
    pub ignored: u64,
    /// `error` frames from the server.
    pub errors: u64,
    /// Of which `overloaded` or `rate_limited` (telemetry paused).
    pub overloaded: u64,
    /// Outgoing frames larger than the server's limit, not sent.
    pub too_big: u64,
}

/// One device's connection to the server.
pub struct Device<R: Rng = SplitMix64> {
    config: Config,
    rng: R,
    state: State,
    backoff: Backoff,
    boot_ms: u64,
    pending: VecDeque<Action>,
    outbox: Outbox<ClientFrame>,
    dispatcher: Dispatcher,
    last_rx_ms: u64,
    next_ping_ms: u64,
    next_heartbeat_ms: u64,
    /// Token bucket for outgoing text frames, in thousandths of a frame.
    tokens_milli: u64,
    tokens_at_ms: u64,
    telemetry_paused_until_ms: u64,
    /// The transport cannot take more telemetry for now (see [`Device::hold_telemetry`]).
    telemetry_held: bool,
    overload: Backoff,
    last_overload_ms: Option<u64>,
    free_memory: Option<u64>,
    max_frame_bytes: usize,
    connection_id: Option<String>,
    stats: Stats,
}

impl<R: Rng> std::fmt::Debug for Device<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("state", &self.state)
            .field("outbox", &self.outbox.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Device<R> {
    /// A device that boots at `now_ms` (uptime counts from here) and connects at its first
    /// `poll`.
    pub fn new(config: Config, rng: R, now_ms: u64) -> Self {
        Self {
            backoff: Backoff::new(config.backoff),
            overload: Backoff::new(config.overload_backoff),
            outbox: Outbox::new(config.outbox_capacity, config.outbox_max_age_ms),
            dispatcher: Dispatcher::new(config.remember_commands),
            max_frame_bytes: config.max_frame_bytes,
            tokens_milli: u64::from(config.frame_burst.max(1)) * 1000,
            config,
            rng,
            state: State::Disconnected,
            boot_ms: now_ms,
            pending: VecDeque::new(),
            last_rx_ms: now_ms,
            next_ping_ms: now_ms,
            next_heartbeat_ms: now_ms,
            tokens_at_ms: now_ms,
            telemetry_paused_until_ms: 0,
            telemetry_held: false,
            last_overload_ms: None,
            free_memory: None,
            connection_id: None,
            stats: Stats::default(),
        }
    }

    /// Registers the handler for command `name` (see [`crate::commands`]).
    pub fn register(
        &mut self,
        name: impl Into<String>,
        handler: impl FnMut(&serde_json::Value) -> HandlerResult + Send + 'static,
    ) {
        self.dispatcher.register(name, handler);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Welcomed by the server.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The server's id for the current connection, once welcomed.
    pub fn connection_id(&self) -> Option<&str> {
        self.connection_id.as_deref()
    }

    /// Frames or pings waiting for their turn (telemetry not counted).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Telemetry points waiting to be sent.
    pub fn queued_telemetry(&self) -> usize {
        self.outbox.len()
    }

    pub fn stats(&self) -> Stats {
        let counters = self.outbox.counters();
        Stats {
            telemetry_dropped: counters.dropped_full,
            telemetry_expired: counters.expired,
            ..self.stats.clone()
        }
    }

    /// Flow control for transports that acknowledge telemetry (MQTT's PUBACK): while held,
    /// readings stay in the outbox (which keeps the newest) instead of being sent; answers,
    /// heartbeats and timers go on. The driver releases it when acknowledgements come.
    pub fn hold_telemetry(&mut self, hold: bool) {
        self.telemetry_held = hold;
    }

    /// Free memory to report in the next heartbeat.
    pub fn set_free_memory(&mut self, bytes: Option<u64>) {
        self.free_memory = bytes;
    }

    /// Queues a reading, sent in order as soon as the connection and rate allow. `ts` is
    /// the time of measurement (give it whenever the wall clock is set, e.g. after SNTP:
    /// without it the server stamps the point with its arrival).
    pub fn queue_telemetry(
        &mut self,
        now_ms: u64,
        metrics: BTreeMap<String, f64>,
        ts: Option<OffsetDateTime>,
    ) -> Result<(), TelemetryError> {
        if metrics.is_empty() || metrics.len() > 64 {
            return Err(TelemetryError::Count);
        }
        for (name, value) in &metrics {
            let valid_name = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid_name {
                return Err(TelemetryError::Name(name.clone()));
            }
            if !value.is_finite() {
                return Err(TelemetryError::NotFinite(name.clone()));
            }
        }
        self.outbox
            .push(now_ms, ClientFrame::Telemetry { metrics, ts });
        Ok(())
    }

    /// The connection is open (upgraded); `welcome` is next.
    pub fn on_connected(&mut self, now_ms: u64) {
        if let State::Connecting { .. } = self.state {
            self.state = State::AwaitingWelcome { since_ms: now_ms };
            self.last_rx_ms = now_ms;
        }
    }

    /// The connection, or the attempt, ended. Ignored when not connecting or connected.
    pub fn on_disconnected(&mut self, now_ms: u64, how: Disconnect) {
        if matches!(self.state, State::Disconnected | State::Backoff { .. }) {
            return;
        }
        self.stats.disconnects += 1;
        self.pending.clear();
        self.enter_backoff(now_ms, how);
    }

    /// A WebSocket pong (or any sign of life that is not a text frame) arrived.
    pub fn on_pong(&mut self, now_ms: u64) {
        self.last_rx_ms = now_ms;
    }

    /// A text frame arrived. Never panics: anything that is not a frame of the protocol is
    /// counted and ignored.
    pub fn on_text(&mut self, now_ms: u64, text: &str) {
        self.received(now_ms);
        if text.len() > self.max_frame_bytes {
            self.stats.oversized += 1;
            return;
        }
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => self.handle(now_ms, frame),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// A server frame that arrived already parsed: a transport that carries the frames'
    /// contents in its own way (MQTT, see [`crate::mqtt`]) translates them into frames and
    /// hands them over here. Handled exactly as the same frame sent as text.
    pub fn on_frame(&mut self, now_ms: u64, frame: ServerFrame) {
        self.received(now_ms);
        self.handle(now_ms, frame);
    }

    /// A message arrived that could not be translated into a frame: counted as malformed,
    /// and a sign of life like any message.
    pub fn on_malformed(&mut self, now_ms: u64) {
        self.received(now_ms);
        self.stats.malformed += 1;
    }

    /// A message arrived that means nothing to a device (another transport's equivalent of
    /// a frame it ignores): counted as ignored, and a sign of life.
    pub fn on_ignored(&mut self, now_ms: u64) {
        self.received(now_ms);
        self.stats.ignored += 1;
    }

    fn received(&mut self, now_ms: u64) {
        self.stats.frames_in += 1;
        self.last_rx_ms = now_ms;
    }

    fn handle(&mut self, now_ms: u64, frame: ServerFrame) {
        match frame {
            ServerFrame::Welcome {
                connection_id,
                max_message_bytes,
                ..
            } if matches!(self.state, State::AwaitingWelcome { .. }) => {
                self.stats.welcomes += 1;
                self.state = State::Connected {
                    welcomed_at_ms: now_ms,
                };
                self.connection_id = Some(connection_id);
                self.max_frame_bytes = max_message_bytes.clamp(1024, self.config.max_frame_bytes);
                self.next_ping_ms = now_ms.saturating_add(self.config.ping_interval_ms);
                self.next_heartbeat_ms = now_ms;
                self.telemetry_paused_until_ms = 0;
                self.overload.reset();
            }
            ServerFrame::Command { id, name, args } if self.is_connected() => {
                let (answer, outcome) = self.dispatcher.dispatch(&id, &name, &args);
                match outcome {
                    Outcome::Ran => self.stats.commands_run += 1,
                    Outcome::Unknown => self.stats.commands_unknown += 1,
                    Outcome::Replayed => self.stats.commands_replayed += 1,
                }
                let frame = ClientFrame::CommandResult {
                    id: id.clone(),
                    ok: answer.ok,
                    output: answer.output,
                };
                if !self.queue_frame(&frame) {
                    // Too big to send: say so instead, or the server re-delivers forever.
                    let frame = ClientFrame::CommandResult {
                        id,
                        ok: false,
                        output: json!({"error": "output too large"}),
                    };
                    self.queue_frame(&frame);
                }
            }
            ServerFrame::Error { code, .. } => {
                self.stats.errors += 1;
                if matches!(
                    code,
                    ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::StorageUnavailable
                ) {
                    self.stats.overloaded += 1;
                    self.pause_telemetry(now_ms);
                }
            }
            ServerFrame::Pong {} => {}
            _ => self.stats.ignored += 1,
        }
    }

    /// The next thing to do at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        self.tick(now_ms);
        if let Some(front) = self.pending.front() {
            if matches!(front, Action::Send(_)) && !self.take_token(now_ms) {
                return Action::Wait(self.token_ready_ms(now_ms));
            }
            if let Some(action) = self.pending.pop_front() {
                if matches!(action, Action::Send(_)) {
                    self.stats.frames_out += 1;
                }
                return action;
            }
        }
        match self.state {
            State::Disconnected => {
                self.stats.connect_attempts += 1;
                self.state = State::Connecting { since_ms: now_ms };
                return Action::Connect;
            }
            State::Connected { .. }
                if now_ms >= self.telemetry_paused_until_ms
                    && !self.telemetry_held
                    && !self.outbox.is_empty() =>
            {
                if !self.take_token(now_ms) {
                    return Action::Wait(self.token_ready_ms(now_ms));
                }
                while let Some(frame) = self.outbox.pop(now_ms) {
                    if let Some(text) = self.encode(&frame) {
                        self.stats.telemetry_sent += 1;
                        self.stats.frames_out += 1;
                        return Action::Send(text);
                    }
                }
                // Every queued point had expired: give the token back.
                self.tokens_milli = self.tokens_milli.saturating_add(1000);
            }
            _ => {}
        }
        Action::Wait(self.next_deadline_ms(now_ms))
    }

    /// Timers: connect timeout, dead peer, pings, heartbeats, the end of a backoff.
    fn tick(&mut self, now_ms: u64) {
        match self.state {
            State::Connecting { since_ms } | State::AwaitingWelcome { since_ms } => {
                if now_ms.saturating_sub(since_ms) >= self.config.connect_timeout_ms {
                    self.stats.connect_timeouts += 1;
                    self.abandon(now_ms);
                }
            }
            State::Connected { .. } => {
                let dead_after = self
                    .config
                    .ping_interval_ms
                    .saturating_mul(u64::from(self.config.dead_after_pings.max(1)));
                if now_ms.saturating_sub(self.last_rx_ms) >= dead_after {
                    self.stats.dead_peers += 1;
                    self.abandon(now_ms);
                    return;
                }
                if now_ms >= self.next_ping_ms {
                    self.stats.pings += 1;
                    self.pending.push_back(Action::SendPing);
                    self.next_ping_ms = now_ms.saturating_add(self.config.ping_interval_ms.max(1));
                }
                if now_ms >= self.next_heartbeat_ms {
                    self.stats.heartbeats += 1;
                    let uptime = now_ms.saturating_sub(self.boot_ms) / 1000;
                    let frame = ClientFrame::Heartbeat {
                        firmware_version: self.config.firmware_version.clone(),
                        free_memory: self.free_memory,
                        uptime_secs: Some(uptime),
                    };
                    self.queue_frame(&frame);
                    self.next_heartbeat_ms =
                        now_ms.saturating_add(self.config.heartbeat_interval_ms.max(1));
                }
            }
            State::Backoff { until_ms } => {
                if now_ms >= until_ms {
                    self.state = State::Disconnected;
                }
            }
            State::Disconnected => {}
        }
    }

    /// Gives up on the connection or attempt: `Close`, then backoff.
    fn abandon(&mut self, now_ms: u64) {
        self.stats.disconnects += 1;
        self.pending.clear();
        self.pending.push_back(Action::Close);
        self.enter_backoff(now_ms, Disconnect::Lost);
    }

    fn enter_backoff(&mut self, now_ms: u64, how: Disconnect) {
        if let State::Connected { welcomed_at_ms } = self.state {
            if now_ms.saturating_sub(welcomed_at_ms) >= self.config.stable_after_ms {
                self.backoff.reset();
            }
        }
        let refused = matches!(
            how,
            Disconnect::Refused {
                status: 401 | 403,
                ..
            } | Disconnect::Closed(close::POLICY_VIOLATION)
        );
        if refused {
            // The key was refused or revoked: retrying soon cannot help.
            self.stats.refused += 1;
            self.backoff.exhaust();
        }
        let mut delay = self.backoff.next_delay(&mut self.rng);
        if refused {
            delay = delay.max(self.config.backoff.cap_ms / 2);
        }
        if let Disconnect::Refused {
            retry_after_ms: Some(retry_after),
            ..
        } = how
        {
            delay = delay.max(retry_after);
        }
        self.stats.last_backoff_ms = delay;
        self.state = State::Backoff {
            until_ms: now_ms.saturating_add(delay),
        };
        self.connection_id = None;
        self.max_frame_bytes = self.config.max_frame_bytes;
    }

    fn pause_telemetry(&mut self, now_ms: u64) {
        let calm = self
            .last_overload_ms
            .is_some_and(|at| now_ms.saturating_sub(at) > self.config.overload_backoff.cap_ms * 2);
        if calm {
            self.overload.reset();
        }
        self.last_overload_ms = Some(now_ms);
        let delay = self.overload.next_delay(&mut self.rng);
        self.telemetry_paused_until_ms = now_ms.saturating_add(delay);
    }

    /// Serializes and queues a frame; false (and counted) when it is too big to send.
    fn queue_frame(&mut self, frame: &ClientFrame) -> bool {
        match self.encode(frame) {
            Some(text) => {
                self.pending.push_back(Action::Send(text));
                true
            }
            None => false,
        }
    }

    fn encode(&mut self, frame: &ClientFrame) -> Option<String> {
        match serde_json::to_string(frame) {
            Ok(text) if text.len() <= self.max_frame_bytes => Some(text),
            _ => {
                self.stats.too_big += 1;
                None
            }
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.tokens_at_ms);
        let rate = u64::from(self.config.frames_per_sec.max(1));
        let cap = u64::from(self.config.frame_burst.max(1)) * 1000;
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        self.tokens_at_ms = self.tokens_at_ms.max(now_ms);
    }

    fn take_token(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }

    fn token_ready_ms(&self, now_ms: u64) -> u64 {
        let rate = u64::from(self.config.frames_per_sec.max(1));
        let missing = 1000u64.saturating_sub(self.tokens_milli);
        now_ms.saturating_add(missing.div_ceil(rate).max(1))
    }

    fn next_deadline_ms(&self, now_ms: u64) -> u64 {
        let deadline = match self.state {
            State::Connecting { since_ms } | State::AwaitingWelcome { since_ms } => {
                since_ms.saturating_add(self.config.connect_timeout_ms)
            }
            State::Connected { .. } => {
                let dead = self.last_rx_ms.saturating_add(
                    self.config
                        .ping_interval_ms
                        .saturating_mul(u64::from(self.config.dead_after_pings.max(1))),
                );
                let mut next = dead.min(self.next_ping_ms).min(self.next_heartbeat_ms);
                if !self.outbox.is_empty() && !self.telemetry_held {
                    next = next.min(self.telemetry_paused_until_ms);
                }
                next
            }
            State::Backoff { until_ms } => until_ms,
            State::Disconnected => now_ms,
        };
        deadline.max(now_ms.saturating_add(1))
    }
}

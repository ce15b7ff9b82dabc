//! One MQTT connection on the native listener, from CONNECT to close.
//!
//! CONNECT must come within [`CONNECT_TIMEOUT`]; it is refused (CONNACK with a code) for a
//! client over its address's connect rate, a username that is not the key's device, a bad or
//! revoked key, or a Last Will anywhere but the device's own `status` topic. Sessions are
//! always clean (`session present` is 0): what a device must not miss, its commands, is kept
//! in the store and sent again on every connection until answered.
//!
//! After that the loop waits on, in order: shutdown (MQTT 5: DISCONNECT "server shutting
//! down"), a server-side kick (revocation: "not authorized"), the next packet (within 1.5 ×
//! keep-alive), and the device's commands. What a device publishes goes through
//! [`super::route`]; a QoS 1 publish is acknowledged once that returns, so after telemetry is
//! committed. Refusals: MQTT 5 gets a PUBACK reason code and reason string; MQTT 3.1.1 has no
//! negative PUBACK, so a publish outside the device's topics closes the connection (as the
//! 3.1.1 spec prescribes) and a refused payload is acknowledged (sending it again cannot
//! help). Either way, a device subscribed to its `errors` topic is told what and why.
//! A store too busy to take telemetry is retried for a while before the publish is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::codec::Framed;
use unhidra_proto::mqtt::{parse_topic, topic, CommandPayload, ErrorPayload, TopicKind};
use unhidra_proto::ws::{Principal, ServerFrame};
use unhidra_proto::ErrorCode;

use super::packets::{
    AckReason, CloseReason, Codec, CodecError, ConnCode, Connect, Inbound, Outbound, Version,
};
use crate::devices::link::{DeviceLink, Refusal};
use crate::devices::DeviceAuthError;
use crate::gateway::hub::Delivery;
use crate::gateway::registry::{Control, Controls, Kick, NewConnection};
use crate::rate_limit::Limit;
use crate::state::SharedState;

/// How long a client has to send CONNECT after the connection (and TLS) is up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands sent and not yet acknowledged (PUBACK); more wait in the store for the device's
/// next connection.
const MAX_INFLIGHT: usize = 64;
/// The read and write buffers' first size. Device packets are small (a telemetry publish is
/// about 200 bytes); a larger one grows its buffer as needed. `Framed`'s default of 8 KiB
/// each cost 16 KiB per connection once a connection's traffic had walked through them.
const IO_BUFFER: usize = 1024;
/// How long a publish waits for a busy store before it is refused.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(5);

/// The reason a kick from another MQTT connection of the same client carries.
pub const TAKEN_OVER: &str = "session taken over by a new connection";

/// Why the loop ended.
enum End {
    /// The client sent DISCONNECT: its will is dropped (unless it asked for it).
    Disconnected { with_will: bool },
    /// The server closes: MQTT 5 clients are told why.
    Close(CloseReason, Option<String>),
    /// The peer is gone or stuck.
    Drop,
}

struct Session<IO> {
    state: SharedState,
    framed: Framed<IO, Codec>,
    version: Version,
    link: DeviceLink,
    /// The device's command topic on the hub, while it is subscribed to `commands`.
    commands: Option<BroadcastStream<Arc<Delivery>>>,
    commands_qos: u8,
    errors_subscribed: bool,
    /// The seq of the last command sent, so the live feed skips what the replay sent.
    last_command_seq: i64,
    next_pkid: u16,
    /// Commands sent at QoS 1 and not yet acknowledged: packet id → command id.
    inflight: HashMap<u16, String>,
    limiter: DefaultDirectRateLimiter,
    write_timeout: Duration,
}

/// Serves one connection to its end.
pub async fn serve<IO>(io: IO, peer: SocketAddr, state: SharedState)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max_packet = state.config.mqtt.max_packet_bytes;
    let mut framed = framed(io, max_packet);
    let connect = match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(Inbound::Connect(connect)))) => connect,
        Ok(Some(Err(CodecError::UnsupportedProtocol(level)))) => {
            tracing::debug!(%peer, level, "MQTT protocol level refused");
            // 3.1.1's "unacceptable protocol version"; older clients understand it too.
            let refusal = Outbound::ConnAck {
                code: ConnCode::BadProtocol,
                server_keep_alive: None,
                max_packet_bytes: 0,
                reason: None,
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), framed.send(refusal)).await;
            count_connect("3.1.1", "bad_protocol");
            return;
        }
        other => {
            let why = match other {
                Err(_) => "no CONNECT in time".to_owned(),
                Ok(Some(Err(err))) => err.to_string(),
                _ => "closed before CONNECT".to_owned(),
            };
            tracing::debug!(%peer, why, "MQTT connection dropped before CONNECT");
            count_connect("unknown", "no_connect");
            return;
        }
    };
    let version = connect.version;
    let device = match admit(&state, &connect, peer).await {
        Ok(device) => device,
        Err((code, reason)) => {
            tracing::debug!(%peer, ?code, reason, "MQTT CONNECT refused");
            count_connect(version.label(), "refused");
            let refusal = Outbound::ConnAck {
                code,
                server_keep_alive: None,
                max_packet_bytes: u32::try_from(max_packet).unwrap_or(u32::MAX),
                reason: Some(reason.to_owned()),
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), framed.send(refusal)).await;
            return;
        }
    };
    count_connect(version.label(), "ok");

    // A second connection with the same client id replaces the first (MQTT's rule); other
    // connections of the device (other client ids, WebSockets) stay.
    let client_id: String = connect.client_id.chars().take(64).collect();
    let agent = format!("mqtt/{} {client_id}", version.label());
    let principal = Principal::Device {
        id: device.device_id.clone(),
    };
    if !client_id.is_empty() {
        // Whatever protocol version the earlier connection spoke.
        let same_client = |agent: &str| {
            agent.starts_with("mqtt/")
                && agent.split_once(' ').map(|(_, id)| id) == Some(client_id.as_str())
        };
        state.gateway.registry.close_where(
            |c| c.principal == principal && c.user_agent.as_deref().is_some_and(same_client),
            Kick {
                code: unhidra_proto::ws::close::POLICY_VIOLATION,
                reason: TAKEN_OVER,
            },
        );
    }
    let registration = state.gateway.registry.register(NewConnection {
        principal,
        session_id: None,
        ip: peer.ip(),
        user_agent: Some(agent),
        connected_at: state.clock.now(),
    });
    let connection_id = registration.connection.id.clone();

    let keep_alive = effective_keep_alive(
        connect.keep_alive_secs,
        state.config.mqtt.max_keep_alive_secs,
    );
    let accepted = Outbound::ConnAck {
        code: ConnCode::Accepted,
        server_keep_alive: (keep_alive != connect.keep_alive_secs).then_some(keep_alive),
        max_packet_bytes: u32::try_from(max_packet).unwrap_or(u32::MAX),
        reason: None,
    };
    let per_second =
        NonZeroU32::new(state.config.rate_limits.ws_messages_per_second).unwrap_or(NonZeroU32::MIN);
    let mut session = Session {
        link: DeviceLink::open(&state, &device.device_id, &device.owner_id),
        framed,
        version,
        commands: None,
        commands_qos: 0,
        errors_subscribed: false,
        last_command_seq: 0,
        next_pkid: 0,
        inflight: HashMap::new(),
        limiter: RateLimiter::direct(Quota::per_second(per_second)),
        write_timeout: Duration::from_millis(state.config.gateway.write_timeout_ms),
        state: state.clone(),
    };
    metrics::gauge!(crate::metrics::MQTT_CONNECTIONS_ACTIVE).increment(1.0);
    tracing::debug!(connection = %connection_id, device = %device.device_id, version = version.label(), "MQTT connected");

    let end = match session.send(accepted).await {
        Ok(()) => session.run(registration.controls, keep_alive).await,
        Err(end) => end,
    };
    state.gateway.registry.unregister(&connection_id);
    let will_due = match &end {
        End::Disconnected { with_will } => *with_will,
        End::Close(..) | End::Drop => true,
    };
    if let (true, Some(will)) = (will_due, &connect.will) {
        // Checked at CONNECT: the device's own status topic.
        if let Err(refusal) = super::route(&session.link, TopicKind::Status, &will.payload).await {
            tracing::debug!(message = %refusal.message, "MQTT will not taken");
        }
    }
    if let End::Close(reason, message) = end {
        let _ = session.send(Outbound::Disconnect { reason, message }).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.framed.close()).await;
    metrics::gauge!(crate::metrics::MQTT_CONNECTIONS_ACTIVE).decrement(1.0);
    tracing::debug!(connection = %connection_id, "MQTT closed");
    // Dropping the session drops the link: the device goes offline if this was its last.
}

fn framed<IO: AsyncRead + AsyncWrite>(io: IO, max_packet: usize) -> Framed<IO, Codec> {
    Framed::with_capacity(io, Codec::new(max_packet), IO_BUFFER)
}

fn count_connect(version: &'static str, result: &'static str) {
    metrics::counter!(crate::metrics::MQTT_CONNECTIONS, "version" => version, "result" => result)
        .increment(1);
}

/// The keep-alive the server holds the client to: the client's, capped; 0 (none) gets the
/// cap, so that a silent connection is always noticed.
fn effective_keep_alive(asked: u16, max: u16) -> u16 {
    if asked == 0 || asked > max {
        max
    } else {
        asked
    }
}

/// Checks the CONNECT: rate, credentials, will.
async fn admit(
    state: &SharedState,
    connect: &Connect,
    peer: SocketAddr,
) -> Result<crate::http::extract::AuthDevice, (ConnCode, &'static str)> {
    if state.limits.check(Limit::WsConnect, peer.ip()).is_err() {
        return Err((
            ConnCode::RateLimited,
            "too many connections from this address",
        ));
    }
    let (Some(username), Some(password)) = (&connect.username, &connect.password) else {
        return Err((
            ConnCode::BadCredentials,
            "username (the device id) and password (the device key) are required",
        ));
    };
    let device =
        match crate::devices::authenticate(&*state.store, &state.device_keys, password).await {
            Ok(device) => device,
            Err(DeviceAuthError::Revoked) => {
                return Err((ConnCode::NotAuthorized, "the device is revoked"))
            }
            Err(DeviceAuthError::Store(err)) => {
                tracing::error!(error = %err, "device authentication failed on the store");
                return Err((ConnCode::Unavailable, "try again later"));
            }
            Err(_) => return Err((ConnCode::BadCredentials, "wrong device id or key")),
        };
    if &device.device_id != username {
        metrics::counter!(crate::metrics::DEVICE_AUTH, "result" => "mqtt_username_mismatch")
            .increment(1);
        return Err((ConnCode::BadCredentials, "wrong device id or key"));
    }
    if let Some(will) = &connect.will {
        if parse_topic(&will.topic) != Some((device.device_id.as_str(), TopicKind::Status)) {
            return Err((
                ConnCode::NotAuthorized,
                "a will may only be published to the device's own status topic",
            ));
        }
    }
    Ok(device)
}

impl<IO> Session<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self, mut controls: Controls, keep_alive: u16) -> End {
        let shutdown = self.state.gateway.shutdown.clone();
        // Waited on across turns, not registered anew with the token in each.
        let shutting_down = shutdown.cancelled();
        tokio::pin!(shutting_down);
        // MQTT: a client silent for one and a half keep-alive periods is gone.
        let idle_limit = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = Instant::now() + idle_limit;
        loop {
            let turn = tokio::select! {
                biased;
                () = &mut shutting_down => Err(End::Close(CloseReason::ShuttingDown, None)),
                control = controls.recv() => match control {
                    Control::Close(kick) => Err(kick_end(&kick)),
                    // Devices have no channel subscriptions.
                    Control::Unsubscribe { .. } => Ok(()),
                },
                packet = self.framed.next() => {
                    deadline = Instant::now() + idle_limit;
                    match packet {
                        // Boxed, as are commands: the session's future, which every idle
                        // connection holds, would otherwise be as large as theirs.
                        Some(Ok(packet)) => Box::pin(self.inbound(packet)).await,
                        Some(Err(err)) => Err(codec_end(&err)),
                        None => Err(End::Drop),
                    }
                }
                Some(item) = next_command(&mut self.commands) => Box::pin(self.command(item)).await,
                () = tokio::time::sleep_until(deadline) => {
                    Err(End::Close(CloseReason::KeepAliveTimeout, None))
                }
            };
            if let Err(end) = turn {
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
        }
    }

    async fn feed(&mut self, packet: Outbound) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, self.framed.feed(packet)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Drop),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, self.framed.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Drop),
        }
    }

    async fn send(&mut self, packet: Outbound) -> Result<(), End> {
        self.feed(packet).await?;
        self.flush().await
    }

    async fn inbound(&mut self, packet: Inbound) -> Result<(), End> {
        match packet {
            Inbound::Publish {
                topic,
                qos,
                pkid,
                retain,
                payload,
            } => self.publish(topic, qos, pkid, retain, payload).await,
            Inbound::PubAck { pkid } => {
                if let Some(command_id) = self.inflight.remove(&pkid) {
                    self.link.note_delivered(command_id);
                }
                Ok(())
            }
            Inbound::Subscribe { pkid, filters } => self.subscribe(pkid, filters).await,
            Inbound::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                for filter in filters {
                    match self.own_kind(&filter) {
                        Some(TopicKind::Commands) => self.commands = None,
                        Some(TopicKind::Errors) => self.errors_subscribed = false,
                        _ => {}
                    }
                }
                self.feed(Outbound::UnsubAck { pkid, count }).await
            }
            Inbound::PingReq => self.feed(Outbound::PingResp).await,
            Inbound::Disconnect { with_will } => Err(End::Disconnected { with_will }),
            Inbound::Connect(_) => Err(End::Close(
                CloseReason::ProtocolError,
                Some("a second CONNECT".to_owned()),
            )),
            Inbound::QosTwo => Err(qos_two()),
            Inbound::Unsupported(what) => Err(End::Close(
                CloseReason::ProtocolError,
                Some(format!("{what} is not supported")),
            )),
        }
    }

    /// `kind` if `filter` is exactly one of this device's topics.
    fn own_kind(&self, filter: &str) -> Option<TopicKind> {
        match parse_topic(filter) {
            Some((id, kind)) if id == self.link.device_id() => Some(kind),
            _ => None,
        }
    }

    async fn publish(
        &mut self,
        topic: String,
        qos: u8,
        pkid: u16,
        retain: bool,
        payload: Bytes,
    ) -> Result<(), End> {
        if qos > 1 {
            return Err(qos_two());
        }
        if retain && self.version == Version::V5 {
            return Err(End::Close(
                CloseReason::RetainNotSupported,
                Some("retained messages are not supported".to_owned()),
            ));
        }
        // Pacing, not refusing: a fast device is slowed to its allowance.
        self.limiter.until_ready().await;
        metrics::counter!(crate::metrics::MQTT_PUBLISHES, "direction" => "in").increment(1);
        let kind = match self.own_kind(&topic) {
            Some(kind) if kind.from_device() => kind,
            _ => {
                metrics::counter!(crate::metrics::MQTT_REFUSED, "reason" => "topic").increment(1);
                tracing::debug!(device = %self.link.device_id(), %topic, "MQTT publish outside the device's topics");
                let message = format!(
                    "not allowed: a device publishes only to {}/{}/telemetry, status or results",
                    unhidra_proto::mqtt::TOPIC_ROOT,
                    self.link.device_id()
                );
                if self.version == Version::V4 {
                    // 3.1.1 has no way to refuse a publish but closing the connection.
                    return Err(End::Close(CloseReason::NotAuthorized, None));
                }
                let refusal = Refusal {
                    code: ErrorCode::Forbidden,
                    message,
                };
                return self
                    .refuse(&topic, qos, pkid, AckReason::NotAuthorized, refusal)
                    .await;
            }
        };
        let mut result = super::route(&self.link, kind, &payload).await;
        let give_up = Instant::now() + BUSY_RETRY_FOR;
        let mut wait = Duration::from_millis(50);
        while matches!(&result, Err(r) if r.code == ErrorCode::Overloaded)
            && Instant::now() < give_up
        {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
            result = super::route(&self.link, kind, &payload).await;
        }
        match result {
            Ok(()) if qos == 1 => {
                self.feed(Outbound::PubAck {
                    pkid,
                    reason: AckReason::Success,
                    message: None,
                })
                .await
            }
            Ok(()) => Ok(()),
            Err(refusal) => {
                let label = if refusal.is_transient() {
                    "busy"
                } else {
                    "payload"
                };
                metrics::counter!(crate::metrics::MQTT_REFUSED, "reason" => label).increment(1);
                if refusal.is_transient() && qos == 1 && self.version == Version::V4 {
                    // Not acknowledged, and closed: 3.1.1 has no other way to say "not now".
                    // Sessions are clean, so a client library that drops unacknowledged
                    // publishes on a new session (rumqttc does) loses this one; its
                    // application hears of the disconnect. MQTT 5 clients get a reason code.
                    return Err(End::Close(CloseReason::ServerBusy, None));
                }
                let reason = match refusal.code {
                    ErrorCode::InvalidJson | ErrorCode::InvalidField => {
                        AckReason::PayloadFormatInvalid
                    }
                    ErrorCode::Overloaded => AckReason::QuotaExceeded,
                    _ => AckReason::Unspecified,
                };
                self.refuse(&topic, qos, pkid, reason, refusal).await
            }
        }
    }

    /// Answers a refused publish: the PUBACK (QoS 1; its reason code only reaches MQTT 5
    /// clients) and, for a device that listens, the refusal on its `errors` topic.
    async fn refuse(
        &mut self,
        refused_topic: &str,
        qos: u8,
        pkid: u16,
        reason: AckReason,
        refusal: Refusal,
    ) -> Result<(), End> {
        if qos == 1 {
            self.feed(Outbound::PubAck {
                pkid,
                reason,
                message: Some(refusal.message.clone()),
            })
            .await?;
        }
        if self.errors_subscribed {
            let error = ErrorPayload {
                code: refusal.code,
                message: refusal.message,
                topic: Some(refused_topic.chars().take(256).collect()),
            };
            let payload = serde_json::to_vec(&error).map_err(|_| End::Drop)?;
            let errors = topic(self.link.device_id(), TopicKind::Errors);
            self.feed(Outbound::Publish {
                topic: errors,
                qos: 0,
                pkid: 0,
                payload: payload.into(),
            })
            .await?;
        }
        Ok(())
    }

    async fn subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) -> Result<(), End> {
        let mut granted = Vec::with_capacity(filters.len());
        let mut start_commands = false;
        for (filter, qos) in filters {
            let qos = qos.min(1);
            match self.own_kind(&filter) {
                Some(TopicKind::Commands) => {
                    start_commands = self.commands.is_none();
                    self.commands_qos = qos;
                    granted.push(Some(qos));
                }
                Some(TopicKind::Errors) => {
                    self.errors_subscribed = true;
                    granted.push(Some(qos));
                }
                _ => {
                    metrics::counter!(crate::metrics::MQTT_REFUSED, "reason" => "subscribe")
                        .increment(1);
                    tracing::debug!(device = %self.link.device_id(), %filter, "MQTT subscription refused");
                    granted.push(None);
                }
            }
        }
        self.feed(Outbound::SubAck { pkid, granted }).await?;
        if start_commands {
            // Listen before reading the pending ones, so none stored in between is missed.
            let hub_topic = crate::devices::commands::device_topic(self.link.device_id());
            self.commands = Some(BroadcastStream::new(
                self.state.gateway.hub.subscribe(&hub_topic),
            ));
            self.send_pending().await?;
        }
        Ok(())
    }

    /// Sends the commands waiting in the store, oldest first.
    async fn send_pending(&mut self) -> Result<(), End> {
        let pending = match self
            .link
            .pending_commands(crate::devices::commands::PENDING_PAGE)
            .await
        {
            Ok(pending) => pending,
            Err(err) => {
                tracing::error!(error = %err, "reading pending commands failed");
                return Err(End::Close(CloseReason::ServerBusy, None));
            }
        };
        for command in pending {
            if command.seq <= self.last_command_seq {
                continue;
            }
            let payload = CommandPayload {
                id: command.id,
                name: command.name,
                args: command.args,
            };
            self.send_command(command.seq, payload).await?;
        }
        Ok(())
    }

    /// A command from the hub while the device listens.
    async fn command(
        &mut self,
        item: Result<Arc<Delivery>, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        let delivery = match item {
            Ok(delivery) => delivery,
            // Missed some: they are in the store.
            Err(BroadcastStreamRecvError::Lagged(_)) => return self.send_pending().await,
        };
        if delivery.seq <= self.last_command_seq {
            return Ok(());
        }
        if let Ok(ServerFrame::Command { id, name, args }) = serde_json::from_str(&delivery.frame) {
            self.send_command(delivery.seq, CommandPayload { id, name, args })
                .await?;
        }
        Ok(())
    }

    async fn send_command(&mut self, seq: i64, command: CommandPayload) -> Result<(), End> {
        if self.commands_qos == 1 && self.inflight.len() >= MAX_INFLIGHT {
            // The device is not acknowledging; the rest wait in the store for its next
            // connection.
            return Ok(());
        }
        let payload = serde_json::to_vec(&command).map_err(|_| End::Drop)?;
        let pkid = if self.commands_qos == 1 {
            let pkid = self.allocate_pkid();
            self.inflight.insert(pkid, command.id.clone());
            pkid
        } else {
            self.link.note_delivered(command.id.clone());
            0
        };
        self.last_command_seq = seq;
        metrics::counter!(crate::metrics::MQTT_PUBLISHES, "direction" => "out").increment(1);
        self.feed(Outbound::Publish {
            topic: topic(self.link.device_id(), TopicKind::Commands),
            qos: self.commands_qos,
            pkid,
            payload: payload.into(),
        })
        .await
    }

    /// The next packet id not in flight (1..=65535).
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

async fn next_command(
    commands: &mut Option<BroadcastStream<Arc<Delivery>>>,
) -> Option<Result<Arc<Delivery>, BroadcastStreamRecvError>> {
    match commands {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// QoS 2, in a PUBLISH or its flow's packets: not offered (CONNACK says maximum QoS 1).
fn qos_two() -> End {
    End::Close(
        CloseReason::QosNotSupported,
        Some("QoS 2 is not supported; use QoS 0 or 1".to_owned()),
    )
}

fn kick_end(kick: &Kick) -> End {
    let reason = if kick.reason == TAKEN_OVER {
        CloseReason::SessionTakenOver
    } else if kick.reason == crate::devices::REVOKED {
        CloseReason::NotAuthorized
    } else {
        CloseReason::AdministrativeAction
    };
    End::Close(reason, Some(kick.reason.to_owned()))
}

fn codec_end(err: &CodecError) -> End {
    tracing::debug!(error = %err, "MQTT read failed");
    match err {
        CodecError::TooLarge { .. } => {
            End::Close(CloseReason::PacketTooLarge, Some(err.to_string()))
        }
        CodecError::Malformed(_) | CodecError::NotConnect | CodecError::UnsupportedProtocol(_) => {
            End::Close(CloseReason::Malformed, Some(err.to_string()))
        }
        CodecError::Encode(_) | CodecError::Io(_) => End::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_buffers_still_take_large_packets() {
        use rumqttc::mqttbytes::{v4, QoS};

        let (server_end, client_end) = tokio::io::duplex(64 * 1024);
        let mut server = framed(server_end, 64 * 1024);
        assert!(server.read_buffer().capacity() <= IO_BUFFER);
        let mut client = Framed::new(
            client_end,
            v4::Codec {
                max_incoming_size: 1 << 20,
                max_outgoing_size: 1 << 20,
            },
        );
        let payload = "x".repeat(40 * 1024);
        let mut connect = v4::Connect::new("c-1");
        connect.set_login("dev-1", "key");
        client.send(v4::Packet::Connect(connect)).await.unwrap();
        let mut publish = v4::Publish::new(
            "unhidra/devices/dev-1/results",
            QoS::AtLeastOnce,
            payload.clone(),
        );
        publish.pkid = 7;
        client.send(v4::Packet::Publish(publish)).await.unwrap();
        client.send(v4::Packet::PingReq).await.unwrap();

        assert!(
            matches!(server.next().await, Some(Ok(Inbound::Connect(c))) if c.client_id == "c-1")
        );
        match server.next().await {
            Some(Ok(Inbound::Publish {
                pkid, payload: got, ..
            })) => {
                assert_eq!(pkid, 7);
                assert_eq!(got, payload.as_bytes());
            }
            other => panic!("expected the publish, got {other:?}"),
        }
        assert!(matches!(server.next().await, Some(Ok(Inbound::PingReq))));
        server
            .send(Outbound::PubAck {
                pkid: 7,
                reason: AckReason::Success,
                message: None,
            })
            .await
            .unwrap();
        assert!(matches!(client.next().await, Some(Ok(v4::Packet::PubAck(a))) if a.pkid == 7));
    }

    #[test]
    fn keep_alive_is_capped_and_never_off() {
        assert_eq!(effective_keep_alive(30, 600), 30);
        assert_eq!(effective_keep_alive(0, 600), 600);
        assert_eq!(effective_keep_alive(65535, 600), 600);
    }
}

//! One simulated device over MQTT: the same firmware core, wrapped in the core's
//! [`MqttDevice`] (which does every translation between frames and MQTT), driven with a
//! `rumqttc` client speaking MQTT 3.1.1. The core stays in charge of the connection: each
//! [`MqttAction::Connect`] opens a fresh client (rumqttc never reconnects by itself here),
//! and [`MqttAction::Close`] drops it without DISCONNECT, so that the server publishes the
//! Last Will.
//!
//! What rumqttc does on its own: the keep-alive pings (at the core's ping interval; their
//! answers are reported as activity) and the PUBACKs of the commands it receives. The
//! PUBACKs it gets are reported to the core, which holds telemetry back while too many are
//! missing (the server acknowledges after storing, so at the store's pace).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS, SubscribeFilter,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unhidra_device_core::mqtt::{ConnAck, ConnectOptions, MqttAction, MqttDevice, Publish};
use unhidra_device_core::unhidra_proto::mqtt::{parse_topic, TopicKind};

use crate::report::Report;
use crate::virtual_device::{boot, power_cycle, DeviceSpec, Readings, Shared};

/// Requests the client holds before they are written. The core holds telemetry back while
/// `TELEMETRY_WINDOW` (16) QoS 1 publishes wait for their PUBACK, so a full queue means the
/// connection is stuck.
const REQUEST_QUEUE: usize = 64;
/// QoS 1 publishes rumqttc writes before it waits for PUBACKs (above the core's window).
const MAX_INFLIGHT: u16 = 32;
/// How long the end of a run (or a reboot) waits for what was published to be acknowledged.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// The server's MQTT listener and the device's id there.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub device_id: String,
}

/// `host:port` (a bare IPv6 address in brackets) → host and port.
pub fn parse_addr(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr}: expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("{addr}: expected host:port"));
    }
    Ok((host.to_owned(), port))
}

fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// One open MQTT connection.
struct Link {
    client: AsyncClient,
    events: EventLoop,
    /// Publishes handed to the client and not yet written, in order: telemetry or not.
    unwritten: VecDeque<bool>,
    /// QoS 1 publishes written and not yet acknowledged: packet id → telemetry or not.
    unacked: HashMap<u16, bool>,
    /// Telemetry publishes the server acknowledged: stored.
    telemetry_acked: u64,
}

impl Link {
    /// Connects as the device: `Ok` on an accepted CONNACK, `Err(Some(refusal))` on a
    /// refused one, `Err(None)` when the connection failed.
    async fn open(
        target: &Target,
        connect: ConnectOptions,
        max_packet: usize,
        key: &str,
        timeout: Duration,
    ) -> Result<Self, Option<ConnAck>> {
        let mut options = MqttOptions::new(connect.client_id, target.host.clone(), target.port);
        options
            .set_credentials(connect.username, key)
            .set_keep_alive(Duration::from_secs(u64::from(
                connect.keep_alive_secs.max(1),
            )))
            .set_clean_session(connect.clean_session)
            .set_last_will(LastWill::new(
                connect.will.topic,
                connect.will.payload,
                qos(connect.will.qos),
                false,
            ))
            .set_inflight(MAX_INFLIGHT);
        options.set_max_packet_size(max_packet, max_packet);
        let (client, mut events) = AsyncClient::new(options, REQUEST_QUEUE);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(timeout.as_secs().max(1));
        events.set_network_options(network);
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Self {
                client,
                events,
                unwritten: VecDeque::new(),
                unacked: HashMap::new(),
                telemetry_acked: 0,
            }),
            Err(ConnectionError::ConnectionRefused(code)) => {
                Err(Some(ConnAck::from_v311(code as u8)))
            }
            _ => Err(None),
        }
    }

    /// Hands a publish to the client; false when the connection is stuck or gone.
    fn publish(&mut self, publish: Publish) -> bool {
        let telemetry =
            parse_topic(&publish.topic).map(|(_, kind)| kind) == Some(TopicKind::Telemetry);
        let sent = self
            .client
            .try_publish(publish.topic, qos(publish.qos), false, publish.payload);
        if sent.is_ok() {
            self.unwritten.push_back(telemetry);
        }
        sent.is_ok()
    }

    fn subscribe(&mut self, filters: Vec<(String, u8)>) -> bool {
        let filters = filters
            .into_iter()
            .map(|(path, level)| SubscribeFilter::new(path, qos(level)));
        self.client.try_subscribe_many(filters).is_ok()
    }

    /// Takes one event of the client; false when the connection ended.
    fn on_event(
        &mut self,
        event: Result<Event, ConnectionError>,
        mqtt: Option<&mut MqttDevice>,
        now_ms: u64,
    ) -> bool {
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(mqtt) = mqtt {
                    mqtt.on_publish(now_ms, &publish.topic, &publish.payload);
                }
            }
            Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => return false,
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if self.unacked.remove(&ack.pkid) == Some(true) {
                    self.telemetry_acked += 1;
                }
                if let Some(mqtt) = mqtt {
                    mqtt.on_puback(now_ms);
                }
            }
            Ok(Event::Incoming(_)) => {
                if let Some(mqtt) = mqtt {
                    mqtt.on_activity(now_ms);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(telemetry) = self.unwritten.pop_front() {
                    if pkid != 0 {
                        self.unacked.insert(pkid, telemetry);
                    }
                }
            }
            Ok(Event::Outgoing(_)) => {}
        }
        true
    }

    /// Waits (at most `DRAIN_FOR`) until everything published is written and acknowledged;
    /// what arrives meanwhile is not handed to the core, which is about to stop.
    async fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_FOR;
        while !(self.unwritten.is_empty() && self.unacked.is_empty()) {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Ok(event) => {
                    if !self.on_event(event, None, 0) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Drains, then says DISCONNECT: a device leaving on purpose leaves no will.
    async fn finish(&mut self) {
        self.drain().await;
        if self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(event)) => {
                    self.on_event(Ok(event), None, 0);
                }
            }
        }
    }
}

/// The next event of the connection, or never when there is none.
async fn next_event(link: &mut Option<Link>) -> Result<Event, ConnectionError> {
    match link {
        Some(link) => link.events.poll().await,
        None => std::future::pending().await,
    }
}

/// Drops the connection (no DISCONNECT: the will is published), counting what it stored.
fn close(link: &mut Option<Link>, report: &mut Report) {
    if let Some(link) = link.take() {
        report.telemetry_acked += link.telemetry_acked;
    }
}

/// Runs one device over MQTT until `stop` or `until`; returns what it did.
pub async fn run(
    spec: &DeviceSpec,
    target: &Target,
    until: Instant,
    stop: CancellationToken,
) -> Report {
    let start = Instant::now();
    let now_ms = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let shared = Shared::new(spec);
    let mut report = Report {
        devices: 1,
        ..Report::default()
    };
    let mut boots = 0;
    let mut mqtt = MqttDevice::new(
        boot(spec, &shared, boots, now_ms()),
        target.device_id.as_str(),
    );
    let mut link: Option<Link> = None;
    let mut readings = Readings::new(&shared);

    'run: while Instant::now() < until && !stop.is_cancelled() {
        // A requested reboot happens once its answer is acknowledged (or could not be).
        if !mqtt.has_pending() && shared.take_reboot() {
            if let Some(open) = link.as_mut() {
                open.drain().await;
            }
            close(&mut link, &mut report);
            report.add_core(&mqtt.stats());
            report.reboots += 1;
            if !power_cycle(until, &stop).await {
                break 'run;
            }
            boots += 1;
            mqtt = MqttDevice::new(
                boot(spec, &shared, boots, now_ms()),
                target.device_id.as_str(),
            );
            continue;
        }
        match mqtt.poll(now_ms()) {
            MqttAction::Connect => {
                let began = Instant::now();
                let timeout = Duration::from_millis(spec.core.connect_timeout_ms);
                let opening = Link::open(
                    target,
                    mqtt.connect_options(),
                    mqtt.device().config().max_frame_bytes,
                    &spec.key,
                    timeout,
                );
                let outcome = tokio::select! {
                    r = tokio::time::timeout(timeout, opening) => r,
                    _ = stop.cancelled() => break 'run,
                };
                match outcome {
                    Ok(Ok(open)) => {
                        link = Some(open);
                        mqtt.on_connack(now_ms(), ConnAck::Accepted);
                        if mqtt.device().is_connected() {
                            report.note_welcome(began.elapsed(), spec.run_started.elapsed());
                        }
                    }
                    Ok(Err(Some(refusal))) => mqtt.on_connack(now_ms(), refusal),
                    Ok(Err(None)) | Err(_) => mqtt.on_disconnected(now_ms()),
                }
            }
            MqttAction::Subscribe(filters) => {
                if !link.as_mut().is_some_and(|open| open.subscribe(filters)) {
                    close(&mut link, &mut report);
                    mqtt.on_disconnected(now_ms());
                }
            }
            MqttAction::Publish(publish) => {
                if !link.as_mut().is_some_and(|open| open.publish(publish)) {
                    close(&mut link, &mut report);
                    mqtt.on_disconnected(now_ms());
                }
            }
            MqttAction::Close => close(&mut link, &mut report),
            MqttAction::Wait(at) => {
                let wake = start + Duration::from_millis(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake.min(until)) => {}
                    _ = stop.cancelled() => break 'run,
                    _ = readings.due() => readings.take(&shared, mqtt.device_mut(), now_ms()),
                    event = next_event(&mut link) => {
                        let open = link.as_mut().is_some_and(|l| l.on_event(event, Some(&mut mqtt), now_ms()));
                        if !open {
                            close(&mut link, &mut report);
                            mqtt.on_disconnected(now_ms());
                        }
                    }
                }
            }
        }
    }
    if let Some(open) = link.as_mut() {
        open.finish().await;
    }
    close(&mut link, &mut report);
    report.add_core(&mqtt.stats());
    report.anomalies_injected = shared.anomalies();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            parse_addr("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".to_owned(), 1883)
        );
        assert_eq!(parse_addr("[::1]:8883").unwrap(), ("::1".to_owned(), 8883));
        assert_eq!(
            parse_addr("broker.local:1").unwrap(),
            ("broker.local".to_owned(), 1)
        );
        for bad in ["127.0.0.1", ":1883", "h:0", "h:port", "h:70000", ""] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }
}

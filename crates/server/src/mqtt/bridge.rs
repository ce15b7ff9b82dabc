//! The MQTT bridge, for sites that already run a broker (Mosquitto, EMQX, …).
//!
//! The server connects to the broker as one client (`mqtt.bridge`, e.g.
//! `mqtt://broker.local:1883`, `mqtts://…` with the system's root certificates), subscribes
//! at QoS 1 to what devices publish (`unhidra/devices/+/telemetry|status|results`) and routes
//! each message as the native listener does. It acknowledges a message to the broker only
//! after routing returned (manual acks), so telemetry is stored before the broker forgets it.
//!
//! The broker authenticates devices and enforces its own topic ACLs; the device id in the
//! topic is the only claim the bridge gets, so it takes messages only for devices registered
//! here and not revoked (checked when a device is first heard from, and again after any
//! revocation, which forgets the device at once). A bridged device is "connected" while the
//! bridge hears from it: it appears among live connections, goes online with its first
//! message and offline with its Last Will (`{"online": false}` on its status topic), or after
//! [`IDLE`] without a message. While connected, its commands are published to
//! `unhidra/devices/{id}/commands` at QoS 1, pending ones first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{Mutex, Semaphore};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use unhidra_proto::mqtt::{
    parse_topic, topic, CommandPayload, StatusPayload, TopicKind, TOPIC_ROOT,
};
use unhidra_proto::ws::{Principal, ServerFrame};

use crate::devices::link::DeviceLink;
use crate::gateway::registry::{Control, Controls, NewConnection};
use crate::state::SharedState;

/// A bridged device that sends nothing for this long is taken as offline.
pub const IDLE: Duration = Duration::from_secs(300);
/// Messages being routed at once; the broker holds the rest (they are not acknowledged yet).
const IN_FLIGHT: usize = 256;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("mqtt.bridge: {0}")]
    Url(String),
}

/// Checks the broker URL (what `Config::validate` asks; reads no files).
pub fn check(url: &str) -> Result<(), BridgeError> {
    parse(url).map(|_| ())
}

/// Checks the broker URL and builds the client options, with the system's roots for
/// `mqtts://` (done at start, so a typo stops the server instead of failing in the
/// background).
pub fn options(url: &str) -> Result<MqttOptions, BridgeError> {
    let (mut options, tls) = parse(url)?;
    if tls {
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(client_tls()?)),
        ));
    }
    Ok(options)
}

/// The options a URL gives, and whether it asks for TLS.
fn parse(url: &str) -> Result<(MqttOptions, bool), BridgeError> {
    let parsed = url::Url::parse(url).map_err(|err| BridgeError::Url(err.to_string()))?;
    let (tls, default_port) = match parsed.scheme() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => {
            return Err(BridgeError::Url(format!(
                "scheme {other:?}: use mqtt:// or mqtts://"
            )))
        }
    };
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
        _ => return Err(BridgeError::Url("the URL names no broker host".to_owned())),
    };
    let port = parsed.port().unwrap_or(default_port);
    let client_id = parsed
        .query_pairs()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| format!("unhidra-bridge-{}", uuid::Uuid::now_v7().simple()));
    let mut options = MqttOptions::new(client_id, host, port);
    if !parsed.username().is_empty() {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| BridgeError::Url("credentials are not UTF-8".to_owned()))
        };
        options.set_credentials(
            decode(parsed.username())?,
            decode(parsed.password().unwrap_or_default())?,
        );
    }
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    Ok((options, tls))
}

/// rustls with the `ring` provider and the system's roots.
fn client_tls() -> Result<rustls::ClientConfig, BridgeError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(BridgeError::Url(
            "mqtts:// needs the system's root certificates, and none were found".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| BridgeError::Url(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A device the bridge hears from.
struct Bridged {
    link: DeviceLink,
    connection: Arc<crate::gateway::registry::Connection>,
    /// Ends the device's command task.
    stop: CancellationToken,
    last_heard: std::sync::Mutex<tokio::time::Instant>,
}

struct Bridge {
    state: SharedState,
    client: AsyncClient,
    devices: Mutex<HashMap<String, Arc<Bridged>>>,
}

/// Runs the bridge until shutdown: keeps the broker connection (reconnecting with backoff),
/// routes what devices publish, and forwards their commands.
pub async fn run(state: SharedState, options: MqttOptions) {
    let (host, port) = options.broker_address();
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let bridge = Arc::new(Bridge {
        state: state.clone(),
        client,
        devices: Mutex::new(HashMap::new()),
    });
    tracing::info!(broker = %format!("{host}:{port}"), "MQTT bridge starting");
    let shutdown = state.gateway.shutdown.clone();
    let sweeper = tokio::spawn(sweep_idle(Arc::clone(&bridge), shutdown.clone()));
    poll(&bridge, eventloop, &shutdown).await;
    sweeper.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), bridge.client.disconnect()).await;
    // Every bridged device goes offline with the bridge.
    let devices: Vec<_> = bridge.devices.lock().await.drain().collect();
    for (_, device) in devices {
        bridge.forget(&device);
    }
    tracing::info!("MQTT bridge stopped");
}

async fn poll(bridge: &Arc<Bridge>, mut eventloop: EventLoop, shutdown: &CancellationToken) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut backoff = Duration::from_millis(500);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(500);
                metrics::counter!(crate::metrics::MQTT_BRIDGE_CONNECTS).increment(1);
                tracing::info!("MQTT bridge connected to the broker");
                // Clean session: subscribe on every connection.
                let filters =
                    [TopicKind::Telemetry, TopicKind::Status, TopicKind::Results].map(|kind| {
                        rumqttc::SubscribeFilter::new(
                            format!("{TOPIC_ROOT}/+/{}", kind.as_str()),
                            QoS::AtLeastOnce,
                        )
                    });
                if let Err(err) = bridge.client.subscribe_many(filters).await {
                    tracing::warn!(error = %err, "MQTT bridge could not subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let bridge = Arc::clone(bridge);
                tokio::spawn(async move {
                    bridge.take(&publish).await;
                    if let Err(err) = bridge.client.ack(&publish).await {
                        tracing::debug!(error = %err, "MQTT bridge ack failed");
                    }
                    drop(permit);
                });
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "MQTT bridge lost the broker");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

impl Bridge {
    /// Routes one message from the broker.
    async fn take(self: &Arc<Self>, publish: &rumqttc::Publish) {
        metrics::counter!(crate::metrics::MQTT_PUBLISHES, "direction" => "bridge_in").increment(1);
        let Some((device_id, kind)) = parse_topic(&publish.topic) else {
            return;
        };
        if !kind.from_device() {
            return;
        }
        let Some(device) = self.device(device_id).await else {
            metrics::counter!(crate::metrics::MQTT_REFUSED, "reason" => "bridge_device")
                .increment(1);
            tracing::debug!(
                device = device_id,
                "MQTT bridge: message for an unknown or revoked device dropped"
            );
            return;
        };
        if let Ok(mut heard) = device.last_heard.lock() {
            *heard = tokio::time::Instant::now();
        }
        if kind == TopicKind::Status {
            let will = serde_json::from_slice::<StatusPayload>(&publish.payload)
                .is_ok_and(|status| status.online == Some(false));
            if will {
                self.remove(device_id).await;
                return;
            }
        }
        if let Err(refusal) = super::route(&device.link, kind, &publish.payload).await {
            metrics::counter!(crate::metrics::MQTT_REFUSED, "reason" => "payload").increment(1);
            // The broker has no way back to the device but its errors topic.
            let error = unhidra_proto::mqtt::ErrorPayload {
                code: refusal.code,
                message: refusal.message,
                topic: Some(publish.topic.chars().take(256).collect()),
            };
            if let Ok(payload) = serde_json::to_vec(&error) {
                let _ = self.client.try_publish(
                    topic(device_id, TopicKind::Errors),
                    QoS::AtMostOnce,
                    false,
                    payload,
                );
            }
        }
    }

    /// The bridged device, opened on first contact if it is registered and not revoked.
    async fn device(self: &Arc<Self>, device_id: &str) -> Option<Arc<Bridged>> {
        let mut devices = self.devices.lock().await;
        if let Some(device) = devices.get(device_id) {
            if !device
                .connection
                .closing
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Some(Arc::clone(device));
            }
            // Revoked (or closed by an administrator) a moment ago: checked again below.
            if let Some(closed) = devices.remove(device_id) {
                self.forget(&closed);
            }
        }
        let registered = match self.state.store.device_by_id(device_id).await {
            Ok(Some(device)) if device.revoked_at.is_none() => device,
            Ok(_) => return None,
            Err(err) => {
                tracing::warn!(error = %err, "MQTT bridge could not read a device");
                return None;
            }
        };
        let registration = self.state.gateway.registry.register(NewConnection {
            principal: Principal::Device {
                id: registered.id.clone(),
            },
            session_id: None,
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            user_agent: Some("mqtt-bridge".to_owned()),
            connected_at: self.state.clock.now(),
        });
        let device = Arc::new(Bridged {
            link: DeviceLink::open(&self.state, &registered.id, &registered.owner_id),
            connection: Arc::clone(&registration.connection),
            stop: CancellationToken::new(),
            last_heard: std::sync::Mutex::new(tokio::time::Instant::now()),
        });
        devices.insert(registered.id.clone(), Arc::clone(&device));
        tokio::spawn(forward_commands(
            Arc::clone(self),
            Arc::clone(&device),
            registration.controls,
        ));
        Some(device)
    }

    async fn remove(&self, device_id: &str) {
        let removed = self.devices.lock().await.remove(device_id);
        if let Some(device) = removed {
            self.forget(&device);
        }
    }

    /// Ends a device's bridged connection (its link goes when the last reference does).
    fn forget(&self, device: &Bridged) {
        device.stop.cancel();
        self.state
            .gateway
            .registry
            .unregister(&device.connection.id);
    }
}

/// While a bridged device is connected: publishes its commands (pending first), and ends
/// its connection when the server kicks it (revocation).
async fn forward_commands(bridge: Arc<Bridge>, device: Arc<Bridged>, mut controls: Controls) {
    let device_id = device.link.device_id().to_owned();
    let hub_topic = crate::devices::commands::device_topic(&device_id);
    let mut live = BroadcastStream::new(bridge.state.gateway.hub.subscribe(&hub_topic));
    let mut last_seq = 0;
    let mut replay = true;
    loop {
        if replay {
            replay = false;
            match device
                .link
                .pending_commands(crate::devices::commands::PENDING_PAGE)
                .await
            {
                Ok(pending) => {
                    for command in pending {
                        if command.seq <= last_seq {
                            continue;
                        }
                        last_seq = command.seq;
                        let payload = CommandPayload {
                            id: command.id,
                            name: command.name,
                            args: command.args,
                        };
                        publish_command(&bridge, &device, payload).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "MQTT bridge could not read pending commands")
                }
            }
        }
        tokio::select! {
            () = device.stop.cancelled() => return,
            control = controls.recv() => match control {
                Control::Close(kick) => {
                    tracing::info!(device = %device_id, reason = kick.reason, "MQTT bridge: device disconnected by the server");
                    bridge.remove(&device_id).await;
                    return;
                }
                Control::Unsubscribe { .. } => {}
            },
            item = live.next() => match item {
                Some(Ok(delivery)) if delivery.seq > last_seq => {
                    if let Ok(ServerFrame::Command { id, name, args }) = serde_json::from_str(&delivery.frame) {
                        last_seq = delivery.seq;
                        publish_command(&bridge, &device, CommandPayload { id, name, args }).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(BroadcastStreamRecvError::Lagged(_))) => replay = true,
                None => return,
            },
        }
    }
}

async fn publish_command(bridge: &Bridge, device: &Bridged, command: CommandPayload) {
    let Ok(payload) = serde_json::to_vec(&command) else {
        return;
    };
    let target = topic(device.link.device_id(), TopicKind::Commands);
    match bridge
        .client
        .publish(target, QoS::AtLeastOnce, false, payload)
        .await
    {
        Ok(()) => {
            metrics::counter!(crate::metrics::MQTT_PUBLISHES, "direction" => "bridge_out")
                .increment(1);
            device.link.note_delivered(command.id);
        }
        // Still pending in the store: sent again when the device next comes online.
        Err(err) => tracing::warn!(error = %err, "MQTT bridge could not publish a command"),
    }
}

/// Takes devices that went silent as offline.
async fn sweep_idle(bridge: Arc<Bridge>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let idle: Vec<String> = bridge
            .devices
            .lock()
            .await
            .iter()
            .filter(|(_, d)| {
                d.last_heard
                    .lock()
                    .map(|at| now.duration_since(*at) >= IDLE)
                    .unwrap_or(false)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            bridge.remove(&id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_checked() {
        let o = options("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1883));
        assert!(o.client_id().starts_with("unhidra-bridge-"));
        assert!(options("http://127.0.0.1").is_err());
        assert!(options("not a url").is_err());
        let o = options("mqtt://broker:1884?client_id=site-a").unwrap();
        assert_eq!(o.client_id(), "site-a");
        let o = options("mqtt://site%40a:p%3Ass@broker").unwrap();
        assert_eq!(o.broker_address(), ("broker".to_owned(), 1883));
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("site@a", "p:ss")
        );
    }
}

//! One simulated device: the firmware core with sensors and command handlers (`reboot`,
//! `blink`, `read_sensor`, `set_interval`), driven over a real WebSocket (here) or over MQTT
//! ([`crate::mqtt`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use unhidra_device_core::{Action, Config, Device, Disconnect, SplitMix64};

use crate::connection::{connect, Ws};
use crate::report::Report;
use crate::sensors::{Sensors, BATTERY, HUMIDITY, RSSI, TEMPERATURE};

/// The firmware version simulated devices report.
pub const FIRMWARE_VERSION: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));

/// A write that takes longer than this means the connection is gone.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a device reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// `ws://host:port/ws`, the key offered as `device.<key>`.
    WebSocket { url: String },
    /// The server's MQTT listener; the device id is the user name, the key the password.
    Mqtt {
        host: String,
        port: u16,
        device_id: String,
    },
}

/// What one device needs to run.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub link: LinkSpec,
    pub key: String,
    pub seed: u64,
    pub telemetry_interval: Duration,
    pub anomaly_rate: f64,
    pub core: Config,
    /// When the run started (connect times are reported from here).
    pub run_started: Instant,
}

/// State the command handlers share with the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sensors: Mutex<Sensors>,
    pub(crate) interval_ms: AtomicU64,
    pub(crate) reboot: AtomicBool,
}

impl Shared {
    pub(crate) fn new(spec: &DeviceSpec) -> Arc<Self> {
        Arc::new(Self {
            sensors: Mutex::new(Sensors::new(spec.seed, spec.anomaly_rate)),
            interval_ms: AtomicU64::new(
                u64::try_from(spec.telemetry_interval.as_millis()).unwrap_or(60_000),
            ),
            reboot: AtomicBool::new(false),
        })
    }

    /// Whether a `reboot` command asked for one (and forgets the request).
    pub(crate) fn take_reboot(&self) -> bool {
        self.reboot.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn anomalies(&self) -> u64 {
        lock(&self.sensors).anomalies()
    }
}

pub(crate) fn lock(sensors: &Mutex<Sensors>) -> std::sync::MutexGuard<'_, Sensors> {
    sensors.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sensor readings' clock: a reading every interval, which `set_interval` changes.
pub(crate) struct Readings {
    ticker: tokio::time::Interval,
    interval_ms: u64,
}

impl Readings {
    pub(crate) fn new(shared: &Shared) -> Self {
        let interval_ms = shared.interval_ms.load(Ordering::SeqCst);
        let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(100)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self {
            ticker,
            interval_ms,
        }
    }

    /// The next reading is due.
    pub(crate) async fn due(&mut self) {
        self.ticker.tick().await;
    }

    /// Takes a reading into the device's outbox, then follows a changed interval.
    pub(crate) fn take(&mut self, shared: &Shared, device: &mut Device, now_ms: u64) {
        let reading = lock(&shared.sensors).sample(unix_secs());
        let _ = device.queue_telemetry(now_ms, reading, Some(OffsetDateTime::now_utc()));
        let wanted = shared.interval_ms.load(Ordering::SeqCst);
        if wanted != self.interval_ms {
            self.interval_ms = wanted;
            self.ticker = tokio::time::interval_at(
                Instant::now() + Duration::from_millis(wanted),
                Duration::from_millis(wanted.max(100)),
            );
            self.ticker
                .set_missed_tick_behavior(MissedTickBehavior::Skip);
        }
    }
}

/// Reports the attempt begun at `attempt` once the device is welcomed.
pub(crate) fn note_welcome(
    attempt: &mut Option<Instant>,
    welcomed: bool,
    report: &mut Report,
    run_started: Instant,
) {
    if welcomed {
        if let Some(began) = attempt.take() {
            report.note_welcome(began.elapsed(), run_started.elapsed());
        }
    }
}

/// Waits a second after a reboot; false if the run ended meanwhile.
pub(crate) async fn power_cycle(until: Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until.min(Instant::now() + Duration::from_secs(1))) => true,
        _ = stop.cancelled() => false,
    }
}

/// A fresh core (as after a power-on) with the simulator's handlers.
pub(crate) fn boot(spec: &DeviceSpec, shared: &Arc<Shared>, boots: u64, now_ms: u64) -> Device {
    let seed = spec.seed.wrapping_add(boots.wrapping_mul(0x9E37_79B9));
    let mut device = Device::new(spec.core.clone(), SplitMix64::new(seed), now_ms);
    device.set_free_memory(Some(180_000 - (seed % 20_000)));
    device.register("reboot", {
        let shared = Arc::clone(shared);
        move |_: &Value| {
            shared.reboot.store(true, Ordering::SeqCst);
            Ok(json!({"rebooting": true}))
        }
    });
    device.register("blink", |args: &Value| {
        let times = match args.get("times") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=20).contains(n))
                .ok_or("times must be 1 to 20")?,
        };
        Ok(json!({"blinked": times}))
    });
    device.register("read_sensor", {
        let shared = Arc::clone(shared);
        move |args: &Value| {
            let name = args
                .get("sensor")
                .and_then(Value::as_str)
                .unwrap_or(TEMPERATURE);
            if ![TEMPERATURE, HUMIDITY, BATTERY, RSSI].contains(&name) {
                return Err(format!("unknown sensor: {name}"));
            }
            let value = lock(&shared.sensors).last(name);
            Ok(json!({"sensor": name, "value": value}))
        }
    });
    device.register("set_interval", {
        let shared = Arc::clone(shared);
        move |args: &Value| {
            let secs = args
                .get("secs")
                .and_then(Value::as_u64)
                .filter(|s| (1..=3_600).contains(s))
                .ok_or("secs must be 1 to 3600")?;
            shared.interval_ms.store(secs * 1_000, Ordering::SeqCst);
            Ok(json!({"interval_secs": secs}))
        }
    });
    device
}

/// The next message, or never when there is no connection.
async fn next_message(
    socket: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match socket {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Runs one device until `stop` or `until`; returns what it did.
pub async fn run(spec: DeviceSpec, until: Instant, stop: CancellationToken) -> Report {
    match &spec.link {
        LinkSpec::WebSocket { url } => {
            let url = url.clone();
            run_ws(&spec, &url, until, stop).await
        }
        LinkSpec::Mqtt {
            host,
            port,
            device_id,
        } => {
            let target = crate::mqtt::Target {
                host: host.clone(),
                port: *port,
                device_id: device_id.clone(),
            };
            crate::mqtt::run(&spec, &target, until, stop).await
        }
    }
}

/// The device over a WebSocket.
async fn run_ws(
    spec: &DeviceSpec,
    ws_url: &str,
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
    let mut device = boot(spec, &shared, boots, now_ms());
    let mut socket: Option<Ws> = None;
    let mut readings = Readings::new(&shared);
    let mut attempt: Option<Instant> = None;

    'run: while Instant::now() < until && !stop.is_cancelled() {
        // A requested reboot happens once its answer is on the wire.
        if !device.has_pending() && shared.take_reboot() {
            if let Some(mut ws) = socket.take() {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
            }
            report.add_core(&device.stats());
            report.reboots += 1;
            if !power_cycle(until, &stop).await {
                break 'run;
            }
            boots += 1;
            device = boot(spec, &shared, boots, now_ms());
            continue;
        }
        match device.poll(now_ms()) {
            Action::Connect => {
                attempt = Some(Instant::now());
                let timeout = Duration::from_millis(spec.core.connect_timeout_ms);
                let outcome = tokio::select! {
                    r = tokio::time::timeout(timeout, connect(ws_url, &spec.key)) => r,
                    _ = stop.cancelled() => break 'run,
                };
                match outcome {
                    Ok(Ok(ws)) => {
                        socket = Some(ws);
                        device.on_connected(now_ms());
                    }
                    Ok(Err(how)) => device.on_disconnected(now_ms(), how),
                    Err(_) => device.on_disconnected(now_ms(), Disconnect::Lost),
                }
            }
            Action::Send(text) => {
                send(&mut socket, &mut device, Message::text(text), &now_ms).await
            }
            Action::SendPing => {
                send(
                    &mut socket,
                    &mut device,
                    Message::Ping(Vec::new().into()),
                    &now_ms,
                )
                .await;
            }
            Action::Close => {
                if let Some(mut ws) = socket.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                }
            }
            Action::Wait(at) => {
                let wake = start + Duration::from_millis(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake.min(until)) => {}
                    _ = stop.cancelled() => break 'run,
                    _ = readings.due() => readings.take(&shared, &mut device, now_ms()),
                    message = next_message(&mut socket) => {
                        receive(&mut socket, &mut device, message, &now_ms).await;
                        note_welcome(&mut attempt, device.is_connected(), &mut report, spec.run_started);
                    }
                }
            }
        }
    }
    if let Some(mut ws) = socket.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    report.add_core(&device.stats());
    report.anomalies_injected = shared.anomalies();
    report
}

pub(crate) fn unix_secs() -> f64 {
    let now = OffsetDateTime::now_utc();
    now.unix_timestamp() as f64 + f64::from(now.nanosecond()) / 1e9
}

async fn send(
    socket: &mut Option<Ws>,
    device: &mut Device,
    message: Message,
    now_ms: &impl Fn() -> u64,
) {
    let Some(ws) = socket.as_mut() else {
        return;
    };
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => {}
        _ => {
            *socket = None;
            device.on_disconnected(now_ms(), Disconnect::Lost);
        }
    }
}

async fn receive(
    socket: &mut Option<Ws>,
    device: &mut Device,
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    now_ms: &impl Fn() -> u64,
) {
    match message {
        Some(Ok(Message::Text(text))) => device.on_text(now_ms(), text.as_str()),
        Some(Ok(Message::Pong(_))) => device.on_pong(now_ms()),
        Some(Ok(Message::Ping(_))) => {
            // tungstenite queued the pong; push it out now rather than with the next frame.
            device.on_pong(now_ms());
            if let Some(ws) = socket.as_mut() {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.flush()).await;
            }
        }
        Some(Ok(Message::Close(frame))) => {
            let code = frame.map_or(1005, |f| u16::from(f.code));
            *socket = None;
            device.on_disconnected(now_ms(), Disconnect::Closed(code));
        }
        Some(Ok(_)) => {}
        Some(Err(_)) | None => {
            *socket = None;
            device.on_disconnected(now_ms(), Disconnect::Lost);
        }
    }
}

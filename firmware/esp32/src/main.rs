//! Unhidra ESP32 firmware: Wi-Fi, SNTP, then a TLS WebSocket (pinned CA) to the server,
//! driving `unhidra-device-core`. This file only wires ESP-IDF to the core; the connection
//! logic (backoff, pings, heartbeats, commands, the outbox) is in the core and tested on the
//! host.
//!
//! UNBUILT: written against esp-idf-svc 0.51 without an Xtensa toolchain at hand; see
//! README.md for how to build, flash and provision it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use esp_idf_svc::eventloop::EspSystemEventLoop;
use esp_idf_svc::hal::prelude::Peripherals;
use esp_idf_svc::nvs::{EspDefaultNvsPartition, EspNvs, NvsDefault};
use esp_idf_svc::sntp::{EspSntp, SyncStatus};
use esp_idf_svc::tls::X509;
use esp_idf_svc::wifi::{AuthMethod, BlockingWifi, ClientConfiguration, Configuration, EspWifi};
use esp_idf_svc::ws::client::{
    EspWebSocketClient, EspWebSocketClientConfig, FrameType, WebSocketEventType,
};
use log::{info, warn};
use serde_json::json;
use unhidra_device_core::time::OffsetDateTime;
use unhidra_device_core::unhidra_proto::ws::{DEVICE_PREFIX, PROTOCOL};
use unhidra_device_core::{Action, Config, Device, Disconnect, SplitMix64};

/// The CA that signed the server's certificate: the only one trusted (public, not secret).
const CA_PEM: &str = concat!(include_str!("../certs/ca.pem"), "\0");
/// NVS namespace holding Wi-Fi credentials, the server URL and the device key.
const NVS_NAMESPACE: &str = "unhidra";
const TELEMETRY_INTERVAL: Duration = Duration::from_secs(30);

/// What the WebSocket task tells the main loop, tagged with the connection it is about.
enum Event {
    Connected,
    Text(String),
    Pong,
    Closed(Option<u16>),
    Lost,
}

fn main() -> anyhow::Result<()> {
    esp_idf_svc::sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();

    let peripherals = Peripherals::take()?;
    let sysloop = EspSystemEventLoop::take()?;
    let nvs_partition = EspDefaultNvsPartition::take()?;
    let nvs = EspNvs::<NvsDefault>::new(nvs_partition.clone(), NVS_NAMESPACE, false)
        .context("NVS namespace `unhidra` missing: provision the device (README.md)")?;
    let ssid = nvs_string(&nvs, "wifi_ssid")?;
    let wifi_pass = nvs_string(&nvs, "wifi_pass")?;
    let server_url = nvs_string(&nvs, "server_url")?;
    let key = nvs_string(&nvs, "device_key")?;
    if !server_url.starts_with("wss://") {
        bail!("server_url must be wss:// (the key must not cross the network in clear)");
    }

    // Wi-Fi, blocking until an address is assigned.
    let mut wifi = BlockingWifi::wrap(
        EspWifi::new(peripherals.modem, sysloop.clone(), Some(nvs_partition))?,
        sysloop,
    )?;
    wifi.set_configuration(&Configuration::Client(ClientConfiguration {
        ssid: ssid
            .as_str()
            .try_into()
            .map_err(|_| anyhow!("SSID too long"))?,
        password: wifi_pass
            .as_str()
            .try_into()
            .map_err(|_| anyhow!("Wi-Fi password too long"))?,
        auth_method: AuthMethod::WPA2Personal,
        ..Default::default()
    }))?;
    wifi.start()?;
    wifi.connect()?;
    wifi.wait_netif_up()?;
    info!("Wi-Fi up");

    // SNTP before TLS: certificate validity and telemetry timestamps need the real time.
    let sntp = EspSntp::new_default()?;
    let synced = (0..60).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        sntp.get_sync_status() == SyncStatus::Completed
    });
    if !synced {
        bail!("no time from SNTP within 60 s");
    }
    info!("time set: {:?}", OffsetDateTime::now_utc());

    let boot = Instant::now();
    let now_ms = || u64::try_from(boot.elapsed().as_millis()).unwrap_or(u64::MAX);
    // SAFETY: esp_random reads the hardware RNG; it has no preconditions.
    let seed = u64::from(unsafe { esp_idf_svc::sys::esp_random() }) << 32
        | u64::from(unsafe { esp_idf_svc::sys::esp_random() });
    let mut device = Device::new(
        Config {
            firmware_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            outbox_capacity: 128,
            ..Config::default()
        },
        SplitMix64::new(seed),
        now_ms(),
    );
    let reboot = Arc::new(AtomicBool::new(false));
    device.register("reboot", {
        let reboot = Arc::clone(&reboot);
        move |_| {
            reboot.store(true, Ordering::SeqCst);
            Ok(json!({"rebooting": true}))
        }
    });
    device.register("blink", |args| {
        info!("blink {args}");
        Ok(json!({"blinked": args.get("times").cloned().unwrap_or(json!(1))}))
    });
    device.register("read_sensor", |_| Ok(json!({"free_heap": free_heap()})));

    let subprotocols = format!("{PROTOCOL}, {DEVICE_PREFIX}{key}");
    // Bounded: a full queue drops the event (a command is delivered again on reconnect).
    let (tx, rx) = sync_channel::<(u32, Event)>(16);
    let mut generation = 0u32;
    let mut client: Option<EspWebSocketClient<'static>> = None;
    let mut next_reading = now_ms();

    loop {
        if now_ms() >= next_reading {
            next_reading = now_ms() + TELEMETRY_INTERVAL.as_millis() as u64;
            device.set_free_memory(Some(u64::from(free_heap())));
            let ts = OffsetDateTime::from(SystemTime::now());
            if let Err(err) = device.queue_telemetry(now_ms(), read_sensors(), Some(ts)) {
                warn!("reading refused: {err}");
            }
        }
        if reboot.load(Ordering::SeqCst) && !device.has_pending() {
            info!("rebooting on command");
            drop(client.take());
            esp_idf_svc::hal::reset::restart();
        }
        match device.poll(now_ms()) {
            Action::Connect => {
                generation = generation.wrapping_add(1);
                match open(&server_url, &subprotocols, generation, tx.clone()) {
                    Ok(c) => client = Some(c),
                    Err(err) => {
                        warn!("connect: {err}");
                        device.on_disconnected(now_ms(), Disconnect::Lost);
                    }
                }
            }
            Action::Send(text) => {
                let sent = client
                    .as_mut()
                    .map(|c| c.send(FrameType::Text(false), text.as_bytes()));
                if let Some(Err(err)) = sent {
                    warn!("send: {err}");
                    client = None;
                    device.on_disconnected(now_ms(), Disconnect::Lost);
                }
            }
            Action::SendPing => {
                if let Some(c) = client.as_mut() {
                    let _ = c.send(FrameType::Ping, &[]);
                }
            }
            Action::Close => client = None, // dropping the client closes the socket
            Action::Wait(until) => {
                let wake = until.min(next_reading);
                let wait = Duration::from_millis(wake.saturating_sub(now_ms()));
                match rx.recv_timeout(wait) {
                    Ok((g, _)) if g != generation => {} // about a connection already dropped
                    Ok((_, event)) => match event {
                        Event::Connected => device.on_connected(now_ms()),
                        Event::Text(text) => device.on_text(now_ms(), &text),
                        Event::Pong => device.on_pong(now_ms()),
                        Event::Closed(code) => {
                            client = None;
                            let how = code.map_or(Disconnect::Lost, Disconnect::Closed);
                            device.on_disconnected(now_ms(), how);
                        }
                        Event::Lost => {
                            client = None;
                            device.on_disconnected(now_ms(), Disconnect::Lost);
                        }
                    },
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => bail!("event channel closed"),
                }
            }
        }
    }
}

/// Starts a connection; its events arrive on `tx` tagged with `generation`. ESP-IDF's own
/// reconnects and pings are off: the core decides both.
fn open(
    url: &str,
    subprotocols: &str,
    generation: u32,
    tx: SyncSender<(u32, Event)>,
) -> anyhow::Result<EspWebSocketClient<'static>> {
    let config = EspWebSocketClientConfig {
        subprotocol: Some(subprotocols),
        server_cert: Some(X509::pem_until_nul(CA_PEM.as_bytes())),
        disable_auto_reconnect: true,
        disable_pingpong_discon: true,
        network_timeout_ms: Duration::from_secs(10),
        ..Default::default()
    };
    let client = EspWebSocketClient::new(url, &config, Duration::from_secs(10), move |event| {
        let event = match event {
            Ok(event) => match event.event_type {
                WebSocketEventType::Connected => Event::Connected,
                WebSocketEventType::Text(text) => Event::Text(text.to_owned()),
                WebSocketEventType::Pong => Event::Pong,
                WebSocketEventType::Close(reason) => Event::Closed(reason.map(|r| r.code())),
                WebSocketEventType::Closed | WebSocketEventType::Disconnected => Event::Lost,
                _ => return,
            },
            Err(_) => Event::Lost,
        };
        let _ = tx.try_send((generation, event));
    })?;
    Ok(client)
}

fn nvs_string(nvs: &EspNvs<NvsDefault>, name: &str) -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    nvs.get_str(name, &mut buf)?
        .map(str::to_owned)
        .with_context(|| format!("NVS key `{name}` missing: provision the device (README.md)"))
}

fn free_heap() -> u32 {
    // SAFETY: reads a counter; no preconditions.
    unsafe { esp_idf_svc::sys::esp_get_free_heap_size() }
}

/// Replace with the board's sensors; names follow the server's rules (`A-Z a-z 0-9 . _ -`).
fn read_sensors() -> BTreeMap<String, f64> {
    BTreeMap::from([("free_heap".to_owned(), f64::from(free_heap()))])
}

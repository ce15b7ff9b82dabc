//! The device over MQTT against a fake broker and a fake clock: what it publishes where,
//! what it makes of CONNACKs and of the server's publishes, and that the core's rules
//! (backoff, dead peers, pacing, re-delivered commands) hold unchanged. Every payload it
//! publishes is parsed with the server's own types, which refuse unknown fields.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use unhidra_device_core::mqtt::{
    ConnAck, MqttAction, MqttDevice, Publish, TELEMETRY_WINDOW, WILL_PAYLOAD,
};
use unhidra_device_core::unhidra_proto::mqtt::{
    ResultPayload, StatusPayload, TelemetryPayload, TopicKind,
};
use unhidra_device_core::{BackoffConfig, Config, Device, SplitMix64, State};

const ID: &str = "dev-1";

/// How the fake broker answers the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// Accepts, acknowledges, answers keep-alive pings.
    Up,
    /// Accepts, then never sends anything again.
    Silent,
    /// Accepts and answers pings, but withholds PUBACKs (a store that cannot keep up).
    Unacking,
    /// Answers CONNECT with this refusal.
    Refuses(ConnAck),
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Connect,
    Subscribe(Vec<(String, u8)>),
    Publish(Publish),
    Close,
}

struct Harness {
    mqtt: MqttDevice,
    now: u64,
    broker: Broker,
    connected: bool,
    /// The next keep-alive PINGRESP (the MQTT client pings on its own).
    next_pingresp: Option<u64>,
    /// PUBACKs an `Unacking` broker owes.
    withheld: usize,
    log: Vec<(u64, Event)>,
}

fn config() -> Config {
    Config {
        backoff: BackoffConfig {
            base_ms: 1_000,
            cap_ms: 60_000,
            floor_ms: 100,
        },
        firmware_version: Some("1.2.3".into()),
        ..Config::default()
    }
}

impl Harness {
    fn new(seed: u64) -> Self {
        Self {
            mqtt: MqttDevice::new(Device::new(config(), SplitMix64::new(seed), 0), ID),
            now: 0,
            broker: Broker::Up,
            connected: false,
            next_pingresp: None,
            withheld: 0,
            log: Vec::new(),
        }
    }

    fn keep_alive_ms(&self) -> u64 {
        u64::from(self.mqtt.connect_options().keep_alive_secs) * 1000
    }

    /// Runs the device until `until` (simulated ms), carrying out its actions.
    fn run_until(&mut self, until: u64) {
        let budget = 1_000 + (until.saturating_sub(self.now) / 1_000 + 1) * 200;
        for _ in 0..budget {
            // The MQTT client's keep-alive: a PINGRESP from a live broker.
            if let Some(at) = self.next_pingresp {
                if at <= self.now {
                    if self.connected && matches!(self.broker, Broker::Up | Broker::Unacking) {
                        self.mqtt.on_activity(self.now);
                    }
                    self.next_pingresp = Some(at + self.keep_alive_ms());
                }
            }
            match self.mqtt.poll(self.now) {
                MqttAction::Connect => {
                    self.log.push((self.now, Event::Connect));
                    match self.broker {
                        Broker::Refuses(ack) => self.mqtt.on_connack(self.now, ack),
                        Broker::Up | Broker::Silent | Broker::Unacking => {
                            self.connected = true;
                            self.next_pingresp = Some(self.now + self.keep_alive_ms());
                            self.mqtt.on_connack(self.now, ConnAck::Accepted);
                        }
                    }
                }
                MqttAction::Subscribe(filters) => {
                    assert!(self.connected);
                    self.log.push((self.now, Event::Subscribe(filters)));
                    if self.broker != Broker::Silent {
                        self.mqtt.on_activity(self.now); // SUBACK
                    }
                }
                MqttAction::Publish(publish) => {
                    assert!(self.connected, "published while not connected");
                    if publish.qos == 1 {
                        match self.broker {
                            Broker::Up => self.mqtt.on_puback(self.now),
                            Broker::Unacking => self.withheld += 1,
                            _ => {}
                        }
                    }
                    self.log.push((self.now, Event::Publish(publish)));
                }
                MqttAction::Close => {
                    self.connected = false;
                    self.next_pingresp = None;
                    self.log.push((self.now, Event::Close));
                }
                MqttAction::Wait(at) => {
                    assert!(at > self.now, "waits must be in the future");
                    let at = self
                        .next_pingresp
                        .map_or(at, |p| at.min(p.max(self.now + 1)));
                    if at > until {
                        self.now = until;
                        return;
                    }
                    self.now = at;
                }
            }
        }
        panic!("the device is spinning: more than {budget} actions before {until} ms");
    }

    /// The broker sends the PUBACKs it owes.
    fn ack_all(&mut self) {
        for _ in 0..std::mem::take(&mut self.withheld) {
            self.mqtt.on_puback(self.now);
        }
    }

    /// The connection drops.
    fn drop_connection(&mut self) {
        assert!(self.connected);
        self.connected = false;
        self.next_pingresp = None;
        self.mqtt.on_disconnected(self.now);
    }

    fn command(&mut self, id: &str, name: &str, args: Value) {
        let payload = serde_json::to_vec(&json!({"id": id, "name": name, "args": args})).unwrap();
        self.mqtt.on_publish(
            self.now,
            &format!("unhidra/devices/{ID}/commands"),
            &payload,
        );
    }

    fn published_to(&self, kind: &str) -> Vec<(u64, u8, Value)> {
        let topic = format!("unhidra/devices/{ID}/{kind}");
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Publish(p) if p.topic == topic => Some((
                    *t,
                    p.qos,
                    serde_json::from_slice::<Value>(&p.payload).unwrap(),
                )),
                _ => None,
            })
            .collect()
    }

    fn count(&self, wanted: fn(&Event) -> bool) -> usize {
        self.log.iter().filter(|(_, e)| wanted(e)).count()
    }
}

fn reading(temp: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([("temp".to_owned(), temp)])
}

#[test]
fn connect_names_the_device_and_leaves_an_offline_will_on_its_status_topic() {
    let h = Harness::new(1);
    let options = h.mqtt.connect_options();
    assert_eq!(options.client_id, ID);
    assert_eq!(options.username, ID);
    assert!(options.clean_session);
    // The keep-alive is the core's ping interval, so its dead-peer rule still holds.
    assert_eq!(options.keep_alive_secs, 20);
    assert_eq!(
        options.will,
        Publish {
            topic: format!("unhidra/devices/{ID}/status"),
            payload: WILL_PAYLOAD.to_vec(),
            qos: 1,
        }
    );
    let will: StatusPayload = serde_json::from_slice(WILL_PAYLOAD).unwrap();
    assert_eq!(will.online, Some(false));
}

#[test]
fn a_session_subscribes_first_then_publishes_status_and_telemetry_on_its_topics() {
    let mut h = Harness::new(2);
    h.mqtt.device_mut().set_free_memory(Some(40_000));
    h.run_until(1);
    assert!(h.mqtt.device().is_connected());
    assert_eq!(h.mqtt.device().connection_id(), Some("mqtt:dev-1"));

    // CONNECT, SUBSCRIBE (commands at QoS 1, errors at QoS 0), then the heartbeat.
    assert_eq!(h.log[0], (0, Event::Connect));
    assert_eq!(
        h.log[1],
        (
            0,
            Event::Subscribe(vec![
                (format!("unhidra/devices/{ID}/commands"), 1),
                (format!("unhidra/devices/{ID}/errors"), 0),
            ])
        )
    );
    let status = h.published_to("status");
    assert_eq!(
        status,
        [(
            0,
            0,
            json!({"online": true, "firmware_version": "1.2.3", "free_memory": 40_000, "uptime_secs": 0})
        )]
    );
    let Event::Publish(first) = &h.log[2].1 else {
        panic!("{:?}", h.log[2])
    };
    // The server's payload type (no unknown fields) takes it.
    let _: StatusPayload = serde_json::from_slice(&first.payload).unwrap();

    // Telemetry: QoS 1 (acknowledged once stored), the frame without its `type`.
    let ts = unhidra_device_core::time::macros::datetime!(2026-12-07 10:00:00 UTC);
    h.mqtt
        .device_mut()
        .queue_telemetry(h.now, reading(21.5), Some(ts))
        .unwrap();
    h.run_until(2);
    let telemetry = h.published_to("telemetry");
    assert_eq!(
        telemetry,
        [(
            1,
            1,
            json!({"metrics": {"temp": 21.5}, "ts": "2026-12-07T10:00:00Z"})
        )]
    );
    let parsed: TelemetryPayload =
        serde_json::from_value(telemetry[0].2.clone()).expect("the server's type takes it");
    assert_eq!(parsed.ts, Some(ts));
    assert_eq!(h.mqtt.stats().telemetry_sent, 1);

    // Five minutes on keep-alive answers alone: no reconnect, a heartbeat a minute, and no
    // WebSocket ping ever reaches the MQTT side.
    h.run_until(300_000);
    assert_eq!(h.count(|e| *e == Event::Connect), 1);
    assert_eq!(h.count(|e| matches!(e, Event::Subscribe(_))), 1);
    let beats: Vec<u64> = h.published_to("status").iter().map(|(t, ..)| *t).collect();
    assert_eq!(beats, [0, 60_000, 120_000, 180_000, 240_000, 300_000]);
    assert_eq!(h.mqtt.stats().disconnects, 0);
    assert_eq!(h.mqtt.mqtt_stats().untranslatable, 0);
    assert!(
        h.log.iter().all(|(_, e)| match e {
            Event::Publish(p) => TopicKind::ALL
                .iter()
                .any(|k| p.topic == format!("unhidra/devices/{ID}/{}", k.as_str())),
            _ => true,
        }),
        "{:?}",
        h.log
    );
}

#[test]
fn commands_are_answered_on_results_and_a_redelivery_does_not_run_twice() {
    let mut h = Harness::new(3);
    let runs = Arc::new(AtomicU32::new(0));
    h.mqtt.device_mut().register("blink", {
        let runs = Arc::clone(&runs);
        move |args: &Value| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"blinked": args["times"]}))
        }
    });
    h.run_until(1);
    h.command("c-1", "blink", json!({"times": 3}));
    h.command("c-2", "fly", json!({}));
    h.run_until(2);
    let results = h.published_to("results");
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].1, 1, "results go at QoS 1");
    assert_eq!(
        results[0].2,
        json!({"id": "c-1", "ok": true, "output": {"blinked": 3}})
    );
    assert_eq!(
        results[1].2,
        json!({"id": "c-2", "ok": false, "output": {"error": "unknown command: fly"}})
    );
    let _: ResultPayload = serde_json::from_value(results[0].2.clone()).unwrap();

    // The connection drops before the server saw the answer; it sends the command again
    // after the next CONNACK and subscription, and gets the same answer.
    h.drop_connection();
    let State::Backoff { until_ms } = h.mqtt.device().state() else {
        panic!("{:?}", h.mqtt.device().state())
    };
    h.run_until(until_ms + 1);
    assert!(h.mqtt.device().is_connected());
    assert_eq!(h.count(|e| matches!(e, Event::Subscribe(_))), 2);
    h.command("c-1", "blink", json!({"times": 3}));
    h.run_until(h.now + 1);
    let results = h.published_to("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[2].2, results[0].2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = h.mqtt.stats();
    assert_eq!(
        (
            stats.commands_run,
            stats.commands_replayed,
            stats.commands_unknown
        ),
        (1, 1, 1)
    );
}

#[test]
fn errors_topic_messages_are_the_cores_error_frames() {
    let mut h = Harness::new(4);
    h.run_until(1);
    let errors = format!("unhidra/devices/{ID}/errors");
    h.mqtt.on_publish(
        h.now,
        &errors,
        br#"{"code":"invalid_field","message":"metric x is not finite","topic":"unhidra/devices/dev-1/telemetry"}"#,
    );
    assert_eq!(h.mqtt.stats().errors, 1);
    assert_eq!(h.mqtt.stats().overloaded, 0);

    // `overloaded` pauses telemetry, as the WebSocket frame does; answers still go.
    h.mqtt
        .on_publish(h.now, &errors, br#"{"code":"overloaded","message":"busy"}"#);
    assert_eq!(h.mqtt.stats().overloaded, 1);
    h.mqtt
        .device_mut()
        .queue_telemetry(h.now, reading(1.0), None)
        .unwrap();
    h.run_until(h.now + 100);
    assert!(h.published_to("telemetry").is_empty());
    h.run_until(h.now + 31_000);
    assert_eq!(h.published_to("telemetry").len(), 1);
}

#[test]
fn payloads_that_are_not_the_servers_are_counted_and_ignored() {
    let mut h = Harness::new(5);
    h.run_until(1);
    h.log.clear();
    let commands = format!("unhidra/devices/{ID}/commands");
    for bad in [
        &b""[..],
        b"not json",
        b"{}",
        br#"{"id":7,"name":"blink"}"#,
        br#"{"type":"welcome","connection_id":"x","principal":{"kind":"device","id":"dev-1"},"max_message_bytes":1}"#,
    ] {
        h.mqtt.on_publish(h.now, &commands, bad);
    }
    h.mqtt
        .on_publish(h.now, &format!("unhidra/devices/{ID}/errors"), b"[1,2]");
    // Another device's commands, topics it publishes to itself, foreign topics.
    let stranger = br#"{"id":"c","name":"blink","args":{}}"#;
    for topic in [
        "unhidra/devices/dev-2/commands",
        "unhidra/devices/dev-1/telemetry",
        "other/topic",
        "",
    ] {
        h.mqtt.on_publish(h.now, topic, stranger);
    }
    h.run_until(h.now + 1_000);
    let stats = h.mqtt.stats();
    assert_eq!((stats.malformed, stats.ignored), (6, 4), "{stats:?}");
    assert_eq!(stats.commands_run + stats.commands_unknown, 0);
    assert!(h.published_to("results").is_empty());
    assert!(h.mqtt.device().is_connected());
}

#[test]
fn refused_connacks_back_off_like_refused_upgrades() {
    // A refused key waits at least half the cap, and never subscribes.
    let mut h = Harness::new(6);
    h.broker = Broker::Refuses(ConnAck::Unauthorized);
    h.run_until(1);
    assert_eq!(h.mqtt.stats().refused, 1);
    assert!(h.mqtt.stats().last_backoff_ms >= 30_000);
    assert_eq!(h.count(|e| matches!(e, Event::Subscribe(_))), 0);

    // A busy server (or one over its connect rate) gets the ordinary backoff.
    let mut h = Harness::new(7);
    h.broker = Broker::Refuses(ConnAck::Unavailable);
    h.run_until(1);
    assert_eq!(h.mqtt.stats().refused, 0);
    assert!(h.mqtt.stats().last_backoff_ms <= 1_000);
    h.broker = Broker::Up;
    h.run_until(2_000);
    assert!(h.mqtt.device().is_connected());
    assert_eq!(h.count(|e| matches!(e, Event::Subscribe(_))), 1);

    for (code, ack) in [
        (0, ConnAck::Accepted),
        (1, ConnAck::Refused(1)),
        (3, ConnAck::Unavailable),
        (4, ConnAck::Unauthorized),
        (5, ConnAck::Unauthorized),
    ] {
        assert_eq!(ConnAck::from_v311(code), ack);
    }
    for (code, ack) in [
        (0x00, ConnAck::Accepted),
        (0x86, ConnAck::Unauthorized),
        (0x87, ConnAck::Unauthorized),
        (0x89, ConnAck::Unavailable),
        (0x9F, ConnAck::Unavailable),
        (0x84, ConnAck::Refused(0x84)),
    ] {
        assert_eq!(ConnAck::from_v5(code), ack);
    }
}

#[test]
fn a_silent_broker_is_dropped_after_two_keep_alives_and_the_will_is_left_to_it() {
    let mut h = Harness::new(8);
    h.broker = Broker::Silent;
    h.run_until(1);
    assert!(h.mqtt.device().is_connected());
    h.run_until(39_999);
    assert!(h.mqtt.device().is_connected());
    h.run_until(40_000);
    // Dropped without DISCONNECT: the broker publishes the Last Will.
    assert_eq!(
        h.log.last().map(|(t, e)| (*t, e.clone())),
        Some((40_000, Event::Close))
    );
    assert_eq!(h.mqtt.stats().dead_peers, 1);
    assert!(!h.mqtt.has_pending());
}

#[test]
fn a_drop_between_connack_and_subscribe_subscribes_on_the_next_connection() {
    let mut h = Harness::new(9);
    // CONNACK arrives, but the connection is gone before the device got to subscribe.
    let MqttAction::Connect = h.mqtt.poll(0) else {
        panic!()
    };
    h.mqtt.on_connack(0, ConnAck::Accepted);
    assert!(h.mqtt.has_pending());
    h.mqtt.on_disconnected(0);
    let MqttAction::Wait(at) = h.mqtt.poll(0) else {
        panic!("no subscription without a connection")
    };
    h.now = at;
    h.run_until(at + 1);
    assert!(h.mqtt.device().is_connected());
    assert_eq!(h.count(|e| matches!(e, Event::Subscribe(_))), 1);
}

#[test]
fn an_overflowing_outbox_flushes_in_order_at_the_cores_pace() {
    let mut h = Harness::new(10);
    h.broker = Broker::Refuses(ConnAck::Unavailable);
    h.run_until(1);
    for i in 0..300 {
        h.mqtt
            .device_mut()
            .queue_telemetry(h.now, reading(f64::from(i)), None)
            .unwrap();
    }
    h.broker = Broker::Up;
    h.run_until(h.now + 2_000);
    let start = h.now;
    h.run_until(start + 20_000);
    let telemetry = h.published_to("telemetry");
    // The newest 256 kept, in order, at no more than 20 a second after a burst of 20.
    assert_eq!(telemetry.len(), 256);
    let temps: Vec<f64> = telemetry
        .iter()
        .map(|(_, _, v)| v["metrics"]["temp"].as_f64().unwrap())
        .collect();
    assert_eq!(temps, (44..300).map(f64::from).collect::<Vec<_>>());
    let first = telemetry[0].0;
    let within_a_second = telemetry
        .iter()
        .filter(|(t, ..)| *t < first + 1_000)
        .count();
    assert!(within_a_second <= 40, "{within_a_second}");
}

#[test]
fn unacknowledged_publishes_hold_telemetry_back_but_not_answers() {
    let mut h = Harness::new(11);
    h.mqtt
        .device_mut()
        .register("blink", |_: &Value| Ok(json!({"blinked": 1})));
    h.broker = Broker::Unacking;
    h.run_until(1);
    for i in 0..100 {
        h.mqtt
            .device_mut()
            .queue_telemetry(h.now, reading(f64::from(i)), None)
            .unwrap();
    }
    h.run_until(h.now + 10_000);
    // No more than the window waits in the client; the rest stays in the outbox.
    assert_eq!(h.published_to("telemetry").len(), TELEMETRY_WINDOW);
    assert_eq!(h.mqtt.unacked(), TELEMETRY_WINDOW);
    assert_eq!(h.mqtt.device().queued_telemetry(), 100 - TELEMETRY_WINDOW);

    // Answers and heartbeats still go, and the keep-alive keeps the connection.
    h.command("c-1", "blink", json!({}));
    h.run_until(h.now + 60_000);
    assert_eq!(h.published_to("results").len(), 1);
    assert!(h.published_to("status").len() >= 2);
    assert!(h.mqtt.device().is_connected());
    assert_eq!(h.published_to("telemetry").len(), TELEMETRY_WINDOW);

    // The store catches up: the rest follows, in order, nothing lost.
    h.broker = Broker::Up;
    h.ack_all();
    h.run_until(h.now + 10_000);
    let temps: Vec<f64> = h
        .published_to("telemetry")
        .iter()
        .map(|(_, _, v)| v["metrics"]["temp"].as_f64().unwrap())
        .collect();
    assert_eq!(temps, (0..100).map(f64::from).collect::<Vec<_>>());
    assert_eq!(h.mqtt.unacked(), 0);

    // A new connection starts with an empty window.
    h.broker = Broker::Unacking;
    for i in 0..20 {
        h.mqtt
            .device_mut()
            .queue_telemetry(h.now, reading(f64::from(i)), None)
            .unwrap();
    }
    h.run_until(h.now + 1_000);
    h.drop_connection();
    assert_eq!(h.mqtt.unacked(), 0);
}

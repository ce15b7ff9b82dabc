//! The device state machine against a fake server and a fake clock: every test is
//! deterministic (seeded jitter, simulated milliseconds) and runs in microseconds.

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
use unhidra_device_core::{
    Action, BackoffConfig, Config, Device, Disconnect, Rng, SplitMix64, State,
};

/// How the fake server behaves towards the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Accepts, welcomes, answers pings.
    Up,
    /// The TCP connection fails.
    Down,
    /// Accepts and welcomes, then never answers again (a dead NAT mapping).
    Silent,
    /// Accepts but never welcomes.
    Mute,
    /// Refuses the upgrade with 401.
    Refuses,
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Connect,
    Sent(Value),
    Ping,
    Close,
}

/// The fake transport and clock around one device.
struct Harness {
    device: Device,
    now: u64,
    server: Server,
    connected: bool,
    log: Vec<(u64, Event)>,
}

const WELCOME: &str = r#"{"type":"welcome","connection_id":"c-1","principal":{"kind":"device","id":"d-1"},"max_message_bytes":65536}"#;

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
    fn new(config: Config, seed: u64) -> Self {
        Self {
            device: Device::new(config, SplitMix64::new(seed), 0),
            now: 0,
            server: Server::Up,
            connected: false,
            log: Vec::new(),
        }
    }

    /// Runs the device until `until` (simulated ms), carrying out its actions.
    fn run_until(&mut self, until: u64) {
        // A device that does anything more than this per simulated second is spinning.
        let budget = 1_000 + (until.saturating_sub(self.now) / 1_000 + 1) * 200;
        for _ in 0..budget {
            match self.device.poll(self.now) {
                Action::Connect => {
                    self.log.push((self.now, Event::Connect));
                    match self.server {
                        Server::Down => self.device.on_disconnected(self.now, Disconnect::Lost),
                        Server::Refuses => self.device.on_disconnected(
                            self.now,
                            Disconnect::Refused {
                                status: 401,
                                retry_after_ms: None,
                            },
                        ),
                        Server::Up | Server::Silent => {
                            self.connected = true;
                            self.device.on_connected(self.now);
                            self.device.on_text(self.now, WELCOME);
                        }
                        Server::Mute => {
                            self.connected = true;
                            self.device.on_connected(self.now);
                        }
                    }
                }
                Action::Send(text) => {
                    assert!(self.connected, "sent while not connected: {text}");
                    let value: Value = serde_json::from_str(&text).unwrap();
                    self.log.push((self.now, Event::Sent(value)));
                }
                Action::SendPing => {
                    assert!(self.connected);
                    self.log.push((self.now, Event::Ping));
                    if self.server == Server::Up {
                        self.device.on_pong(self.now);
                    }
                }
                Action::Close => {
                    self.connected = false;
                    self.log.push((self.now, Event::Close));
                }
                Action::Wait(at) => {
                    assert!(at > self.now, "waits must be in the future");
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

    /// The server closes the connection.
    fn server_closes(&mut self, code: u16) {
        assert!(self.connected);
        self.connected = false;
        self.device
            .on_disconnected(self.now, Disconnect::Closed(code));
    }

    fn receive(&mut self, frame: &str) {
        self.device.on_text(self.now, frame);
    }

    fn sent_of(&self, kind: &str) -> Vec<(u64, Value)> {
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Sent(v) if v["type"] == kind => Some((*t, v.clone())),
                _ => None,
            })
            .collect()
    }

    fn count(&self, event: &Event) -> usize {
        self.log.iter().filter(|(_, e)| e == event).count()
    }

    fn clear_log(&mut self) {
        self.log.clear();
    }
}

fn reading(temp: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([("temp".to_owned(), temp)])
}

#[test]
fn a_normal_session_welcomes_heartbeats_pings_and_sends_telemetry() {
    let mut h = Harness::new(config(), 1);
    h.device.set_free_memory(Some(40_000));
    h.run_until(1);
    assert!(h.device.is_connected());
    assert_eq!(h.device.connection_id(), Some("c-1"));

    // The first frame after welcome is a heartbeat with what the device knows.
    let heartbeats = h.sent_of("heartbeat");
    assert_eq!(
        heartbeats[0].1,
        json!({"type": "heartbeat", "firmware_version": "1.2.3", "free_memory": 40_000, "uptime_secs": 0})
    );

    h.device
        .queue_telemetry(h.now, reading(21.5), None)
        .unwrap();
    h.run_until(2);
    assert_eq!(
        h.sent_of("telemetry"),
        [(1, json!({"type": "telemetry", "metrics": {"temp": 21.5}}))]
    );

    // Five minutes: a ping every 20 s, a heartbeat every 60 s, on time; no reconnects.
    h.run_until(300_000);
    let pings: Vec<u64> = h
        .log
        .iter()
        .filter(|(_, e)| *e == Event::Ping)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(pings, (1..=15).map(|i| i * 20_000).collect::<Vec<_>>());
    let beats: Vec<u64> = h.sent_of("heartbeat").iter().map(|(t, _)| *t).collect();
    assert_eq!(beats, [0, 60_000, 120_000, 180_000, 240_000, 300_000]);
    assert_eq!(h.sent_of("heartbeat")[5].1["uptime_secs"], 300);
    assert_eq!(h.count(&Event::Connect), 1);
    assert_eq!(h.device.stats().disconnects, 0);
}

#[test]
fn a_reconnect_storm_backs_off_within_bounds_without_spinning() {
    let mut h = Harness::new(config(), 2);
    let mut delays = Vec::new();
    // The server drops the device right after every welcome, 200 times.
    for attempt in 0..200u32 {
        h.run_until(h.now + 1);
        assert!(h.device.is_connected(), "attempt {attempt}");
        h.server_closes(1001);
        let State::Backoff { until_ms } = h.device.state() else {
            panic!("not backing off: {:?}", h.device.state());
        };
        let delay = until_ms - h.now;
        let ceiling = (1_000u64 << attempt.min(10)).min(60_000);
        assert!(
            (100..=ceiling).contains(&delay),
            "attempt {attempt}: {delay} ms not within [100, {ceiling}]"
        );
        delays.push(delay);
        h.run_until(until_ms - 1);
        assert_eq!(h.device.state(), State::Backoff { until_ms }, "too early");
        h.run_until(until_ms);
    }
    // The first connection, then one after each of the 200 drops.
    assert_eq!(h.count(&Event::Connect), 201);
    // Past the cap the delays are spread over [0, cap], not bunched.
    let capped = &delays[10..];
    let mean = capped.iter().sum::<u64>() as f64 / capped.len() as f64;
    assert!((24_000.0..36_000.0).contains(&mean), "mean {mean}");
    assert!(capped.iter().any(|d| *d < 15_000) && capped.iter().any(|d| *d > 45_000));

    // A connection that stays up resets the backoff.
    h.run_until(h.now + 1);
    h.run_until(h.now + 31_000);
    h.server_closes(1001);
    assert!(h.device.stats().last_backoff_ms <= 1_000);
}

#[test]
fn full_jitter_spreads_a_fleet_dropped_at_once() {
    // 1,000 devices, each with its own seed, dropped by the same server restart.
    let mut delays = Vec::new();
    for seed in 0..1_000 {
        let mut h = Harness::new(config(), seed);
        h.run_until(1);
        for _ in 0..5 {
            h.server_closes(1001);
            let State::Backoff { until_ms } = h.device.state() else {
                panic!()
            };
            h.run_until(until_ms);
        }
        delays.push(h.device.stats().last_backoff_ms);
    }
    // The fifth retry's ceiling is 16 s: ten buckets of 1.6 s each hold 5-15 % of the fleet.
    let mut buckets = [0u32; 10];
    for d in &delays {
        assert!(*d <= 16_000);
        buckets[(*d as usize * 10 / 16_001).min(9)] += 1;
    }
    for (i, n) in buckets.iter().enumerate() {
        assert!((50..=150).contains(n), "bucket {i} holds {n}: {buckets:?}");
    }
}

#[test]
fn a_down_server_is_retried_with_growing_delays() {
    let mut h = Harness::new(config(), 3);
    h.server = Server::Down;
    h.run_until(3_600_000);
    let connects = h.count(&Event::Connect);
    // Mean delay at the cap is 30 s: about 120 attempts in an hour, far from a tight loop.
    assert!(
        (80..=180).contains(&connects),
        "{connects} attempts in an hour"
    );
    assert_eq!(h.device.stats().welcomes, 0);
    assert!(h.sent_of("heartbeat").is_empty());
}

#[test]
fn a_refused_key_waits_long() {
    let mut h = Harness::new(config(), 4);
    h.server = Server::Refuses;
    h.run_until(1);
    assert!(h.device.stats().last_backoff_ms >= 30_000);
    assert_eq!(h.device.stats().refused, 1);
    // A 429 with Retry-After is honoured.
    let mut h = Harness::new(config(), 5);
    h.run_until(0);
    let _ = h.device.poll(0);
    h.device.on_disconnected(
        0,
        Disconnect::Refused {
            status: 429,
            retry_after_ms: Some(42_000),
        },
    );
    assert_eq!(h.device.state(), State::Backoff { until_ms: 42_000 });
}

#[test]
fn malformed_and_unknown_frames_are_counted_and_ignored() {
    let mut h = Harness::new(config(), 6);
    h.run_until(1);
    h.clear_log();
    let huge = format!(
        r#"{{"type":"error","code":"internal","message":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let bad = [
        "",
        "not json",
        "\u{0}\u{1}",
        "[1,2,3]",
        "{}",
        "null",
        r#"{"type":42}"#,
        r#"{"type":"nope"}"#,
        r#"{"type":"command"}"#,
        r#"{"type":"command","id":7,"name":"blink","args":{}}"#,
        r#"{"type":"command","id":"x","name":["blink"],"args":{}}"#,
        r#"{"type":"welcome","connection_id":"c","principal":{"kind":"robot"},"max_message_bytes":-1}"#,
        r#"{"type":"command","id":"x","name":"blink","args":{"#,
    ];
    for text in bad {
        h.receive(text);
    }
    h.receive(&huge);
    // An error with a code from a newer server is still an error, not garbage.
    h.receive(r#"{"type":"error","code":"no_such_code","message":"m"}"#);
    assert_eq!(h.device.stats().errors, 1);
    // Frames of the protocol that mean nothing to a device.
    h.receive(r#"{"type":"typing","channel":"c","user":"u"}"#);
    h.receive(WELCOME);
    h.receive(r#"{"type":"pong"}"#);

    let stats = h.device.stats();
    assert_eq!(stats.malformed, bad.len() as u64);
    assert_eq!(stats.oversized, 1);
    assert_eq!(stats.ignored, 2);
    h.run_until(h.now + 1_000);
    assert!(h.device.is_connected());
    assert!(h.log.is_empty(), "nothing answered: {:?}", h.log);

    // Random bytes and every truncation of valid frames: counted, never a panic.
    let mut rng = SplitMix64::new(99);
    let alphabet = br#"{}[]":,01a-ztypecommandwelcomeidnameargs\ "#;
    for _ in 0..5_000 {
        let len = rng.up_to(80) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[rng.up_to(alphabet.len() as u64 - 1) as usize] as char)
            .collect();
        h.receive(&s);
    }
    let valid = r#"{"type":"command","id":"c9","name":"blink","args":{"times":3}}"#;
    for cut in 0..valid.len() - 1 {
        h.receive(&valid[..cut]);
    }
    assert!(h.device.is_connected());
    assert_eq!(
        h.device.stats().commands_run + h.device.stats().commands_unknown,
        0
    );
}

#[test]
fn a_redelivered_command_is_answered_again_without_running_twice() {
    let mut h = Harness::new(config(), 7);
    let runs = Arc::new(AtomicU32::new(0));
    h.device.register("blink", {
        let runs = Arc::clone(&runs);
        move |args: &Value| {
            runs.fetch_add(1, Ordering::SeqCst);
            let times = args["times"].as_u64().ok_or("times must be a number")?;
            Ok(json!({"blinked": times}))
        }
    });
    h.run_until(1);
    let command = r#"{"type":"command","id":"cmd-1","name":"blink","args":{"times":3}}"#;
    h.receive(command);
    // The connection drops before the answer reaches the server.
    h.server_closes(1006);
    let State::Backoff { until_ms } = h.device.state() else {
        panic!()
    };
    h.run_until(until_ms + 1);
    assert!(h.sent_of("command_result").is_empty());
    // The server delivers it again on the new connection.
    h.receive(command);
    h.run_until(h.now + 1);
    assert_eq!(
        h.sent_of("command_result")
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        [json!({"type": "command_result", "id": "cmd-1", "ok": true, "output": {"blinked": 3}})]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(h.device.stats().commands_replayed, 1);

    // Unknown names and failing handlers are answered, ok: false.
    h.receive(r#"{"type":"command","id":"cmd-2","name":"dance","args":null}"#);
    h.receive(r#"{"type":"command","id":"cmd-3","name":"blink","args":{}}"#);
    h.run_until(h.now + 1);
    let results = h.sent_of("command_result");
    assert_eq!(
        results[1].1,
        json!({"type": "command_result", "id": "cmd-2", "ok": false, "output": {"error": "unknown command: dance"}})
    );
    assert_eq!(
        results[2].1,
        json!({"type": "command_result", "id": "cmd-3", "ok": false, "output": {"error": "times must be a number"}})
    );
}

#[test]
fn an_outbox_overflow_keeps_the_newest_and_flushes_them_in_order_at_a_safe_rate() {
    let mut cfg = config();
    cfg.outbox_capacity = 100;
    cfg.frames_per_sec = 20;
    cfg.frame_burst = 20;
    let mut h = Harness::new(cfg, 8);
    h.server = Server::Down;
    for i in 0..1_000 {
        h.device
            .queue_telemetry(h.now, reading(f64::from(i)), None)
            .unwrap();
        h.run_until(h.now + 100);
    }
    assert_eq!(h.device.queued_telemetry(), 100);
    assert_eq!(h.device.stats().telemetry_dropped, 900);
    assert!(h.sent_of("telemetry").is_empty());

    h.server = Server::Up;
    h.run_until(h.now + 200_000);
    let sent = h.sent_of("telemetry");
    let temps: Vec<f64> = sent
        .iter()
        .map(|(_, v)| v["metrics"]["temp"].as_f64().unwrap())
        .collect();
    assert_eq!(temps, (900..1_000).map(f64::from).collect::<Vec<_>>());
    // Never more than the burst plus the rate in any window (the server closes at 50/s).
    let frames: Vec<u64> = h
        .log
        .iter()
        .filter_map(|(t, e)| matches!(e, Event::Sent(_)).then_some(*t))
        .collect();
    for (i, start) in frames.iter().enumerate() {
        let in_second = frames[i..]
            .iter()
            .take_while(|t| **t < start + 1_000)
            .count();
        assert!(
            in_second <= 40,
            "{in_second} frames within a second of {start}"
        );
    }
    assert_eq!(h.device.stats().telemetry_sent, 100);
}

#[test]
fn queued_points_older_than_the_servers_window_expire() {
    let mut h = Harness::new(config(), 9);
    h.server = Server::Down;
    h.device.queue_telemetry(0, reading(1.0), None).unwrap();
    h.run_until(200_000);
    h.device.queue_telemetry(h.now, reading(2.0), None).unwrap();
    h.run_until(400_000);
    h.server = Server::Up;
    h.run_until(500_000);
    let temps: Vec<Value> = h
        .sent_of("telemetry")
        .into_iter()
        .map(|(_, v)| v["metrics"]["temp"].clone())
        .collect();
    assert_eq!(temps, [json!(2.0)]);
    assert_eq!(h.device.stats().telemetry_expired, 1);
}

#[test]
fn bad_readings_are_refused_before_queueing() {
    let mut h = Harness::new(config(), 10);
    assert!(h.device.queue_telemetry(0, BTreeMap::new(), None).is_err());
    assert!(h
        .device
        .queue_telemetry(0, reading(f64::NAN), None)
        .is_err());
    let bad_name = BTreeMap::from([("temp perature".to_owned(), 1.0)]);
    assert!(h.device.queue_telemetry(0, bad_name, None).is_err());
    let too_many: BTreeMap<String, f64> = (0..65).map(|i| (format!("m{i}"), 1.0)).collect();
    assert!(h.device.queue_telemetry(0, too_many, None).is_err());
    assert_eq!(h.device.queued_telemetry(), 0);
}

#[test]
fn a_silent_peer_is_declared_dead_after_two_ping_intervals() {
    let mut h = Harness::new(config(), 11);
    h.server = Server::Silent;
    h.run_until(1);
    assert!(h.device.is_connected());
    h.run_until(39_999);
    assert!(h.device.is_connected());
    h.run_until(40_000);
    // The ping at 20 s went unanswered; at 40 s the peer is given up.
    assert_eq!(h.count(&Event::Ping), 1);
    assert_eq!(h.count(&Event::Close), 1);
    assert!(matches!(h.device.state(), State::Backoff { .. }));
    assert_eq!(h.device.stats().dead_peers, 1);
    // Frames count as life: a device receiving text stays up without pongs.
    let mut h = Harness::new(config(), 12);
    h.server = Server::Silent;
    h.run_until(1);
    for t in (10_000..200_000).step_by(10_000) {
        h.run_until(t);
        h.receive(r#"{"type":"pong"}"#);
    }
    assert!(h.device.is_connected());
}

#[test]
fn a_connection_without_welcome_is_abandoned() {
    let mut h = Harness::new(config(), 13);
    h.server = Server::Mute;
    h.run_until(14_999);
    assert!(matches!(h.device.state(), State::AwaitingWelcome { .. }));
    h.run_until(15_000);
    assert_eq!(h.count(&Event::Close), 1);
    assert_eq!(h.device.stats().connect_timeouts, 1);
    assert!(h.sent_of("heartbeat").is_empty());
}

#[test]
fn overloaded_pauses_telemetry_but_not_answers() {
    let mut h = Harness::new(config(), 14);
    h.device.register("blink", |_| Ok(Value::Null));
    h.run_until(1);
    h.receive(r#"{"type":"error","code":"overloaded","message":"the store is behind"}"#);
    for i in 0..5 {
        h.device
            .queue_telemetry(h.now, reading(f64::from(i)), None)
            .unwrap();
    }
    h.receive(r#"{"type":"command","id":"c1","name":"blink","args":null}"#);
    h.run_until(h.now + 400);
    assert!(h.sent_of("telemetry").is_empty(), "paused");
    assert_eq!(h.sent_of("command_result").len(), 1);
    h.run_until(h.now + 1_000);
    assert_eq!(h.sent_of("telemetry").len(), 5);
    assert_eq!(h.device.stats().overloaded, 1);
}

#[test]
fn a_deterministic_seed_gives_the_same_run() {
    let run = |seed| {
        let mut h = Harness::new(config(), seed);
        h.server = Server::Down;
        h.run_until(600_000);
        h.log
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

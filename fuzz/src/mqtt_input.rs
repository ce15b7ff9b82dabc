//! The MQTT target's input: how the client connects, then a sequence of operations.
//!
//! The fuzzer cannot guess a device key, so the harness writes the CONNECT (with the real key,
//! a wrong one, or none) and the device's own topics; everything after it is the fuzzer's,
//! including raw bytes. Bytes: `flags`, `keep_alive` (u16), then operations, each
//! `[op][len: u16 BE][body]` (a short body takes what is left). Any input decodes.

use bytes::BytesMut;
use rumqttc::mqttbytes::{v4, QoS as Qos4};
use rumqttc::v5::mqttbytes::{v5, QoS as Qos5};

/// Which credentials the CONNECT carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    Valid,
    WrongKey,
    None,
    /// The right key under another device's id as the username.
    OtherUsername,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// To one of the device's topics (`telemetry`, `status`, `results`, `commands`, `errors`).
    Publish {
        kind: u8,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
    },
    /// To any topic, at QoS 1.
    PublishTo {
        topic: String,
        payload: Vec<u8>,
    },
    Subscribe {
        filter: String,
        qos: u8,
    },
    /// The device's own commands topic.
    SubscribeCommands {
        qos: u8,
    },
    Unsubscribe {
        filter: String,
    },
    Raw(Vec<u8>),
    Ping,
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub v5: bool,
    pub credentials: Credentials,
    /// A will on the device's status topic.
    pub will: bool,
    pub keep_alive: u16,
    pub ops: Vec<Op>,
}

pub const KINDS: [&str; 5] = ["telemetry", "status", "results", "commands", "errors"];

impl Input {
    pub fn decode(data: &[u8]) -> Input {
        let flags = data.first().copied().unwrap_or(0);
        let keep_alive = match data.get(1..3) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 30,
        };
        let credentials = match (flags >> 1) & 3 {
            0 => Credentials::Valid,
            1 => Credentials::WrongKey,
            2 => Credentials::None,
            _ => Credentials::OtherUsername,
        };
        let mut ops = Vec::new();
        let mut rest = data.get(3..).unwrap_or_default();
        while let Some((&op, tail)) = rest.split_first() {
            let (len, tail) = match tail {
                [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
                _ => (0, tail),
            };
            let (body, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            let first = body.first().copied().unwrap_or(0);
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            ops.push(match op % 9 {
                0 => Op::Publish {
                    kind: (first & 7) % 5,
                    qos: ((first >> 3) & 3) % 3,
                    retain: first & 0x80 != 0,
                    payload: body.get(1..).unwrap_or_default().to_vec(),
                },
                1 => {
                    let split = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    let (topic, payload) = body.split_at(split);
                    Op::PublishTo {
                        topic: text(topic),
                        payload: payload.get(1..).unwrap_or_default().to_vec(),
                    }
                }
                2 => Op::Subscribe {
                    filter: text(body.get(1..).unwrap_or_default()),
                    qos: first % 3,
                },
                3 => Op::SubscribeCommands { qos: first % 3 },
                4 => Op::Unsubscribe { filter: text(body) },
                5 => Op::Raw(body.to_vec()),
                6 => Op::Ping,
                7 => Op::Disconnect,
                _ => Op::Raw(body.to_vec()),
            });
        }
        Input {
            v5: flags & 1 != 0,
            credentials,
            will: flags & 8 != 0,
            keep_alive,
            ops,
        }
    }

    /// The bytes that decode to this input (for writing seeds).
    pub fn encode(&self) -> Vec<u8> {
        let credentials = match self.credentials {
            Credentials::Valid => 0,
            Credentials::WrongKey => 1,
            Credentials::None => 2,
            Credentials::OtherUsername => 3,
        };
        let flags = u8::from(self.v5) | credentials << 1 | u8::from(self.will) << 3;
        let mut out = vec![flags];
        out.extend(self.keep_alive.to_be_bytes());
        for op in &self.ops {
            let (code, body): (u8, Vec<u8>) = match op {
                Op::Publish {
                    kind,
                    qos,
                    retain,
                    payload,
                } => {
                    let first = kind % 5 | (qos % 3) << 3 | u8::from(*retain) << 7;
                    (0, [vec![first], payload.clone()].concat())
                }
                Op::PublishTo { topic, payload, .. } => {
                    (1, [topic.as_bytes(), &[0], payload].concat())
                }
                Op::Subscribe { filter, qos } => (2, [&[*qos][..], filter.as_bytes()].concat()),
                Op::SubscribeCommands { qos } => (3, vec![*qos]),
                Op::Unsubscribe { filter } => (4, filter.as_bytes().to_vec()),
                Op::Raw(bytes) => (5, bytes.clone()),
                Op::Ping => (6, Vec::new()),
                Op::Disconnect => (7, Vec::new()),
            };
            out.push(code);
            let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
            out.extend(len.to_be_bytes());
            out.extend(body.get(..usize::from(len)).unwrap_or_default());
        }
        out
    }

    /// What the client sends: the CONNECT, then each operation as packets.
    pub fn packets(&self, device_id: &str, device_key: &str) -> Vec<u8> {
        let topic = |kind: u8| {
            let kind = KINDS
                .get(usize::from(kind % 5))
                .copied()
                .unwrap_or("telemetry");
            format!("unhidra/devices/{device_id}/{kind}")
        };
        let (username, password) = match self.credentials {
            Credentials::Valid => (Some(device_id.to_owned()), Some(device_key.to_owned())),
            Credentials::WrongKey => (Some(device_id.to_owned()), Some(format!("{device_key}x"))),
            Credentials::None => (None, None),
            Credentials::OtherUsername => (
                Some("not-this-device".to_owned()),
                Some(device_key.to_owned()),
            ),
        };
        let will_payload = br#"{"online":false}"#.to_vec();
        let mut buf = BytesMut::new();
        let max = 1 << 24;
        if self.v5 {
            let connect = v5::Connect {
                keep_alive: self.keep_alive,
                client_id: "fuzz".to_owned(),
                clean_start: true,
                properties: None,
            };
            let login = username.zip(password).map(|(u, p)| v5::Login::new(u, p));
            let will = self
                .will
                .then(|| v5::LastWill::new(topic(1), will_payload, Qos5::AtMostOnce, false, None));
            let _ = connect.write(&will, &login, &mut buf);
        } else {
            let mut connect = v4::Connect::new("fuzz");
            connect.keep_alive = self.keep_alive;
            if let (Some(u), Some(p)) = (username, password) {
                connect.set_login(u, p);
            }
            if self.will {
                connect.last_will = Some(v4::LastWill::new(
                    topic(1),
                    will_payload,
                    Qos4::AtMostOnce,
                    false,
                ));
            }
            let _ = v4::Packet::Connect(connect).write(&mut buf, max);
        }
        let mut pkid: u16 = 0;
        let mut next_pkid = || {
            pkid = pkid.wrapping_add(1).max(1);
            pkid
        };
        for op in &self.ops {
            let publish = |topic: String, qos: u8, retain: bool, payload: &[u8], pkid: u16| {
                let mut buf = BytesMut::new();
                if self.v5 {
                    let mut p = v5::Publish::new(topic, qos5(qos), payload.to_vec(), None);
                    p.retain = retain;
                    p.pkid = if qos == 0 { 0 } else { pkid };
                    let _ = p.write(&mut buf);
                } else {
                    let mut p = v4::Publish::new(topic, qos4(qos), payload.to_vec());
                    p.retain = retain;
                    p.pkid = if qos == 0 { 0 } else { pkid };
                    let _ = v4::Packet::Publish(p).write(&mut buf, max);
                }
                buf
            };
            match op {
                Op::Publish {
                    kind,
                    qos,
                    retain,
                    payload,
                } => buf.extend(publish(topic(*kind), *qos, *retain, payload, next_pkid())),
                Op::PublishTo { topic, payload } => {
                    buf.extend(publish(topic.clone(), 1, false, payload, next_pkid()))
                }
                Op::Subscribe { filter, qos } => {
                    subscribe(&mut buf, self.v5, filter, *qos, next_pkid())
                }
                Op::SubscribeCommands { qos } => {
                    subscribe(&mut buf, self.v5, &topic(3), *qos, next_pkid())
                }
                Op::Unsubscribe { filter } => {
                    let pkid = next_pkid();
                    if self.v5 {
                        let mut u = v5::Unsubscribe::new(filter.clone(), None);
                        u.pkid = pkid;
                        let _ = u.write(&mut buf);
                    } else {
                        let mut u = v4::Unsubscribe::new(filter.clone());
                        u.pkid = pkid;
                        let _ = v4::Packet::Unsubscribe(u).write(&mut buf, max);
                    }
                }
                Op::Raw(bytes) => buf.extend_from_slice(bytes),
                Op::Ping => buf.extend_from_slice(&[0xc0, 0x00]),
                Op::Disconnect => buf.extend_from_slice(&[0xe0, 0x00]),
            }
        }
        buf.to_vec()
    }
}

fn subscribe(buf: &mut BytesMut, v5: bool, filter: &str, qos: u8, pkid: u16) {
    if v5 {
        let mut s = v5::Subscribe::new(v5::Filter::new(filter, qos5(qos)), None);
        s.pkid = pkid;
        let _ = s.write(buf);
    } else {
        let mut s = v4::Subscribe::new(filter, qos4(qos));
        s.pkid = pkid;
        let _ = v4::Packet::Subscribe(s).write(buf, 1 << 24);
    }
}

fn qos4(qos: u8) -> Qos4 {
    match qos % 3 {
        0 => Qos4::AtMostOnce,
        1 => Qos4::AtLeastOnce,
        _ => Qos4::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> Qos5 {
    match qos % 3 {
        0 => Qos5::AtMostOnce,
        1 => Qos5::AtLeastOnce,
        _ => Qos5::ExactlyOnce,
    }
}

//! Writes the committed seed corpora (`corpus/<target>/seed-*`):
//! `cargo run --example make_seeds` in `fuzz/`. Seeds the fuzzer found stay beside them.

use std::path::Path;

use unhidra_fuzz::jwt_key::{self, AUDIENCE, ISSUER, KID};
use unhidra_fuzz::mqtt_input::{Credentials, Input, Op};

/// Writes `corpus/<target>/<file>`.
fn write_file(target: &str, file: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    std::fs::write(dir.join(file), bytes).expect("a seed");
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    write_file(target, &format!("seed-{name}"), bytes);
}

fn main() {
    ws_frames();
    handshakes();
    jwts();
    mqtt();
    ml_frames();
    telemetry();
}

fn ws_frames() {
    let frames = [
        ("ping", r#"{"type":"ping"}"#),
        (
            "subscribe",
            r#"{"type":"subscribe","channel":"$CHANNEL","since":0}"#,
        ),
        (
            "unsubscribe",
            r#"{"type":"unsubscribe","channel":"$CHANNEL"}"#,
        ),
        (
            "publish",
            r#"{"type":"publish","channel":"$CHANNEL","body":"hello **world**","client_msg_id":"c1"}"#,
        ),
        (
            "publish-thread",
            r#"{"type":"publish","channel":"$CHANNEL","body":"a reply","client_msg_id":"c2","thread_root":"m1","attachments":["f1"]}"#,
        ),
        ("typing", r#"{"type":"typing","channel":"$CHANNEL"}"#),
        ("presence", r#"{"type":"presence","status":"away"}"#),
        (
            "command",
            r#"{"type":"command","device":"$DEVICE","name":"reboot","args":{"delay":5},"ttl_secs":60,"ref":"r1"}"#,
        ),
        (
            "device-command-result",
            r#"!{"type":"command_result","id":"x","ok":true,"output":null}"#,
        ),
        (
            "device-telemetry",
            r#"!{"type":"telemetry","metrics":{"temp":21.5,"rssi":-60},"ts":"2030-01-01T00:00:00Z"}"#,
        ),
        (
            "device-heartbeat",
            r#"!{"type":"heartbeat","firmware_version":"1.0.0","uptime_secs":5}"#,
        ),
        (
            "device-publish",
            r#"!{"type":"publish","channel":"$CHANNEL","body":"x","client_msg_id":"d1"}"#,
        ),
        (
            "telemetry-as-user",
            r#"{"type":"telemetry","metrics":{"t":1}}"#,
        ),
        (
            "receipt",
            r#"{"type":"receipt","channel":"$CHANNEL","seq":1}"#,
        ),
        ("unknown", r#"{"type":"nope"}"#),
        ("not-json", "{\"type\":"),
    ];
    for (name, frame) in frames {
        write("ws_frame", name, frame.as_bytes());
    }
}

fn handshakes() {
    let cases = [
        (
            "bearer",
            "Sec-WebSocket-Protocol: unhidra.v1, bearer.$TOKEN",
        ),
        (
            "device",
            "Sec-WebSocket-Protocol: unhidra.v1\r\nSec-WebSocket-Protocol: device.$KEY",
        ),
        (
            "two",
            "Sec-WebSocket-Protocol: unhidra.v1, bearer.$TOKEN, device.$KEY",
        ),
        ("none", "Sec-WebSocket-Protocol: unhidra.v1"),
        (
            "origin",
            "Origin: http://evil.example\r\nSec-WebSocket-Protocol: unhidra.v1, bearer.$TOKEN",
        ),
        (
            "bad-token",
            "Sec-WebSocket-Protocol: unhidra.v1, bearer.eyJhbGciOiJub25lIn0.e30.",
        ),
    ];
    for (name, headers) in cases {
        write("ws_handshake", name, headers.as_bytes());
    }
}

fn jwts() {
    let header = format!(r#"{{"typ":"JWT","alg":"EdDSA","kid":"{KID}"}}"#);
    let now = jwt_key::now().unix_timestamp();
    let claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"u1","sid":"s1","iat":{now},"nbf":{now},"exp":{},"jti":"j1"}}"#,
        now + 900
    );
    write(
        "jwt",
        "valid",
        jwt_key::sign(header.as_bytes(), claims.as_bytes()).as_bytes(),
    );
    let structured = |h: &str, c: &str| [&[0u8][..], h.as_bytes(), &[0xff], c.as_bytes()].concat();
    write("jwt", "signed-valid", &structured(&header, &claims));
    write(
        "jwt",
        "signed-none",
        &structured(r#"{"alg":"none"}"#, &claims),
    );
    write(
        "jwt",
        "signed-crit",
        &structured(
            &format!(r#"{{"alg":"EdDSA","kid":"{KID}","crit":["x"]}}"#),
            &claims,
        ),
    );
    write(
        "jwt",
        "signed-expired",
        &structured(
            &header,
            &claims.replace(&format!("\"exp\":{}", now + 900), "\"exp\":1"),
        ),
    );
}

fn mqtt() {
    let telemetry = |qos| Op::Publish {
        kind: 0,
        qos,
        retain: false,
        payload: br#"{"metrics":{"temp":21.5,"hum":40}}"#.to_vec(),
    };
    let cases = [
        (
            "v4-telemetry",
            Input {
                v5: false,
                credentials: Credentials::Valid,
                will: true,
                keep_alive: 30,
                ops: vec![
                    Op::SubscribeCommands { qos: 1 },
                    telemetry(1),
                    telemetry(0),
                    Op::Publish {
                        kind: 1,
                        qos: 1,
                        retain: false,
                        payload: br#"{"firmware_version":"1.2.3","uptime_secs":10}"#.to_vec(),
                    },
                    Op::Publish {
                        kind: 2,
                        qos: 1,
                        retain: false,
                        payload: br#"{"id":"c1","ok":true,"output":{}}"#.to_vec(),
                    },
                    Op::Ping,
                    Op::Unsubscribe {
                        filter: "unhidra/devices/+/commands".to_owned(),
                    },
                    Op::Disconnect,
                ],
            },
        ),
        (
            "v5-telemetry",
            Input {
                v5: true,
                credentials: Credentials::Valid,
                will: false,
                keep_alive: 60,
                ops: vec![
                    telemetry(1),
                    Op::Publish {
                        kind: 0,
                        qos: 1,
                        retain: false,
                        payload: br#"{"metrics":{"a-very-long-metric-name-that-is-not-allowed-because-it-is-longer-than-sixty-four":1}}"#.to_vec(),
                    },
                    Op::Publish {
                        kind: 3,
                        qos: 1,
                        retain: true,
                        payload: b"{}".to_vec(),
                    },
                    Op::Subscribe {
                        filter: "#".to_owned(),
                        qos: 2,
                    },
                    telemetry(2),
                ],
            },
        ),
        (
            "v5-other-topic",
            Input {
                v5: true,
                credentials: Credentials::Valid,
                will: true,
                keep_alive: 0,
                ops: vec![Op::PublishTo {
                    topic: "unhidra/devices/other/telemetry".to_owned(),
                    payload: b"{}".to_vec(),
                }],
            },
        ),
        (
            "v4-wrong-key",
            Input {
                v5: false,
                credentials: Credentials::WrongKey,
                will: false,
                keep_alive: 10,
                ops: vec![telemetry(1)],
            },
        ),
        (
            "v5-no-credentials",
            Input {
                v5: true,
                credentials: Credentials::None,
                will: false,
                keep_alive: 10,
                ops: vec![],
            },
        ),
        (
            "v4-other-username",
            Input {
                v5: false,
                credentials: Credentials::OtherUsername,
                will: false,
                keep_alive: 10,
                ops: vec![],
            },
        ),
        (
            "v4-raw",
            Input {
                v5: false,
                credentials: Credentials::Valid,
                will: false,
                keep_alive: 10,
                ops: vec![Op::Raw(vec![0x62, 0x02, 0x00, 0x01]), Op::Raw(vec![0xf0, 0x00])],
            },
        ),
        (
            // A refusal quoting this name overflowed an MQTT string (fuzz/README.md).
            "regress-v5-huge-reason",
            Input {
                v5: true,
                credentials: Credentials::Valid,
                will: false,
                keep_alive: 30,
                ops: vec![
                    Op::Publish {
                        kind: 0,
                        qos: 1,
                        retain: false,
                        payload: format!(r#"{{"metrics":{{"{}":1}}}}"#, "\u{7f}".repeat(12_000))
                            .into_bytes(),
                    },
                    telemetry(1),
                ],
            },
        ),
    ];
    for (name, input) in cases {
        let bytes = input.encode();
        assert_eq!(
            Input::decode(&bytes),
            input,
            "{name} does not decode to itself"
        );
        if name.starts_with("regress-") {
            write_file("mqtt", name, &bytes);
        } else {
            write("mqtt", name, &bytes);
        }
    }
}

fn ml_frames() {
    let frame = |body: &[u8]| {
        let mut out = u32::try_from(body.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(body);
        out
    };
    let answers = [
        frame(br#"{"id":1,"ok":true,"result":{"score":0.93,"label":"anomaly"}}"#),
        frame(br#"{"id":2,"ok":false,"error":{"code":"bad_payload","message":"no metrics"}}"#),
        frame(br#"{"id":null,"ok":false,"error":{"code":"bad_frame","message":"?"}}"#),
    ];
    write(
        "ml_frames",
        "answers",
        &[&[255u8, 7][..], &answers.concat()].concat(),
    );
    write(
        "ml_frames",
        "small-limit",
        &[&[0u8, 1][..], &answers.concat()].concat(),
    );
    write(
        "ml_frames",
        "partial",
        &[&[255u8, 3][..], &[0, 0, 0, 200, b'{']].concat(),
    );
}

fn telemetry() {
    let payloads = [
        ("mqtt", r#"{"metrics":{"temp":21.5,"rssi":-60.0}}"#),
        (
            "mqtt-ts",
            r#"{"metrics":{"v":1e-300,"w":1.7976931348623157e308},"ts":"2030-01-01T00:00:00Z"}"#,
        ),
        ("frame", r#"{"type":"telemetry","metrics":{"x.y_z-1":0.1}}"#),
        (
            "frame-ts",
            r#"{"type":"telemetry","metrics":{"a":-0.0},"ts":"2029-12-31T23:59:30+00:00"}"#,
        ),
        ("empty", r#"{"metrics":{}}"#),
    ];
    for (name, payload) in payloads {
        write("telemetry", name, payload.as_bytes());
    }
}

//! Devices over the native MQTT listener, MQTT 3.1.1 and 5, packet by packet: the client
//! side is `rumqttc`'s packet codecs over a real TCP socket, so each test says exactly what
//! goes on the wire and asserts exactly what comes back.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rumqttc::mqttbytes::{v4, QoS};
use rumqttc::v5::mqttbytes::{v5, QoS as QoS5};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::helpers::*;
use crate::ws::{next_of, user_ws};

const WAIT: Duration = Duration::from_secs(5);

fn topic(device: &str, kind: &str) -> String {
    format!("unhidra/devices/{device}/{kind}")
}

/// An MQTT 3.1.1 client.
struct V4(Framed<TcpStream, v4::Codec>);

impl V4 {
    async fn open(app: &TestApp) -> Self {
        let tcp = TcpStream::connect(app.mqtt).await.unwrap();
        V4(Framed::new(
            tcp,
            v4::Codec {
                max_incoming_size: 1 << 20,
                max_outgoing_size: 1 << 20,
            },
        ))
    }

    /// Connects; returns the client and the CONNACK code.
    async fn connect_with(
        app: &TestApp,
        mut connect: v4::Connect,
    ) -> (Self, v4::ConnectReturnCode) {
        let mut c = Self::open(app).await;
        connect.keep_alive = connect.keep_alive.max(1);
        c.send(v4::Packet::Connect(connect)).await;
        match c.next().await {
            Some(v4::Packet::ConnAck(ack)) => {
                assert!(!ack.session_present, "sessions are always clean");
                (c, ack.code)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(app: &TestApp, device: &str, key: &str) -> Self {
        let mut connect = v4::Connect::new(format!("c-{device}"));
        connect.keep_alive = 30;
        connect.set_login(device, key);
        let (c, code) = Self::connect_with(app, connect).await;
        assert_eq!(code, v4::ConnectReturnCode::Success);
        c
    }

    async fn send(&mut self, packet: v4::Packet) {
        self.0.send(packet).await.unwrap();
    }

    /// The next packet; `None` when the server closed the connection.
    async fn next(&mut self) -> Option<v4::Packet> {
        match tokio::time::timeout(WAIT, self.0.next()).await {
            Ok(Some(Ok(packet))) => Some(packet),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: Value) {
        let mut p = v4::Publish::new(topic, qos, payload.to_string());
        p.pkid = pkid;
        self.send(v4::Packet::Publish(p)).await;
    }

    async fn subscribe(&mut self, pkid: u16, filters: &[&str]) -> Vec<v4::SubscribeReasonCode> {
        let mut s = v4::Subscribe::new_many(
            filters
                .iter()
                .map(|f| v4::SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)),
        );
        s.pkid = pkid;
        self.send(v4::Packet::Subscribe(s)).await;
        match self.next().await {
            Some(v4::Packet::SubAck(ack)) => {
                assert_eq!(ack.pkid, pkid);
                ack.return_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Pings and returns every packet before the PINGRESP: the session handles a client's
    /// packets in order, so whatever was published before is handled by then.
    async fn settle(&mut self) -> Vec<v4::Packet> {
        self.send(v4::Packet::PingReq).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Some(v4::Packet::PingResp) => return before,
                Some(p) => before.push(p),
                None => panic!("closed while settling"),
            }
        }
    }

    async fn closed(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return,
                Err(_) => panic!("connection still open after {within:?}"),
            }
        }
    }
}

/// An MQTT 5 client.
struct V5(Framed<TcpStream, v5::Codec>);

impl V5 {
    async fn connect_with(
        app: &TestApp,
        client_id: &str,
        login: Option<(&str, &str)>,
        will: Option<v5::LastWill>,
    ) -> (Self, v5::ConnAck) {
        let tcp = TcpStream::connect(app.mqtt).await.unwrap();
        let mut c = V5(Framed::new(
            tcp,
            v5::Codec {
                max_incoming_size: Some(1 << 20),
                max_outgoing_size: Some(1 << 20),
            },
        ));
        let connect = v5::Connect {
            keep_alive: 30,
            client_id: client_id.to_owned(),
            clean_start: true,
            properties: None,
        };
        let login = login.map(|(u, p)| v5::Login::new(u, p));
        c.send(v5::Packet::Connect(connect, will, login)).await;
        match c.next().await {
            Some(v5::Packet::ConnAck(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(app: &TestApp, device: &str, key: &str) -> Self {
        let (c, ack) =
            Self::connect_with(app, &format!("c5-{device}"), Some((device, key)), None).await;
        assert_eq!(ack.code, v5::ConnectReturnCode::Success);
        let props = ack.properties.expect("CONNACK properties");
        assert_eq!(props.max_qos, Some(1));
        assert_eq!(props.retain_available, Some(0));
        assert_eq!(props.max_packet_size, Some(64 * 1024));
        c
    }

    async fn send(&mut self, packet: v5::Packet) {
        self.0.send(packet).await.unwrap();
    }

    async fn next(&mut self) -> Option<v5::Packet> {
        match tokio::time::timeout(WAIT, self.0.next()).await {
            Ok(Some(Ok(packet))) => Some(packet),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, pkid: u16, payload: impl Into<Bytes>) -> v5::PubAck {
        let mut p = v5::Publish::new(topic, QoS5::AtLeastOnce, payload, None);
        p.pkid = pkid;
        self.send(v5::Packet::Publish(p)).await;
        loop {
            match self.next().await {
                Some(v5::Packet::PubAck(ack)) => {
                    assert_eq!(ack.pkid, pkid);
                    return ack;
                }
                Some(v5::Packet::Publish(_)) => continue,
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// Waits for the server's DISCONNECT; returns its reason code.
    async fn disconnected(&mut self, within: Duration) -> v5::DisconnectReasonCode {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Ok(Some(Ok(v5::Packet::Disconnect(d)))) => return d.reason_code,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => panic!("closed without DISCONNECT"),
                Err(_) => panic!("no DISCONNECT within {within:?}"),
            }
        }
    }
}

fn reason_string(ack: &v5::PubAck) -> String {
    ack.properties
        .as_ref()
        .and_then(|p| p.reason_string.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn mqtt_3_1_1_device_sends_telemetry_and_status_and_answers_a_command() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "boiler").await;
    let mut owner = user_ws(&app, &alice).await;
    let mut c = V4::connect(&app, &device, &key).await;
    let online = next_of(&mut owner, "device_state").await;
    assert_eq!(
        (
            online["device"].as_str(),
            online["state"]["online"].as_bool()
        ),
        (Some(device.as_str()), Some(true))
    );

    // QoS 1 telemetry is acknowledged after it is stored.
    c.publish(
        &topic(&device, "telemetry"),
        QoS::AtLeastOnce,
        7,
        json!({"metrics": {"temp": 21.5, "rssi": -60}}),
    )
    .await;
    match c.next().await {
        Some(v4::Packet::PubAck(ack)) => assert_eq!(ack.pkid, 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(app.stored_points(&alice, &device, "temp").await, 1);
    // QoS 0 too, stored before the next packet is read.
    app.clock.advance(time::Duration::seconds(1));
    c.publish(
        &topic(&device, "telemetry"),
        QoS::AtMostOnce,
        0,
        json!({"metrics": {"temp": 22.0}}),
    )
    .await;
    assert!(c.settle().await.is_empty());
    assert_eq!(app.stored_points(&alice, &device, "temp").await, 2);

    // A status message is a heartbeat: the owner sees it.
    c.publish(
        &topic(&device, "status"),
        QoS::AtMostOnce,
        0,
        json!({"firmware_version": "2.1.0", "free_memory": 40000}),
    )
    .await;
    let state = next_of(&mut owner, "device_state").await;
    assert_eq!(state["state"]["firmware_version"], "2.1.0");
    assert_eq!(state["state"]["free_memory"], 40000);

    // Commands arrive on the commands topic once subscribed, and the result reaches the owner.
    assert_eq!(
        c.subscribe(1, &[&topic(&device, "commands")]).await,
        vec![v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/devices/{device}/commands"),
            &json!({"name": "reboot", "args": {"delay": 5}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = body(r).await["id"].as_str().unwrap().to_owned();
    let publish = match c.next().await {
        Some(v4::Packet::Publish(p)) => p,
        other => panic!("expected the command, got {other:?}"),
    };
    assert_eq!(publish.topic, topic(&device, "commands"));
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    let payload: Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!(
        payload,
        json!({"id": id, "name": "reboot", "args": {"delay": 5}})
    );
    c.send(v4::Packet::PubAck(v4::PubAck::new(publish.pkid)))
        .await;
    c.publish(
        &topic(&device, "results"),
        QoS::AtLeastOnce,
        8,
        json!({"id": id, "ok": true, "output": "rebooting"}),
    )
    .await;
    let result = next_of(&mut owner, "command_result").await;
    assert_eq!(
        result,
        json!({"type": "command_result", "id": id, "device": device, "ok": true, "output": "rebooting"})
    );

    // A clean DISCONNECT: offline, and the connection is gone.
    c.send(v4::Packet::Disconnect).await;
    let offline = next_of(&mut owner, "device_state").await;
    assert_eq!(offline["state"]["online"], false);
}

#[tokio::test]
async fn mqtt_5_refusals_carry_reason_codes_and_store_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "meter").await;
    let (other, _) = app.device(&alice, "other").await;
    let mut c = V5::connect(&app, &device, &key).await;

    // Subscribed to its errors topic, the device is also told in a message.
    let mut s = v5::Subscribe::new(
        v5::Filter::new(topic(&device, "errors"), QoS5::AtMostOnce),
        None,
    );
    s.pkid = 1;
    c.send(v5::Packet::Subscribe(s)).await;
    match c.next().await {
        Some(v5::Packet::SubAck(ack)) => {
            assert_eq!(
                ack.return_codes,
                vec![v5::SubscribeReasonCode::Success(QoS5::AtMostOnce)]
            )
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let bad = [
        (
            json!({"metrics": {"bad name": 1}}).to_string(),
            "invalid metric name",
        ),
        (json!({"metrics": {}}).to_string(), "1 to 64"),
        (
            json!({"metrics": {"t": "hot"}}).to_string(),
            "invalid payload",
        ),
        ("{not json".to_owned(), "invalid payload"),
    ];
    for (i, (payload, why)) in bad.into_iter().enumerate() {
        let ack = c
            .publish(&topic(&device, "telemetry"), 10 + i as u16, payload)
            .await;
        assert_eq!(ack.reason, v5::PubAckReason::PayloadFormatInvalid);
        assert!(
            reason_string(&ack).contains(why),
            "{:?} lacks {why}",
            reason_string(&ack)
        );
        match c.next().await {
            Some(v5::Packet::Publish(p)) => {
                assert_eq!(String::from_utf8_lossy(&p.topic), topic(&device, "errors"));
                let e: Value = serde_json::from_slice(&p.payload).unwrap();
                assert!(
                    ["invalid_field", "invalid_json"].contains(&e["code"].as_str().unwrap()),
                    "{e}"
                );
                assert_eq!(e["topic"], topic(&device, "telemetry"));
            }
            other => panic!("expected the error message, got {other:?}"),
        }
    }
    assert_eq!(app.stored_points(&alice, &device, "t").await, 0);

    // Another device's topic, or a topic outside the tree: not authorized.
    for (pkid, foreign) in [
        (20, topic(&other, "telemetry")),
        (21, "sensors/temp".to_owned()),
        (22, topic(&device, "commands")),
    ] {
        let ack = c
            .publish(&foreign, pkid, json!({"metrics": {"t": 1}}).to_string())
            .await;
        assert_eq!(ack.reason, v5::PubAckReason::NotAuthorized, "{foreign}");
        assert!(matches!(c.next().await, Some(v5::Packet::Publish(_))));
    }
    assert_eq!(app.stored_points(&alice, &other, "t").await, 0);

    // Subscriptions outside its own commands/errors topics are refused one by one.
    let filters = [
        topic(&device, "commands"),
        topic(&other, "commands"),
        "unhidra/devices/#".to_owned(),
        topic(&device, "telemetry"),
    ];
    let mut s = v5::Subscribe::new_many(
        filters
            .iter()
            .map(|f| v5::Filter::new(f.clone(), QoS5::AtLeastOnce)),
        None,
    );
    s.pkid = 2;
    c.send(v5::Packet::Subscribe(s)).await;
    match c.next().await {
        Some(v5::Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![
                v5::SubscribeReasonCode::Success(QoS5::AtLeastOnce),
                v5::SubscribeReasonCode::NotAuthorized,
                v5::SubscribeReasonCode::NotAuthorized,
                v5::SubscribeReasonCode::NotAuthorized,
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    // Good telemetry still goes through on the same connection.
    let ack = c
        .publish(
            &topic(&device, "telemetry"),
            30,
            json!({"metrics": {"t": 1.5}}).to_string(),
        )
        .await;
    assert_eq!(ack.reason, v5::PubAckReason::Success);
    assert_eq!(app.stored_points(&alice, &device, "t").await, 1);

    // QoS 2 is not offered: a client that uses it anyway is disconnected.
    let mut p = v5::Publish::new(
        topic(&device, "telemetry"),
        QoS5::ExactlyOnce,
        json!({"metrics": {"t": 1}}).to_string(),
        None,
    );
    p.pkid = 31;
    c.send(v5::Packet::Publish(p)).await;
    assert_eq!(
        c.disconnected(WAIT).await,
        v5::DisconnectReasonCode::QoSNotSupported
    );
}

/// Found by fuzzing: a refusal that quotes what the device sent (a metric name of 12,000 DEL
/// characters, each quoted as `\u{7f}`) made a reason string over 65,535 bytes, whose length
/// prefix wrapped: the PUBACK was corrupt and every packet after it misread.
#[tokio::test]
async fn a_refusal_quoting_a_huge_name_is_clipped_and_the_stream_stays_whole() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "meter").await;
    let mut c = V5::connect(&app, &device, &key).await;
    let name = "\u{7f}".repeat(12_000);
    let payload = json!({"metrics": {name: 1}}).to_string();
    let ack = c.publish(&topic(&device, "telemetry"), 1, payload).await;
    assert_eq!(ack.reason, v5::PubAckReason::PayloadFormatInvalid);
    let reason = reason_string(&ack);
    assert!(reason.starts_with("invalid metric name"), "{reason}");
    assert!(
        reason.len() <= unhidra_server::mqtt::packets::MAX_REASON_BYTES,
        "a reason of {} bytes",
        reason.len()
    );
    // The stream is still in step: the next publish is acknowledged as itself.
    let ack = c
        .publish(
            &topic(&device, "telemetry"),
            2,
            json!({"metrics": {"t": 1}}).to_string(),
        )
        .await;
    assert_eq!(ack.reason, v5::PubAckReason::Success);
}

#[tokio::test]
async fn mqtt_3_1_1_publishing_outside_its_topics_closes_the_connection() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let (other, _) = app.device(&alice, "b").await;
    let mut c = V4::connect(&app, &device, &key).await;
    assert_eq!(
        c.subscribe(
            1,
            &[&topic(&other, "commands"), "#", &topic(&device, "errors")]
        )
        .await,
        vec![
            v4::SubscribeReasonCode::Failure,
            v4::SubscribeReasonCode::Failure,
            v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    // 3.1.1 has no negative PUBACK: a refused payload is acknowledged (nothing stored) and
    // explained on the errors topic.
    c.publish(
        &topic(&device, "telemetry"),
        QoS::AtLeastOnce,
        5,
        json!({"metrics": {"x y": 1}}),
    )
    .await;
    let packets = c.settle().await;
    assert!(
        matches!(packets.first(), Some(v4::Packet::PubAck(a)) if a.pkid == 5),
        "{packets:?}"
    );
    assert!(
        matches!(packets.get(1), Some(v4::Packet::Publish(p)) if p.topic == topic(&device, "errors")),
        "{packets:?}"
    );
    // Another device's topic: closed, nothing stored.
    c.publish(
        &topic(&other, "telemetry"),
        QoS::AtLeastOnce,
        6,
        json!({"metrics": {"t": 1}}),
    )
    .await;
    c.closed(WAIT).await;
    assert_eq!(app.stored_points(&alice, &other, "t").await, 0);
}

#[tokio::test]
async fn connects_without_the_right_key_are_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let (other, _) = app.device(&alice, "b").await;

    let login = |user: &str, pass: &str| {
        let mut c = v4::Connect::new("x");
        c.set_login(user, pass);
        c
    };
    let cases = [
        (
            v4::Connect::new("no-login"),
            v4::ConnectReturnCode::BadUserNamePassword,
        ),
        (
            login(&device, "unh_dk_wrong"),
            v4::ConnectReturnCode::BadUserNamePassword,
        ),
        (
            login(&device, &format!("{key}x")),
            v4::ConnectReturnCode::BadUserNamePassword,
        ),
        // The key of one device with the id of another.
        (
            login(&other, &key),
            v4::ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (connect, expected) in cases {
        let (mut c, code) = V4::connect_with(&app, connect).await;
        assert_eq!(code, expected);
        c.closed(WAIT).await;
    }
    // A will aimed anywhere but the device's own status topic.
    let mut with_will = login(&device, &key);
    with_will.last_will = Some(v4::LastWill::new(
        topic(&other, "status"),
        "{}",
        QoS::AtMostOnce,
        false,
    ));
    assert_eq!(
        V4::connect_with(&app, with_will).await.1,
        v4::ConnectReturnCode::NotAuthorized
    );

    // MQTT 5 hears the reason.
    let (_, ack) = V5::connect_with(&app, "x", Some((&device, "nope")), None).await;
    assert_eq!(ack.code, v5::ConnectReturnCode::BadUserNamePassword);
    assert!(ack.properties.and_then(|p| p.reason_string).is_some());

    // A revoked device.
    let r = app
        .delete_as(&alice.access, &format!("/api/v1/devices/{device}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        V4::connect_with(&app, login(&device, &key)).await.1,
        v4::ConnectReturnCode::NotAuthorized
    );

    // MQTT 3.1 (level 3) and other levels: "unacceptable protocol version".
    let mut raw = TcpStream::connect(app.mqtt).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // CONNECT, MQIsdp level 3, clean session, keep-alive 30, client id "old".
    let connect: &[u8] = &[
        0x10, 17, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 30, 0, 3, b'o', b'l', b'd',
    ];
    raw.write_all(connect).await.unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(WAIT, raw.read_exact(&mut ack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ack,
        [0x20, 2, 0, 1],
        "CONNACK 0x01: unacceptable protocol version"
    );
}

#[tokio::test]
async fn revoking_a_device_drops_its_mqtt_sessions_within_a_second() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let mut c4 = V4::connect(&app, &device, &key).await;
    let mut c5 = V5::connect(&app, &device, &key).await;
    let r = app
        .delete_as(&alice.access, &format!("/api/v1/devices/{device}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c5.disconnected(Duration::from_secs(1)).await,
        v5::DisconnectReasonCode::NotAuthorized
    );
    c4.closed(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_command_queued_while_offline_arrives_when_the_device_subscribes() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "pump").await;
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let r = app
            .post_as(
                &alice.access,
                &format!("/api/v1/devices/{device}/commands"),
                &json!({"name": name}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        ids.push(body(r).await["id"].as_str().unwrap().to_owned());
    }
    let mut c = V5::connect(&app, &device, &key).await;
    let mut s = v5::Subscribe::new(
        v5::Filter::new(topic(&device, "commands"), QoS5::AtLeastOnce),
        None,
    );
    s.pkid = 1;
    c.send(v5::Packet::Subscribe(s)).await;
    assert!(matches!(c.next().await, Some(v5::Packet::SubAck(_))));
    for (id, name) in ids.iter().zip(["first", "second"]) {
        match c.next().await {
            Some(v5::Packet::Publish(p)) => {
                let payload: Value = serde_json::from_slice(&p.payload).unwrap();
                assert_eq!(
                    (payload["id"].as_str(), payload["name"].as_str()),
                    (Some(id.as_str()), Some(name))
                );
                c.send(v5::Packet::PubAck(v5::PubAck::new(p.pkid, None)))
                    .await;
            }
            other => panic!("expected a command, got {other:?}"),
        }
    }
    // Acknowledged by PUBACK: delivered, and answered over MQTT.
    let ack = c
        .publish(
            &topic(&device, "results"),
            9,
            json!({"id": ids[0], "ok": true}).to_string(),
        )
        .await;
    assert_eq!(ack.reason, v5::PubAckReason::Success);
    let info = body(
        app.get_as(
            &alice.access,
            &format!("/api/v1/devices/{device}/commands/{}", ids[0]),
        )
        .await,
    )
    .await;
    assert_eq!(info["status"], "completed");
    // An answer to a command the device never had.
    let ack = c
        .publish(
            &topic(&device, "results"),
            10,
            json!({"id": "nope", "ok": true}).to_string(),
        )
        .await;
    assert_eq!(ack.reason, v5::PubAckReason::UnspecifiedError);
    assert!(reason_string(&ack).contains("no such command"));
}

#[tokio::test]
async fn the_last_will_marks_a_vanished_device_offline() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let mut owner = user_ws(&app, &alice).await;
    let will = v5::LastWill::new(
        topic(&device, "status"),
        json!({"online": false}).to_string(),
        QoS5::AtLeastOnce,
        false,
        None,
    );
    let (c, ack) = V5::connect_with(&app, "willing", Some((&device, &key)), Some(will)).await;
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    assert_eq!(
        next_of(&mut owner, "device_state").await["state"]["online"],
        true
    );
    // The socket vanishes without DISCONNECT.
    drop(c);
    assert_eq!(
        next_of(&mut owner, "device_state").await["state"]["online"],
        false
    );
    let r = body(
        app.get_as(&alice.access, &format!("/api/v1/devices/{device}"))
            .await,
    )
    .await;
    assert_eq!(r["state"]["online"], false);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let mut connect = v4::Connect::new("sleepy");
    connect.keep_alive = 1;
    connect.set_login(&device, &key);
    let (mut c, code) = V4::connect_with(&app, connect).await;
    assert_eq!(code, v4::ConnectReturnCode::Success);
    let started = tokio::time::Instant::now();
    c.closed(Duration::from_secs(4)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed too early"
    );
}

#[tokio::test]
async fn malformed_and_oversized_packets_close_with_a_reason() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;

    // Over the 64 KiB packet limit.
    let mut c = V5::connect(&app, &device, &key).await;
    let big = json!({"metrics": {"t": 1}, "pad": "x".repeat(70 * 1024)}).to_string();
    let p = v5::Publish::new(topic(&device, "telemetry"), QoS5::AtMostOnce, big, None);
    c.send(v5::Packet::Publish(p)).await;
    assert_eq!(
        c.disconnected(WAIT).await,
        v5::DisconnectReasonCode::PacketTooLarge
    );

    // A PUBLISH whose topic length runs past the packet.
    let mut c = V5::connect(&app, &device, &key).await;
    use tokio::io::AsyncWriteExt;
    c.0.get_mut()
        .write_all(&[0x30, 3, 0, 200, b'x'])
        .await
        .unwrap();
    assert_eq!(
        c.disconnected(WAIT).await,
        v5::DisconnectReasonCode::MalformedPacket
    );

    // The server is still fine.
    let mut c = V4::connect(&app, &device, &key).await;
    assert!(c.settle().await.is_empty());
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "a").await;
    let (mut first, _) = V5::connect_with(&app, "same", Some((&device, &key)), None).await;
    let (mut second, ack) = V5::connect_with(&app, "same", Some((&device, &key)), None).await;
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    assert_eq!(
        first.disconnected(WAIT).await,
        v5::DisconnectReasonCode::SessionTakenOver
    );
    let ack = second
        .publish(
            &topic(&device, "telemetry"),
            1,
            json!({"metrics": {"t": 2}}).to_string(),
        )
        .await;
    assert_eq!(ack.reason, v5::PubAckReason::Success);
    // Whatever protocol version the new connection speaks.
    let mut connect = v4::Connect::new("same");
    connect.set_login(&device, &key);
    let (_third, code) = V4::connect_with(&app, connect).await;
    assert_eq!(code, v4::ConnectReturnCode::Success);
    assert_eq!(
        second.disconnected(WAIT).await,
        v5::DisconnectReasonCode::SessionTakenOver
    );
}

//! The MQTT bridge against a real broker: the Mosquitto at `UNHIDRA_TEST_MQTT_URL`
//! (`.ci/run` sets it to the machine's `mqtt://127.0.0.1:1883`). Without the variable the
//! tests are reported as ignored (see `unhidra-test-gates`), because the default build needs
//! no outside service; with it, a broker that is not there fails them.
//!
//! The device is a `rumqttc` client connected to the broker, not to Unhidra: its telemetry,
//! status and command results reach the server only through the bridge.

use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::*;
use crate::ws::next_of;
use crate::ws::user_ws;

fn broker() -> (String, u16, String) {
    let url = unhidra_test_gates::mqtt_url();
    let parsed = url::Url::parse(&url).expect("UNHIDRA_TEST_MQTT_URL is not a URL");
    let host = parsed
        .host_str()
        .expect("no host in UNHIDRA_TEST_MQTT_URL")
        .to_owned();
    (host, parsed.port().unwrap_or(1883), url)
}

fn topic(device: &str, kind: &str) -> String {
    format!("unhidra/devices/{device}/{kind}")
}

/// A device on the broker; returns its client and what it receives on its subscriptions.
async fn device_on_broker(
    host: &str,
    port: u16,
    device: &str,
) -> (
    AsyncClient,
    mpsc::Receiver<rumqttc::Publish>,
    tokio::task::JoinHandle<()>,
) {
    let mut options = MqttOptions::new(format!("test-device-{device}"), host, port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_last_will(LastWill::new(
        topic(device, "status"),
        json!({"online": false}).to_string(),
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::channel(64);
    let (connected_tx, mut connected) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = connected_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => panic!("the test device lost the broker: {err}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), connected.recv())
        .await
        .expect("the broker did not accept the test device")
        .unwrap();
    (client, rx, task)
}

/// Publishes readings of `metric` until one is stored: the bridge subscribes once it has
/// connected, and until then the broker has no one to give them to. Each value is sent once
/// (a reading at the same second replaces the last, so the count says when one landed).
async fn send_until_stored(
    app: &TestApp,
    owner: &User,
    client: &AsyncClient,
    device: &str,
    metric: &str,
) {
    for i in 0..100 {
        let payload = json!({"metrics": {metric: 20.0 + f64::from(i)}}).to_string();
        client
            .publish(topic(device, "telemetry"), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app.stored_points(owner, device, metric).await > 0 {
            return;
        }
    }
    panic!("telemetry through the broker was never stored");
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_mqtt_broker),
    ignore = "needs UNHIDRA_TEST_MQTT_URL: a running MQTT broker such as Mosquitto"
)]
async fn the_bridge_routes_a_brokers_device_both_ways() {
    let (host, port, url) = broker();
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 1000;
        c.rate_limits.login_per_minute = 1000;
        c.mqtt.bridge = Some(url);
    })
    .await;
    let alice = app.user("alice").await;
    let (device, _key) = app.device(&alice, "on-the-broker").await;
    let mut owner = user_ws(&app, &alice).await;
    let (client, mut inbox, device_task) = device_on_broker(&host, port, &device).await;
    client
        .subscribe(topic(&device, "commands"), QoS::AtLeastOnce)
        .await
        .unwrap();

    send_until_stored(&app, &alice, &client, &device, "temp").await;
    let online = next_of(&mut owner, "device_state").await;
    assert_eq!(online["state"]["online"], true);

    // A command reaches the device through the broker; its answer comes back the same way.
    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/devices/{device}/commands"),
            &json!({"name": "open-valve", "args": {"pct": 40}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = body(r).await["id"].as_str().unwrap().to_owned();
    let command = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("the command did not come through the broker")
        .unwrap();
    assert_eq!(command.topic, topic(&device, "commands"));
    let payload: Value = serde_json::from_slice(&command.payload).unwrap();
    assert_eq!(
        payload,
        json!({"id": id, "name": "open-valve", "args": {"pct": 40}})
    );
    client
        .publish(
            topic(&device, "results"),
            QoS::AtLeastOnce,
            false,
            json!({"id": id, "ok": true, "output": "open"}).to_string(),
        )
        .await
        .unwrap();
    let result = next_of(&mut owner, "command_result").await;
    assert_eq!(
        (result["id"].as_str(), result["ok"].as_bool()),
        (Some(id.as_str()), Some(true))
    );

    // The device vanishes: the broker publishes its will, and the bridge marks it offline.
    device_task.abort();
    drop(client);
    let offline = next_of(&mut owner, "device_state").await;
    assert_eq!(offline["state"]["online"], false);
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_mqtt_broker),
    ignore = "needs UNHIDRA_TEST_MQTT_URL: a running MQTT broker such as Mosquitto"
)]
async fn the_bridge_refuses_revoked_and_unknown_devices() {
    let (host, port, url) = broker();
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 1000;
        c.rate_limits.login_per_minute = 1000;
        c.mqtt.bridge = Some(url);
    })
    .await;
    let alice = app.user("alice").await;
    let (device, _) = app.device(&alice, "soon-revoked").await;
    let (client, _inbox, _task) = device_on_broker(&host, port, &device).await;
    send_until_stored(&app, &alice, &client, &device, "v").await;

    let r = app
        .delete_as(&alice.access, &format!("/api/v1/devices/{device}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let before = app.stored_points(&alice, &device, "v").await;
    // From now on nothing of it is taken, though the broker still has it connected.
    for i in 0..5 {
        app.clock.advance(time::Duration::seconds(1));
        let payload = json!({"metrics": {"v": 1000.0 + f64::from(i)}}).to_string();
        client
            .publish(
                topic(&device, "telemetry"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    // A device id the server never registered, sent through the same broker.
    client
        .publish(
            topic("not-a-device", "telemetry"),
            QoS::AtLeastOnce,
            false,
            json!({"metrics": {"v": 1}}).to_string(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.stored_points(&alice, &device, "v").await, before);
}

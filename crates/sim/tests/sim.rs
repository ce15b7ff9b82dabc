//! A simulated device against the real server, over a WebSocket and over MQTT: its
//! telemetry is stored, and commands, one queued before it connects and others sent while it
//! runs, are answered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use unhidra_server::{Config, Listeners};
use unhidra_sim::{run, SimConfig, Transport};

struct Server {
    addr: SocketAddr,
    /// The MQTT listener, when asked for.
    mqtt: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn spawn_server(with_mqtt: bool) -> Server {
    spawn_server_with(with_mqtt, |_| {}).await
}

async fn spawn_server_with(with_mqtt: bool, tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    // ML workers only for the test about them.
    config.ml.enabled = false;
    tweak(&mut config);
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let mqtt = if with_mqtt {
        Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
    } else {
        None
    };
    let mqtt_addr = mqtt.as_ref().map(|l| l.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            unhidra_server::launch(
                config,
                Listeners {
                    api,
                    metrics: None,
                    mqtt,
                },
                shutdown,
            )
            .await
            .unwrap();
        }
    });
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
            if r.status().is_success() {
                return Server {
                    addr,
                    mqtt: mqtt_addr,
                    shutdown,
                    task,
                    _dir: dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server did not become ready");
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

async fn get(client: &reqwest::Client, url: String, token: &str) -> Value {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// A user with one device, over REST: (client, base URL, access token, device id, key).
struct Owner {
    client: reqwest::Client,
    base: String,
    token: String,
    device_id: String,
    key: String,
}

async fn owner_with_device(server: &Server, username: &str, device_name: &str) -> Owner {
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let credentials = json!({"username": username, "password": "correct horse battery staple"});
    post(
        &client,
        format!("{base}/api/v1/auth/register"),
        None,
        credentials.clone(),
    )
    .await;
    let login = post(
        &client,
        format!("{base}/api/v1/auth/login"),
        None,
        credentials,
    )
    .await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let device = post(
        &client,
        format!("{base}/api/v1/devices"),
        Some(&token),
        json!({"name": device_name, "kind": "sim"}),
    )
    .await;
    Owner {
        device_id: device["device_id"].as_str().unwrap().to_owned(),
        key: device["api_key"].as_str().unwrap().to_owned(),
        client,
        base,
        token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_stores_telemetry_and_answers_commands() {
    let server = spawn_server(false).await;
    let Owner {
        client,
        base,
        token,
        device_id,
        key,
    } = owner_with_device(&server, "alice", "sim-1").await;
    let commands = format!("{base}/api/v1/devices/{device_id}/commands");

    // Queued while the device is offline: delivered when it connects.
    let queued = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "blink", "args": {"times": 2}}),
    )
    .await;

    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut config = SimConfig::new(base.clone(), vec![key]);
    config.telemetry_interval = Duration::from_millis(200);
    config.anomaly_rate = 0.0;
    config.duration = Duration::from_secs(4);
    config.seed = 7;
    let stop = CancellationToken::new();
    let sim = tokio::spawn(run(config, stop.clone()));

    // Sent while it runs: delivered at once.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let live = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "read_sensor", "args": {"sensor": "humidity"}}),
    )
    .await;
    let unknown = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "self_destruct"}),
    )
    .await;

    let mut answers = Vec::new();
    for command in [&queued, &live, &unknown] {
        let url = format!("{commands}/{}", command["id"].as_str().unwrap());
        let mut info = Value::Null;
        for _ in 0..50 {
            info = get(&client, url.clone(), &token).await;
            if info["status"] == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(info["status"], "completed", "{info}");
        answers.push(info);
    }
    assert_eq!(
        (&answers[0]["ok"], &answers[0]["output"]),
        (&json!(true), &json!({"blinked": 2}))
    );
    assert_eq!(answers[1]["ok"], true, "{}", answers[1]);
    assert_eq!(answers[1]["output"]["sensor"], "humidity");
    assert!(answers[1]["output"]["value"].is_f64(), "{}", answers[1]);
    assert_eq!(
        (&answers[2]["ok"], &answers[2]["output"]),
        (
            &json!(false),
            &json!({"error": "unknown command: self_destruct"})
        )
    );
    let report = tokio::time::timeout(Duration::from_secs(15), sim)
        .await
        .expect("the simulator ran past its duration")
        .unwrap()
        .unwrap();

    assert_eq!(report.devices, 1);
    assert_eq!(report.welcomes, 1, "{report:?}");
    assert_eq!(report.connect_ms.iter().sum::<u64>(), 1, "{report:?}");
    assert_eq!(report.commands_run, 2, "{report:?}");
    assert_eq!(report.commands_unknown, 1, "{report:?}");
    assert_eq!(
        (report.malformed, report.server_errors),
        (0, 0),
        "{report:?}"
    );
    assert!(report.heartbeats >= 1);
    assert!(
        (15..=25).contains(&report.telemetry_sent),
        "4 s at 5 readings a second: {report:?}"
    );

    // Every reading sent is stored, for each sensor.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for metric in ["temperature", "humidity", "battery", "rssi"] {
        let series = get(
            &client,
            format!(
                "{base}/api/v1/devices/{device_id}/telemetry?metric={metric}&from={}&to={}&bucket=3600",
                started - 5,
                now + 5
            ),
            &token,
        )
        .await;
        let stored: u64 = series["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(stored, report.telemetry_sent, "{metric}: {series}");
    }
    // The device reported its firmware in a heartbeat.
    let info = get(
        &client,
        format!("{base}/api/v1/devices/{device_id}"),
        &token,
    )
    .await;
    assert_eq!(
        info["state"]["firmware_version"],
        unhidra_sim::FIRMWARE_VERSION
    );

    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
}

/// Polls a command until it is completed (bounded), and returns it.
async fn completed(client: &reqwest::Client, url: String, token: &str) -> Value {
    let mut info = Value::Null;
    for _ in 0..100 {
        info = get(client, url.clone(), token).await;
        if info["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["status"], "completed", "{info}");
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_over_mqtt_stores_telemetry_and_answers_commands() {
    let server = spawn_server(true).await;
    let Owner {
        client,
        base,
        token,
        device_id,
        key,
    } = owner_with_device(&server, "bob", "sim-mqtt-1").await;
    let commands = format!("{base}/api/v1/devices/{device_id}/commands");
    let device_url = format!("{base}/api/v1/devices/{device_id}");

    // Queued while the device is offline: delivered after it connects and subscribes.
    let queued = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "blink", "args": {"times": 3}}),
    )
    .await;

    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    // The id is left out: the simulator asks the server for it with the key.
    let mut config = SimConfig::new(base.clone(), vec![key]);
    config.transport = Transport::Mqtt {
        addr: server.mqtt.unwrap().to_string(),
    };
    config.telemetry_interval = Duration::from_millis(200);
    config.anomaly_rate = 0.0;
    config.duration = Duration::from_secs(5);
    config.seed = 11;
    let stop = CancellationToken::new();
    let sim = tokio::spawn(run(config, stop.clone()));

    let queued = completed(
        &client,
        format!("{commands}/{}", queued["id"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(
        (&queued["ok"], &queued["output"]),
        (&json!(true), &json!({"blinked": 3}))
    );
    // Online now: these go to the live connection.
    assert_eq!(
        get(&client, device_url.clone(), &token).await["state"]["online"],
        true
    );
    let live = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "read_sensor", "args": {"sensor": "battery"}}),
    )
    .await;
    let unknown = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "self_destruct"}),
    )
    .await;
    let live = completed(
        &client,
        format!("{commands}/{}", live["id"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(live["ok"], true, "{live}");
    assert_eq!(live["output"]["sensor"], "battery");
    assert!(live["output"]["value"].is_f64(), "{live}");
    let unknown = completed(
        &client,
        format!("{commands}/{}", unknown["id"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(
        (&unknown["ok"], &unknown["output"]),
        (
            &json!(false),
            &json!({"error": "unknown command: self_destruct"})
        )
    );
    // A reboot: answered, then the connection drops without DISCONNECT and a fresh core
    // connects and subscribes again.
    let reboot = post(
        &client,
        commands.clone(),
        Some(&token),
        json!({"name": "reboot"}),
    )
    .await;
    completed(
        &client,
        format!("{commands}/{}", reboot["id"].as_str().unwrap()),
        &token,
    )
    .await;

    let report = tokio::time::timeout(Duration::from_secs(20), sim)
        .await
        .expect("the simulator ran past its duration")
        .unwrap()
        .unwrap();
    assert_eq!(report.devices, 1);
    assert_eq!(report.reboots, 1, "{report:?}");
    assert_eq!(
        report.welcomes, 2,
        "a CONNACK before and after the reboot: {report:?}"
    );
    assert_eq!(report.connect_ms.iter().sum::<u64>(), 2, "{report:?}");
    assert!(report.all_welcomed_after_ms > 0, "{report:?}");
    assert_eq!(report.commands_run, 3, "{report:?}");
    assert_eq!(report.commands_unknown, 1, "{report:?}");
    assert_eq!(
        (report.malformed, report.server_errors, report.refused),
        (0, 0, 0),
        "{report:?}"
    );
    assert!(report.heartbeats >= 2, "{report:?}");
    assert!(
        (8..=30).contains(&report.telemetry_sent),
        "about 4 s up at 5 readings a second: {report:?}"
    );
    // Every telemetry publish was acknowledged, so stored.
    assert_eq!(report.telemetry_acked, report.telemetry_sent, "{report:?}");

    // Stored and queryable by bucket, for each sensor.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for metric in ["temperature", "humidity", "battery", "rssi"] {
        let series = get(
            &client,
            format!(
                "{base}/api/v1/devices/{device_id}/telemetry?metric={metric}&from={}&to={}&bucket=60",
                started - 5,
                now + 5
            ),
            &token,
        )
        .await;
        let buckets = series["buckets"].as_array().unwrap();
        let stored: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(stored, report.telemetry_sent, "{metric}: {series}");
        for bucket in buckets {
            assert!(bucket["min"].as_f64().unwrap() <= bucket["max"].as_f64().unwrap());
        }
    }
    // The status topic's heartbeat reached the device's state; the run's end took it offline.
    let mut info = Value::Null;
    for _ in 0..100 {
        info = get(&client, device_url.clone(), &token).await;
        if info["state"]["online"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(info["state"]["online"], false, "{info}");
    assert_eq!(
        info["state"]["firmware_version"],
        unhidra_sim::FIRMWARE_VERSION
    );

    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(unhidra_ml),
    ignore = "needs UNHIDRA_TEST_ML_PYTHON: the ML worker's venv (scripts/setup-ml.sh makes .venv-ml)"
)]
async fn a_simulated_spike_becomes_an_anomaly_event_in_the_devices_channel() {
    let python = unhidra_test_gates::ml_python();
    let server = spawn_server_with(false, |c| {
        c.ml.enabled = true;
        c.ml.python = python;
        c.ml.workers = 1;
    })
    .await;
    let Owner {
        client,
        base,
        token,
        device_id,
        key,
    } = owner_with_device(&server, "alice", "greenhouse").await;
    let room = post(
        &client,
        format!("{base}/api/v1/channels"),
        Some(&token),
        json!({"name": "greenhouse", "private": true}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = client
        .put(format!("{base}/api/v1/devices/{device_id}/channel"))
        .bearer_auth(&token)
        .json(&json!({"channel_id": room}))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 204);

    // Fast readings with spikes now and then (seeded: the same run every time).
    let mut config = SimConfig::new(base.clone(), vec![key]);
    config.telemetry_interval = Duration::from_millis(100);
    config.anomaly_rate = 0.15;
    config.duration = Duration::from_secs(5);
    config.seed = 11;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        run(config, CancellationToken::new()),
    )
    .await
    .expect("the simulator ran past its duration")
    .unwrap();
    assert!(report.anomalies_injected > 0, "{report:?}");

    // Scored off the acknowledgement path: the event follows shortly.
    let mut bodies = Vec::new();
    for _ in 0..100 {
        let page = get(
            &client,
            format!("{base}/api/v1/channels/{room}/messages"),
            &token,
        )
        .await;
        bodies = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["sender"] == device_id.as_str())
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect();
        if bodies
            .iter()
            .any(|b| b.starts_with("anomaly in `temperature`"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with("anomaly in `temperature`")),
        "no anomaly event among the device's messages: {bodies:?} ({report:?})"
    );
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .expect("the server did not stop")
        .unwrap();
}

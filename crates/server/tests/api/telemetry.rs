//! Device telemetry: sent over the WebSocket, stored, and read back by the owner in buckets.

use reqwest::StatusCode;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use unhidra_server::Clock;

use crate::helpers::*;
use crate::ws::{connect, next, send, Ws};

/// Sends a ping and returns every frame before its pong. The session handles a device's
/// frames in order and stores telemetry before the next, so after the pong all is stored.
async fn settle(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"type": "ping"})).await;
    let mut frames = Vec::new();
    loop {
        let f = next(ws).await;
        if f["type"] == "pong" {
            return frames;
        }
        frames.push(f);
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn telemetry_is_stored_and_read_back_per_bucket() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;

    // Aligned to a minute, so the buckets are easy to reason about.
    let now = app.clock.now();
    let t0 = now.unix_timestamp() - now.unix_timestamp() % 60 - 120;
    let at = |secs: i64| OffsetDateTime::from_unix_timestamp(t0 + secs).unwrap();
    for (secs, temp, rssi) in [
        (0, 20.0, -60.0),
        (30, 22.0, -61.0),
        (59, 21.0, -62.0),
        (75, 30.0, -50.0),
    ] {
        send(
            &mut ws,
            json!({"type": "telemetry", "ts": rfc3339(at(secs)), "metrics": {"temp": temp, "rssi": rssi}}),
        )
        .await;
    }
    assert_eq!(settle(&mut ws).await, Vec::<Value>::new(), "no errors");

    let path = format!(
        "/api/v1/devices/{device_id}/telemetry?metric=temp&from={t0}&to={}&bucket=60",
        t0 + 120
    );
    let r = app.get_as(&alice.access, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let series = body(r).await;
    assert_eq!(
        series,
        json!({
            "device_id": device_id, "metric": "temp", "from": t0, "to": t0 + 120, "bucket": 60,
            "buckets": [
                {"start": t0, "count": 3, "min": 20.0, "max": 22.0, "avg": 21.0, "last": 21.0},
                {"start": t0 + 60, "count": 1, "min": 30.0, "max": 30.0, "avg": 30.0, "last": 30.0},
            ]
        })
    );

    // Another user's device does not exist for them.
    assert_error(app.get_as(&mallory.access, &path).await, 404, "not_found").await;
    // Bad queries are refused with a reason.
    for bad in [
        format!("metric=temp&from={t0}&to={t0}"),
        format!("metric=temp&from={t0}&to={}&bucket=0", t0 + 60),
        format!("metric=temp&from=0&to={t0}&bucket=1"),
    ] {
        let r = app
            .get_as(
                &alice.access,
                &format!("/api/v1/devices/{device_id}/telemetry?{bad}"),
            )
            .await;
        assert_error(r, 400, "invalid_field").await;
    }
    let r = app
        .get_as(
            &alice.access,
            &format!("/api/v1/devices/{device_id}/telemetry?from=1"),
        )
        .await;
    assert_error(r, 400, "bad_request").await;
}

/// Without `from` and `to` the query covers the last hour up to now, this second included: a
/// reading sent just now (with a fraction of a second) is in it. (The default `to` was the
/// current second, exclusive, so a reading of that second was left out: the README's session
/// found it.)
#[tokio::test]
async fn the_default_range_includes_a_reading_sent_just_now() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    // A clock in the middle of a second, whatever the test machine's time.
    let now = app.clock.now();
    app.clock.advance(time::Duration::milliseconds(
        1500 - i64::from(now.millisecond()),
    ));
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"temp": 21.5}}),
    )
    .await;
    assert_eq!(settle(&mut ws).await, Vec::<Value>::new(), "no errors");
    let r = app
        .get_as(
            &alice.access,
            &format!("/api/v1/devices/{device_id}/telemetry?metric=temp"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let series = body(r).await;
    assert_eq!(series["buckets"].as_array().unwrap().len(), 1, "{series}");
    assert_eq!(series["buckets"][0]["last"], 21.5, "{series}");
}

#[tokio::test]
async fn bad_telemetry_is_refused_with_a_reason_and_stores_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    let now = app.clock.now();
    let too_many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("m{i}"), json!(1.0))).collect();
    for frame in [
        json!({"type": "telemetry", "metrics": {"bad name": 1.0, "temp": 5.0}}),
        json!({"type": "telemetry", "metrics": {}}),
        json!({"type": "telemetry", "metrics": too_many}),
        json!({"type": "telemetry", "metrics": {"temp": 5.0},
               "ts": rfc3339(now - time::Duration::minutes(10))}),
        json!({"type": "telemetry", "metrics": {"temp": "hot"}}),
    ] {
        send(&mut ws, frame).await;
    }
    let errors = settle(&mut ws).await;
    let codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "invalid_field",
            "invalid_field",
            "invalid_field",
            "invalid_field",
            "invalid_json"
        ],
        "{errors:?}"
    );
    assert!(errors[0]["message"].as_str().unwrap().contains("bad name"));

    let to = now.unix_timestamp() + 3600;
    let from = now.unix_timestamp() - 3600;
    for metric in ["temp", "m0"] {
        let series = body(
            app.get_as(
                &alice.access,
                &format!("/api/v1/devices/{device_id}/telemetry?metric={metric}&from={from}&to={to}&bucket=7200"),
            )
            .await,
        )
        .await;
        assert_eq!(series["buckets"], json!([]), "{metric}");
    }
    // The connection is still usable: good telemetry after bad is stored.
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"temp": 7.5}}),
    )
    .await;
    assert!(settle(&mut ws).await.is_empty());
    let series = body(
        app.get_as(
            &alice.access,
            &format!(
                "/api/v1/devices/{device_id}/telemetry?metric=temp&from={from}&to={to}&bucket=7200"
            ),
        )
        .await,
    )
    .await;
    assert_eq!(series["buckets"][0]["last"], 7.5);
}

#[tokio::test]
async fn owners_see_their_devices_come_and_go_with_what_they_report() {
    use crate::ws::{next_of, user_ws};
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let mut owner = user_ws(&app, &alice).await;
    let mut stranger = user_ws(&app, &bob).await;

    let device = body(
        app.get_as(&alice.access, &format!("/api/v1/devices/{device_id}"))
            .await,
    )
    .await;
    assert_eq!(device["state"]["online"], false);
    assert_eq!(device["state"]["last_seen_at"], Value::Null);

    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    let online = next_of(&mut owner, "device_state").await;
    assert_eq!(online["device"], device_id.as_str());
    assert_eq!(online["state"]["online"], true);

    send(
        &mut ws,
        json!({"type": "heartbeat", "firmware_version": "1.4.2", "free_memory": 81234, "uptime_secs": 42}),
    )
    .await;
    let beat = next_of(&mut owner, "device_state").await;
    assert_eq!(
        (
            beat["state"]["firmware_version"].as_str(),
            beat["state"]["free_memory"].as_u64(),
            beat["state"]["uptime_secs"].as_u64()
        ),
        (Some("1.4.2"), Some(81234), Some(42))
    );
    let device = body(
        app.get_as(&alice.access, &format!("/api/v1/devices/{device_id}"))
            .await,
    )
    .await;
    assert_eq!(device["state"]["online"], true);
    assert_eq!(device["state"]["firmware_version"], "1.4.2");

    drop(ws);
    let offline = next_of(&mut owner, "device_state").await;
    assert_eq!(offline["state"]["online"], false);
    assert_eq!(offline["state"]["firmware_version"], "1.4.2");
    assert!(offline["state"]["last_seen_at"].is_string());

    // Nobody else hears of it.
    send(&mut stranger, json!({"type": "ping"})).await;
    loop {
        let f = crate::ws::next_any(&mut stranger).await;
        assert_ne!(f["type"], "device_state", "{f}");
        if f["type"] == "pong" {
            break;
        }
    }
}

#[tokio::test]
async fn a_devices_metrics_are_listed_by_name_for_its_owner() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (other_id, _) = app.device(&alice, "quiet").await;
    let path = format!("/api/v1/devices/{device_id}/metrics");

    // Nothing sent yet: no metrics.
    let r = app.get_as(&alice.access, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(r).await,
        json!({"device_id": device_id, "metrics": []})
    );

    let (mut ws, _) = connect(&app, &format!("device.{key}")).await;
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"temp": 21.5, "rssi": -60.0}}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "telemetry", "metrics": {"temp": 21.7, "battery.volts": 3.7}}),
    )
    .await;
    assert_eq!(settle(&mut ws).await, Vec::<Value>::new(), "no errors");

    let r = app.get_as(&alice.access, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(r).await,
        json!({"device_id": device_id, "metrics": ["battery.volts", "rssi", "temp"]})
    );
    // Each device has its own.
    let quiet = body(
        app.get_as(
            &alice.access,
            &format!("/api/v1/devices/{other_id}/metrics"),
        )
        .await,
    )
    .await;
    assert_eq!(quiet["metrics"], json!([]));
    // Another user's device, or none, does not exist for the caller.
    assert_error(app.get_as(&mallory.access, &path).await, 404, "not_found").await;
    assert_error(
        app.get_as(&alice.access, "/api/v1/devices/nope/metrics")
            .await,
        404,
        "not_found",
    )
    .await;
    let r = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

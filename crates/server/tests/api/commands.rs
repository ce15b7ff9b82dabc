//! Commands from owners to devices: delivered at once or on reconnect, in order, until
//! answered or expired; the answer reaches the sender.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::{connect, next, next_of, send, user_ws, Ws};

async fn command(app: &TestApp, user: &User, device: &str, body: Value) -> reqwest::Response {
    app.post_as(
        &user.access,
        &format!("/api/v1/devices/{device}/commands"),
        &body,
    )
    .await
}

async fn device_ws(app: &TestApp, key: &str) -> Ws {
    connect(app, &format!("device.{key}")).await.0
}

#[tokio::test]
async fn a_command_reaches_a_connected_device_and_its_result_the_sender() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let mut owner = user_ws(&app, &alice).await;
    let mut device = device_ws(&app, &key).await;

    let r = command(
        &app,
        &alice,
        &device_id,
        json!({"name": "blink", "args": {"times": 3}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let sent = body(r).await;
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["status"], "queued");

    let got = next(&mut device).await;
    assert_eq!(
        got,
        json!({"type": "command", "id": id, "name": "blink", "args": {"times": 3}})
    );
    send(
        &mut device,
        json!({"type": "command_result", "id": id, "ok": true, "output": {"blinked": 3}}),
    )
    .await;
    let result = next_of(&mut owner, "command_result").await;
    assert_eq!(
        result,
        json!({"type": "command_result", "id": id, "device": device_id, "ok": true,
               "output": {"blinked": 3}})
    );
    let info = body(
        app.get_as(
            &alice.access,
            &format!("/api/v1/devices/{device_id}/commands/{id}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (info["status"].as_str(), info["ok"].as_bool()),
        (Some("completed"), Some(true))
    );

    // A repeated answer is accepted and changes nothing; an unknown id is refused.
    send(
        &mut device,
        json!({"type": "command_result", "id": id, "ok": false}),
    )
    .await;
    send(
        &mut device,
        json!({"type": "command_result", "id": "nope", "ok": true}),
    )
    .await;
    let e = next(&mut device).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not_found"), Some("nope"))
    );

    // Only the owner (or an administrator) commands a device.
    let r = command(&app, &mallory, &device_id, json!({"name": "blink"})).await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .get_as(
            &mallory.access,
            &format!("/api/v1/devices/{device_id}/commands/{id}"),
        )
        .await;
    assert_error(r, 404, "not_found").await;
    for bad in [
        json!({"name": "bad name"}),
        json!({"name": "x", "ttl_secs": 0}),
    ] {
        assert_error(
            command(&app, &alice, &device_id, bad).await,
            400,
            "invalid_field",
        )
        .await;
    }
}

#[tokio::test]
async fn commands_wait_for_an_offline_device_in_order_until_answered_or_expired() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    for (name, ttl) in [("first", 3600), ("fleeting", 5), ("second", 3600)] {
        let r = command(
            &app,
            &alice,
            &device_id,
            json!({"name": name, "ttl_secs": ttl}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    app.clock.advance(time::Duration::seconds(10));

    // The device connects: the live ones, in order; the expired one never.
    let mut device = device_ws(&app, &key).await;
    let first = next(&mut device).await;
    let second = next(&mut device).await;
    assert_eq!(
        (first["name"].as_str(), second["name"].as_str()),
        (Some("first"), Some("second"))
    );
    // It answers only the first, and drops off.
    send(
        &mut device,
        json!({"type": "command_result", "id": first["id"], "ok": true}),
    )
    .await;
    send(&mut device, json!({"type": "ping"})).await;
    assert_eq!(next(&mut device).await["type"], "pong");
    drop(device);

    // On reconnect the unanswered one comes again, and only it.
    let mut device = device_ws(&app, &key).await;
    let again = next(&mut device).await;
    assert_eq!(again["id"], second["id"]);
    send(&mut device, json!({"type": "ping"})).await;
    assert_eq!(next(&mut device).await["type"], "pong");

    let status = |id: &Value| {
        let path = format!(
            "/api/v1/devices/{device_id}/commands/{}",
            id.as_str().unwrap()
        );
        let app = &app;
        let token = alice.access.clone();
        async move { body(app.get_as(&token, &path).await).await["status"].clone() }
    };
    assert_eq!(status(&first["id"]).await, "completed");
    // Delivery is recorded in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status(&second["id"]).await != "delivered" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_command_sent_over_the_websocket_is_accepted_and_answered() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let (_other_id, other_key) = app.device(&bob, "bobs").await;
    let mut owner = user_ws(&app, &alice).await;
    let mut device = device_ws(&app, &key).await;
    let mut bobs_device = device_ws(&app, &other_key).await;

    send(
        &mut owner,
        json!({"type": "command", "device": device_id, "name": "read", "args": [1, 2], "ref": "c1"}),
    )
    .await;
    let accepted = next(&mut owner).await;
    assert_eq!(
        (accepted["type"].as_str(), accepted["ref"].as_str()),
        (Some("command_accepted"), Some("c1"))
    );
    let got = next(&mut device).await;
    assert_eq!(got["id"], accepted["id"]);

    // Another device cannot answer it; devices send no commands; a stranger's device is
    // not found.
    send(
        &mut bobs_device,
        json!({"type": "command_result", "id": got["id"], "ok": true}),
    )
    .await;
    assert_eq!(next(&mut bobs_device).await["code"], "not_found");
    send(
        &mut device,
        json!({"type": "command", "device": device_id, "name": "x"}),
    )
    .await;
    assert_eq!(next(&mut device).await["code"], "forbidden");
    let mut bob_ws = user_ws(&app, &bob).await;
    send(
        &mut bob_ws,
        json!({"type": "command", "device": device_id, "name": "x", "ref": "b1"}),
    )
    .await;
    let e = next(&mut bob_ws).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not_found"), Some("b1"))
    );

    send(
        &mut device,
        json!({"type": "command_result", "id": got["id"], "ok": false, "output": "sensor busy"}),
    )
    .await;
    let result = next_of(&mut owner, "command_result").await;
    assert_eq!(
        (result["ok"].as_bool(), result["output"].as_str()),
        (Some(false), Some("sensor busy"))
    );
}

#[tokio::test]
async fn a_linked_device_posts_its_events_in_its_channel() {
    use crate::ws::{channel, subscribe};
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let room = channel(&app, &alice, "lab", &[&bob]).await;
    let (device_id, key) = app.device(&alice, "sensor").await;
    let link = |user: &User, channel: Value| {
        let path = format!("/api/v1/devices/{device_id}/channel");
        let token = user.access.clone();
        let app = &app;
        async move {
            app.client
                .put(app.url(&path))
                .bearer_auth(token)
                .json(&json!({"channel_id": channel}))
                .send()
                .await
                .unwrap()
        }
    };
    // Someone else's device, or a channel the owner is not in: not found.
    assert_error(link(&mallory, json!(room)).await, 404, "not_found").await;
    let elsewhere = channel(&app, &mallory, "elsewhere", &[]).await;
    assert_error(link(&alice, json!(elsewhere)).await, 404, "not_found").await;
    assert_eq!(
        link(&alice, json!(room)).await.status(),
        StatusCode::NO_CONTENT
    );
    let device = body(
        app.get_as(&alice.access, &format!("/api/v1/devices/{device_id}"))
            .await,
    )
    .await;
    assert_eq!(device["channel_id"], room.as_str());
    // Bob, a member but not the owner, can name the device whose events he will see;
    // someone outside the channel cannot.
    let linked = body(
        app.get_as(&bob.access, &format!("/api/v1/channels/{room}/devices"))
            .await,
    )
    .await;
    assert_eq!(
        linked,
        json!({"devices": [{"device_id": device_id, "name": "sensor", "kind": null}]})
    );
    assert_error(
        app.get_as(&mallory.access, &format!("/api/v1/channels/{room}/devices"))
            .await,
        404,
        "not_found",
    )
    .await;

    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;
    let mut sensor = device_ws(&app, &key).await;
    let online = next_of(&mut b, "message").await;
    assert_eq!(
        (online["sender"].as_str(), online["body"].as_str()),
        (Some(device_id.as_str()), Some("is online"))
    );

    let r = command(&app, &alice, &device_id, json!({"name": "read_sensor"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = next(&mut sensor).await;
    send(
        &mut sensor,
        json!({"type": "command_result", "id": got["id"], "ok": true, "output": {"temp": 21.5}}),
    )
    .await;
    let result = next_of(&mut b, "message").await;
    assert_eq!(
        result["body"],
        "command `read_sensor` done: {\"temp\":21.5}"
    );

    drop(sensor);
    let offline = next_of(&mut b, "message").await;
    assert_eq!(offline["body"], "is offline");

    // Unlinked: nothing more is posted.
    assert_eq!(
        link(&alice, Value::Null).await.status(),
        StatusCode::NO_CONTENT
    );
    let _sensor = device_ws(&app, &key).await;
    send(&mut b, json!({"type": "ping"})).await;
    loop {
        let f = crate::ws::next_any(&mut b).await;
        assert_ne!(f["type"], "message", "{f}");
        if f["type"] == "pong" {
            break;
        }
    }
}

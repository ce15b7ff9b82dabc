//! The ML sidecar at work in the server, with real Python workers (`python -m unhidra_ml`
//! from the `.venv-ml` that `scripts/setup-ml.sh` makes, or `$UNHIDRA_TEST_ML_PYTHON`, which
//! `.ci/run` sets and which must then work): anomalies in telemetry become device events, and
//! message moderation flags or holds. Without the variable those tests are reported as ignored
//! (see `unhidra-test-gates`); the server running without ML is tested either way.

use std::path::PathBuf;

use serde_json::{json, Value};
use unhidra_server::config::ModerationMode;

use crate::helpers::*;
use crate::ws::{channel, connect, next, next_of, publish, send, subscribe, user_ws};

const ABUSIVE: &str = "you are a fucking idiot and a piece of shit";

async fn ml_app(python: PathBuf, moderation: ModerationMode) -> TestApp {
    spawn_app_with(move |c| {
        c.rate_limits.login_per_minute = 10_000;
        c.rate_limits.register_per_hour = 10_000;
        c.rate_limits.device_register_per_hour = 10_000;
        c.ml.enabled = true;
        c.ml.python = python;
        c.ml.workers = 1;
        c.ml.moderation = moderation;
    })
    .await
}

async fn admin(app: &TestApp) -> String {
    unhidra_server::admin::create_user(&app.config, "root", PASSWORD.to_owned().into(), true)
        .await
        .unwrap();
    body(app.login("root", PASSWORD).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Alice and Bob in a channel, both subscribed.
struct Room {
    alice: User,
    bob: User,
    room: String,
    a: crate::ws::Ws,
    b: crate::ws::Ws,
}

async fn room(app: &TestApp) -> Room {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(app, &alice, "general", &[&bob]).await;
    let mut a = user_ws(app, &alice).await;
    let mut b = user_ws(app, &bob).await;
    subscribe(&mut a, &room, None).await;
    subscribe(&mut b, &room, None).await;
    Room {
        alice,
        bob,
        room,
        a,
        b,
    }
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_ml),
    ignore = "needs UNHIDRA_TEST_ML_PYTHON: the ML worker's venv (scripts/setup-ml.sh makes .venv-ml)"
)]
async fn a_telemetry_spike_becomes_an_anomaly_event_in_the_devices_channel() {
    let python = unhidra_test_gates::ml_python();
    let app = ml_app(python, ModerationMode::Off).await;
    let alice = app.user("alice").await;
    let (device, key) = app.device(&alice, "boiler").await;
    let room = channel(&app, &alice, "boiler-room", &[]).await;
    let r = app
        .client
        .put(app.url(&format!("/api/v1/devices/{device}/channel")))
        .bearer_auth(&alice.access)
        .json(&json!({"channel_id": room}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut owner = user_ws(&app, &alice).await;
    subscribe(&mut owner, &room, None).await;
    let (mut dev, _) = connect(&app, &format!("device.{key}")).await;
    // "is online" first.
    let online = next_of(&mut owner, "message").await;
    assert!(
        online["body"].as_str().unwrap().contains("online"),
        "{online}"
    );

    for i in 0..30 {
        app.clock.advance(time::Duration::seconds(1));
        let temp = 20.0 + f64::from(i % 5) * 0.1;
        send(
            &mut dev,
            json!({"type": "telemetry", "metrics": {"temp": temp}}),
        )
        .await;
    }
    app.clock.advance(time::Duration::seconds(1));
    send(
        &mut dev,
        json!({"type": "telemetry", "metrics": {"temp": 95.0}}),
    )
    .await;
    let event = next_of(&mut owner, "message").await;
    assert_eq!(event["sender"], device);
    let text = event["body"].as_str().unwrap();
    assert!(text.starts_with("anomaly in `temp`: 95"), "{text}");
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_ml),
    ignore = "needs UNHIDRA_TEST_ML_PYTHON: the ML worker's venv (scripts/setup-ml.sh makes .venv-ml)"
)]
async fn flag_mode_sends_flagged_messages_with_their_reasons_and_lists_them() {
    let python = unhidra_test_gates::ml_python();
    let app = ml_app(python, ModerationMode::Flag).await;
    let root = admin(&app).await;
    let Room {
        alice,
        room,
        mut a,
        mut b,
        ..
    } = room(&app).await;

    publish(&mut a, &room, "good morning, the build is green", "m1").await;
    let calm = next_of(&mut b, "message").await;
    assert!(calm.get("flagged").is_none(), "{calm}");
    publish(&mut a, &room, ABUSIVE, "m2").await;
    let flagged = next_of(&mut b, "message").await;
    let reasons = flagged["flagged"].as_array().expect("flagged reasons");
    assert!(!reasons.is_empty(), "{flagged}");

    let queue = body(app.get_as(&root, "/api/v1/admin/moderation").await).await;
    assert_eq!(queue["held"], json!([]));
    let listed: Vec<&str> = queue["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [flagged["id"].as_str().unwrap()]);
    assert_error(
        app.get_as(&alice.access, "/api/v1/admin/moderation").await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_ml),
    ignore = "needs UNHIDRA_TEST_ML_PYTHON: the ML worker's venv (scripts/setup-ml.sh makes .venv-ml)"
)]
async fn hold_mode_keeps_a_flagged_message_out_until_released_or_rejected() {
    let python = unhidra_test_gates::ml_python();
    let app = ml_app(python, ModerationMode::Hold).await;
    let root = admin(&app).await;
    let Room {
        bob,
        room,
        mut a,
        mut b,
        ..
    } = room(&app).await;

    // Held: the author is told, nobody else sees it, and no seq is taken.
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": ABUSIVE, "client_msg_id": "h1"}),
    )
    .await;
    let held = next(&mut a).await;
    assert_eq!(held["type"], "held", "{held}");
    assert_eq!(held["client_msg_id"], "h1");
    let held_id = held["id"].as_str().unwrap().to_owned();
    let ack = publish(&mut a, &room, "and now something friendly", "m2").await;
    let friendly = next_of(&mut b, "message").await;
    assert_eq!(friendly["body"], "and now something friendly");
    assert_eq!(friendly["seq"], ack["seq"]);
    let history = body(
        app.get_as(&bob.access, &format!("/api/v1/channels/{room}/messages"))
            .await,
    )
    .await;
    assert!(!history.to_string().contains("idiot"), "{history}");

    // A second held one, to reject.
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": ABUSIVE, "client_msg_id": "h2"}),
    )
    .await;
    // (After the author's own copy of the friendly message.)
    let rejected_id = next_of(&mut a, "held").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let queue = body(app.get_as(&root, "/api/v1/admin/moderation").await).await;
    let held_ids: Vec<&str> = queue["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(held_ids, [held_id.as_str(), rejected_id.as_str()]);
    assert!(!queue["held"][0]["reasons"].as_array().unwrap().is_empty());

    // Released: it joins the channel now, after what came since.
    let r = app
        .post_as(
            &root,
            &format!("/api/v1/admin/moderation/held/{held_id}/release"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let released = body(r).await;
    let delivered = next_of(&mut b, "message").await;
    assert_eq!(delivered["id"], held_id);
    assert_eq!(delivered["seq"], released["seq"]);
    assert!(delivered["seq"].as_i64().unwrap() > ack["seq"].as_i64().unwrap());
    let r = app
        .post_as(
            &root,
            &format!("/api/v1/admin/moderation/held/{held_id}/release"),
            &json!({}),
        )
        .await;
    assert_error(r, 404, "not_found").await;

    // Rejected: gone for good.
    let r = app
        .delete_as(
            &root,
            &format!("/api/v1/admin/moderation/held/{rejected_id}"),
        )
        .await;
    assert_eq!(r.status(), 204);
    let queue = body(app.get_as(&root, "/api/v1/admin/moderation").await).await;
    assert_eq!(queue["held"], json!([]));
    let audit = body(app.get_as(&root, "/api/v1/admin/audit").await)
        .await
        .to_string();
    assert!(
        audit.contains("chat.held_message_released")
            && audit.contains("chat.held_message_rejected"),
        "{audit}"
    );
}

#[tokio::test]
async fn without_its_workers_the_server_runs_and_messages_pass_unchecked() {
    let app = ml_app(PathBuf::from("/nonexistent/python3"), ModerationMode::Hold).await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "general", &[]).await;
    let mut a = user_ws(&app, &alice).await;
    subscribe(&mut a, &room, None).await;
    let ack: Value = publish(&mut a, &room, ABUSIVE, "m1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

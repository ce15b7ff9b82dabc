//! Everything that changes a channel after a message is posted — edits, deletions,
//! reactions, members coming and going, renames — is a channel event with a seq, pushed to
//! subscribers and replayed by `subscribe{since}`; typing, read receipts and presence are
//! pushed as they happen. Each with its permission rules, over REST and the WebSocket.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::{
    channel, last_seq, next, next_any, next_of, publish, send, subscribe, user_ws, Ws,
};

fn message_path(room: &str, id: &str) -> String {
    format!("/api/v1/channels/{room}/messages/{id}")
}

fn reaction_path(room: &str, id: &str, emoji: &str) -> String {
    let encoded: String = emoji.bytes().map(|b| format!("%{b:02X}")).collect();
    format!("/api/v1/channels/{room}/messages/{id}/reactions/{encoded}")
}

async fn history(app: &TestApp, user: &User, room: &str) -> Vec<Value> {
    let page = body(
        app.get_as(&user.access, &format!("/api/v1/channels/{room}/messages"))
            .await,
    )
    .await;
    page["messages"].as_array().unwrap().clone()
}

/// Sends a ping and returns every frame before its pong: what the server had queued.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"type": "ping"})).await;
    let mut frames = Vec::new();
    loop {
        let f = next_any(ws).await;
        if f["type"] == "pong" {
            return frames;
        }
        frames.push(f);
    }
}

#[tokio::test]
async fn authors_edit_their_messages_and_admins_see_the_history() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;
    let ack = publish(&mut b, &room, "teh plan", "m1").await;
    let id = ack["id"].as_str().unwrap().to_owned();
    let posted_at = ack["seq"].as_i64().unwrap();
    assert_eq!(next(&mut b).await["type"], "message");

    // Only the author edits.
    let r = app
        .patch_as(
            &alice.access,
            &message_path(&room, &id),
            &json!({"body": "mine now"}),
        )
        .await;
    assert_error(r, 403, "forbidden").await;
    let r = app
        .patch_as(
            &bob.access,
            &message_path(&room, &id),
            &json!({"body": "  "}),
        )
        .await;
    assert_error(r, 400, "invalid_field").await;
    let r = app
        .patch_as(
            &bob.access,
            &message_path(&room, &id),
            &json!({"body": "the plan"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let edited = body(r).await;
    assert_eq!(
        (edited["body"].as_str(), edited["seq"].as_i64()),
        (Some("the plan"), Some(posted_at)),
        "the message keeps its place"
    );
    assert!(edited["edited_at"].is_string());

    // Subscribers get the edit as an event with the next seq.
    let event = next(&mut b).await;
    assert_eq!(event["type"], "message_edited", "{event}");
    assert_eq!(event["seq"], posted_at + 1);
    assert_eq!(event["message"]["body"], "the plan");
    assert_eq!(event["message"]["id"], id.as_str());

    // The owner sees the earlier body; a plain member does not.
    let path = format!("{}/revisions", message_path(&room, &id));
    let revisions = body(app.get_as(&alice.access, &path).await).await;
    assert_eq!(revisions["revisions"][0]["body"], "teh plan");
    assert_eq!(revisions["revisions"][0]["rev"], 1);
    assert_error(app.get_as(&bob.access, &path).await, 403, "forbidden").await;

    // Search sees the current body, history shows it edited.
    let found = body(app.get_as(&alice.access, "/api/v1/search?q=teh").await).await;
    assert_eq!(found["messages"], json!([]));
    let found = body(app.get_as(&alice.access, "/api/v1/search?q=plan").await).await;
    assert_eq!(found["messages"][0]["id"], id.as_str());
    assert!(history(&app, &alice, &room).await[0]["edited_at"].is_string());

    // A client that was away replays the message (current state) and the edit, in order.
    let replay = {
        send(
            &mut a,
            json!({"type": "subscribe", "channel": room, "since": posted_at - 1}),
        )
        .await;
        let mut frames = Vec::new();
        loop {
            let f = next(&mut a).await;
            if f["type"] == "subscribed" {
                break frames;
            }
            frames.push(f);
        }
    };
    assert_eq!(
        replay
            .iter()
            .map(|f| (f["type"].as_str().unwrap(), f["seq"].as_i64().unwrap()))
            .collect::<Vec<_>>(),
        [("message", posted_at), ("message_edited", posted_at + 1)]
    );
    assert_eq!(replay[0]["body"], "the plan");
}

#[tokio::test]
async fn deletes_leave_a_tombstone_and_admins_moderate() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = channel(&app, &alice, "room", &[&bob, &carol]).await;
    let mut poster = user_ws(&app, &bob).await;
    let mine = publish(&mut poster, &room, "oops, my password is hunter2", "m1").await;
    let mine = mine["id"].as_str().unwrap().to_owned();
    let rude = publish(&mut poster, &room, "something rude", "m2").await;
    let rude = rude["id"].as_str().unwrap().to_owned();
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;

    // Another member cannot delete bob's message; bob can, and then it is gone.
    let r = app
        .delete_as(&carol.access, &message_path(&room, &mine))
        .await;
    assert_error(r, 403, "forbidden").await;
    let r = app
        .delete_as(&bob.access, &message_path(&room, &mine))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let event = next(&mut b).await;
    assert_eq!(
        (
            event["type"].as_str(),
            event["id"].as_str(),
            event["by"].as_str()
        ),
        (
            Some("message_deleted"),
            Some(mine.as_str()),
            Some(bob.id.as_str())
        )
    );
    let r = app
        .delete_as(&bob.access, &message_path(&room, &mine))
        .await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .patch_as(
            &bob.access,
            &message_path(&room, &mine),
            &json!({"body": "back"}),
        )
        .await;
    assert_error(r, 404, "not_found").await;

    let page = history(&app, &bob, &room).await;
    let tomb = page.iter().find(|m| m["id"] == mine.as_str()).unwrap();
    assert_eq!(
        (tomb["deleted"].as_bool(), tomb["body"].as_str()),
        (Some(true), Some(""))
    );
    let found = body(app.get_as(&bob.access, "/api/v1/search?q=hunter2").await).await;
    assert_eq!(found["messages"], json!([]));

    // The owner moderates: deleting someone else's message is allowed and audited.
    let r = app
        .delete_as(&alice.access, &message_path(&room, &rude))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(next(&mut b).await["by"], alice.id.as_str());
}

#[tokio::test]
async fn reactions_are_shared_live_and_shown_in_history() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    subscribe(&mut a, &room, None).await;
    let ack = publish(&mut a, &room, "ship it?", "m1").await;
    let id = ack["id"].as_str().unwrap().to_owned();
    next(&mut a).await;

    let r = app
        .put_as(&bob.access, &reaction_path(&room, &id, "👍"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let event = next(&mut a).await;
    assert_eq!(
        (
            event["type"].as_str(),
            event["emoji"].as_str(),
            event["user"].as_str(),
            event["id"].as_str()
        ),
        (
            Some("reaction_added"),
            Some("👍"),
            Some(bob.id.as_str()),
            Some(id.as_str())
        )
    );
    // Again is a no-op: no second event.
    let r = app
        .put_as(&bob.access, &reaction_path(&room, &id, "👍"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .put_as(&alice.access, &reaction_path(&room, &id, ":tada:"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(next(&mut a).await["emoji"], ":tada:");

    let page = history(&app, &alice, &room).await;
    assert_eq!(
        page[0]["reactions"],
        json!([{"emoji": "👍", "users": [bob.id]}, {"emoji": ":tada:", "users": [alice.id]}])
    );

    let r = app
        .delete_as(&bob.access, &reaction_path(&room, &id, "👍"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(next(&mut a).await["type"], "reaction_removed");

    // Bad emoji, strangers and missing messages.
    let r = app
        .put_as(&bob.access, &reaction_path(&room, &id, "a b"))
        .await;
    assert_error(r, 400, "invalid_field").await;
    let r = app
        .put_as(&mallory.access, &reaction_path(&room, &id, "👍"))
        .await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .put_as(&bob.access, &reaction_path(&room, "nope", "👍"))
        .await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .delete_as(&mallory.access, &message_path(&room, &id))
        .await;
    assert_error(r, 404, "not_found").await;
    let r = app
        .patch_as(
            &mallory.access,
            &message_path(&room, &id),
            &json!({"body": "x"}),
        )
        .await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn typing_and_read_receipts_reach_the_other_subscribers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut a, &room, None).await;

    // Typing needs a subscription (which needs membership).
    send(&mut b, json!({"type": "typing", "channel": room})).await;
    let e = next(&mut b).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad_request"), Some(room.as_str()))
    );
    subscribe(&mut b, &room, None).await;
    send(&mut b, json!({"type": "typing", "channel": room})).await;
    let typing = next_of(&mut a, "typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "channel": room, "user": bob.id})
    );
    // A second one at once is ignored (one per 2 s per channel).
    send(&mut b, json!({"type": "typing", "channel": room})).await;
    publish(&mut b, &room, "done typing", "m1").await;
    let frames = drain(&mut a).await;
    assert!(!frames.iter().any(|f| f["type"] == "typing"), "{frames:?}");
    assert!(frames.iter().any(|f| f["type"] == "message"));

    // Reading moves the receipt, which alice sees and the member list shows.
    let seq = last_seq(&app, &bob, &room).await;
    let r = app
        .post_as(
            &bob.access,
            &format!("/api/v1/channels/{room}/read"),
            &json!({"seq": seq}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let receipt = next_of(&mut a, "receipt").await;
    assert_eq!(
        receipt,
        json!({"type": "receipt", "channel": room, "user": bob.id, "seq": seq})
    );
    let members = body(
        app.get_as(&alice.access, &format!("/api/v1/channels/{room}/members"))
            .await,
    )
    .await;
    let bobs = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == bob.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(bobs["last_read_seq"], seq);
}

#[tokio::test]
async fn presence_follows_connections_and_reaches_only_people_who_share_a_channel() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut b = user_ws(&app, &bob).await;
    let mut c = user_ws(&app, &carol).await;
    // Bob's own presence comes first, to his own connection.
    assert_eq!(
        next_of(&mut b, "presence").await,
        json!({"type": "presence", "user": bob.id, "status": "online"})
    );

    let mut a1 = user_ws(&app, &alice).await;
    assert_eq!(
        next_of(&mut b, "presence").await,
        json!({"type": "presence", "user": alice.id, "status": "online"})
    );
    let members = body(
        app.get_as(&bob.access, &format!("/api/v1/channels/{room}/members"))
            .await,
    )
    .await;
    assert!(members["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["presence"] == "online"));

    // A second connection changes nothing; away only when every connection is idle.
    let mut a2 = user_ws(&app, &alice).await;
    send(&mut a1, json!({"type": "presence", "status": "away"})).await;
    send(&mut a2, json!({"type": "presence", "status": "away"})).await;
    assert_eq!(next_of(&mut b, "presence").await["status"], "away");
    send(&mut a2, json!({"type": "presence", "status": "online"})).await;
    assert_eq!(next_of(&mut b, "presence").await["status"], "online");
    send(&mut a2, json!({"type": "presence", "status": "offline"})).await;
    assert_eq!(next(&mut a2).await["code"], "invalid_field");
    drop(a2);
    // a1 is still connected (and idle): away.
    assert_eq!(next_of(&mut b, "presence").await["status"], "away");
    drop(a1);
    assert_eq!(
        next_of(&mut b, "presence").await,
        json!({"type": "presence", "user": alice.id, "status": "offline"})
    );

    // Carol shares no channel with alice: she heard only of herself.
    let heard: Vec<Value> = drain(&mut c)
        .await
        .into_iter()
        .filter(|f| f["type"] == "presence")
        .collect();
    assert_eq!(
        heard,
        [json!({"type": "presence", "user": carol.id, "status": "online"})]
    );
}

#[tokio::test]
async fn mentions_raise_the_mentioned_members_count() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let mut a = user_ws(&app, &alice).await;
    publish(&mut a, &room, "@bob can you look? cc @carol", "m1").await;
    publish(&mut a, &room, "mail bob@example.com, not @nobody", "m2").await;
    publish(&mut a, &room, "@BOB again", "m3").await;

    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    let summary = &list["channels"][0];
    assert_eq!(
        (summary["unread"].as_i64(), summary["mentions"].as_i64()),
        (Some(3), Some(2))
    );
    // Carol is not a member: mentioning her does nothing.
    let list = body(app.get_as(&carol.access, "/api/v1/channels").await).await;
    assert_eq!(list["channels"], json!([]));
    let seq = last_seq(&app, &bob, &room).await;
    app.post_as(
        &bob.access,
        &format!("/api/v1/channels/{room}/read"),
        &json!({"seq": seq}),
    )
    .await;
    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    assert_eq!(
        (
            list["channels"][0]["unread"].as_i64(),
            list["channels"][0]["mentions"].as_i64()
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn membership_and_channel_changes_are_events_and_reach_the_user_concerned() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let carol = app.user("carol").await;
    let room = channel(&app, &alice, "room", &[]).await;
    let mut a = user_ws(&app, &alice).await;
    let mut c = user_ws(&app, &carol).await;
    subscribe(&mut a, &room, None).await;

    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/members"),
            &json!({"user_id": carol.id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let joined = next(&mut a).await;
    assert_eq!(
        (
            joined["type"].as_str(),
            joined["user"].as_str(),
            joined["by"].as_str()
        ),
        (
            Some("member_joined"),
            Some(carol.id.as_str()),
            Some(alice.id.as_str())
        )
    );
    // Carol's open connection learns of the channel without polling.
    let added = next_of(&mut c, "channel_added").await;
    assert_eq!(added["channel"]["id"], room.as_str());
    assert_eq!(added["channel"]["name"], "room");
    subscribe(&mut c, &room, None).await;

    let r = app
        .patch_as(
            &alice.access,
            &format!("/api/v1/channels/{room}"),
            &json!({"name": "war-room"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for ws in [&mut a, &mut c] {
        let updated = next(ws).await;
        assert_eq!(
            (
                updated["type"].as_str(),
                updated["name"].as_str(),
                updated["archived"].as_bool()
            ),
            (Some("channel_updated"), Some("war-room"), Some(false))
        );
    }

    let r = app
        .delete_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/members/{}", carol.id),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let left = next(&mut a).await;
    assert_eq!(
        (left["type"].as_str(), left["user"].as_str()),
        (Some("member_left"), Some(carol.id.as_str()))
    );
    let removed = next_of(&mut c, "channel_removed").await;
    assert_eq!(removed["channel"], room.as_str());

    // The whole story replays from the start, gap-free.
    let mut fresh = user_ws(&app, &alice).await;
    send(
        &mut fresh,
        json!({"type": "subscribe", "channel": room, "since": 0}),
    )
    .await;
    let mut kinds = Vec::new();
    let mut seqs = Vec::new();
    loop {
        let f = next(&mut fresh).await;
        if f["type"] == "subscribed" {
            break;
        }
        kinds.push(f["type"].as_str().unwrap().to_owned());
        seqs.push(f["seq"].as_i64().unwrap());
    }
    assert_eq!(kinds, ["member_joined", "channel_updated", "member_left"]);
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn archived_channels_take_no_edits_or_reactions() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", &[]).await;
    let mut a = user_ws(&app, &alice).await;
    let id = publish(&mut a, &room, "final words", "m1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .patch_as(
            &alice.access,
            &format!("/api/v1/channels/{room}"),
            &json!({"archived": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .patch_as(
            &alice.access,
            &message_path(&room, &id),
            &json!({"body": "x"}),
        )
        .await;
    assert_error(r, 403, "forbidden").await;
    let r = app
        .put_as(&alice.access, &reaction_path(&room, &id, "👍"))
        .await;
    assert_error(r, 403, "forbidden").await;
}

#[tokio::test]
async fn messages_carry_the_files_their_sender_uploaded() {
    use crate::files::upload;
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "room", &[&bob]).await;
    let png = b"\x89PNG\r\n\x1a\nnot really".to_vec();
    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("chart.png"),
        Some("image/png"),
        png,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let file = body(r).await;
    let r = upload(
        &app,
        Some(&bob.access),
        &room,
        Some("bob.txt"),
        Some("text/plain"),
        "hi",
    )
    .await;
    let bobs = body(r).await;

    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;
    // Bob's file is his to attach, not alice's.
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": "", "client_msg_id": "f0",
               "attachments": [file["id"], bobs["id"]]}),
    )
    .await;
    let refused = next(&mut a).await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_str()),
        (Some("invalid_field"), Some("f0"))
    );
    // An empty body is fine with an attachment; eleven attachments are not.
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": "", "client_msg_id": "f1",
               "attachments": [file["id"]]}),
    )
    .await;
    let ack = next(&mut a).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let live = next(&mut b).await;
    assert_eq!(live["attachments"], json!([file]));
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": "x", "client_msg_id": "f2",
               "attachments": vec![file["id"].clone(); 11]}),
    )
    .await;
    assert_eq!(next(&mut a).await["code"], "invalid_field");

    let page = history(&app, &bob, &room).await;
    assert_eq!(page[0]["attachments"][0]["name"], "chart.png");
    let download = format!("/api/v1/files/{}", file["id"].as_str().unwrap());
    assert_eq!(
        app.get_as(&bob.access, &download).await.status(),
        StatusCode::OK
    );

    // Deleting the message takes its attachment with it.
    let id = ack["id"].as_str().unwrap();
    let r = app.delete_as(&alice.access, &message_path(&room, id)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(app.get_as(&bob.access, &download).await, 404, "not_found").await;
}

//! Channels as people use them: the list with unread counts, roles, leaving and removal,
//! archiving, history paging, read positions and search — over REST and the WebSocket.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::{next, publish, send, subscribe, user_ws};

async fn create(app: &TestApp, owner: &User, name: &str, private: bool) -> String {
    let r = app
        .post_as(
            &owner.access,
            "/api/v1/channels",
            &json!({"name": name, "private": private}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_str().unwrap().to_owned()
}

async fn add(app: &TestApp, by: &User, channel: &str, who: &User) -> reqwest::Response {
    app.post_as(
        &by.access,
        &format!("/api/v1/channels/{channel}/members"),
        &json!({"user_id": who.id}),
    )
    .await
}

/// Posts through the WebSocket, as clients do; returns the acked seqs.
async fn post_messages(app: &TestApp, who: &User, channel: &str, bodies: &[&str]) -> Vec<i64> {
    let mut ws = user_ws(app, who).await;
    let mut seqs = Vec::new();
    for (i, text) in bodies.iter().enumerate() {
        let ack = publish(&mut ws, channel, text, &format!("{i}-{text}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        seqs.push(ack["seq"].as_i64().unwrap());
    }
    seqs
}

#[tokio::test]
async fn the_channel_list_shows_roles_and_unread_counts() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let team = create(&app, &alice, "team", true).await;
    let _solo = create(&app, &alice, "alpha", false).await;
    assert_eq!(add(&app, &alice, &team, &bob).await.status(), 204);
    post_messages(&app, &alice, &team, &["one", "two", "three"]).await;

    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    let channels = list["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{list}");
    assert_eq!(
        channels[0],
        json!({"id": team, "name": "team", "private": true, "role": "member",
               "last_seq": 4, "last_read_seq": 0, "unread": 3, "mentions": 0, "archived": false,
               "direct": false}),
        "bob's joining is seq 1; the messages are 2 to 4"
    );
    let r = app
        .post_as(
            &bob.access,
            &format!("/api/v1/channels/{team}/read"),
            &json!({"seq": 3}),
        )
        .await;
    assert_eq!(body(r).await["last_read_seq"], 3);
    // Never backwards, never past the newest.
    let r = app
        .post_as(
            &bob.access,
            &format!("/api/v1/channels/{team}/read"),
            &json!({"seq": 1}),
        )
        .await;
    assert_eq!(body(r).await["last_read_seq"], 3);
    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    assert_eq!(list["channels"][0]["unread"], 1);

    let mine = body(app.get_as(&alice.access, "/api/v1/channels").await).await;
    let names: Vec<&str> = mine["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "team"]);
    assert_eq!(mine["channels"][1]["role"], "owner");
}

#[tokio::test]
async fn history_pages_back_and_catches_up_for_members_only() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let room = create(&app, &alice, "room", true).await;
    let bodies: Vec<String> = (1..=7).map(|i| format!("message {i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    post_messages(&app, &alice, &room, &refs).await;

    let page = |q: String| {
        let app = &app;
        let token = alice.access.clone();
        let room = room.clone();
        async move {
            body(
                app.get_as(&token, &format!("/api/v1/channels/{room}/messages{q}"))
                    .await,
            )
            .await
        }
    };
    let seqs = |p: &Value| {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let newest = page("?limit=3".into()).await;
    assert_eq!(seqs(&newest), [5, 6, 7]);
    assert_eq!(newest["has_more"], true);
    assert_eq!(newest["messages"][0]["body"], "message 5");
    assert_eq!(newest["messages"][0]["sender"], alice.id.as_str());
    let older = page("?before=5&limit=3".into()).await;
    assert_eq!(seqs(&older), [2, 3, 4]);
    let oldest = page("?before=2&limit=3".into()).await;
    assert_eq!(
        (seqs(&oldest), oldest["has_more"].clone()),
        (vec![1], json!(false))
    );
    let newer = page("?after=4&limit=2".into()).await;
    assert_eq!(
        (seqs(&newer), newer["has_more"].clone()),
        (vec![5, 6], json!(true))
    );

    let r = app
        .get_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/messages?before=1&after=2"),
        )
        .await;
    assert_error(r, 400, "bad_request").await;
    let r = app
        .get_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/messages?limit=lots"),
        )
        .await;
    assert_error(r, 400, "bad_request").await;
    // A private channel does not exist for outsiders.
    let r = app
        .get_as(
            &mallory.access,
            &format!("/api/v1/channels/{room}/messages"),
        )
        .await;
    assert_error(r, 404, "not_found").await;
    // A public one must be joined first.
    let lobby = create(&app, &alice, "lobby", false).await;
    let r = app
        .get_as(
            &mallory.access,
            &format!("/api/v1/channels/{lobby}/messages"),
        )
        .await;
    assert_error(r, 403, "forbidden").await;
    assert_eq!(add(&app, &mallory, &lobby, &mallory).await.status(), 204);
    let r = app
        .get_as(
            &mallory.access,
            &format!("/api/v1/channels/{lobby}/messages"),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn owners_and_admins_rename_and_archive_members_cannot() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = create(&app, &alice, "room", true).await;
    add(&app, &alice, &room, &bob).await;
    let patch = |who: &User, body: Value| {
        let req = app
            .client
            .patch(app.url(&format!("/api/v1/channels/{room}")))
            .bearer_auth(&who.access)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    assert_error(patch(&bob, json!({"name": "mine"})).await, 403, "forbidden").await;
    assert_eq!(
        patch(&alice, json!({"name": "Renamed"})).await.status(),
        204
    );
    create(&app, &alice, "taken", true).await;
    assert_error(
        patch(&alice, json!({"name": "taken"})).await,
        409,
        "conflict",
    )
    .await;
    assert_error(
        patch(&alice, json!({"name": "no spaces"})).await,
        400,
        "invalid_field",
    )
    .await;
    assert_eq!(patch(&alice, json!({"archived": true})).await.status(), 204);
    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    assert_eq!(
        (
            list["channels"][0]["name"].clone(),
            list["channels"][0]["archived"].clone()
        ),
        (json!("renamed"), json!(true))
    );

    // An archived channel takes no new messages; its history stays readable.
    let mut ws = user_ws(&app, &alice).await;
    let reply = publish(&mut ws, &room, "hi", "a1").await;
    assert_eq!(
        (reply["code"].as_str(), reply["message"].as_str()),
        (Some("forbidden"), Some("the channel is archived"))
    );
    let r = app
        .get_as(&bob.access, &format!("/api/v1/channels/{room}/messages"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn members_leave_admins_remove_and_owners_stay() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = create(&app, &alice, "room", true).await;
    add(&app, &alice, &room, &bob).await;
    add(&app, &alice, &room, &carol).await;
    let remove = |by: &User, who: &User| {
        let req = app
            .client
            .delete(app.url(&format!("/api/v1/channels/{room}/members/{}", who.id)))
            .bearer_auth(&by.access);
        async move { req.send().await.unwrap() }
    };
    // A member cannot remove another; nobody removes the owner; the owner cannot leave.
    assert_error(remove(&bob, &carol).await, 403, "forbidden").await;
    assert_error(remove(&bob, &alice).await, 409, "conflict").await;
    assert_error(remove(&alice, &alice).await, 409, "conflict").await;
    // Leaving, and removal by the owner.
    assert_eq!(remove(&bob, &bob).await.status(), 204);
    assert_eq!(remove(&alice, &carol).await.status(), 204);
    assert_error(remove(&alice, &carol).await, 404, "not_found").await;
    for gone in [&bob, &carol] {
        let r = app
            .get_as(&gone.access, &format!("/api/v1/channels/{room}/messages"))
            .await;
        assert_error(r, 404, "not_found").await;
        let list = body(app.get_as(&gone.access, "/api/v1/channels").await).await;
        assert_eq!(list["channels"], json!([]));
    }
}

#[tokio::test]
async fn a_removed_member_stops_receiving_at_once() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = create(&app, &alice, "room", true).await;
    add(&app, &alice, &room, &bob).await;
    let mut ws = user_ws(&app, &bob).await;
    subscribe(&mut ws, &room, None).await;
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/channels/{room}/members/{}", bob.id)))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frame = tokio::time::timeout(std::time::Duration::from_secs(1), next(&mut ws))
        .await
        .expect("no unsubscribed within a second");
    assert_eq!(frame, json!({"type": "unsubscribed", "channel": room}));
    // What is posted afterwards does not reach the removed member.
    post_messages(&app, &alice, &room, &["after removal"]).await;
    send(&mut ws, json!({"type": "ping"})).await;
    let after = next(&mut ws).await;
    assert_eq!(after["type"], "pong", "received {after}");
}

#[tokio::test]
async fn search_finds_what_the_caller_may_read() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let shared = create(&app, &alice, "shared", true).await;
    let secret = create(&app, &alice, "secret", true).await;
    add(&app, &alice, &shared, &bob).await;
    post_messages(&app, &alice, &shared, &["The quarterly report is ready"]).await;
    post_messages(&app, &bob, &shared, &["Thanks, reading the report now"]).await;
    post_messages(&app, &alice, &secret, &["the secret report draft"]).await;

    let search = |who: &User, q: &str| {
        let req = app
            .client
            .get(app.url("/api/v1/search"))
            .query(&[("q", q)])
            .bearer_auth(&who.access);
        async move { req.send().await.unwrap() }
    };
    let found = body(search(&bob, "report").await).await;
    let hits = found["messages"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{found}");
    assert!(hits.iter().all(|m| m["channel"] == shared.as_str()));
    assert_eq!(
        body(search(&alice, "report").await).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        body(search(&bob, "secret").await).await["messages"],
        json!([])
    );
    let r = app
        .client
        .get(app.url("/api/v1/search"))
        .query(&[("q", "report"), ("author", bob.id.as_str())])
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    let by_bob = body(r).await;
    assert_eq!(
        by_bob["messages"][0]["body"],
        "Thanks, reading the report now"
    );
    assert_eq!(by_bob["messages"].as_array().unwrap().len(), 1);
    // Query syntax is plain text, never a server error.
    for odd in ["\"", "report OR secret", "NEAR(", "*"] {
        assert_eq!(search(&bob, odd).await.status(), 200, "{odd}");
    }
    // Control characters separate words (schemathesis found ":\0" answered 500: a NUL in a
    // quoted FTS5 string is a syntax error).
    for odd in [":\0", "\0", "report\0", "\u{1}report\u{7f}"] {
        let r = search(&bob, odd).await;
        assert_eq!(r.status(), 200, "{odd:?}");
        let hits = body(r).await["messages"].as_array().unwrap().len();
        assert_eq!(hits, usize::from(odd.contains("report")) * 2, "{odd:?}");
    }
    let r = app.get_as(&bob.access, "/api/v1/search").await;
    assert_error(r, 400, "bad_request").await;
}

#[tokio::test]
async fn replies_form_threads_that_count_on_their_root() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = create(&app, &alice, "room", true).await;
    add(&app, &alice, &room, &bob).await;
    let mut a = user_ws(&app, &alice).await;
    let mut b = user_ws(&app, &bob).await;
    subscribe(&mut b, &room, None).await;
    let root = publish(&mut a, &room, "lunch?", "q1").await;
    let root_id = root["id"].as_str().unwrap().to_owned();
    assert_eq!(next(&mut b).await["id"], root_id.as_str());

    send(
        &mut b,
        json!({"type": "publish", "channel": room, "body": "yes, noon", "client_msg_id": "r1", "thread_root": root_id}),
    )
    .await;
    let ack = next(&mut b).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_i64()),
        (Some("ack"), Some(3)),
        "after bob's joining and the root"
    );
    // The reply reaches subscribers as a message naming its root.
    let live = next(&mut b).await;
    assert_eq!(
        (live["thread_root"].as_str(), live["body"].as_str()),
        (Some(root_id.as_str()), Some("yes, noon"))
    );

    let thread = body(
        app.get_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/threads/{root_id}"),
        )
        .await,
    )
    .await;
    assert_eq!(thread["root"]["reply_count"], 1);
    assert!(thread["root"]["last_reply_at"].is_string());
    assert_eq!(thread["replies"][0]["body"], "yes, noon");
    assert_eq!(thread["replies"][0]["sender"], bob.id.as_str());
    assert_eq!(thread["has_more"], false);
    // History shows the count on the root and the root on the reply.
    let history = body(
        app.get_as(&alice.access, &format!("/api/v1/channels/{room}/messages"))
            .await,
    )
    .await;
    assert_eq!(history["messages"][0]["reply_count"], 1);
    assert_eq!(history["messages"][1]["thread_root"], root_id.as_str());

    // No threads of replies, no roots from elsewhere.
    let reply_id = thread["replies"][0]["id"].as_str().unwrap().to_owned();
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": "deeper", "client_msg_id": "r2", "thread_root": reply_id}),
    )
    .await;
    let e = next(&mut a).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("invalid_field"), Some("r2"))
    );
    send(
        &mut a,
        json!({"type": "publish", "channel": room, "body": "x", "client_msg_id": "r3", "thread_root": "nope"}),
    )
    .await;
    assert_eq!(next(&mut a).await["code"], "invalid_field");
    let r = app
        .get_as(
            &alice.access,
            &format!("/api/v1/channels/{room}/threads/nope"),
        )
        .await;
    assert_error(r, 404, "not_found").await;
    let outsider = app.user("outsider").await;
    let r = app
        .get_as(
            &outsider.access,
            &format!("/api/v1/channels/{room}/threads/{root_id}"),
        )
        .await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn direct_conversations_are_deduplicated_and_closed_to_others() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let open = |who: &User, ids: Vec<&str>| {
        let req = app
            .client
            .post(app.url("/api/v1/dms"))
            .bearer_auth(&who.access)
            .json(&json!({"user_ids": ids}));
        async move { req.send().await.unwrap() }
    };
    let r = open(&alice, vec![&bob.id]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let dm = body(r).await;
    assert_eq!(dm["created"], true);
    let dm_id = dm["id"].as_str().unwrap().to_owned();
    // Bob opening it (with himself listed too) finds the same conversation.
    let r = open(&bob, vec![&alice.id, &bob.id]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["id"], dm_id.as_str());
    // A group of three is a different conversation.
    let group = body(open(&carol, vec![&alice.id, &bob.id]).await).await;
    assert_ne!(group["id"], dm_id.as_str());

    assert_error(open(&alice, vec![]).await, 400, "invalid_field").await;
    assert_error(open(&alice, vec![&alice.id]).await, 400, "invalid_field").await;
    assert_error(open(&alice, vec!["nobody"]).await, 404, "not_found").await;

    // Both see it in their list, marked direct; the members are listed by name.
    let list = body(app.get_as(&bob.access, "/api/v1/channels").await).await;
    let mine = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == dm_id.as_str())
        .unwrap();
    assert_eq!(
        (mine["direct"].clone(), mine["private"].clone()),
        (json!(true), json!(true))
    );
    let members = body(
        app.get_as(&alice.access, &format!("/api/v1/channels/{dm_id}/members"))
            .await,
    )
    .await;
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // The conversation works like a channel, and only for its members.
    let mut a = user_ws(&app, &alice).await;
    assert_eq!(publish(&mut a, &dm_id, "psst", "d1").await["type"], "ack");
    let mut c = user_ws(&app, &carol).await;
    assert_eq!(
        publish(&mut c, &dm_id, "let me in", "d2").await["code"],
        "forbidden"
    );
    let r = app
        .get_as(&carol.access, &format!("/api/v1/channels/{dm_id}/messages"))
        .await;
    assert_error(r, 404, "not_found").await;
    // Its members are fixed.
    assert_error(add(&app, &alice, &dm_id, &carol).await, 403, "forbidden").await;
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/channels/{dm_id}/members/{}", bob.id)))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;
}

#[tokio::test]
async fn users_are_found_by_id_and_by_name() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let found = body(
        app.get_as(&alice.access, &format!("/api/v1/users/{}", bob.id))
            .await,
    )
    .await;
    assert_eq!(found, json!({"user_id": bob.id, "username": "bob"}));
    let r = app
        .get_as(&alice.access, "/api/v1/users?username=BOB")
        .await;
    assert_eq!(body(r).await["user_id"], bob.id.as_str());
    assert_error(
        app.get_as(&alice.access, "/api/v1/users?username=nobody")
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get_as(&alice.access, "/api/v1/users/nope").await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get_as(&alice.access, "/api/v1/users").await,
        400,
        "bad_request",
    )
    .await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/users/{}", bob.id)))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    assert!(!found.to_string().contains("argon2"));
}

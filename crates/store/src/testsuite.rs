//! The behaviour every [`Store`] backend must show.
//!
//! A backend's tests call [`store_testsuite!`](crate::store_testsuite) with an async
//! expression that yields a fresh, empty store; each case below becomes one `#[tokio::test]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::*;
use time::{Duration, OffsetDateTime};

/// Generates one test per case in [`testsuite`](crate::testsuite) for a backend.
///
/// `$make` is an async expression evaluating to a value that derefs to a `dyn Store`
/// (e.g. `Arc<dyn Store>` or a backend guard) and owns a fresh, empty store.
#[macro_export]
macro_rules! store_testsuite {
    ($make:expr) => {
        $crate::store_testsuite!(@cases $make;
            users_are_created_and_found,
            usernames_are_unique,
            refresh_tokens_rotate_within_a_family,
            a_session_is_live_only_for_its_own_user,
            reusing_a_rotated_token_revokes_the_family,
            concurrent_rotation_lets_only_one_win,
            expired_sessions_are_dead,
            sessions_are_revoked_by_token_and_by_user,
            devices_are_registered_listed_and_revoked,
            device_key_ids_are_unique,
            audit_log_is_append_only_and_paged,
            channels_have_unique_names_and_their_creator_as_member,
            messages_get_gap_free_seqs_per_channel,
            retried_messages_are_stored_once,
            posts_are_decided_by_membership_and_archival_in_their_transaction,
            posts_first_polled_in_order_are_stored_in_that_order,
            concurrent_appends_never_share_a_seq,
            a_refused_append_among_concurrent_ones_takes_nothing_with_it,
            members_have_roles_read_positions_and_can_leave,
            channels_are_renamed_and_archived,
            history_pages_backwards,
            edits_keep_revisions_and_replay_as_events,
            deleted_messages_leave_a_tombstone_and_nothing_else,
            reactions_are_grouped_by_emoji,
            unread_and_mention_counts_skip_own_and_deleted_messages,
            the_timeline_replays_messages_and_events_in_seq_order,
            channel_peers_are_everyone_sharing_a_channel,
            search_finds_only_readable_messages,
            search_keeps_older_readable_hits_behind_many_newer_unreadable_ones,
            replies_form_one_level_threads_counted_on_their_root,
            direct_conversations_are_found_by_their_members,
            files_are_recorded_per_upload_in_existing_channels,
            files_are_attached_once_by_their_uploader_and_go_with_a_deletion,
            telemetry_is_summarised_per_bucket,
            telemetry_for_unknown_devices_stores_nothing,
            old_telemetry_is_pruned,
            a_devices_metrics_are_the_series_with_points,
            what_a_device_reports_is_kept,
            commands_are_pending_in_order_until_answered_or_expired,
            held_messages_stay_out_of_the_timeline_until_released,
            flagged_messages_keep_their_reasons_and_are_listed,
            a_channel_lists_the_devices_linked_to_it,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make;
                $crate::testsuite::$case(&*store).await;
            }
        )*
    };
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A fixed instant, truncated to milliseconds (the finest precision every backend keeps).
fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

async fn user(store: &dyn Store, name: &str) -> User {
    store
        .create_user(NewUser {
            id: id(),
            username: name.to_string(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
            is_admin: false,
            created_at: t0(),
        })
        .await
        .unwrap()
}

async fn session(store: &dyn Store, user: &User, token: &[u8]) -> String {
    let sid = id();
    store
        .create_session(NewSession {
            id: sid.clone(),
            user_id: user.id.clone(),
            created_at: t0(),
            expires_at: t0() + Duration::days(30),
            token_hash: token.to_vec(),
        })
        .await
        .unwrap();
    sid
}

fn next(hash: &[u8]) -> NextRefreshToken {
    NextRefreshToken {
        token_hash: hash.to_vec(),
    }
}

pub async fn users_are_created_and_found(store: &dyn Store) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = user(store, "alice").await;
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_username("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_username("bob").await.unwrap(), None);
    assert_eq!(store.user_by_id("nope").await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert_eq!(alice.created_at, t0());
}

pub async fn usernames_are_unique(store: &dyn Store) {
    user(store, "alice").await;
    let err = store
        .create_user(NewUser {
            id: id(),
            username: "alice".into(),
            password_hash: "x".into(),
            is_admin: true,
            created_at: t0(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict("username")), "{err:?}");
    assert_eq!(store.count_users().await.unwrap(), 1);
}

/// A live session presented with another user's id (or an id that names nobody) is not live:
/// an access token's `sid` and `sub` must agree.
pub async fn a_session_is_live_only_for_its_own_user(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let sid = session(store, &alice, b"t1").await;
    assert!(store.session_is_live(&sid, &alice.id, t0()).await.unwrap());
    assert!(!store.session_is_live(&sid, &bob.id, t0()).await.unwrap());
    assert!(!store.session_is_live(&sid, "nobody", t0()).await.unwrap());
}

pub async fn refresh_tokens_rotate_within_a_family(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let sid = session(store, &alice, b"t1").await;
    let expected = SessionRef {
        session_id: sid.clone(),
        user_id: alice.id.clone(),
    };
    assert!(store.session_is_live(&sid, &alice.id, t0()).await.unwrap());
    let out = store
        .rotate_refresh_token(b"t1", next(b"t2"), t0())
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Rotated(expected.clone()));
    let out = store
        .rotate_refresh_token(b"t2", next(b"t3"), t0())
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Rotated(expected));
    assert_eq!(
        store
            .rotate_refresh_token(b"zz", next(b"t4"), t0())
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
    assert!(store.session_is_live(&sid, &alice.id, t0()).await.unwrap());
}

pub async fn reusing_a_rotated_token_revokes_the_family(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let sid = session(store, &alice, b"t1").await;
    let r = SessionRef {
        session_id: sid.clone(),
        user_id: alice.id.clone(),
    };
    store
        .rotate_refresh_token(b"t1", next(b"t2"), t0())
        .await
        .unwrap();
    // The thief replays t1: the family dies, and the legitimate holder's t2 dies with it.
    assert_eq!(
        store
            .rotate_refresh_token(b"t1", next(b"x1"), t0())
            .await
            .unwrap(),
        RotateOutcome::Reused(r.clone())
    );
    assert!(!store.session_is_live(&sid, &alice.id, t0()).await.unwrap());
    assert_eq!(
        store
            .rotate_refresh_token(b"t2", next(b"x2"), t0())
            .await
            .unwrap(),
        RotateOutcome::Dead(r)
    );
    // The replacement offered during the failed attempts was never stored.
    assert_eq!(
        store
            .rotate_refresh_token(b"x1", next(b"x3"), t0())
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
}

pub async fn concurrent_rotation_lets_only_one_win(store: &dyn Store) {
    let alice = user(store, "alice").await;
    session(store, &alice, b"t1").await;
    let attempts = (0..8u8).map(|i| async move {
        store
            .rotate_refresh_token(b"t1", next(&[b'n', i]), t0())
            .await
            .unwrap()
    });
    // Polled together, so the calls interleave at every await inside the backend.
    let outcomes = futures::future::join_all(attempts).await;
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated(_)))
        .count();
    assert_eq!(rotated, 1, "{outcomes:?}");
}

pub async fn expired_sessions_are_dead(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let sid = session(store, &alice, b"t1").await;
    let later = t0() + Duration::days(31);
    assert!(!store.session_is_live(&sid, &alice.id, later).await.unwrap());
    assert!(matches!(
        store
            .rotate_refresh_token(b"t1", next(b"t2"), later)
            .await
            .unwrap(),
        RotateOutcome::Dead(_)
    ));
}

pub async fn sessions_are_revoked_by_token_and_by_user(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let s1 = session(store, &alice, b"a1").await;
    let s2 = session(store, &alice, b"b1").await;
    let s3 = session(store, &alice, b"c1").await;
    let revoked = store.revoke_session_by_token(b"a1", t0()).await.unwrap();
    assert_eq!(
        revoked,
        Some(SessionRef {
            session_id: s1.clone(),
            user_id: alice.id.clone()
        })
    );
    assert!(!store.session_is_live(&s1, &alice.id, t0()).await.unwrap());
    assert!(store.session_is_live(&s2, &alice.id, t0()).await.unwrap());
    // Revoking again reports nothing live.
    assert_eq!(
        store.revoke_session_by_token(b"a1", t0()).await.unwrap(),
        None
    );
    assert_eq!(
        store.revoke_session_by_token(b"??", t0()).await.unwrap(),
        None
    );
    assert_eq!(
        store.revoke_user_sessions(&alice.id, t0()).await.unwrap(),
        2
    );
    assert!(!store.session_is_live(&s2, &alice.id, t0()).await.unwrap());
    assert!(!store.session_is_live(&s3, &alice.id, t0()).await.unwrap());
    assert!(!store
        .session_is_live("unknown", &alice.id, t0())
        .await
        .unwrap());
}

fn new_device(owner: &User, name: &str, key_id: &str) -> NewDevice {
    NewDevice {
        id: id(),
        owner_id: owner.id.clone(),
        name: name.into(),
        kind: Some("esp32".into()),
        metadata: serde_json::json!({"site": "lab"}),
        key_id: key_id.into(),
        key_hash: vec![7; 32],
        created_at: t0(),
    }
}

pub async fn devices_are_registered_listed_and_revoked(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let d1 = store
        .create_device(new_device(&alice, "boiler", "k1"))
        .await
        .unwrap();
    let d2 = store
        .create_device(new_device(&alice, "door", "k2"))
        .await
        .unwrap();
    store
        .create_device(new_device(&bob, "bob's", "k3"))
        .await
        .unwrap();
    assert_eq!(d1.metadata, serde_json::json!({"site": "lab"}));
    let mine = store.devices_of(&alice.id).await.unwrap();
    assert_eq!(mine, vec![d1.clone(), d2.clone()]);
    assert_eq!(store.device_by_id(&d1.id).await.unwrap(), Some(d1.clone()));

    let cred = store.device_credential("k1").await.unwrap().unwrap();
    assert_eq!(cred.device_id, d1.id);
    assert_eq!(cred.owner_id, alice.id);
    assert_eq!(cred.key_hash, vec![7; 32]);
    assert!(!cred.revoked);
    assert_eq!(store.device_credential("nope").await.unwrap(), None);

    // Bob cannot revoke Alice's device.
    assert!(!store.revoke_device(&bob.id, &d1.id, t0()).await.unwrap());
    assert!(
        !store
            .device_credential("k1")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    let at = t0() + Duration::minutes(5);
    assert!(store.revoke_device(&alice.id, &d1.id, at).await.unwrap());
    assert!(
        store
            .device_credential("k1")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    // A second revocation succeeds and keeps the first time.
    assert!(store
        .revoke_device(&alice.id, &d1.id, at + Duration::minutes(1))
        .await
        .unwrap());
    let d1_now = store.device_by_id(&d1.id).await.unwrap().unwrap();
    assert_eq!(d1_now.revoked_at, Some(at));
    assert!(
        !store
            .device_credential("k2")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(!store.revoke_device(&alice.id, "missing", at).await.unwrap());
}

pub async fn device_key_ids_are_unique(store: &dyn Store) {
    let alice = user(store, "alice").await;
    store
        .create_device(new_device(&alice, "a", "same"))
        .await
        .unwrap();
    let err = store
        .create_device(new_device(&alice, "b", "same"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.devices_of(&alice.id).await.unwrap().len(), 1);
}

pub async fn audit_log_is_append_only_and_paged(store: &dyn Store) {
    for i in 0..5 {
        store
            .append_audit(NewAuditEvent {
                at: t0() + Duration::seconds(i),
                kind: format!("test.event{i}"),
                actor: Some("cli".into()),
                subject: None,
                ip: Some("127.0.0.1".into()),
                detail: serde_json::json!({ "i": i }),
            })
            .await
            .unwrap();
    }
    let page = store.audit_events(3, None).await.unwrap();
    let kinds: Vec<_> = page.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["test.event4", "test.event3", "test.event2"]);
    assert_eq!(page[0].detail, serde_json::json!({"i": 4}));
    assert_eq!(page[0].at, t0() + Duration::seconds(4));
    let rest = store.audit_events(10, Some(page[2].id)).await.unwrap();
    let kinds: Vec<_> = rest.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["test.event1", "test.event0"]);
}

async fn channel(store: &dyn Store, creator: &User, name: &str) -> Channel {
    store
        .create_channel(NewChannel {
            id: id(),
            name: name.into(),
            private: true,
            created_by: creator.id.clone(),
            created_at: t0(),
        })
        .await
        .unwrap()
}

fn msg(channel: &Channel, sender: &User, client_msg_id: &str, body: &str) -> NewMessage {
    NewMessage {
        id: id(),
        channel_id: channel.id.clone(),
        sender_id: sender.id.clone(),
        client_msg_id: client_msg_id.into(),
        body: body.into(),
        created_at: t0(),
        thread_root_id: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
        flag_reasons: Vec::new(),
    }
}

fn by(user: &User) -> Actor {
    Actor {
        user_id: user.id.clone(),
        at: t0(),
    }
}

pub async fn channels_have_unique_names_and_their_creator_as_member(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let general = channel(store, &alice, "general").await;
    assert_eq!(general.last_seq, 0);
    assert!(general.private);
    assert_eq!(
        store.channel_by_id(&general.id).await.unwrap(),
        Some(general.clone())
    );
    assert_eq!(store.channel_by_id("nope").await.unwrap(), None);
    assert!(store.is_member(&general.id, &alice.id).await.unwrap());
    assert!(!store.is_member(&general.id, &bob.id).await.unwrap());
    assert_eq!(
        store
            .add_member(&general.id, &bob.id, &by(&bob))
            .await
            .unwrap(),
        Some(1),
        "joining is the channel's first event"
    );
    assert_eq!(
        store
            .add_member(&general.id, &bob.id, &by(&bob))
            .await
            .unwrap(),
        None
    );
    assert!(store.is_member(&general.id, &bob.id).await.unwrap());
    let err = store
        .create_channel(NewChannel {
            id: id(),
            name: "general".into(),
            private: false,
            created_by: bob.id.clone(),
            created_at: t0(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict("channel")), "{err:?}");
}

pub async fn messages_get_gap_free_seqs_per_channel(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let b = channel(store, &alice, "b").await;
    for i in 1..=5 {
        let got = store
            .append_message(msg(&a, &alice, &format!("a{i}"), "x"))
            .await
            .unwrap();
        assert_eq!(got.message.seq, i);
        assert!(!got.duplicate);
    }
    let first_b = store
        .append_message(msg(&b, &alice, "b1", "y"))
        .await
        .unwrap();
    assert_eq!(first_b.message.seq, 1, "seqs are per channel");
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().last_seq,
        5
    );

    let after2 = store.messages_after(&a.id, 2, 100).await.unwrap();
    let seqs: Vec<i64> = after2.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(after2[0].client_msg_id, "a3");
    assert_eq!(after2[0].sender_id, alice.id);
    assert_eq!(after2[0].created_at, t0());
    let page = store.messages_after(&a.id, 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(store.messages_after(&a.id, 5, 10).await.unwrap().is_empty());
}

pub async fn retried_messages_are_stored_once(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let first = store
        .append_message(msg(&a, &alice, "m1", "hello"))
        .await
        .unwrap();
    let retry = store
        .append_message(msg(&a, &alice, "m1", "hello"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message);
    // Another sender may use the same client id.
    let bobs = store
        .append_message(msg(&a, &bob, "m1", "hi"))
        .await
        .unwrap();
    assert!(!bobs.duplicate);
    assert_eq!(
        bobs.message.seq, 3,
        "after bob's joining (1) and alice's message (2)"
    );
    assert_eq!(store.messages_after(&a.id, 0, 10).await.unwrap().len(), 2);
}

pub async fn posts_are_decided_by_membership_and_archival_in_their_transaction(store: &dyn Store) {
    use crate::{ARCHIVED, NOT_A_MEMBER};
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    let refused = |err: StoreError| match err {
        StoreError::Forbidden(why) => why,
        other => panic!("expected Forbidden, got {other:?}"),
    };

    let posted = store
        .post_message(msg(&a, &alice, "p1", "hello"))
        .await
        .unwrap();
    assert_eq!(posted.message.seq, 1);
    let err = store
        .post_message(msg(&a, &bob, "p1", "not yet"))
        .await
        .unwrap_err();
    assert_eq!(refused(err), NOT_A_MEMBER);
    let nowhere = Channel {
        id: id(),
        ..a.clone()
    };
    let err = store
        .post_message(msg(&nowhere, &alice, "p2", "no channel"))
        .await
        .unwrap_err();
    assert_eq!(refused(err), NOT_A_MEMBER, "no such channel: not a member");

    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let bobs = store
        .post_message(msg(&a, &bob, "p1", "now"))
        .await
        .unwrap();
    assert_eq!(
        bobs.message.seq, 3,
        "after alice's post (1) and bob's joining (2)"
    );
    // A retry is answered with the stored message, like an append's.
    let retry = store
        .post_message(msg(&a, &bob, "p1", "now"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, bobs.message);

    store.set_archived(&a.id, true, &by(&alice)).await.unwrap();
    let err = store
        .post_message(msg(&a, &alice, "p3", "archived"))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ARCHIVED);
    store
        .remove_member(&a.id, &bob.id, &by(&bob))
        .await
        .unwrap();
    store.set_archived(&a.id, false, &by(&alice)).await.unwrap();
    let err = store
        .post_message(msg(&a, &bob, "p4", "left"))
        .await
        .unwrap_err();
    assert_eq!(refused(err), NOT_A_MEMBER);
    let seqs: Vec<i64> = store
        .messages_after(&a.id, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 3], "nothing refused was stored");
    let after = store
        .post_message(msg(&a, &alice, "p5", "again"))
        .await
        .unwrap();
    assert_eq!(
        after.message.seq, 7,
        "archived (4), left (5), unarchived (6)"
    );
}

pub async fn posts_first_polled_in_order_are_stored_in_that_order(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let mut posts = Vec::new();
    for i in 0..200 {
        let mut post = store.post_message(msg(&a, &alice, &format!("o{i}"), "x"));
        // Poll once, as a pipelining session does, then go on to the next.
        posts.push(match futures::poll!(post.as_mut()) {
            std::task::Poll::Ready(done) => futures::future::Either::Left(async { done }),
            std::task::Poll::Pending => futures::future::Either::Right(post),
        });
    }
    let mut stored = Vec::new();
    for result in futures::future::join_all(posts).await {
        let appended = result.unwrap();
        stored.push((appended.message.client_msg_id, appended.message.seq));
    }
    let expected: Vec<(String, i64)> = (0..200).map(|i| (format!("o{i}"), i + 1)).collect();
    assert_eq!(stored, expected);
}

pub async fn concurrent_appends_never_share_a_seq(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let appends = (0..20).map(|i| {
        let m = msg(&a, &alice, &format!("c{i}"), "x");
        async move { store.append_message(m).await.unwrap().message.seq }
    });
    let mut seqs = futures::future::join_all(appends).await;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
}

pub async fn members_have_roles_read_positions_and_can_leave(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let zed = channel(store, &alice, "zed").await;
    let abc = channel(store, &alice, "abc").await;
    store.add_member(&zed.id, &bob.id, &by(&bob)).await.unwrap();
    assert_eq!(
        store.member_role(&zed.id, &alice.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(
        store.member_role(&zed.id, &bob.id).await.unwrap(),
        Some(Role::Member)
    );
    assert_eq!(store.member_role(&abc.id, &bob.id).await.unwrap(), None);
    assert!(store
        .set_member_role(&zed.id, &bob.id, Role::Admin)
        .await
        .unwrap());
    assert_eq!(
        store.member_role(&zed.id, &bob.id).await.unwrap(),
        Some(Role::Admin)
    );
    assert!(!store
        .set_member_role(&abc.id, &bob.id, Role::Admin)
        .await
        .unwrap());

    for i in 0..3 {
        store
            .append_message(msg(&zed, &alice, &format!("z{i}"), "x"))
            .await
            .unwrap();
    }
    let mine = store.memberships_of(&alice.id).await.unwrap();
    let names: Vec<&str> = mine.iter().map(|m| m.channel.name.as_str()).collect();
    assert_eq!(names, ["abc", "zed"], "ordered by name");
    let bobs = store.memberships_of(&bob.id).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].unread, 3);
    assert_eq!(bobs[0].role, Role::Admin);

    // Read positions only move forward and never past the newest message.
    // (seq 1 is bob joining; the messages are 2..=4.)
    assert_eq!(store.mark_read(&zed.id, &bob.id, 3).await.unwrap(), Some(3));
    assert_eq!(bobs_unread(store, &bob).await, 1);
    assert_eq!(store.mark_read(&zed.id, &bob.id, 1).await.unwrap(), Some(3));
    assert_eq!(
        store.mark_read(&zed.id, &bob.id, 99).await.unwrap(),
        Some(4)
    );
    assert_eq!(store.mark_read(&abc.id, &bob.id, 1).await.unwrap(), None);
    assert_eq!(store.memberships_of(&bob.id).await.unwrap()[0].unread, 0);

    assert_eq!(
        store
            .remove_member(&zed.id, &bob.id, &by(&alice))
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(
        store
            .remove_member(&zed.id, &bob.id, &by(&alice))
            .await
            .unwrap(),
        None
    );
    assert!(!store.is_member(&zed.id, &bob.id).await.unwrap());
    assert!(store.memberships_of(&bob.id).await.unwrap().is_empty());
}

async fn bobs_unread(store: &dyn Store, bob: &User) -> i64 {
    store.memberships_of(&bob.id).await.unwrap()[0].unread
}

pub async fn channels_are_renamed_and_archived(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    channel(store, &alice, "b").await;
    assert_eq!(
        store
            .rename_channel(&a.id, "renamed", &by(&alice))
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().name,
        "renamed"
    );
    let err = store
        .rename_channel(&a.id, "b", &by(&alice))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict("channel")), "{err:?}");
    assert_eq!(
        store
            .rename_channel("nope", "c", &by(&alice))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.set_archived(&a.id, true, &by(&alice)).await.unwrap(),
        Some(2),
        "a refused rename took no seq"
    );
    assert_eq!(
        store
            .channel_by_id(&a.id)
            .await
            .unwrap()
            .unwrap()
            .archived_at,
        Some(t0())
    );
    assert_eq!(
        store.set_archived(&a.id, false, &by(&alice)).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        store
            .channel_by_id(&a.id)
            .await
            .unwrap()
            .unwrap()
            .archived_at,
        None
    );
}

pub async fn history_pages_backwards(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    for i in 1..=7 {
        store
            .append_message(msg(&a, &alice, &format!("h{i}"), "x"))
            .await
            .unwrap();
    }
    let newest = store.messages_before(&a.id, i64::MAX, 3).await.unwrap();
    assert_eq!(newest.iter().map(|m| m.seq).collect::<Vec<_>>(), [5, 6, 7]);
    let older = store.messages_before(&a.id, 5, 3).await.unwrap();
    assert_eq!(older.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
    let oldest = store.messages_before(&a.id, 2, 3).await.unwrap();
    assert_eq!(oldest.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
}

pub async fn search_finds_only_readable_messages(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let shared = channel(store, &alice, "shared").await;
    let secret = channel(store, &alice, "secret").await;
    store
        .add_member(&shared.id, &bob.id, &by(&bob))
        .await
        .unwrap();
    store
        .append_message(msg(
            &shared,
            &alice,
            "s1",
            "The deploy window opens at noon",
        ))
        .await
        .unwrap();
    store
        .append_message(msg(&shared, &bob, "s2", "Déploiement: noon works for me"))
        .await
        .unwrap();
    store
        .append_message(msg(
            &secret,
            &alice,
            "s3",
            "noon is when the secret deploy happens",
        ))
        .await
        .unwrap();

    let q = |user: &User, text: &str| SearchQuery {
        user_id: user.id.clone(),
        text: text.into(),
        channel_id: None,
        sender_id: None,
        limit: 10,
    };
    let bodies = |found: Vec<Message>| {
        let mut b: Vec<String> = found.into_iter().map(|m| m.client_msg_id).collect();
        b.sort();
        b
    };
    assert_eq!(
        bodies(store.search_messages(q(&bob, "noon")).await.unwrap()),
        ["s1", "s2"]
    );
    assert_eq!(
        bodies(store.search_messages(q(&alice, "noon")).await.unwrap()),
        ["s1", "s2", "s3"]
    );
    // All words must match, in any order; diacritics are folded.
    assert_eq!(
        bodies(
            store
                .search_messages(q(&bob, "window deploy"))
                .await
                .unwrap()
        ),
        ["s1"]
    );
    assert_eq!(
        bodies(store.search_messages(q(&bob, "deploiement")).await.unwrap()),
        ["s2"]
    );
    // Filters by channel and sender.
    let mut by_sender = q(&alice, "noon");
    by_sender.sender_id = Some(bob.id.clone());
    assert_eq!(
        bodies(store.search_messages(by_sender).await.unwrap()),
        ["s2"]
    );
    let mut in_channel = q(&alice, "noon");
    in_channel.channel_id = Some(secret.id.clone());
    assert_eq!(
        bodies(store.search_messages(in_channel).await.unwrap()),
        ["s3"]
    );
    // FTS syntax in the input is plain text, never an error.
    for odd in [
        "\"unbalanced",
        "noon OR secret",
        "a*",
        "NEAR(x y)",
        "-",
        "   ",
    ] {
        store.search_messages(q(&bob, odd)).await.unwrap();
    }
    assert!(store
        .search_messages(q(&bob, "secret"))
        .await
        .unwrap()
        .is_empty());
}

pub async fn replies_form_one_level_threads_counted_on_their_root(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let other = channel(store, &alice, "other").await;
    let root = store
        .append_message(msg(&a, &alice, "root", "question?"))
        .await
        .unwrap()
        .message;
    assert_eq!(
        (
            root.reply_count,
            root.last_reply_at,
            root.thread_root_id.clone()
        ),
        (0, None, None)
    );
    let reply = |cid: &str, at: OffsetDateTime| NewMessage {
        thread_root_id: Some(root.id.clone()),
        created_at: at,
        ..msg(&a, &alice, cid, "answer")
    };
    let r1 = store
        .append_message(reply("r1", t0() + Duration::seconds(5)))
        .await
        .unwrap()
        .message;
    assert_eq!(r1.thread_root_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(r1.seq, 2, "replies take the channel's seq like any message");
    store
        .append_message(msg(&a, &alice, "plain", "unrelated"))
        .await
        .unwrap();
    store
        .append_message(reply("r2", t0() + Duration::seconds(9)))
        .await
        .unwrap();
    // A retried reply does not count twice.
    store
        .append_message(reply("r2", t0() + Duration::seconds(9)))
        .await
        .unwrap();

    let root_now = store.message_by_id(&a.id, &root.id).await.unwrap().unwrap();
    assert_eq!(root_now.reply_count, 2);
    assert_eq!(root_now.last_reply_at, Some(t0() + Duration::seconds(9)));
    let replies = store.thread_replies(&a.id, &root.id, 0, 10).await.unwrap();
    assert_eq!(
        replies
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(
        store
            .thread_replies(&a.id, &root.id, 2, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Threads are one level deep, and stay in their channel.
    let nested = NewMessage {
        thread_root_id: Some(r1.id.clone()),
        ..msg(&a, &alice, "nested", "x")
    };
    assert!(matches!(
        store.append_message(nested).await,
        Err(StoreError::Invalid(_))
    ));
    let elsewhere = NewMessage {
        thread_root_id: Some(root.id.clone()),
        ..msg(&other, &alice, "elsewhere", "x")
    };
    assert!(matches!(
        store.append_message(elsewhere).await,
        Err(StoreError::Invalid(_))
    ));
    // A refused reply took no seq.
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().last_seq,
        4
    );
    assert_eq!(
        store.message_by_id(&other.id, &root.id).await.unwrap(),
        None
    );
}

fn dm(creator: &User) -> NewChannel {
    let id = id();
    NewChannel {
        name: format!("dm-{id}"),
        id,
        private: true,
        created_by: creator.id.clone(),
        created_at: t0(),
    }
}

pub async fn direct_conversations_are_found_by_their_members(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let pair = vec![alice.id.clone(), bob.id.clone()];
    let (first, created) = store.open_direct(dm(&alice), &pair).await.unwrap();
    assert!(created && first.direct && first.private);
    // The same people, in any order and from either side, get the same conversation.
    let reversed = vec![bob.id.clone(), alice.id.clone(), bob.id.clone()];
    let (again, created) = store.open_direct(dm(&bob), &reversed).await.unwrap();
    assert_eq!((again.id.clone(), created), (first.id.clone(), false));
    let trio = vec![alice.id.clone(), bob.id.clone(), carol.id.clone()];
    let (group, created) = store.open_direct(dm(&carol), &trio).await.unwrap();
    assert!(created);
    assert_ne!(group.id, first.id);

    let members = store.members_of(&first.id).await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(members.iter().all(|m| m.role == Role::Member));
    assert!(!store.is_member(&first.id, &carol.id).await.unwrap());
    assert!(
        store
            .channel_by_id(&first.id)
            .await
            .unwrap()
            .unwrap()
            .direct
    );
    assert!(
        store.memberships_of(&carol.id).await.unwrap()[0]
            .channel
            .direct
    );

    let ghost = vec![alice.id.clone(), "no-such-user".to_owned()];
    let err = store.open_direct(dm(&alice), &ghost).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    // Nothing of the refused conversation remains.
    assert_eq!(store.memberships_of(&alice.id).await.unwrap().len(), 2);
}

pub async fn a_refused_append_among_concurrent_ones_takes_nothing_with_it(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let appends = (0..15).map(|i| {
        let mut m = msg(&a, &alice, &format!("c{i}"), "x");
        if i % 3 == 0 {
            m.thread_root_id = Some("no-such-root".into());
        }
        async move { (i, store.append_message(m).await) }
    });
    let outcomes = futures::future::join_all(appends).await;
    let mut seqs = Vec::new();
    for (i, outcome) in outcomes {
        if i % 3 == 0 {
            assert!(
                matches!(outcome, Err(StoreError::Invalid(_))),
                "{i}: {outcome:?}"
            );
        } else {
            seqs.push(outcome.unwrap().message.seq);
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<i64>>());
    assert_eq!(store.messages_after(&a.id, 0, 100).await.unwrap().len(), 10);
}

fn edit(channel: &Channel, message: &Message, author: &User, body: &str) -> MessageEdit {
    MessageEdit {
        channel_id: channel.id.clone(),
        message_id: message.id.clone(),
        author_id: author.id.clone(),
        body: body.into(),
        mentions: Vec::new(),
        at: t0() + Duration::seconds(60),
    }
}

fn search(user: &User, text: &str) -> SearchQuery {
    SearchQuery {
        user_id: user.id.clone(),
        text: text.into(),
        channel_id: None,
        sender_id: None,
        limit: 10,
    }
}

pub async fn edits_keep_revisions_and_replay_as_events(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let m = store
        .append_message(msg(&a, &alice, "m1", "first draft"))
        .await
        .unwrap()
        .message;
    assert_eq!(m.seq, 2);

    // Only the author edits.
    assert_eq!(
        store
            .edit_message(edit(&a, &m, &bob, "hijack"))
            .await
            .unwrap(),
        None
    );
    let (edited, seq) = store
        .edit_message(edit(&a, &m, &alice, "second draft"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq, 3, "an edit takes the channel's next seq");
    assert_eq!(edited.seq, 2, "the message keeps its place");
    assert_eq!(edited.body, "second draft");
    assert_eq!(edited.edited_at, Some(t0() + Duration::seconds(60)));
    store
        .edit_message(edit(&a, &m, &alice, "final words"))
        .await
        .unwrap()
        .unwrap();
    let revisions = store.message_revisions(&m.id).await.unwrap();
    assert_eq!(
        revisions
            .iter()
            .map(|r| (r.rev, r.body.as_str()))
            .collect::<Vec<_>>(),
        [(1, "first draft"), (2, "second draft")]
    );
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().last_seq,
        4
    );

    // Search sees the current body only.
    assert!(store
        .search_messages(search(&bob, "draft"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .search_messages(search(&bob, "final"))
            .await
            .unwrap()
            .len(),
        1
    );
    // Edits do not count as unread messages.
    assert_eq!(store.memberships_of(&bob.id).await.unwrap()[0].unread, 1);

    let timeline = store.events_after(&a.id, 1, 100).await.unwrap();
    assert_eq!(
        timeline.iter().map(ChannelEvent::seq).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(matches!(&timeline[0], ChannelEvent::Message(x) if x.body == "final words"));
    assert!(
        matches!(&timeline[1], ChannelEvent::MessageEdited { message, .. } if message.id == m.id)
    );
}

pub async fn deleted_messages_leave_a_tombstone_and_nothing_else(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let m = store
        .append_message(NewMessage {
            mentions: vec![bob.id.clone()],
            ..msg(&a, &alice, "m1", "secret plans for bob")
        })
        .await
        .unwrap()
        .message;
    store
        .edit_message(edit(&a, &m, &alice, "secret plans, revised"))
        .await
        .unwrap()
        .unwrap();
    store
        .set_reaction(&a.id, &m.id, "👍", true, &by(&bob))
        .await
        .unwrap();
    let bobs = &store.memberships_of(&bob.id).await.unwrap()[0];
    assert_eq!((bobs.unread, bobs.mentions), (1, 1));

    let seq = store
        .delete_message(&a.id, &m.id, &by(&alice))
        .await
        .unwrap();
    assert_eq!(seq, Some(5));
    let tomb = store.message_by_id(&a.id, &m.id).await.unwrap().unwrap();
    assert_eq!(tomb.body, "");
    assert_eq!(tomb.deleted_at, Some(t0()));
    assert!(tomb.reactions.is_empty());
    assert!(store.message_revisions(&m.id).await.unwrap().is_empty());
    assert!(store
        .search_messages(search(&alice, "secret"))
        .await
        .unwrap()
        .is_empty());
    let bobs = &store.memberships_of(&bob.id).await.unwrap()[0];
    assert_eq!((bobs.unread, bobs.mentions), (0, 0));

    // A tombstone cannot be deleted again, edited, or reacted to.
    assert_eq!(
        store
            .delete_message(&a.id, &m.id, &by(&alice))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .edit_message(edit(&a, &m, &alice, "back"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .set_reaction(&a.id, &m.id, "🎉", true, &by(&bob))
            .await
            .unwrap(),
        ReactionOutcome::NoMessage
    );
    assert_eq!(
        store
            .delete_message(&a.id, "nope", &by(&alice))
            .await
            .unwrap(),
        None
    );
    let timeline = store.events_after(&a.id, 0, 100).await.unwrap();
    assert!(matches!(
        timeline.last(),
        Some(ChannelEvent::MessageDeleted { seq: 5, message_id, actor_id, .. })
            if *message_id == m.id && *actor_id == alice.id
    ));
}

pub async fn reactions_are_grouped_by_emoji(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let m = store
        .append_message(msg(&a, &alice, "m1", "lunch?"))
        .await
        .unwrap()
        .message;
    let react = |who: &User, emoji: &'static str, add: bool, secs: i64| {
        let actor = Actor {
            user_id: who.id.clone(),
            at: t0() + Duration::seconds(secs),
        };
        let (cid, mid) = (a.id.clone(), m.id.clone());
        async move {
            store
                .set_reaction(&cid, &mid, emoji, add, &actor)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        react(&bob, "👍", true, 1).await,
        ReactionOutcome::Changed(3)
    );
    assert_eq!(react(&bob, "👍", true, 2).await, ReactionOutcome::Unchanged);
    assert_eq!(
        react(&alice, "🍕", true, 3).await,
        ReactionOutcome::Changed(4)
    );
    assert_eq!(
        react(&alice, "👍", true, 4).await,
        ReactionOutcome::Changed(5)
    );
    let now = store.message_by_id(&a.id, &m.id).await.unwrap().unwrap();
    assert_eq!(
        now.reactions,
        [
            Reaction {
                emoji: "👍".into(),
                user_ids: vec![bob.id.clone(), alice.id.clone()]
            },
            Reaction {
                emoji: "🍕".into(),
                user_ids: vec![alice.id.clone()]
            },
        ]
    );
    assert_eq!(
        react(&bob, "👍", false, 5).await,
        ReactionOutcome::Changed(6)
    );
    assert_eq!(
        react(&bob, "👍", false, 6).await,
        ReactionOutcome::Unchanged
    );
    let page = store.messages_before(&a.id, i64::MAX, 10).await.unwrap();
    assert_eq!(page[0].reactions[0].user_ids, vec![alice.id.clone()]);
    assert_eq!(
        store
            .set_reaction(&a.id, "nope", "👍", true, &by(&bob))
            .await
            .unwrap(),
        ReactionOutcome::NoMessage
    );
    let timeline = store.events_after(&a.id, 5, 10).await.unwrap();
    assert!(matches!(
        &timeline[..],
        [ChannelEvent::Reaction { seq: 6, added: false, emoji, user_id, .. }]
            if emoji == "👍" && *user_id == bob.id
    ));
}

pub async fn unread_and_mention_counts_skip_own_and_deleted_messages(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let mention = |cid: &str, body: &str| NewMessage {
        mentions: vec![bob.id.clone()],
        ..msg(&a, &alice, cid, body)
    };
    store
        .append_message(mention("m1", "@bob hi"))
        .await
        .unwrap();
    store
        .append_message(msg(&a, &alice, "m2", "plain"))
        .await
        .unwrap();
    store
        .append_message(msg(&a, &bob, "m3", "my own"))
        .await
        .unwrap();
    let m4 = store
        .append_message(mention("m4", "@bob again"))
        .await
        .unwrap()
        .message;
    let counts = |m: &Membership| (m.unread, m.mentions);
    assert_eq!(
        counts(&store.memberships_of(&bob.id).await.unwrap()[0]),
        (3, 2)
    );
    assert_eq!(
        counts(&store.memberships_of(&alice.id).await.unwrap()[0]),
        (1, 0)
    );
    store
        .delete_message(&a.id, &m4.id, &by(&alice))
        .await
        .unwrap();
    assert_eq!(
        counts(&store.memberships_of(&bob.id).await.unwrap()[0]),
        (2, 1)
    );
    // Reading up to the first mention clears it.
    store.mark_read(&a.id, &bob.id, 2).await.unwrap();
    assert_eq!(
        counts(&store.memberships_of(&bob.id).await.unwrap()[0]),
        (1, 0)
    );
}

pub async fn the_timeline_replays_messages_and_events_in_seq_order(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    let m1 = store
        .append_message(msg(&a, &alice, "m1", "one"))
        .await
        .unwrap()
        .message; // 1
    store.add_member(&a.id, &bob.id, &by(&alice)).await.unwrap(); // 2
    store
        .set_reaction(&a.id, &m1.id, "👀", true, &by(&bob))
        .await
        .unwrap(); // 3
    store
        .append_message(msg(&a, &bob, "m2", "two"))
        .await
        .unwrap(); // 4
    store
        .rename_channel(&a.id, "renamed", &by(&alice))
        .await
        .unwrap(); // 5
    store
        .remove_member(&a.id, &bob.id, &by(&bob))
        .await
        .unwrap(); // 6

    let all = store.events_after(&a.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(ChannelEvent::seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "gap-free across messages and events"
    );
    assert!(
        matches!(&all[1], ChannelEvent::Member { joined: true, user_id, actor_id, .. }
            if *user_id == bob.id && *actor_id == alice.id)
    );
    assert!(
        matches!(&all[4], ChannelEvent::ChannelUpdated { channel, .. } if channel.name == "renamed")
    );
    assert!(matches!(
        &all[5],
        ChannelEvent::Member { joined: false, .. }
    ));
    // Pages are cut by seq, whichever table the rows come from.
    let page = store.events_after(&a.id, 1, 2).await.unwrap();
    assert_eq!(
        page.iter().map(ChannelEvent::seq).collect::<Vec<_>>(),
        [2, 3]
    );
    let page = store.events_after(&a.id, 3, 2).await.unwrap();
    assert_eq!(
        page.iter().map(ChannelEvent::seq).collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(store.events_after(&a.id, 6, 10).await.unwrap().is_empty());
}

pub async fn channel_peers_are_everyone_sharing_a_channel(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let ab = channel(store, &alice, "ab").await;
    let bc = channel(store, &bob, "bc").await;
    store.add_member(&ab.id, &bob.id, &by(&bob)).await.unwrap();
    store
        .add_member(&bc.id, &carol.id, &by(&carol))
        .await
        .unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let ids = |users: &[&User]| sorted(users.iter().map(|u| u.id.clone()).collect());
    assert_eq!(
        sorted(store.channel_peers(&bob.id).await.unwrap()),
        ids(&[&alice, &bob, &carol])
    );
    assert_eq!(
        sorted(store.channel_peers(&alice.id).await.unwrap()),
        ids(&[&alice, &bob])
    );
    assert_eq!(
        store.channel_peers(&dave.id).await.unwrap(),
        vec![dave.id.clone()]
    );
}

fn file(channel: &Channel, uploader: &User, sha256: &str, name: &str) -> NewFile {
    NewFile {
        id: id(),
        channel_id: channel.id.clone(),
        uploader_id: uploader.id.clone(),
        sha256: sha256.into(),
        size: 5_000_000_000,
        name: name.into(),
        content_type: "image/png".into(),
        created_at: t0(),
    }
}

pub async fn files_are_recorded_per_upload_in_existing_channels(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let hash = "ab".repeat(32);
    let first = file(&a, &alice, &hash, "photo ☀.png");
    let stored = store.insert_file(first.clone()).await.unwrap();
    assert_eq!(
        stored,
        StoredFile {
            id: first.id.clone(),
            channel_id: a.id.clone(),
            uploader_id: alice.id.clone(),
            sha256: hash.clone(),
            size: 5_000_000_000,
            name: "photo ☀.png".into(),
            content_type: "image/png".into(),
            created_at: t0(),
        }
    );
    assert_eq!(
        store.file_by_id(&first.id).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.file_by_id("no-such-file").await.unwrap(), None);

    // The same bytes uploaded again are another file with the same hash.
    let again = store
        .insert_file(file(&a, &alice, &hash, "copy.png"))
        .await
        .unwrap();
    assert_ne!(again.id, stored.id);
    assert_eq!(again.sha256, stored.sha256);
    assert_eq!(store.file_by_id(&first.id).await.unwrap(), Some(stored));

    // An id is one file; a file belongs to a channel that exists.
    let err = store.insert_file(first).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict("file")), "{err:?}");
    let ghost = Channel {
        id: "no-such-channel".into(),
        ..a.clone()
    };
    let orphan = file(&ghost, &alice, &hash, "orphan.png");
    let err = store.insert_file(orphan.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.file_by_id(&orphan.id).await.unwrap(), None);
}

pub async fn files_are_attached_once_by_their_uploader_and_go_with_a_deletion(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let a = channel(store, &alice, "a").await;
    let b = channel(store, &alice, "b").await;
    store.add_member(&a.id, &bob.id, &by(&bob)).await.unwrap();
    let hash = "ab".repeat(32);
    let one = store
        .insert_file(file(&a, &alice, &hash, "one.png"))
        .await
        .unwrap();
    let two = store
        .insert_file(file(&a, &alice, &hash, "two.png"))
        .await
        .unwrap();
    let bobs = store
        .insert_file(file(&a, &bob, &hash, "bobs.png"))
        .await
        .unwrap();
    let elsewhere = store
        .insert_file(file(&b, &alice, &hash, "b.png"))
        .await
        .unwrap();
    let with = |cid: &str, files: &[&StoredFile]| NewMessage {
        attachments: files.iter().map(|f| f.id.clone()).collect(),
        flag_reasons: Vec::new(),
        ..msg(&a, &alice, cid, "see attached")
    };

    // Someone else's file, another channel's, or an unknown id: refused, nothing kept.
    for (cid, refused) in [("x1", &bobs), ("x2", &elsewhere)] {
        let err = store
            .append_message(with(cid, &[&one, refused]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    let unknown = NewMessage {
        attachments: vec!["nope".into()],
        flag_reasons: Vec::new(),
        ..msg(&a, &alice, "x3", "x")
    };
    assert!(matches!(
        store.append_message(unknown).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().last_seq,
        1,
        "refused appends took no seq (1 is bob joining)"
    );

    let m = store
        .append_message(with("m1", &[&one, &two]))
        .await
        .unwrap()
        .message;
    let names = |m: &Message| {
        m.attachments
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&m), ["one.png", "two.png"]);
    let stored = store.message_by_id(&a.id, &m.id).await.unwrap().unwrap();
    assert_eq!(names(&stored), ["one.png", "two.png"]);
    assert_eq!(stored.attachments[0], one);
    // A file is attached once.
    assert!(matches!(
        store.append_message(with("m2", &[&one])).await,
        Err(StoreError::Invalid(_))
    ));

    store
        .delete_message(&a.id, &m.id, &by(&alice))
        .await
        .unwrap();
    assert!(store
        .message_by_id(&a.id, &m.id)
        .await
        .unwrap()
        .unwrap()
        .attachments
        .is_empty());
    assert_eq!(store.file_by_id(&one.id).await.unwrap(), None);
    assert_eq!(store.file_by_id(&two.id).await.unwrap(), None);
}

fn point(device: &Device, metric: &str, secs: i64, value: f64) -> TelemetryPoint {
    TelemetryPoint {
        device_id: device.id.clone(),
        metric: metric.into(),
        ts: t0() + Duration::seconds(secs),
        value,
    }
}

pub async fn telemetry_is_summarised_per_bucket(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    let other = store
        .create_device(new_device(&alice, "other", "k2"))
        .await
        .unwrap();
    let mut points = vec![
        point(&d, "temp", 0, 20.0),
        point(&d, "temp", 30, 22.0),
        point(&d, "temp", 59, 21.0),
        point(&d, "temp", 125, 30.0),
        point(&d, "rssi", 10, -60.0),
        point(&other, "temp", 10, 99.0),
    ];
    // Many points in one call, in one transaction.
    points.extend((0..1000).map(|i| point(&d, "load", i, f64::from(i32::try_from(i).unwrap()))));
    assert_eq!(store.append_telemetry(&points).await.unwrap(), 1006);
    // The same time again replaces the value.
    store
        .append_telemetry(&[point(&d, "temp", 59, 23.0)])
        .await
        .unwrap();

    let q = |metric: &str, from: i64, to: i64, bucket_secs: i64| TelemetryQuery {
        device_id: d.id.clone(),
        metric: metric.into(),
        from: t0() + Duration::seconds(from),
        to: t0() + Duration::seconds(to),
        bucket_secs,
    };
    let buckets = store
        .telemetry_buckets(q("temp", 0, 3600, 60))
        .await
        .unwrap();
    assert_eq!(
        buckets,
        [
            TelemetryBucket {
                start: t0(),
                count: 3,
                min: 20.0,
                max: 23.0,
                avg: 65.0 / 3.0,
                last: 23.0,
            },
            TelemetryBucket {
                start: t0() + Duration::seconds(120),
                count: 1,
                min: 30.0,
                max: 30.0,
                avg: 30.0,
                last: 30.0,
            },
        ],
        "empty buckets are left out; other devices and metrics do not count"
    );
    // `to` is exclusive, `from` inclusive; buckets start at `from`.
    let buckets = store
        .telemetry_buckets(q("temp", 30, 125, 3600))
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        (buckets[0].start, buckets[0].count, buckets[0].last),
        (t0() + Duration::seconds(30), 2, 23.0)
    );
    let load = store
        .telemetry_buckets(q("load", 0, 1000, 100))
        .await
        .unwrap();
    assert_eq!(load.len(), 10);
    assert_eq!(
        (load[9].min, load[9].max, load[9].last),
        (900.0, 999.0, 999.0)
    );
    assert!(store
        .telemetry_buckets(q("nope", 0, 3600, 60))
        .await
        .unwrap()
        .is_empty());
}

pub async fn telemetry_for_unknown_devices_stores_nothing(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    let ghost = Device {
        id: "ghost".into(),
        ..d.clone()
    };
    let err = store
        .append_telemetry(&[point(&d, "temp", 0, 1.0), point(&ghost, "temp", 0, 1.0)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let all = TelemetryQuery {
        device_id: d.id.clone(),
        metric: "temp".into(),
        from: t0() - Duration::days(1),
        to: t0() + Duration::days(1),
        bucket_secs: 60,
    };
    assert!(store.telemetry_buckets(all).await.unwrap().is_empty());
}

pub async fn old_telemetry_is_pruned(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    let points: Vec<TelemetryPoint> = (0..10).map(|i| point(&d, "x", i, 1.0)).collect();
    store.append_telemetry(&points).await.unwrap();
    let other = store
        .create_device(new_device(&alice, "other", "k2"))
        .await
        .unwrap();
    let others: Vec<TelemetryPoint> = (0..4).map(|i| point(&other, "y", i * 5, 1.0)).collect();
    store.append_telemetry(&others).await.unwrap();
    let before = t0() + Duration::seconds(7);
    assert_eq!(store.prune_telemetry(before).await.unwrap(), 7 + 2);
    assert_eq!(store.prune_telemetry(before).await.unwrap(), 0);
    let left = store
        .telemetry_buckets(TelemetryQuery {
            device_id: d.id.clone(),
            metric: "x".into(),
            from: t0(),
            to: t0() + Duration::seconds(60),
            bucket_secs: 60,
        })
        .await
        .unwrap();
    assert_eq!(left[0].count, 3);
}

pub async fn a_devices_metrics_are_the_series_with_points(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    let other = store
        .create_device(new_device(&alice, "other", "k2"))
        .await
        .unwrap();
    assert!(store.telemetry_metrics(&d.id).await.unwrap().is_empty());
    store
        .append_telemetry(&[
            point(&d, "temp", 100, 20.0),
            point(&d, "rssi", 100, -60.0),
            point(&d, "temp", 110, 21.0),
            point(&d, "boot.count", 0, 1.0),
            point(&other, "humidity", 100, 40.0),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.telemetry_metrics(&d.id).await.unwrap(),
        ["boot.count", "rssi", "temp"],
        "by name, once each, only this device's"
    );
    assert_eq!(
        store.telemetry_metrics(&other.id).await.unwrap(),
        ["humidity"]
    );
    assert!(store.telemetry_metrics("ghost").await.unwrap().is_empty());
    // A series whose points were all pruned is no longer listed.
    store
        .prune_telemetry(t0() + Duration::seconds(50))
        .await
        .unwrap();
    assert_eq!(
        store.telemetry_metrics(&d.id).await.unwrap(),
        ["rssi", "temp"]
    );
}

pub async fn what_a_device_reports_is_kept(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    assert_eq!((d.last_seen_at, d.firmware_version.clone()), (None, None));
    let seen = |secs: i64, fw: Option<&str>, mem: Option<u64>| DeviceSeen {
        at: t0() + Duration::seconds(secs),
        firmware_version: fw.map(str::to_owned),
        free_memory: mem,
    };
    let first = [
        (d.id.clone(), seen(10, Some("1.2.0"), Some(40_000))),
        ("nope".to_owned(), seen(10, None, None)),
    ];
    assert_eq!(store.record_devices_seen(&first).await.unwrap(), 1);
    // Nothing reported keeps what was; an older time never moves it back.
    store
        .record_devices_seen(&[(d.id.clone(), seen(5, None, None))])
        .await
        .unwrap();
    let now = store.device_by_id(&d.id).await.unwrap().unwrap();
    assert_eq!(
        (
            now.last_seen_at,
            now.firmware_version.as_deref(),
            now.free_memory
        ),
        (
            Some(t0() + Duration::seconds(10)),
            Some("1.2.0"),
            Some(40_000)
        )
    );
}

pub async fn commands_are_pending_in_order_until_answered_or_expired(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let d = store
        .create_device(new_device(&alice, "sensor", "k1"))
        .await
        .unwrap();
    let other = store
        .create_device(new_device(&alice, "other", "k2"))
        .await
        .unwrap();
    let command = |name: &str, ttl: i64| NewCommand {
        id: id(),
        device_id: d.id.clone(),
        sender_id: alice.id.clone(),
        name: name.into(),
        args: serde_json::json!({"level": 3}),
        created_at: t0(),
        expires_at: t0() + Duration::seconds(ttl),
    };
    let first = store.create_command(command("reboot", 3600)).await.unwrap();
    let short = store.create_command(command("blink", 10)).await.unwrap();
    let third = store.create_command(command("read", 3600)).await.unwrap();
    let ghost = NewCommand {
        device_id: "ghost".into(),
        ..command("x", 10)
    };
    assert!(matches!(
        store.create_command(ghost).await,
        Err(StoreError::Invalid(_))
    ));

    let names = |cs: Vec<Command>| cs.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.pending_commands(&d.id, t0(), 10).await.unwrap()),
        ["reboot", "blink", "read"]
    );
    // Expired commands are not pending.
    let later = t0() + Duration::seconds(60);
    assert_eq!(
        names(store.pending_commands(&d.id, later, 10).await.unwrap()),
        ["reboot", "read"]
    );
    store
        .mark_command_delivered(&first.id, later)
        .await
        .unwrap();
    assert_eq!(
        store
            .command_by_id(&first.id)
            .await
            .unwrap()
            .unwrap()
            .delivered_at,
        Some(later)
    );

    // An answer completes a command once, and only from its own device.
    let out = serde_json::json!({"uptime": 5});
    assert_eq!(
        store
            .complete_command(&other.id, &first.id, true, out.clone(), later)
            .await
            .unwrap(),
        None
    );
    let done = store
        .complete_command(&d.id, &first.id, true, out.clone(), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.ok, done.output.clone(), done.completed_at),
        (Some(true), Some(out.clone()), Some(later))
    );
    assert_eq!(done.sender_id, alice.id);
    assert_eq!(
        store
            .complete_command(&d.id, &first.id, false, out, later)
            .await
            .unwrap(),
        None,
        "a repeated answer changes nothing"
    );
    assert_eq!(
        names(store.pending_commands(&d.id, later, 10).await.unwrap()),
        ["read"]
    );
    assert_eq!(
        store
            .command_by_id(&short.id)
            .await
            .unwrap()
            .unwrap()
            .completed_at,
        None
    );
    assert_eq!(
        store.pending_commands(&d.id, later, 10).await.unwrap()[0].id,
        third.id
    );
}

pub async fn search_keeps_older_readable_hits_behind_many_newer_unreadable_ones(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let shared = channel(store, &alice, "shared").await;
    let secret = channel(store, &alice, "secret").await;
    store
        .add_member(&shared.id, &bob.id, &by(&bob))
        .await
        .unwrap();
    store
        .append_message(msg(&shared, &alice, "old", "standup at noon"))
        .await
        .unwrap();
    store
        .append_message(msg(&shared, &bob, "bobs", "noon works"))
        .await
        .unwrap();
    // More newer matches than a search ranks, all where bob cannot read.
    let appends = (0..2100).map(|i| {
        let m = msg(&secret, &alice, &format!("s{i}"), "secret noon meeting");
        async move { store.append_message(m).await.unwrap() }
    });
    futures::future::join_all(appends).await;

    let found = store.search_messages(search(&bob, "noon")).await.unwrap();
    let mut ids: Vec<&str> = found.iter().map(|m| m.client_msg_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["bobs", "old"]);
    let by_author = SearchQuery {
        sender_id: Some(bob.id.clone()),
        ..search(&alice, "noon")
    };
    let found = store.search_messages(by_author).await.unwrap();
    assert_eq!(found.len(), 1, "the author filter applies before the cut");
    assert_eq!(found[0].client_msg_id, "bobs");
}

pub async fn held_messages_stay_out_of_the_timeline_until_released(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    let first = store
        .append_message(msg(&a, &alice, "m1", "fine"))
        .await
        .unwrap();
    let mut suspect = msg(&a, &alice, "m2", "suspect");
    suspect.flag_reasons = vec!["abuse".to_owned()];
    let (held, new) = store.hold_message(suspect.clone()).await.unwrap();
    assert!(new);
    assert_eq!(
        (held.body.as_str(), held.reasons.clone()),
        ("suspect", vec!["abuse".to_owned()])
    );
    // A retried publish is held once.
    let (again, new) = store.hold_message(suspect).await.unwrap();
    assert!(!new);
    assert_eq!(again, held);
    // Nothing of it in the channel: no seq taken, no history, no search.
    assert_eq!(
        store.channel_by_id(&a.id).await.unwrap().unwrap().last_seq,
        first.message.seq
    );
    assert_eq!(store.messages_after(&a.id, 0, 10).await.unwrap().len(), 1);
    assert!(store
        .search_messages(search(&alice, "suspect"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.held_messages(10).await.unwrap(), vec![held.clone()]);
    assert_eq!(
        store.held_message(&held.id).await.unwrap(),
        Some(held.clone())
    );

    // Released: appended as a message with the next seq, keeping its reasons; then forgotten.
    let released = store
        .append_message(held.clone().into_new_message())
        .await
        .unwrap();
    assert_eq!(released.message.seq, first.message.seq + 1);
    assert_eq!(released.message.flag_reasons, vec!["abuse".to_owned()]);
    assert!(store.remove_held(&held.id).await.unwrap());
    assert!(!store.remove_held(&held.id).await.unwrap());
    assert!(store.held_messages(10).await.unwrap().is_empty());
    assert_eq!(
        store
            .search_messages(search(&alice, "suspect"))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn flagged_messages_keep_their_reasons_and_are_listed(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let a = channel(store, &alice, "a").await;
    store
        .append_message(msg(&a, &alice, "m1", "fine"))
        .await
        .unwrap();
    let mut bad = msg(&a, &alice, "m2", "spammy");
    bad.flag_reasons = vec!["spam".to_owned(), "links".to_owned()];
    let stored = store.append_message(bad).await.unwrap().message;
    assert_eq!(stored.flag_reasons, ["spam", "links"]);
    let read = store
        .message_by_id(&a.id, &stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.flag_reasons, ["spam", "links"]);
    let listed = store.flagged_messages(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [stored.id.as_str()]
    );
    // A deleted one is no longer listed.
    store
        .delete_message(&a.id, &stored.id, &by(&alice))
        .await
        .unwrap();
    assert!(store.flagged_messages(10).await.unwrap().is_empty());
}

pub async fn a_channel_lists_the_devices_linked_to_it(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let room = channel(store, &alice, "room").await;
    let other = channel(store, &alice, "other").await;
    let d1 = store
        .create_device(new_device(&alice, "boiler", "k1"))
        .await
        .unwrap();
    let d2 = store
        .create_device(new_device(&alice, "pump", "k2"))
        .await
        .unwrap();
    let d3 = store
        .create_device(new_device(&alice, "fan", "k3"))
        .await
        .unwrap();
    assert!(store.devices_in_channel(&room.id).await.unwrap().is_empty());
    for (device, channel) in [(&d1, &room), (&d2, &room), (&d3, &other)] {
        assert!(store
            .set_device_channel(&alice.id, &device.id, Some(&channel.id))
            .await
            .unwrap());
    }
    let names = |devices: Vec<Device>| devices.into_iter().map(|d| d.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.devices_in_channel(&room.id).await.unwrap()),
        ["boiler", "pump"]
    );
    // Revoked, it stays: its past events are in the channel.
    store.revoke_device(&alice.id, &d2.id, t0()).await.unwrap();
    assert_eq!(store.devices_in_channel(&room.id).await.unwrap().len(), 2);
    // Unlinked, it goes.
    store
        .set_device_channel(&alice.id, &d1.id, None)
        .await
        .unwrap();
    assert_eq!(
        names(store.devices_in_channel(&room.id).await.unwrap()),
        ["pump"]
    );
}

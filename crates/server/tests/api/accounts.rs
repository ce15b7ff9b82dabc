//! Registration, login, refresh rotation, logout.

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn register_login_and_me() {
    let app = spawn_app().await;
    let r = app.register("Alice").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user_id = body(r).await["user_id"].as_str().unwrap().to_owned();

    // Usernames are case-insensitive: "Alice" was stored as "alice".
    let r = app.login("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let tokens = body(r).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("unh_rt_"));

    let me = body(
        app.get_as(tokens["access_token"].as_str().unwrap(), "/api/v1/me")
            .await,
    )
    .await;
    assert_eq!(me["user_id"], user_id.as_str());
    assert_eq!(me["username"], "alice");
    assert_eq!(me["is_admin"], false);
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(!me.to_string().contains("argon2"), "{me}");
}

#[tokio::test]
async fn bad_usernames_and_weak_passwords_are_refused_with_reasons() {
    let app = spawn_app().await;
    for name in ["ab", "has space", "-dash", "ünï", &"x".repeat(33)] {
        let r = app
            .post(
                "/api/v1/auth/register",
                &json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_error(r, 400, "invalid_username").await;
    }
    for (password, why) in [
        ("short1!", "12"),
        ("password1234", "weak"),
        ("aaaaaaaaaaaaaaaaaaaa", "weak"),
    ] {
        let r = app
            .post(
                "/api/v1/auth/register",
                &json!({"username": "bob", "password": password}),
            )
            .await;
        let b = assert_error(r, 400, "weak_password").await;
        assert!(b["error"]["message"].as_str().unwrap().contains(why), "{b}");
    }
    // Nothing was created along the way.
    assert_eq!(
        app.login("bob", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_taken_username_is_409_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(app.register("carol").await.status(), StatusCode::CREATED);
    assert_error(app.register("carol").await, 409, "username_taken").await;
    assert_error(app.register("CAROL").await, 409, "username_taken").await;
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.user("dave").await;
    let wrong = app.login("dave", "not the right password").await;
    let unknown = app.login("nobody-here", "not the right password").await;
    let malformed = app.login("!!", "not the right password").await;
    for r in [&wrong, &unknown, &malformed] {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"unhidra\"");
    }
    let (a, b, c) = (
        wrong.text().await.unwrap(),
        unknown.text().await.unwrap(),
        malformed.text().await.unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert!(a.contains("invalid_credentials"), "{a}");
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/api/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_work_once() {
    let app = spawn_app().await;
    let erin = app.user("erin").await;
    let r = refresh(&app, &erin.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second = body(r).await;
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r2, erin.refresh);
    let access2 = second["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(access2, "/api/v1/me").await.status(),
        StatusCode::OK
    );

    // The legitimate holder keeps rotating.
    let third = body(refresh(&app, r2).await).await;
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();

    // Someone replays the first token: refused, and the whole family dies with it.
    assert_error(
        refresh(&app, &erin.refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_error(refresh(&app, &r3).await, 401, "invalid_refresh_token").await;
    // Access tokens of the revoked session stop working at once.
    assert_error(app.get_as(access2, "/api/v1/me").await, 401, "unauthorized").await;
    assert_error(
        app.get_as(&erin.access, "/api/v1/me").await,
        401,
        "unauthorized",
    )
    .await;
    // Other sessions of the same user are untouched.
    let again = app.login("erin", PASSWORD).await;
    let fresh = body(again).await;
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(fresh_access, "/api/v1/me").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_through() {
    let app = spawn_app().await;
    let frank = app.user("frank").await;
    let attempts = (0..6).map(|_| refresh(&app, &frank.refresh));
    let statuses: Vec<u16> = futures_join(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
}

async fn futures_join(
    attempts: impl Iterator<Item = impl std::future::Future<Output = reqwest::Response>>,
) -> Vec<u16> {
    let handles: Vec<_> = attempts.collect();
    let mut out = Vec::new();
    for r in futures::future::join_all(handles).await {
        out.push(r.status().as_u16());
    }
    out
}

#[tokio::test]
async fn unknown_refresh_tokens_are_refused() {
    let app = spawn_app().await;
    for token in ["", "unh_rt_nope", "garbage"] {
        assert_error(refresh(&app, token).await, 401, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn sessions_end_when_their_lifetime_does() {
    let app = spawn_app().await;
    let gina = app.user("gina").await;
    app.clock.advance(time::Duration::days(31));
    assert_error(
        refresh(&app, &gina.refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn logout_ends_the_session_and_says_nothing_about_the_token() {
    let app = spawn_app().await;
    let hank = app.user("hank").await;
    let other = body(app.login("hank", PASSWORD).await).await;
    let r = app
        .post(
            "/api/v1/auth/logout",
            &json!({"refresh_token": hank.refresh}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(
        refresh(&app, &hank.refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_error(
        app.get_as(&hank.access, "/api/v1/me").await,
        401,
        "unauthorized",
    )
    .await;
    // The other session is still live.
    let other_access = other["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(other_access, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    // Unknown and already-ended tokens get the same 204.
    for token in [hank.refresh.as_str(), "unh_rt_unknown"] {
        let r = app
            .post("/api/v1/auth/logout", &json!({"refresh_token": token}))
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let ivy = app.user("ivy").await;
    let second = body(app.login("ivy", PASSWORD).await).await;
    let jack = app.user("jack").await;
    let r = app
        .post_as(&ivy.access, "/api/v1/auth/logout-all", &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for access in [
        ivy.access.as_str(),
        second["access_token"].as_str().unwrap(),
    ] {
        assert_error(app.get_as(access, "/api/v1/me").await, 401, "unauthorized").await;
    }
    let second_refresh = second["refresh_token"].as_str().unwrap();
    assert_error(
        refresh(&app, second_refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(
        app.get_as(&jack.access, "/api/v1/me").await.status(),
        StatusCode::OK
    );
}

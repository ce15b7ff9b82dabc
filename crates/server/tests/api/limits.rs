//! The per-IP rate limits at their exact default numbers, and whom `X-Forwarded-For` is
//! believed from.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

async fn assert_limited(r: reqwest::Response) {
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert_error(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn login_allows_10_a_minute_per_address() {
    let app = spawn_app_with(|_| {}).await;
    app.user("kate").await; // one login spent
    for i in 0..9 {
        let r = app
            .login(
                "kate",
                if i % 2 == 0 {
                    PASSWORD
                } else {
                    "wrong password!!"
                },
            )
            .await;
        assert_ne!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "attempt {}",
            i + 2
        );
    }
    // The 11th, right or wrong, is refused before any password work.
    assert_limited(app.login("kate", PASSWORD).await).await;
    assert_limited(app.login("nobody", "whatever it is").await).await;
}

#[tokio::test]
async fn registration_allows_5_an_hour_per_address() {
    let app = spawn_app_with(|_| {}).await;
    for i in 0..5 {
        assert_eq!(
            app.register(&format!("user{i}")).await.status(),
            StatusCode::CREATED
        );
    }
    assert_limited(app.register("user5").await).await;
    // Refused attempts created nothing.
    assert_error(
        app.login("user5", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn device_registration_allows_10_an_hour_per_address() {
    let app = spawn_app_with(|_| {}).await;
    let owner = app.user("owner").await;
    for i in 0..10 {
        app.device(&owner, &format!("d{i}")).await;
    }
    let r = app
        .post_as(&owner.access, "/api/v1/devices", &json!({"name": "d10"}))
        .await;
    assert_limited(r).await;
    let list = body(app.get_as(&owner.access, "/api/v1/devices").await).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit() {
    let app = spawn_app_with(|_| {}).await;
    for i in 0..5 {
        let r = app
            .client
            .post(app.url("/api/v1/auth/register"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"username": format!("user{i}"), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("x-forwarded-for", "198.51.100.99")
        .json(&json!({"username": "user99", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_limited(r).await;
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_counts_each_client() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.rate_limits.register_per_hour = 1;
    })
    .await;
    let register = |ip: &'static str, name: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/register"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
    };
    assert_eq!(register("203.0.113.1", "one").await.unwrap().status(), 201);
    assert_eq!(register("203.0.113.2", "two").await.unwrap().status(), 201);
    assert_limited(register("203.0.113.1", "three").await.unwrap()).await;
    // A client-supplied left-hand entry is ignored: the proxy appended the real address.
    assert_limited(register("10.9.9.9, 203.0.113.2", "four").await.unwrap()).await;
}

//! No password, token, device key or password hash ever reaches a log line (even at `trace`)
//! or a response that does not exist to hand it out.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{device_key_secret, Server};

/// Distinctive, so that any occurrence in the output is this password and nothing else.
const PASSWORD: &str = "quokka lantern meridian 7741";
const WRONG_PASSWORD: &str = "pelican harbour vestibule 0093";
const FORBIDDEN_IN_RESPONSES: [&str; 4] = ["api_key", "key_hash", "password_hash", "$argon2"];

fn assert_no_stored_secrets(what: &str, body: &serde_json::Value) {
    let text = body.to_string();
    for needle in FORBIDDEN_IN_RESPONSES {
        assert!(!text.contains(needle), "{what} contains {needle:?}: {text}");
    }
}

#[tokio::test]
async fn no_secret_appears_in_trace_logs_or_read_responses() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"), &[], &[("RUST_LOG", "trace")]).await;

    server.register("secretive", PASSWORD).await;
    let first = server.login("secretive", PASSWORD).await;
    let (status, body) = server.refresh(&first.refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated = crate::helpers::Tokens::from_body(&body);
    let (device_id, api_key) = server.create_device(&rotated.access, "camera").await;
    let (status, whoami) = server.get("/api/v1/device", Some(&api_key)).await;
    assert_eq!(status, StatusCode::OK, "{whoami}");
    assert_no_stored_secrets("GET /api/v1/device", &whoami);
    let response = server.login_response("secretive", WRONG_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, list) = server.get("/api/v1/devices", Some(&rotated.access)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["devices"][0]["device_id"], device_id.as_str());
    assert_no_stored_secrets("GET /api/v1/devices", &list);
    let (status, one) = server
        .get(
            &format!("/api/v1/devices/{device_id}"),
            Some(&rotated.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_no_stored_secrets("GET /api/v1/devices/{id}", &one);
    let (status, me) = server.get("/api/v1/me", Some(&rotated.access)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_no_stored_secrets("GET /api/v1/me", &me);
    // The refresh and logout endpoints answered too, with a token in the body.
    let response = server
        .request(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(&json!({ "refresh_token": rotated.refresh })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");

    let logs = server.logs().join("\n");
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "the server did not log at trace level; the test would prove nothing"
    );
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    let secrets = [
        ("the password", PASSWORD.to_owned()),
        ("the wrong password", WRONG_PASSWORD.to_owned()),
        ("the first access token", first.access.clone()),
        (
            "the first access token's signature",
            signature(&first.access),
        ),
        ("the first refresh token", first.refresh.clone()),
        ("the rotated access token", rotated.access.clone()),
        ("the rotated refresh token", rotated.refresh.clone()),
        ("the device key", api_key.clone()),
        ("the device key's secret", device_key_secret(&api_key)),
        ("a password hash", "$argon2id$".to_owned()),
    ];
    for (what, secret) in secrets {
        if let Some(line) = server.logs().iter().find(|l| l.contains(&secret)) {
            panic!("{what} appears in the server output:\n{line}");
        }
    }
}

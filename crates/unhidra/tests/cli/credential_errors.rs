//! A wrong password and an unknown user look the same from outside and cost the same work.

use reqwest::StatusCode;

use crate::helpers::{metric, Server, PASSWORD};

const VERIFY_COUNT: &str = "auth_password_hash_duration_seconds_count";

async fn verifications(server: &Server) -> f64 {
    metric(&server.metrics().await, VERIFY_COUNT, &[("op", "verify")]).unwrap_or(0.0)
}

/// Status, headers (minus `date`) and body bytes of a response.
async fn observed(response: reqwest::Response) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != reqwest::header::DATE)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    headers.sort();
    let body = response.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[], &[]).await;
    server.register("alice", PASSWORD).await;

    let before = verifications(&server).await;
    let wrong_password = observed(
        server
            .login_response("alice", "definitely not her password")
            .await,
    )
    .await;
    let after_wrong = verifications(&server).await;
    let unknown_user = observed(
        server
            .login_response("nobody-here", "definitely not her password")
            .await,
    )
    .await;
    let after_unknown = verifications(&server).await;

    assert_eq!(wrong_password.0, StatusCode::UNAUTHORIZED);
    let www_authenticate = wrong_password
        .1
        .iter()
        .find(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.as_str());
    assert_eq!(www_authenticate, Some("Bearer realm=\"unhidra\""));
    let body: serde_json::Value = serde_json::from_slice(&wrong_password.2).unwrap();
    assert_eq!(body["error"]["code"], "invalid_credentials", "{body}");

    assert_eq!(unknown_user.0, wrong_password.0);
    assert_eq!(unknown_user.1, wrong_password.1, "headers differ");
    assert_eq!(
        String::from_utf8_lossy(&unknown_user.2),
        String::from_utf8_lossy(&wrong_password.2),
        "bodies differ"
    );

    // Both requests ran one real Argon2 verification (the unknown user against a dummy hash).
    assert_eq!(
        after_wrong - before,
        1.0,
        "verifications for a wrong password"
    );
    assert_eq!(
        after_unknown - after_wrong,
        1.0,
        "verifications for an unknown user"
    );

    server.stop().await;
}

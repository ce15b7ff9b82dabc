//! `unhidra admin create-user` and what an administrator (and only one) may see.

use reqwest::StatusCode;

use crate::helpers::{cli, data_dir_args, error_code, Server, PASSWORD};

fn kinds(audit: &serde_json::Value) -> Vec<String> {
    audit["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {audit}"))
        .iter()
        .map(|e| e["kind"].as_str().expect("event kind").to_owned())
        .collect()
}

#[tokio::test]
async fn create_user_from_the_cli_then_only_admins_read_the_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data_dir_args(&data);

    let created = cli(
        &["admin", "create-user", "root", "--admin", dir[0], dir[1]],
        &[],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    let stdout = created.ok();
    assert!(
        stdout.contains("created user root (") && stdout.contains("as administrator"),
        "{stdout}"
    );

    // A weak password is refused, and no account is made.
    let weak = cli(
        &["admin", "create-user", "weakling", dir[0], dir[1]],
        &[],
        Some("password1234\n"),
    )
    .await;
    let message = weak.failed();
    assert!(message.contains("password is too weak"), "{message}");

    // The name is taken now.
    let duplicate = cli(
        &["admin", "create-user", "root", dir[0], dir[1]],
        &[],
        Some("another fine passphrase 42\n"),
    )
    .await;
    let message = duplicate.failed();
    assert!(message.contains("\"root\" is taken"), "{message}");

    let server = Server::start(&data, &[], &[]).await;
    let admin = server.login("root", PASSWORD).await;
    let (status, me) = server.get("/api/v1/me", Some(&admin.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["is_admin"], true, "{me}");

    // The duplicate did not replace the first account's password.
    let response = server
        .login_response("root", "another fine passphrase 42")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The refused account does not exist.
    let response = server.login_response("weakling", "password1234").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, audit) = server.get("/api/v1/admin/audit", Some(&admin.access)).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let kinds = kinds(&audit);
    assert!(kinds.iter().any(|k| k == "admin.user_created"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "auth.login.ok"), "{kinds:?}");
    let created_event = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "admin.user_created")
        .unwrap();
    assert_eq!(created_event["actor"], "cli", "{created_event}");
    assert_eq!(created_event["subject"], me["user_id"], "{created_event}");

    // A normal user is authenticated but not allowed.
    server.register("mallory", PASSWORD).await;
    let normal = server.login("mallory", PASSWORD).await;
    let (status, body) = server
        .get("/api/v1/admin/audit", Some(&normal.access))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "forbidden");

    server.stop().await;
}

//! Security events land in the audit log (over HTTP, for administrators) and in the JSON log
//! under target `unhidra::audit`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{cli, data_dir_args, error_code, Server, PASSWORD};

fn event<'a>(audit: &'a Value, kind: &str) -> &'a Value {
    audit["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {audit}"))
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {audit}"))
}

#[tokio::test]
async fn security_events_reach_the_audit_log_and_the_json_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data_dir_args(&data);
    cli(
        &["admin", "create-user", "auditor", "--admin", dir[0], dir[1]],
        &[],
        Some(&format!("{PASSWORD}\n")),
    )
    .await
    .ok();

    let mut server = Server::start_with_raised_limits(&data, tmp.path()).await;

    let user_id = server.register("alice", PASSWORD).await;
    let response = server.login_response("alice", "not alice's password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let tokens = server.login("alice", PASSWORD).await;

    // Use a refresh token twice: the second use is a reuse.
    let (status, rotated) = server.refresh(&tokens.refresh).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (status, body) = server.refresh(&tokens.refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "invalid_refresh_token");

    // The reuse ended the session, so log in again to manage devices.
    let tokens = server.login("alice", PASSWORD).await;
    let (device_id, _key) = server.create_device(&tokens.access, "doorbell").await;
    let response = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/devices/{device_id}"),
            Some(&tokens.access),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let admin = server.login("auditor", PASSWORD).await;
    let (status, audit) = server
        .get("/api/v1/admin/audit?limit=500", Some(&admin.access))
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");

    let register = event(&audit, "auth.register");
    assert_eq!(register["subject"], user_id.as_str(), "{register}");
    assert_eq!(register["ip"], "127.0.0.1", "{register}");
    let failed = event(&audit, "auth.login.failed");
    assert_eq!(failed["subject"], "alice", "{failed}");
    assert_eq!(failed["actor"], Value::Null, "{failed}");
    let ok = event(&audit, "auth.login.ok");
    assert!(ok["subject"].is_string(), "{ok}");
    let reuse = event(&audit, "auth.refresh.reuse");
    assert_eq!(reuse["subject"], user_id.as_str(), "{reuse}");
    let registered = event(&audit, "device.registered");
    assert_eq!(registered["subject"], device_id.as_str(), "{registered}");
    assert_eq!(registered["actor"], user_id.as_str(), "{registered}");
    let revoked = event(&audit, "device.revoked");
    assert_eq!(revoked["subject"], device_id.as_str(), "{revoked}");

    // Stop first, so that every line has been written and read.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let logged: Vec<String> = server
        .json_logs()
        .iter()
        .filter(|r| r["target"] == "unhidra::audit")
        .filter_map(|r| r["fields"]["kind"].as_str().map(str::to_owned))
        .collect();
    for kind in [
        "auth.register",
        "auth.login.failed",
        "auth.login.ok",
        "auth.refresh.reuse",
        "device.registered",
        "device.revoked",
    ] {
        assert!(
            logged.iter().any(|k| k == kind),
            "{kind} not among the audit log lines {logged:?}"
        );
    }
}

//! A restart on the same data dir keeps accounts, devices, sessions and keys.

use reqwest::StatusCode;

use crate::helpers::{Server, PASSWORD};

#[tokio::test]
async fn restart_keeps_users_devices_sessions_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let first = Server::start(&data, &[], &[]).await;
    let user_id = first.register("alice", PASSWORD).await;
    let tokens = first.login("alice", PASSWORD).await;
    let (device_id, api_key) = first.create_device(&tokens.access, "thermostat").await;
    let (status, device) = first.get("/api/v1/device", Some(&api_key)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["device_id"], device_id.as_str());
    first.stop().await;

    let second = Server::start(&data, &[], &[]).await;

    // The account survived: a fresh login works.
    let fresh = second.login("alice", PASSWORD).await;

    // The device survived, with its name and owner.
    let (status, list) = second.get("/api/v1/devices", Some(&fresh.access)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let devices = list["devices"].as_array().expect("a device list");
    assert_eq!(devices.len(), 1, "{list}");
    assert_eq!(devices[0]["device_id"], device_id.as_str());
    assert_eq!(devices[0]["name"], "thermostat");
    assert_eq!(devices[0]["owner_id"], user_id.as_str());

    // The access token issued before the restart still verifies: the signing key and the
    // session were persisted.
    let (status, me) = second.get("/api/v1/me", Some(&tokens.access)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user_id"], user_id.as_str());
    assert_eq!(me["username"], "alice");

    // The device key still authenticates: the pepper was persisted.
    let (status, device) = second.get("/api/v1/device", Some(&api_key)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["device_id"], device_id.as_str());

    second.stop().await;
}

/// Two servers on one data dir would each keep their own state of one database: the second
/// refuses to start and names the first; once the first has stopped, a new one starts.
#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = Server::start(&data, &[], &[]).await;
    let dir = crate::helpers::data_dir_args(&data);
    let second = crate::helpers::cli(
        &[
            "serve",
            dir[0],
            dir[1],
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
        None,
    )
    .await;
    let message = second.failed();
    let pid = first.process.pid();
    assert!(
        message.contains(&format!("is in use by another unhidra server (pid {pid})")),
        "{message}"
    );
    first.stop().await;
    Server::start(&data, &[], &[]).await.stop().await;
}

/// After a SIGKILL the kernel has released the claim: the next start needs no clean-up.
#[tokio::test]
async fn a_killed_servers_claim_on_the_data_dir_goes_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut first = Server::start(&data, &[], &[]).await;
    first.sigkill();
    first.wait_exit(std::time::Duration::from_secs(10)).await;
    Server::start(&data, &[], &[]).await.stop().await;
}

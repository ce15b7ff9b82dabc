//! Rotating and retiring token-signing keys with `unhidra keys`.

use std::path::Path;

use reqwest::StatusCode;

use crate::helpers::{cli, data_dir_args, jwt_kid, Server, PASSWORD};

/// `keys list` as (kid, active) pairs.
async fn list_keys(data: &Path) -> Vec<(String, bool)> {
    let dir = data_dir_args(data);
    let output = cli(&["keys", "list", dir[0], dir[1]], &[], None).await;
    output
        .ok()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let kid = words.next().unwrap().to_owned();
            let rest: Vec<&str> = words.collect();
            (kid, rest == ["(active)"])
        })
        .collect()
}

async fn jwks_kids(server: &Server) -> Vec<String> {
    let (status, jwks) = server.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK, "{jwks}");
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rotate_then_retire_a_signing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data_dir_args(&data);

    let server = Server::start(&data, &[], &[]).await;
    server.register("alice", PASSWORD).await;
    let t1 = server.login("alice", PASSWORD).await.access;
    let k1 = jwt_kid(&t1);
    assert_eq!(jwks_kids(&server).await, vec![k1.clone()]);
    server.stop().await;

    let rotated = cli(&["keys", "rotate", dir[0], dir[1]], &[], None).await;
    let k2 = rotated
        .ok()
        .lines()
        .find_map(|line| line.strip_prefix("added signing key "))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no new kid in {:?}", rotated.stdout))
        .to_owned();
    assert_ne!(k2, k1);
    assert_eq!(
        list_keys(&data).await,
        vec![(k1.clone(), false), (k2.clone(), true)]
    );

    let server = Server::start(&data, &[], &[]).await;
    let (status, me) = server.get("/api/v1/me", Some(&t1)).await;
    assert_eq!(status, StatusCode::OK, "a token of the old key: {me}");
    let t2 = server.login("alice", PASSWORD).await.access;
    assert_eq!(jwt_kid(&t2), k2, "new tokens are signed with the new key");
    assert_eq!(jwks_kids(&server).await, vec![k1.clone(), k2.clone()]);
    server.stop().await;

    let retired = cli(&["keys", "retire", &k1, dir[0], dir[1]], &[], None).await;
    retired.ok();
    assert_eq!(list_keys(&data).await, vec![(k2.clone(), true)]);

    let server = Server::start(&data, &[], &[]).await;
    let (status, body) = server.get("/api/v1/me", Some(&t1)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token of a retired key: {body}"
    );
    let (status, body) = server.get("/api/v1/me", Some(&t2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t3 = server.login("alice", PASSWORD).await.access;
    assert_eq!(jwt_kid(&t3), k2);
    let (status, body) = server.get("/api/v1/me", Some(&t3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(jwks_kids(&server).await, vec![k2.clone()]);
    server.stop().await;

    // The active key cannot be retired.
    let refused = cli(&["keys", "retire", &k2, dir[0], dir[1]], &[], None).await;
    let message = refused.failed();
    assert!(message.contains("active signing key"), "{message}");
    assert_eq!(list_keys(&data).await, vec![(k2, true)]);
}

#[tokio::test]
async fn key_commands_on_a_fresh_data_dir_create_no_surprises() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data_dir_args(&data);
    // Listing creates nothing.
    let out = cli(&["keys", "list", dir[0], dir[1]], &[], None).await;
    assert!(out.ok().contains("no signing keys yet"), "{}", out.stdout);
    assert!(!data.exists(), "keys list created the data dir");
    // Rotating a fresh dir creates exactly one key, the one it names.
    let out = cli(&["keys", "rotate", dir[0], dir[1]], &[], None).await;
    let line = out.ok().trim().to_owned();
    // Command output is only the command's own: log lines go to stderr, uncoloured.
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        !out.stderr.contains('\u{1b}'),
        "colour codes in {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("admin.signing_key_rotated"),
        "{}",
        out.stderr
    );
    let keys = list_keys(&data).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].1);
    assert!(line.contains(&keys[0].0), "{line}");
}

/// The keys commands know what a running server does: it signs with the key it loaded until
/// it restarts, so `rotate` and `list` say so, and retiring that key is refused without
/// `--force` (its sessions would end at the next restart). Every refusal is said once.
#[tokio::test]
async fn key_commands_tell_what_the_running_server_signs_with() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data_dir_args(&data);
    let server = Server::start(&data, &[], &[]).await;
    server.register("alice", PASSWORD).await;
    let k1 = jwt_kid(&server.login("alice", PASSWORD).await.access);
    assert_eq!(list_keys(&data).await, vec![(k1.clone(), true)]);

    let rotated = cli(&["keys", "rotate", dir[0], dir[1]], &[], None).await;
    let line = rotated.ok().trim().to_owned();
    let k2 = line
        .strip_prefix("added signing key ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no new kid in {line:?}"))
        .to_owned();
    let pid = server.process.pid();
    assert!(
        line.contains(&format!(
            "the running server (pid {pid}) signs with {k1} until it restarts"
        )),
        "{line}"
    );
    // The running server still signs with k1.
    assert_eq!(jwt_kid(&server.login("alice", PASSWORD).await.access), k1);
    let listed = cli(&["keys", "list", dir[0], dir[1]], &[], None).await;
    let text = listed.ok().to_owned();
    assert!(
        text.contains(&format!(
            "{k1}  (active: the running server, pid {pid}, signs with it)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{k2}  (newest: signs from the server's next start)"
        )),
        "{text}"
    );

    // Retiring the key the server signs with is refused, said once, and changes nothing.
    let refused = cli(&["keys", "retire", &k1, dir[0], dir[1]], &[], None).await;
    let message = refused.failed();
    assert!(
        message.contains("signs the running server's access tokens"),
        "{message}"
    );
    assert_eq!(message.matches(&k1).count(), 1, "{message}");
    assert_eq!(
        cli(&["keys", "list", dir[0], dir[1]], &[], None)
            .await
            .ok()
            .lines()
            .count(),
        2
    );
    // The newest key cannot be retired either; that refusal too is said once.
    let refused = cli(&["keys", "retire", &k2, dir[0], dir[1]], &[], None).await;
    let message = refused.failed();
    assert!(message.contains("active signing key"), "{message}");
    assert_eq!(
        message.matches("active signing key").count(),
        1,
        "{message}"
    );

    // After a restart the server signs with k2, and k1 may go.
    server.stop().await;
    let server = Server::start(&data, &[], &[]).await;
    assert_eq!(jwt_kid(&server.login("alice", PASSWORD).await.access), k2);
    cli(&["keys", "retire", &k1, dir[0], dir[1]], &[], None)
        .await
        .ok();
    assert_eq!(list_keys(&data).await, vec![(k2.clone(), true)]);

    // --force retires the running server's key when the operator means it (a leaked key):
    // rotate, then force out the key still in use.
    let rotated = cli(&["keys", "rotate", dir[0], dir[1]], &[], None).await;
    rotated.ok();
    let forced = cli(
        &["keys", "retire", &k2, "--force", dir[0], dir[1]],
        &[],
        None,
    )
    .await;
    forced.ok();
    assert_eq!(list_keys(&data).await.len(), 1);
    server.stop().await;
}

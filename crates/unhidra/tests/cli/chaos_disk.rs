//! Chaos: the data dir's file system fills up, or turns read-only, under a running server.
//!
//! The data dir is a small file system the test makes (as root): a tmpfs with `size=` for a
//! full disk, and an ext4 image on a loop device for a read-only one. While it is full or
//! read-only, clients publish, upload files, send telemetry, register and log in: each gets
//! a clear refusal (503 with `storage_unavailable` and `Retry-After` on REST, an `error`
//! frame with that code on the socket), never a 500, never an ack for something not stored;
//! reads go on working. Then the fault goes away and everything acked is there, `PRAGMA
//! integrity_check` says `ok`, and writes work again.
//!
//! A full disk recovers without a restart: space is freed and the next writes succeed. A
//! read-only file system cannot come back under a running server: `mount -o remount,ro`
//! is refused (`EBUSY`) while SQLite holds its files open for writing, so the test takes the
//! way a data dir really goes read-only, the kernel's: ext4 with `errors=remount-ro` after an
//! error (`/sys/fs/ext4/<dev>/trigger_fs_error`). Such a file system needs an unmount and
//! `e2fsck` before it is writable again, so the server is stopped, the file system repaired
//! and remounted, and the server started again on it.
//!
//! Without root these tests are reported as ignored (see `unhidra-test-gates`), and `.ci/run`
//! fails on an ignored test.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    error_code, str_field, ws_recv_json, ws_send, ws_subscribe, Ack, Server, Tokens, Ws, PASSWORD,
    RAISED_WS_LIMITS,
};

/// Runs a system command to completion; panics with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A file system mounted for one test; unmounted when dropped, whatever happened (lazily,
/// if something still holds it).
struct Mount {
    path: PathBuf,
    mounted: bool,
}

impl Mount {
    /// A tmpfs of `size` (as `mount` reads it, e.g. `24m`) at `path`.
    fn tmpfs(path: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let options = format!("size={size},mode=0700");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &options,
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Mount {
            path: path.to_owned(),
            mounted: true,
        }
    }

    /// The ext4 file system in `image` at `path`, read-only after an error.
    fn ext4(image: &Path, path: &Path) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let mut mount = Mount {
            path: path.to_owned(),
            mounted: false,
        };
        mount.mount_ext4(image);
        mount
    }

    fn mount_ext4(&mut self, image: &Path) {
        let (image, target) = (image.to_str().unwrap(), self.path.to_str().unwrap());
        run("mount", &["-o", "loop,errors=remount-ro", image, target]);
        self.mounted = true;
    }

    /// The block device under the mount (`/dev/loopN`).
    fn device(&self) -> String {
        run(
            "findmnt",
            &["-n", "-o", "SOURCE", self.path.to_str().unwrap()],
        )
        .trim()
        .to_owned()
    }

    /// Unmounts now; fails the test if something still holds the file system.
    fn unmount(&mut self) {
        run("umount", &[self.path.to_str().unwrap()]);
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let target = self.path.to_str().unwrap_or_default().to_owned();
        let done = Command::new("umount")
            .arg(&target)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").args(["-l", &target]).status();
        }
    }
}

/// Appends zeros to `path` until the file system has no space left; returns the bytes
/// written. Called again before each write the test makes while the disk is full, since
/// whatever a refused write had taken (a partial WAL frame, an upload's temporary file) is
/// free again for the next small one.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut written = 0u64;
    let mut chunk = 1 << 20;
    let zeros = vec![0u8; chunk];
    while chunk >= 512 {
        match file.write(&zeros[..chunk]) {
            Ok(0) => chunk /= 2,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => chunk /= 2,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever fsync says on a full disk, the pages are taken.
    let _ = file.sync_all();
    written
}

/// The data dir's database: `PRAGMA integrity_check`, read-only, after the server stopped.
async fn integrity_check(data_dir: &Path) -> String {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("unhidra.db"))
        .read_only(true)
        .connect()
        .await
        .expect("opening the database");
    let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("PRAGMA integrity_check");
    // Closed before the file system is unmounted, or it is busy.
    conn.close().await.expect("closing the database");
    rows.into_iter()
        .map(|(r,)| r)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Alice (with a device) and Bob in a channel; Alice's and the device's sockets.
struct Scene {
    alice: Tokens,
    device_key: String,
    channel: String,
    ws: Ws,
    device: Ws,
    /// Every ack Alice got: client_msg_id → ack.
    acked: HashMap<String, Ack>,
    /// Refused publishes, to be resent when the storage is back.
    refused: Vec<String>,
    /// Users registered and channels created while the disk was full (answered 201).
    registered: Vec<String>,
    channels: Vec<String>,
}

async fn scene(server: &Server) -> Scene {
    server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let alice = server.login("alice", PASSWORD).await;
    let channel = server.create_channel(&alice.access, "disk", &[&bob]).await;
    let (_, key) = server.create_device(&alice.access, "gauge").await;
    let (ws, _) = server.ws_connect(&alice.access).await;
    let (device, _) = server.ws_connect_device(&key).await;
    Scene {
        alice,
        device_key: key,
        channel,
        ws,
        device,
        acked: HashMap::new(),
        refused: Vec::new(),
        registered: Vec::new(),
        channels: Vec::new(),
    }
}

/// How a write went.
#[derive(Debug, PartialEq)]
enum Outcome {
    Stored,
    /// Refused with `storage_unavailable`.
    Refused,
}

/// Reads the answer to a publish: an ack (noted), or a `storage_unavailable` error naming it.
/// Anything else fails the test.
async fn publish_answer(scene: &mut Scene, id: &str) -> Outcome {
    let frame = ws_recv_json(&mut scene.ws).await;
    match frame["type"].as_str() {
        Some("ack") => {
            let (acked, ack) = Ack::from_frame(&frame);
            assert_eq!(acked, id, "{frame}");
            assert!(
                scene.acked.insert(acked, ack).is_none(),
                "acked twice: {frame}"
            );
            Outcome::Stored
        }
        Some("error") => {
            assert_eq!(frame["code"], "storage_unavailable", "{frame}");
            assert_eq!(frame["ref"], id, "{frame}");
            let message = frame["message"].as_str().unwrap_or_default();
            assert!(message.contains("storage"), "{frame}");
            Outcome::Refused
        }
        _ => panic!("unexpected answer to publish {id}: {frame}"),
    }
}

/// Publishes one message with a body of `size` bytes; returns how it went.
async fn publish(scene: &mut Scene, id: &str, size: usize) -> Outcome {
    let body = format!("{id} {}", "x".repeat(size));
    ws_send(
        &mut scene.ws,
        &json!({"type": "publish", "channel": scene.channel, "body": body, "client_msg_id": id}),
    )
    .await;
    let outcome = publish_answer(scene, id).await;
    if outcome == Outcome::Refused {
        scene.refused.push(id.to_owned());
    }
    outcome
}

/// Sends one telemetry frame from the device, then a ping: the session handles frames in
/// order, so a refusal comes before the pong, and a pong alone means stored.
async fn telemetry(scene: &mut Scene, value: f64) -> Outcome {
    ws_send(
        &mut scene.device,
        &json!({"type": "telemetry", "metrics": {"level": value}}),
    )
    .await;
    ws_send(&mut scene.device, &json!({"type": "ping"})).await;
    let mut outcome = Outcome::Stored;
    loop {
        let frame = ws_recv_json(&mut scene.device).await;
        match frame["type"].as_str() {
            Some("pong") => return outcome,
            Some("error") => {
                assert_eq!(frame["code"], "storage_unavailable", "{frame}");
                outcome = Outcome::Refused;
            }
            // Commands and other device frames are not part of this test.
            _ => panic!("unexpected frame to the device: {frame}"),
        }
    }
}

/// Uploads `size` bytes to the channel; returns the status and the JSON body.
async fn upload(
    server: &Server,
    scene: &Scene,
    name: &str,
    size: usize,
) -> (StatusCode, Value, bool) {
    let response = server
        .client
        .post(server.url(&format!(
            "/api/v1/channels/{}/files?name={name}",
            scene.channel
        )))
        .bearer_auth(&scene.alice.access)
        .header("Content-Type", "application/octet-stream")
        .body(vec![7u8; size])
        .send()
        .await
        .expect("upload");
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("upload answered {status} with non-JSON {text:?}: {e}"));
    (status, body, retry_after)
}

/// A refusal as the API promises it: 503, `storage_unavailable`, a message saying so, and
/// `Retry-After`.
fn assert_storage_refusal(what: &str, status: StatusCode, body: &Value, retry_after: bool) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(error_code(body), "storage_unavailable", "{what}: {body}");
    assert!(retry_after, "{what}: no Retry-After");
}

/// A JSON request, with whether `Retry-After` came.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (StatusCode, Value, bool) {
    let response = server.request(method, path, bearer, Some(body)).await;
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"))
    };
    (status, body, retry_after)
}

/// Every write a client can make, while the storage is out: each is refused clearly (none
/// may be stored silently either: a publish that is acked is noted and checked later).
///
/// `filler` (for a full disk) is topped up before each write.
async fn writes_are_refused(
    server: &Server,
    scene: &mut Scene,
    round: &str,
    filler: Option<&Path>,
) {
    let top_up = || {
        if let Some(filler) = filler {
            fill(filler);
        }
    };
    let mut refused = 0;
    for i in 0..200 {
        top_up();
        if publish(scene, &format!("{round}-{i}"), 16 * 1024).await == Outcome::Refused {
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "{round}: publishes kept being acked");

    top_up();
    let (status, body, retry_after) = upload(server, scene, "big.bin", 256 * 1024).await;
    assert_storage_refusal("upload", status, &body, retry_after);

    let mut refused_telemetry = false;
    for i in 0..200 {
        top_up();
        if telemetry(scene, f64::from(i)).await == Outcome::Refused {
            refused_telemetry = true;
            break;
        }
    }
    assert!(refused_telemetry, "{round}: telemetry kept being stored");

    // A small write may still fit where the database's files have room left (SQLite reuses
    // its WAL from the start after a checkpoint): on a full disk a registration, a new
    // channel or a login (a session and an audit event) is either done, and checked once the
    // storage is back, or refused clearly. On a read-only file system nothing fits.
    for i in 0..5 {
        top_up();
        let name = format!("carol{round}{i}");
        let (status, body, retry_after) = call(
            server,
            reqwest::Method::POST,
            "/api/v1/auth/register",
            None,
            &json!({"username": name, "password": PASSWORD}),
        )
        .await;
        if status == StatusCode::CREATED && filler.is_some() {
            scene.registered.push(name);
        } else {
            assert_storage_refusal("register", status, &body, retry_after);
        }
        top_up();
        let name = format!("more-{round}-{i}");
        let (status, body, retry_after) = call(
            server,
            reqwest::Method::POST,
            "/api/v1/channels",
            Some(&scene.alice.access),
            &json!({"name": name, "private": true}),
        )
        .await;
        if status == StatusCode::CREATED && filler.is_some() {
            scene.channels.push(name);
        } else {
            assert_storage_refusal("create channel", status, &body, retry_after);
        }
        top_up();
        let (status, body, retry_after) = call(
            server,
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
        if status != StatusCode::OK || filler.is_none() {
            assert_storage_refusal("login", status, &body, retry_after);
        }
    }

    // Reads go on.
    let (status, body) = server
        .get(
            &format!("/api/v1/channels/{}/messages", scene.channel),
            Some(&scene.alice.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "history while {round}: {body}");
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Every write works: the refused publishes are resent (same client_msg_id) and acked, and
/// new ones, an upload, telemetry, a registration and a login succeed.
async fn writes_work(server: &Server, scene: &mut Scene, round: &str) {
    for id in std::mem::take(&mut scene.refused) {
        assert_eq!(
            publish(scene, &id, 16 * 1024).await,
            Outcome::Stored,
            "{id}"
        );
    }
    for i in 0..5 {
        let id = format!("{round}-after-{i}");
        assert_eq!(publish(scene, &id, 100).await, Outcome::Stored, "{id}");
    }
    let (status, body, _) = upload(server, scene, "after.bin", 64 * 1024).await;
    assert_eq!(status, StatusCode::CREATED, "upload after {round}: {body}");
    assert_eq!(telemetry(scene, 1.0).await, Outcome::Stored);
    server.register(&format!("dave{round}"), PASSWORD).await;
    server.login("alice", PASSWORD).await;
    // What was answered 201 while the disk was full is stored.
    for name in &scene.registered {
        server.login(name, PASSWORD).await;
    }
    let (status, list) = server
        .get("/api/v1/channels", Some(&scene.alice.access))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    for name in &scene.channels {
        assert!(
            list.to_string().contains(&format!("\"{name}\"")),
            "{name} is gone: {list}"
        );
    }
    eprintln!(
        "{round}: {} registrations and {} channels were stored while the storage was out",
        scene.registered.len(),
        scene.channels.len()
    );
}

/// Replays the channel: every acked message is there with its ack, once; message seqs
/// follow one another after Bob's joining (seq 1).
async fn acked_messages_are_stored(server: &Server, scene: &Scene) {
    let (mut ws, _) = server.ws_connect(&scene.alice.access).await;
    let (messages, last) = ws_subscribe(&mut ws, &scene.channel, Some(0)).await;
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (2..2 + i64::try_from(messages.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "message seqs are not gap-free");
    assert_eq!(last, *expected.last().unwrap_or(&1));
    let stored: HashMap<String, Ack> = messages
        .iter()
        .map(|m| (str_field(m, "client_msg_id"), Ack::of_message(m)))
        .collect();
    assert_eq!(
        stored.len(),
        messages.len(),
        "a client_msg_id is stored twice"
    );
    for (id, ack) in &scene.acked {
        assert_eq!(
            stored.get(id),
            Some(ack),
            "acked {id} is not stored as acked"
        );
    }
    assert_eq!(
        stored.len(),
        scene.acked.len(),
        "stored messages that were never acked"
    );
}

fn assert_no_panic(server: &Server) {
    let text = server.process.text();
    assert!(!text.contains("panicked"), "the server panicked:\n{text}");
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_root),
    ignore = "needs root: mounts a tmpfs as the data dir"
)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let config = crate::helpers::write_config(tmp.path(), RAISED_WS_LIMITS);
    let mut mount = Mount::tmpfs(&tmp.path().join("disk"), "24m");
    let data = mount.path.join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()], &[]).await;
    let mut scene = scene(&server).await;
    for i in 0..5 {
        assert_eq!(
            publish(&mut scene, &format!("before-{i}"), 100).await,
            Outcome::Stored
        );
    }
    assert_eq!(telemetry(&mut scene, 0.5).await, Outcome::Stored);

    let filler = mount.path.join("filler");
    let filled = fill(&filler);
    eprintln!("disk full: {filled} bytes of filler");
    writes_are_refused(&server, &mut scene, "full", Some(&filler)).await;

    std::fs::remove_file(&filler).unwrap();
    writes_work(&server, &mut scene, "full").await;
    acked_messages_are_stored(&server, &scene).await;
    eprintln!(
        "disk full: {} messages acked, all stored; writes work again without a restart",
        scene.acked.len()
    );
    assert_no_panic(&server);
    server.stop().await;
    assert_eq!(integrity_check(&data).await, "ok");
    mount.unmount();
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_root),
    ignore = "needs root: mounts an ext4 image on a loop device as the data dir"
)]
async fn a_read_only_file_system_refuses_writes_clearly_and_loses_nothing_acked() {
    let tmp = tempfile::tempdir().unwrap();
    let config = crate::helpers::write_config(tmp.path(), RAISED_WS_LIMITS);
    let image = tmp.path().join("data.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // No blocks reserved for root: the server runs as root in CI.
    run(
        "mkfs.ext4",
        &["-q", "-F", "-m", "0", image.to_str().unwrap()],
    );
    let mut mount = Mount::ext4(&image, &tmp.path().join("disk"));
    let data = mount.path.join("data");
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start(&data, &args, &[]).await;
    let mut scene = scene(&server).await;
    for i in 0..5 {
        assert_eq!(
            publish(&mut scene, &format!("before-{i}"), 100).await,
            Outcome::Stored
        );
    }
    assert_eq!(telemetry(&mut scene, 0.5).await, Outcome::Stored);

    // The kernel takes the file system read-only under the running server, as it does when
    // it finds an error on the disk (errors=remount-ro).
    let device = mount.device();
    let name = Path::new(&device).file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("/sys/fs/ext4/{name}/trigger_fs_error"),
        "chaos test",
    )
    .unwrap();
    let probe = std::fs::write(mount.path.join("probe"), "x");
    assert!(
        matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem),
        "the file system is not read-only: {probe:?}"
    );
    writes_are_refused(&server, &mut scene, "readonly", None).await;
    assert_no_panic(&server);

    // It stays read-only until it is unmounted and repaired: stop the server, which must
    // not hang or panic on its way out, then e2fsck and mount it again.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_no_panic(&server);
    eprintln!("read-only: the server exited with {status} after SIGTERM");
    mount.unmount();
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y", image.to_str().unwrap()])
        .output()
        .unwrap();
    // 0: clean, 1: errors corrected (the error the kernel recorded).
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    mount.mount_ext4(&image);

    let server = Server::start(&data, &args, &[]).await;
    scene.ws = server.ws_connect(&scene.alice.access).await.0;
    scene.device = server.ws_connect_device(&scene.device_key).await.0;
    writes_work(&server, &mut scene, "readonly").await;
    acked_messages_are_stored(&server, &scene).await;
    eprintln!(
        "read-only: {} messages acked, all stored after e2fsck and a restart",
        scene.acked.len()
    );
    assert_no_panic(&server);
    server.stop().await;
    assert_eq!(integrity_check(&data).await, "ok");
    mount.unmount();
}

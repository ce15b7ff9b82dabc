//! Files in channels: upload, download and description, for members only, served so that
//! no uploaded file can run script in the browser.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use unhidra_server::Clock;

use crate::helpers::*;

async fn channel(app: &TestApp, owner: &User, name: &str, private: bool) -> String {
    let r = app
        .post_as(
            &owner.access,
            "/api/v1/channels",
            &json!({"name": name, "private": private}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/channels/{channel}/files?name=…` with the bytes as the body.
pub(crate) async fn upload(
    app: &TestApp,
    token: Option<&str>,
    channel: &str,
    name: Option<&str>,
    content_type: Option<&str>,
    bytes: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/channels/{channel}/files")))
        .body(bytes);
    if let Some(name) = name {
        req = req.query(&[("name", name)]);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

/// Uploads and expects 201; returns the FileInfo.
async fn stored(
    app: &TestApp,
    who: &User,
    channel: &str,
    name: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Value {
    let r = upload(
        app,
        Some(&who.access),
        channel,
        Some(name),
        content_type,
        bytes.to_vec(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    body(r).await
}

async fn download(app: &TestApp, who: &User, id: &str) -> Response {
    app.get_as(&who.access, &format!("/api/v1/files/{id}"))
        .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_dir(app: &TestApp) -> PathBuf {
    app.config.data_dir.join("files")
}

/// Every blob on disk, by path.
fn blobs(app: &TestApp) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for shard in std::fs::read_dir(files_dir(app).join("sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            found.push(blob.unwrap().path());
        }
    }
    found.sort();
    found
}

fn temp_files(app: &TestApp) -> usize {
    std::fs::read_dir(files_dir(app).join("tmp"))
        .unwrap()
        .count()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Rows in the store's `files` table, read straight from the database.
async fn file_rows(app: &TestApp) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(unhidra_server::paths::database(&app.config.data_dir))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM files")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// A counter's value in the process-wide recorder (0 before its first increment).
fn counter(name: &str) -> f64 {
    let text = unhidra_server::metrics::install().render();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn an_upload_comes_back_byte_for_byte_as_a_sandboxed_attachment() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "photos", true).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let (uploads, uploaded_bytes) = (
        counter("files_uploaded_total"),
        counter("files_uploaded_bytes_total"),
    );

    let info = stored(&app, &alice, &room, "cat.png", Some("image/png"), &bytes).await;
    let id = info["id"].as_str().unwrap().to_owned();
    let now = app.clock.now();
    let created_at = now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000));
    assert_eq!(
        info,
        json!({
            "id": id,
            "channel_id": room,
            "name": "cat.png",
            "size": 70_000,
            "content_type": "image/png",
            "sha256": sha256_hex(&bytes),
            "uploader_id": alice.id,
            "created_at": created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        })
    );
    assert!(counter("files_uploaded_total") >= uploads + 1.0);
    assert!(counter("files_uploaded_bytes_total") >= uploaded_bytes + 70_000.0);

    let r = download(&app, &alice, &id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(header(&r, "content-length"), "70000");
    assert_eq!(
        header(&r, "content-disposition"),
        "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png"
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&r, "content-security-policy"),
        "sandbox; default-src 'none'"
    );
    assert_eq!(header(&r, "cache-control"), "private, max-age=86400");
    assert_eq!(header(&r, "vary"), "authorization");
    assert_eq!(r.bytes().await.unwrap(), bytes);

    let r = app
        .get_as(&alice.access, &format!("/api/v1/files/{id}/info"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(body(r).await, info);
}

#[tokio::test]
async fn only_members_of_the_channel_upload_and_download() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let secret = channel(&app, &alice, "secret", true).await;
    let lobby = channel(&app, &alice, "lobby", false).await;
    let hidden = stored(
        &app,
        &alice,
        &secret,
        "plans.txt",
        Some("text/plain"),
        b"plans",
    )
    .await;
    let posted = stored(
        &app,
        &alice,
        &lobby,
        "menu.txt",
        Some("text/plain"),
        b"menu",
    )
    .await;
    let hidden_id = hidden["id"].as_str().unwrap();
    let posted_id = posted["id"].as_str().unwrap();

    // Not a member: a file is as unknown as one that never existed.
    for id in [hidden_id, posted_id, "0192f0c0-0000-7000-8000-000000000000"] {
        let r = download(&app, &bob, id).await;
        assert_error(r, 404, "not_found").await;
        let r = app
            .get_as(&bob.access, &format!("/api/v1/files/{id}/info"))
            .await;
        assert_error(r, 404, "not_found").await;
    }
    // Uploads follow the channels' rule: a private channel is 404, a public one 403.
    let r = upload(&app, Some(&bob.access), &secret, Some("x.txt"), None, "x").await;
    assert_error(r, 404, "not_found").await;
    let r = upload(&app, Some(&bob.access), &lobby, Some("x.txt"), None, "x").await;
    assert_error(r, 403, "forbidden").await;
    let r = upload(
        &app,
        Some(&bob.access),
        "no-such-channel",
        Some("x.txt"),
        None,
        "x",
    )
    .await;
    assert_error(r, 404, "not_found").await;
    assert_eq!(file_rows(&app).await, 2);

    // Joined: files of the channel, old ones too, but still not those of others.
    let r = app
        .post_as(
            &bob.access,
            &format!("/api/v1/channels/{lobby}/members"),
            &json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = download(&app, &bob, posted_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"menu");
    stored(&app, &bob, &lobby, "mine.txt", None, b"mine").await;
    assert_error(download(&app, &bob, hidden_id).await, 404, "not_found").await;

    // Left: gone again.
    let r = app
        .delete_as(
            &bob.access,
            &format!("/api/v1/channels/{lobby}/members/{}", bob.id),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(download(&app, &bob, posted_id).await, 404, "not_found").await;
}

#[tokio::test]
async fn files_need_an_access_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;
    let info = stored(&app, &alice, &room, "a.txt", None, b"a").await;
    let id = info["id"].as_str().unwrap();

    let r = upload(&app, None, &room, Some("b.txt"), None, "b").await;
    assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"unhidra\"");
    assert_error(r, 401, "unauthorized").await;
    for path in [
        format!("/api/v1/files/{id}"),
        format!("/api/v1/files/{id}/info"),
    ] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        assert_error(r, 401, "unauthorized").await;
        let r = app.get_as("not-a-token", &path).await;
        assert_error(r, 401, "unauthorized").await;
    }
    assert_eq!(file_rows(&app).await, 1);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_leaves_nothing() {
    let app = spawn_app_with(|c| c.files.max_upload_bytes = 1024).await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;

    let at_limit = vec![b'a'; 1024];
    let info = stored(&app, &alice, &room, "full.bin", None, &at_limit).await;
    assert_eq!(info["size"], 1024);
    assert_eq!(blobs(&app).len(), 1);

    // Declared too long: refused before reading.
    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("big.bin"),
        None,
        vec![b'b'; 1025],
    )
    .await;
    let b = assert_error(r, 413, "payload_too_large").await;
    assert!(
        b["error"]["message"].as_str().unwrap().contains("1024"),
        "{b}"
    );
    // No length given (chunked): refused once the count passes the limit.
    let chunks = futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![b'c'; 500])));
    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("big.bin"),
        None,
        reqwest::Body::wrap_stream(chunks),
    )
    .await;
    assert_error(r, 413, "payload_too_large").await;

    assert_eq!(temp_files(&app), 0);
    assert_eq!(blobs(&app).len(), 1);
    assert_eq!(file_rows(&app).await, 1);
}

#[tokio::test]
async fn identical_content_is_two_files_and_one_private_blob() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = channel(&app, &alice, "a", true).await;
    let b = channel(&app, &bob, "b", true).await;
    let bytes = b"the same report, twice".to_vec();

    let first = stored(&app, &alice, &a, "report.txt", Some("text/plain"), &bytes).await;
    let second = stored(&app, &bob, &b, "copy.txt", Some("text/plain"), &bytes).await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["sha256"], second["sha256"]);
    let hash = first["sha256"].as_str().unwrap();
    assert_eq!(hash, sha256_hex(&bytes));

    let files = files_dir(&app);
    let blob = files.join("sha256").join(&hash[..2]).join(hash);
    assert_eq!(blobs(&app), vec![blob.clone()]);
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);
    assert_eq!(mode(&blob), 0o600);
    for dir in [
        files.clone(),
        files.join("sha256"),
        files.join("sha256").join(&hash[..2]),
        files.join("tmp"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(temp_files(&app), 0);
    assert_eq!(file_rows(&app).await, 2);

    // Each keeps its own name and channel; Bob still cannot read Alice's.
    let r = download(&app, &bob, second["id"].as_str().unwrap()).await;
    assert!(header(&r, "content-disposition").contains("filename=\"copy.txt\""));
    assert_eq!(r.bytes().await.unwrap(), bytes);
    let r = download(&app, &bob, first["id"].as_str().unwrap()).await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn html_svg_and_unknown_types_are_served_as_inert_bytes() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;
    let cases: [(&str, Option<&str>, &[u8], &str); 6] = [
        (
            "page.html",
            Some("text/html; charset=utf-8"),
            b"<script>alert(document.domain)</script>",
            "application/octet-stream",
        ),
        (
            "logo.svg",
            Some("image/svg+xml"),
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>",
            "application/octet-stream",
        ),
        (
            "page.xhtml",
            Some("Application/XHTML+XML"),
            b"<html xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script></html>",
            "application/octet-stream",
        ),
        (
            "no-type",
            None,
            b"<html><script>alert(1)</script></html>",
            "application/octet-stream",
        ),
        (
            "notes.txt",
            Some("text/plain; charset=iso-8859-1"),
            b"plain <b>text</b>",
            "text/plain; charset=utf-8",
        ),
        (
            "photo.jpg",
            Some("image/jpeg"),
            b"\xff\xd8\xff\xe0 not really a jpeg",
            "image/jpeg",
        ),
    ];
    for (name, declared, bytes, served) in cases {
        let info = stored(&app, &alice, &room, name, declared, bytes).await;
        // The declared type is kept as declared (essence, lowercased) …
        let expected = declared.map_or("application/octet-stream".to_owned(), |d| {
            d.split(';').next().unwrap().to_ascii_lowercase()
        });
        assert_eq!(info["content_type"], expected, "{name}");
        // … and served only if it is inert.
        let r = download(&app, &alice, info["id"].as_str().unwrap()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), served, "{name}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(header(&r, "content-disposition").starts_with("attachment; "));
        assert_eq!(
            header(&r, "content-security-policy"),
            "sandbox; default-src 'none'"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes, "{name}");
    }

    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("x"),
        Some("nonsense"),
        "x",
    )
    .await;
    assert_error(r, 400, "invalid_field").await;
}

#[tokio::test]
async fn file_names_are_checked_and_sent_back_safely() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;

    let names = [
        (
            "say \"hi\" 100%.txt",
            "attachment; filename=\"say _hi_ 100_.txt\"; \
             filename*=UTF-8''say%20%22hi%22%20100%25.txt",
        ),
        (
            "résumé ☀.pdf",
            "attachment; filename=\"r_sum_ _.pdf\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%98%80.pdf",
        ),
        (
            "a;b=c,d'e.txt",
            "attachment; filename=\"a;b=c,d'e.txt\"; filename*=UTF-8''a%3Bb%3Dc%2Cd%27e.txt",
        ),
    ];
    for (name, disposition) in names {
        let info = stored(&app, &alice, &room, name, None, b"x").await;
        assert_eq!(info["name"], name);
        let r = download(&app, &alice, info["id"].as_str().unwrap()).await;
        assert_eq!(header(&r, "content-disposition"), disposition);
    }

    for bad in [
        "",
        ".",
        "..",
        "../etc/passwd",
        "dir/file.txt",
        "C:\\temp\\file.txt",
        "line\nbreak.txt",
        "carriage\r\nSet-Cookie: x=y",
        "nul\0.txt",
        "tab\t.txt",
        "gnp\u{202E}.exe",
        &"n".repeat(256),
    ] {
        let r = upload(&app, Some(&alice.access), &room, Some(bad), None, "x").await;
        assert_error(r, 400, "invalid_field").await;
    }
    let r = upload(&app, Some(&alice.access), &room, None, None, "x").await;
    let b = assert_error(r, 400, "invalid_field").await;
    assert!(
        b["error"]["message"].as_str().unwrap().contains("name"),
        "{b}"
    );
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/channels/{room}/files?name=a.txt&path=/tmp"
        )))
        .bearer_auth(&alice.access)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
    // Only the accepted names were stored.
    assert_eq!(file_rows(&app).await, 3);
}

#[tokio::test]
async fn uploads_are_not_held_to_the_64_kib_json_limit() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 7)
        .map(|i: u32| (i % 251) as u8)
        .collect();

    let info = stored(&app, &alice, &room, "big.bin", None, &bytes).await;
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["sha256"], sha256_hex(&bytes));
    let r = download(&app, &alice, info["id"].as_str().unwrap()).await;
    assert_eq!(header(&r, "content-length"), bytes.len().to_string());
    assert_eq!(r.bytes().await.unwrap(), bytes);

    // Streamed without a length, too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("streamed.bin"),
        None,
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["sha256"], info["sha256"]);
    assert_eq!(blobs(&app).len(), 1);
}

#[tokio::test]
async fn an_archived_channel_takes_no_files_but_keeps_its_own() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;
    let info = stored(&app, &alice, &room, "kept.txt", None, b"kept").await;
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/channels/{room}")))
        .bearer_auth(&alice.access)
        .json(&json!({"archived": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("new.txt"),
        None,
        "new",
    )
    .await;
    assert_error(r, 403, "forbidden").await;
    let r = download(&app, &alice, info["id"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"kept");
    assert_eq!(file_rows(&app).await, 1);
}

/// A body that arrives in `parts` chunks, `gap` apart.
fn trickle(bytes: Vec<u8>, parts: usize, gap: std::time::Duration) -> reqwest::Body {
    use futures::StreamExt as _;
    let size = bytes.len().div_ceil(parts);
    let chunks: Vec<Vec<u8>> = bytes.chunks(size).map(<[u8]>::to_vec).collect();
    let stream = futures::stream::iter(chunks).then(move |chunk| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, std::io::Error>(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn slow_uploads_have_their_own_time_limit() {
    let app = spawn_app_with(|c| {
        c.rate_limits.register_per_hour = 100;
        c.request_timeout_secs = 1;
        c.files.upload_timeout_secs = 20;
    })
    .await;
    let alice = app.user("alice").await;
    let room = channel(&app, &alice, "room", true).await;
    let gap = std::time::Duration::from_millis(400);

    // Two seconds of upload: past the 1 s request limit, within the upload limit.
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let r = upload(
        &app,
        Some(&alice.access),
        &room,
        Some("slow.bin"),
        None,
        trickle(bytes.clone(), 5, gap),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["size"], 50_000);

    // Any other request sent that slowly is cut off, with the API's error.
    let json = serde_json::to_vec(&json!({"name": "slowpoke"})).unwrap();
    let r = app
        .client
        .post(app.url("/api/v1/channels"))
        .bearer_auth(&alice.access)
        .header("content-type", "application/json")
        .body(trickle(json, 5, gap))
        .send()
        .await
        .unwrap();
    assert_error(r, 408, "timeout").await;
}

//! The HTTP edge: every bad input gets the documented error shape (never a 500), the
//! OpenAPI document covers every route, health endpoints, protective headers, shutdown.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const POST_ROUTES: [&str; 5] = [
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/devices",
];

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    for path in POST_ROUTES.iter().take(4) {
        for bad in [
            "{",
            "not json",
            "[]",
            "{\"username\": 5}",
            "null",
            "{\"refresh_token\":\"x\",\"extra\":1}",
        ] {
            let r = raw_post(&app, path, Some("application/json"), bad.into()).await;
            assert_error(r, 400, "invalid_json").await;
        }
    }
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_415() {
    let app = spawn_app().await;
    let body = json!({"username": "a", "password": "b"})
        .to_string()
        .into_bytes();
    let r = raw_post(&app, "/api/v1/auth/login", Some("text/plain"), body.clone()).await;
    assert_error(r, 415, "unsupported_media_type").await;
    let r = raw_post(&app, "/api/v1/auth/login", None, body).await;
    assert_error(r, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_and_just_under_is_read() {
    let app = spawn_app().await;
    let wrap = |len: usize| {
        let skeleton = json!({"username": "", "password": "x"}).to_string();
        let name = "a".repeat(len - skeleton.len());
        json!({"username": name, "password": "x"})
            .to_string()
            .into_bytes()
    };
    let at_limit = wrap(64 * 1024);
    assert_eq!(at_limit.len(), 65536);
    let r = raw_post(
        &app,
        "/api/v1/auth/register",
        Some("application/json"),
        at_limit,
    )
    .await;
    // Read and judged on its content, not its size.
    assert_error(r, 400, "invalid_username").await;
    let over = wrap(64 * 1024 + 1);
    let r = raw_post(
        &app,
        "/api/v1/auth/register",
        Some("application/json"),
        over,
    )
    .await;
    assert_error(r, 413, "payload_too_large").await;
    // Far over, without a content length known in advance (chunked).
    let stream = futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096])));
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn junk_never_gets_a_server_error() {
    let app = spawn_app().await;
    let user = app.user("fuzzy").await;
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff, 0xfe, 0x00],
        b"{\"username\":\"\\ud800\",\"password\":\"x\"}".to_vec(),
        "{\"name\": \"\u{202e}\u{0}\"}".as_bytes().to_vec(),
        b"{\"name\":1e999}".to_vec(),
        "[".repeat(10_000).into_bytes(),
        json!({"name": "x", "metadata": {"deep": [[[[[[[[]]]]]]]]}})
            .to_string()
            .into_bytes(),
    ];
    for path in POST_ROUTES {
        for body in &junk {
            let r = app
                .client
                .post(app.url(path))
                .bearer_auth(&user.access)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let b = body_or_empty(r).await;
            assert!(
                status.is_client_error() || status.is_success(),
                "{path}: {status} {b}"
            );
            if status.is_client_error() {
                assert!(b["error"]["code"].is_string(), "{path}: {b}");
            }
        }
    }
}

async fn body_or_empty(r: reqwest::Response) -> Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .client
        .delete(app.url("/api/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_error(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn missing_or_foreign_credentials_are_401_with_a_challenge() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"unhidra\"");
    assert_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/api/v1/me"))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn non_admins_cannot_read_the_audit_log() {
    let app = spawn_app().await;
    let user = app.user("plain").await;
    assert_error(
        app.get_as(&user.access, "/api/v1/admin/audit").await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .client
        .get(app.url("/api/v1/admin/audit"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "ok");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "ready");
}

#[tokio::test]
async fn api_responses_are_neither_cached_nor_sniffed() {
    let app = spawn_app().await;
    let r = app.login("nobody", "whatever it is").await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

/// Every route the server answers, by method and path template.
const ROUTES: [(&str, &str); 47] = [
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/auth/logout-all"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices"),
    ("get", "/api/v1/devices/{id}"),
    ("delete", "/api/v1/devices/{id}"),
    ("get", "/api/v1/device"),
    ("get", "/api/v1/devices/{id}/telemetry"),
    ("get", "/api/v1/devices/{id}/metrics"),
    ("put", "/api/v1/devices/{id}/channel"),
    ("post", "/api/v1/devices/{id}/commands"),
    ("get", "/api/v1/devices/{id}/commands/{command_id}"),
    ("get", "/api/v1/admin/audit"),
    ("get", "/api/v1/admin/connections"),
    ("delete", "/api/v1/admin/connections/{id}"),
    ("get", "/api/v1/admin/moderation"),
    ("post", "/api/v1/admin/moderation/held/{id}/release"),
    ("delete", "/api/v1/admin/moderation/held/{id}"),
    ("post", "/api/v1/channels"),
    ("post", "/api/v1/channels/{id}/members"),
    ("get", "/api/v1/channels"),
    ("patch", "/api/v1/channels/{id}"),
    ("delete", "/api/v1/channels/{id}/members/{user_id}"),
    ("get", "/api/v1/channels/{id}/devices"),
    ("get", "/api/v1/channels/{id}/messages"),
    ("get", "/api/v1/channels/{id}/threads/{root_id}"),
    ("patch", "/api/v1/channels/{id}/messages/{message_id}"),
    ("delete", "/api/v1/channels/{id}/messages/{message_id}"),
    (
        "get",
        "/api/v1/channels/{id}/messages/{message_id}/revisions",
    ),
    (
        "put",
        "/api/v1/channels/{id}/messages/{message_id}/reactions/{emoji}",
    ),
    (
        "delete",
        "/api/v1/channels/{id}/messages/{message_id}/reactions/{emoji}",
    ),
    ("post", "/api/v1/channels/{id}/read"),
    ("get", "/api/v1/search"),
    ("post", "/api/v1/channels/{id}/files"),
    ("get", "/api/v1/files/{id}"),
    ("get", "/api/v1/files/{id}/info"),
    ("get", "/api/v1/channels/{id}/members"),
    ("post", "/api/v1/dms"),
    ("get", "/api/v1/users/{id}"),
    ("get", "/api/v1/users"),
    ("get", "/ws"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc = body(r).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (method, path) in ROUTES
        .iter()
        .chain([("get", "/.well-known/jwks.json")].iter())
    {
        let op = &paths[*path][*method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        documented += 1;
    }
    let total: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        total, documented,
        "the document has operations this test does not know"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "RegisterRequest",
        "TokenPair",
        "ErrorBody",
        "ErrorCode",
        "CreatedDevice",
        "Device",
        "FileInfo",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // And every documented route exists on the server (no 404 from the router).
    for (method, path) in ROUTES {
        let url = app.url(
            &path
                .replace("{id}", "x")
                .replace("{user_id}", "y")
                .replace("{root_id}", "z"),
        );
        let r = app
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            let b = body(r).await;
            assert_ne!(b["error"]["message"], "no such route", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn launch_returns_after_shutdown_even_with_open_connections() {
    let app = spawn_app().await;
    // Leave a keep-alive connection open in the client's pool.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let addr = app.addr;
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn malformed_path_parameters_are_400_in_the_api_format() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    for path in ["/api/v1/devices/%C3%28", "/api/v1/files/%FF"] {
        let r = app.get_as(&alice.access, path).await;
        assert_error(r, 400, "bad_request").await;
    }
    let r = app
        .put_as(&alice.access, "/api/v1/channels/x/messages/y/reactions/%FF")
        .await;
    assert_error(r, 400, "bad_request").await;
}

//! The served OpenAPI document agrees with what the server answers: every status a route can
//! give is documented, query parameters are where and as required as the server reads them,
//! page limits are refused outside the declared range, and schemas admit what is sent.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, spawn_app, TestApp, PASSWORD};

async fn document(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await
}

/// Every operation of the document: (method, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

fn documented(op: &Value, status: StatusCode) -> bool {
    op["responses"]
        .as_object()
        .unwrap()
        .contains_key(status.as_str())
}

/// The path with each `{param}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn param<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

#[tokio::test]
async fn query_parameters_are_in_the_query_and_optional_ones_are_not_required() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    // A parameter "in: path" that the path does not name is one a client cannot send.
    for (method, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str().unwrap() {
                "path" => assert!(
                    path.contains(&format!("{{{name}}}")),
                    "{method} {path}: {name} is not in the path"
                ),
                "query" => {}
                other => panic!("{method} {path}: {name} in {other}"),
            }
        }
    }
    let paths = &doc["paths"];
    let expect = [
        (&paths["/api/v1/search"]["get"], "q", true),
        (&paths["/api/v1/search"]["get"], "channel", false),
        (&paths["/api/v1/search"]["get"], "author", false),
        (&paths["/api/v1/search"]["get"], "limit", false),
        (
            &paths["/api/v1/devices/{id}/telemetry"]["get"],
            "metric",
            true,
        ),
        (
            &paths["/api/v1/devices/{id}/telemetry"]["get"],
            "from",
            false,
        ),
        (&paths["/api/v1/devices/{id}/telemetry"]["get"], "to", false),
        (
            &paths["/api/v1/devices/{id}/telemetry"]["get"],
            "bucket",
            false,
        ),
        (
            &paths["/api/v1/channels/{id}/messages"]["get"],
            "limit",
            false,
        ),
        (&paths["/api/v1/channels/{id}/files"]["post"], "name", true),
        (&paths["/api/v1/admin/audit"]["get"], "before", false),
    ];
    for (op, name, required) in expect {
        let p = param(op, name);
        assert_eq!(p["in"], "query", "{name}");
        assert_eq!(p["required"].as_bool().unwrap_or(false), required, "{name}");
    }
    let limit = &param(&paths["/api/v1/channels/{id}/messages"]["get"], "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(200))
    );
}

#[tokio::test]
async fn page_limits_outside_their_range_are_refused_not_clamped() {
    let app = spawn_app().await;
    unhidra_server::admin::create_user(&app.config, "root", PASSWORD.to_owned().into(), true)
        .await
        .unwrap();
    let admin = {
        let r = app.login("root", PASSWORD).await;
        body(r).await["access_token"].as_str().unwrap().to_owned()
    };
    let alice = app.user("alice").await;
    let r = app
        .post_as(
            &alice.access,
            "/api/v1/channels",
            &json!({"name": "general"}),
        )
        .await;
    let channel = body(r).await["id"].as_str().unwrap().to_owned();
    let history = format!("/api/v1/channels/{channel}/messages");
    let thread = format!("/api/v1/channels/{channel}/threads/none");
    let cases: [(&str, &str, u32); 4] = [
        (&alice.access, &history, 200),
        (&alice.access, &thread, 200),
        (&alice.access, "/api/v1/search?q=hello", 100),
        (&admin, "/api/v1/admin/audit", 500),
    ];
    for (token, route, max) in cases {
        let sep = if route.contains('?') { '&' } else { '?' };
        for bad in [0, max + 1, 100_000] {
            let r = app.get_as(token, &format!("{route}{sep}limit={bad}")).await;
            let b = assert_error(r, 400, "bad_request").await;
            assert!(
                b["error"]["message"].as_str().unwrap().contains("limit"),
                "{route} {b}"
            );
        }
        let r = app.get_as(token, &format!("{route}{sep}limit={max}")).await;
        // The thread's root does not exist: the limit was accepted, the lookup was not.
        let want = if route == thread {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status(), want, "{route} limit={max}");
    }
}

/// What a client without a token, with a body that is not JSON, with a NUL for a body, with
/// a body over the limit or with a malformed path parameter gets must be in the document.
#[tokio::test]
async fn every_status_the_server_answers_is_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let alice = app.user("alice").await;
    let too_big = vec![b' '; app.config.max_body_bytes + 1];
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        let method: Method = method.to_uppercase().parse().unwrap();
        let url = app.url(&fill(&path, "x"));
        let mut attempts = vec![("no credentials", app.client.request(method.clone(), &url))];
        let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let json_body = op["requestBody"]["content"]["application/json"].is_object();
        if json_body {
            let with_token = || {
                app.client
                    .request(method.clone(), &url)
                    .bearer_auth(&alice.access)
            };
            attempts.push((
                "a text/plain body",
                with_token().header("content-type", "text/plain").body("{}"),
            ));
            attempts.push((
                "a NUL body",
                with_token()
                    .header("content-type", "application/json")
                    .body("\0"),
            ));
            attempts.push((
                "a body over max_body_bytes",
                with_token()
                    .header("content-type", "application/json")
                    .body(too_big.clone()),
            ));
        }
        if path.contains('{') {
            let bad_path = app.url(&fill(&path, "%FF"));
            let mut request = app.client.request(method.clone(), bad_path);
            if authenticated {
                request = request.bearer_auth(&alice.access);
            }
            attempts.push(("a malformed path parameter", request));
        }
        for (what, request) in attempts {
            let r = request.send().await.unwrap();
            let status = r.status();
            assert!(
                documented(&op, status),
                "{method} {path} with {what} answered {status}, which the document does not list"
            );
            assert!(!status.is_server_error(), "{method} {path} with {what}");
            checked += 1;
        }
        if authenticated {
            assert!(documented(&op, StatusCode::UNAUTHORIZED), "{method} {path}");
        }
        if json_body {
            for status in [400, 413, 415] {
                let status = StatusCode::from_u16(status).unwrap();
                assert!(documented(&op, status), "{method} {path}: {status}");
            }
        }
    }
    assert!(checked > 80, "only {checked} requests");
}

#[tokio::test]
async fn a_command_without_args_is_answered_as_the_document_describes_it() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let alice = app.user("alice").await;
    let (device, _key) = app.device(&alice, "meter").await;
    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/devices/{device}/commands"),
            &json!({"name": "reboot"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let command = body(r).await;
    assert_eq!(command["args"], Value::Null);
    assert_eq!(command["output"], Value::Null);
    // `args` and `output` are any JSON value, null included: a schema with a `type` would
    // refuse some of them.
    let schemas = &doc["components"]["schemas"];
    for field in ["args", "output"] {
        let schema = &schemas["CommandInfo"]["properties"][field];
        assert!(schema.is_object(), "{field}");
        assert!(schema.get("type").is_none(), "{field}: {schema}");
    }
    assert!(schemas["SendCommandRequest"]["properties"]["args"]
        .get("type")
        .is_none());
    // And the command as read back.
    let r = app
        .get_as(
            &alice.access,
            &format!(
                "/api/v1/devices/{device}/commands/{}",
                command["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(body(r).await["args"], Value::Null);
}

/// JSON has one kind of number and JSON Schema's `integer` admits `5.0`.
#[tokio::test]
async fn integer_fields_accept_a_zero_fraction() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let r = app
        .post_as(
            &alice.access,
            "/api/v1/channels",
            &json!({"name": "general"}),
        )
        .await;
    let channel = body(r).await["id"].as_str().unwrap().to_owned();
    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/channels/{channel}/read"),
            &json!({"seq": 0.0}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post_as(
            &alice.access,
            &format!("/api/v1/channels/{channel}/read"),
            &json!({"seq": 0.5}),
        )
        .await;
    assert_error(r, 400, "invalid_json").await;
}

/// serde reads a struct from a JSON array too; no document describes that, so it is refused.
#[tokio::test]
async fn a_json_array_is_not_taken_for_an_object() {
    let app = spawn_app().await;
    let r = app
        .post("/api/v1/auth/register", &json!(["alice", PASSWORD]))
        .await;
    assert_error(r, 400, "invalid_json").await;
    let alice = app.user("alice").await;
    let r = app
        .post_as(
            &alice.access,
            "/api/v1/channels",
            &json!({"name": "general"}),
        )
        .await;
    let channel = body(r).await["id"].as_str().unwrap().to_owned();
    let r = app
        .patch_as(
            &alice.access,
            &format!("/api/v1/channels/{channel}"),
            &json!([null, null]),
        )
        .await;
    assert_error(r, 400, "invalid_json").await;
    // White space before the object is still JSON.
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/channels/{channel}")))
        .bearer_auth(&alice.access)
        .header("content-type", "application/json")
        .body(" \n{\"archived\": false}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// A download keeps an inert declared type (schemathesis found `text/plain` undocumented).
#[tokio::test]
async fn a_download_is_served_with_a_documented_content_type() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let documented = &doc["paths"]["/api/v1/files/{id}"]["get"]["responses"]["200"]["content"];
    let alice = app.user("alice").await;
    let r = app
        .post_as(
            &alice.access,
            "/api/v1/channels",
            &json!({"name": "general"}),
        )
        .await;
    let channel = body(r).await["id"].as_str().unwrap().to_owned();
    for declared in ["text/plain", "image/png", "text/html"] {
        let r = app
            .client
            .post(app.url(&format!("/api/v1/channels/{channel}/files?name=f")))
            .bearer_auth(&alice.access)
            .header("content-type", declared)
            .body("bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{declared}");
        let file = body(r).await["id"].as_str().unwrap().to_owned();
        let r = app
            .get_as(&alice.access, &format!("/api/v1/files/{file}"))
            .await;
        let served = r.headers()["content-type"].to_str().unwrap().to_owned();
        let media_type = served.split(';').next().unwrap().trim();
        assert!(
            documented[media_type].is_object(),
            "{declared} is served as {served}, not documented in {documented}"
        );
    }
}

//! The web client: plain HTML, CSS and JavaScript modules from `web/`, embedded in the binary
//! at compile time and served at `/` and `/assets/…`. No build step and no Node.js at run time.
//! Beside it, the interactive API reference at `/api/docs`: Swagger UI (vendored under
//! `web/vendor/swagger-ui`, see its README) on the server's own `/api/v1/openapi.json`.
//!
//! Every response carries a strict Content-Security-Policy (no inline script or style, no
//! third-party origin), `X-Content-Type-Options: nosniff`, and `Cache-Control: no-cache` with an
//! `ETag`, so browsers revalidate after an upgrade but skip unchanged bodies. An unknown asset is
//! the API's usual JSON 404.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::ApiError;

/// The policy of every page and asset. `connect-src` names `ws:`/`wss:` because older
/// browsers do not count a same-origin WebSocket as `'self'`. `img-src blob:` lets the client
/// preview an image attachment it fetched with its token (a `blob:` URL is the page's own
/// bytes, never a request).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// The path under `/assets/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../web/assets/",
                $path
            )),
        }
    };
}

const INDEX_HTML: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/index.html"));

/// Every file under `web/assets/` (a test checks that none is missing).
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/chart.js", "text/javascript; charset=utf-8"),
    asset!("js/main.js", "text/javascript; charset=utf-8"),
    asset!("js/socket.js", "text/javascript; charset=utf-8"),
    asset!("js/store.js", "text/javascript; charset=utf-8"),
    asset!("js/dom.js", "text/javascript; charset=utf-8"),
    asset!("js/views/attachments.js", "text/javascript; charset=utf-8"),
    asset!("js/views/auth.js", "text/javascript; charset=utf-8"),
    asset!("js/views/channels.js", "text/javascript; charset=utf-8"),
    asset!("js/views/composer.js", "text/javascript; charset=utf-8"),
    asset!("js/views/devices.js", "text/javascript; charset=utf-8"),
    asset!("js/views/members.js", "text/javascript; charset=utf-8"),
    asset!("js/views/message-item.js", "text/javascript; charset=utf-8"),
    asset!("js/views/messages.js", "text/javascript; charset=utf-8"),
    asset!("js/views/search.js", "text/javascript; charset=utf-8"),
    asset!("js/views/thread.js", "text/javascript; charset=utf-8"),
];

/// The API reference's page, its start-up script and the vendored Swagger UI, under
/// `/api/docs/`.
const API_DOCS: &[Asset] = &[
    Asset {
        path: "init.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/api-docs/init.js"
        )),
    },
    Asset {
        path: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/vendor/swagger-ui/swagger-ui-bundle.js"
        )),
    },
    Asset {
        path: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/vendor/swagger-ui/swagger-ui.css"
        )),
    },
    Asset {
        path: "LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/vendor/swagger-ui/LICENSE"
        )),
    },
];

const API_DOCS_HTML: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../web/api-docs/index.html"
));

/// `GET /`, `GET /assets/{*path}` and the API reference (`GET /api/docs` and its files);
/// merged into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route("/api/docs", get(api_docs))
        .route("/api/docs/{file}", get(api_docs_file))
}

async fn api_docs(headers: HeaderMap) -> Response {
    serve(&headers, "text/html; charset=utf-8", API_DOCS_HTML)
}

async fn api_docs_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match API_DOCS.iter().find(|a| a.path == file) {
        Some(a) => serve(&headers, a.content_type, a.body),
        None => ApiError::not_found("no such file").into_response(),
    }
}

async fn index(headers: HeaderMap) -> Response {
    serve(&headers, "text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => serve(&headers, a.content_type, a.body),
        None => ApiError::not_found("no such asset").into_response(),
    }
}

fn serve(request: &HeaderMap, content_type: &'static str, body: &'static [u8]) -> Response {
    let etag = etag(body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, body).into_response()
    }
}

/// A strong validator: the same bytes give the same tag within one build.
fn etag(body: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn index_is_html_with_a_strict_policy_and_no_cache() {
        let res = get("/", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        // Previews of attachments come from blob: URLs; scripts never do.
        assert!(csp.contains("img-src 'self' data: blob:"));
        assert!(!csp.contains("script-src 'self' blob:"));
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.contains(r#"<script type="module" src="/assets/js/main.js">"#));
        // No inline script or style: the policy would block it.
        assert!(!html.contains("<script>") && !html.contains("style="));
    }

    #[tokio::test]
    async fn assets_have_their_content_types_and_revalidate() {
        let res = get("/assets/js/main.js", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let tag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
        let res = get("/assets/app.css", None).await;
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let res = get("/assets/js/main.js", Some(&tag)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn the_api_reference_is_served_under_the_same_policy() {
        let res = get("/api/docs", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert_eq!(csp, CONTENT_SECURITY_POLICY);
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let html = std::str::from_utf8(&body).unwrap();
        // Every script is a file of this origin; none is inline.
        assert!(html.contains(r#"<script src="/api/docs/swagger-ui-bundle.js"></script>"#));
        assert!(html.contains(r#"<script src="/api/docs/init.js"></script>"#));
        assert!(!html.contains("<script>") && !html.contains("style="));
        for (file, content_type) in [
            ("init.js", "text/javascript; charset=utf-8"),
            ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
            ("swagger-ui.css", "text/css; charset=utf-8"),
            ("LICENSE", "text/plain; charset=utf-8"),
        ] {
            let res = get(&format!("/api/docs/{file}"), None).await;
            assert_eq!(res.status(), StatusCode::OK, "{file}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], content_type, "{file}");
        }
        let res = get("/api/docs/nope.js", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_json_404() {
        for path in ["/assets/nope.js", "/assets/../Cargo.toml", "/assets/js/"] {
            let res = get(path, None).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
            let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "not_found", "{path}");
        }
    }

    /// A file added to web/assets but not to the table would be a silent 404 in production.
    #[test]
    fn every_file_under_web_assets_is_embedded() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/assets");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}

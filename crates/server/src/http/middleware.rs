//! Middleware applied to every API route: request metrics, protective response headers and
//! the time limit.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use unhidra_proto::ErrorCode;

use super::ApiError;

/// How long a request may take: uploads get longer than the rest.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    pub request: Duration,
    pub upload: Duration,
}

/// Answers 408 `timeout` when the handler (reading the body included) takes longer than
/// its limit. A WebSocket upgrade ends with its 101; the session is not timed.
pub async fn time_limit(State(limits): State<TimeLimits>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let upload = req.method() == Method::POST
        && path.starts_with("/api/v1/channels/")
        && path.ends_with("/files");
    let limit = if upload {
        limits.upload
    } else {
        limits.request
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Timeout,
            "the request took too long",
        )
        .into_response(),
    }
}

/// Records `http_request_duration_seconds` by route template (never the raw path, which
/// could carry ids), method and status.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        crate::metrics::HTTP_REQUEST_DURATION,
        "route" => route,
        "method" => method,
        "status" => status
    )
    .record(start.elapsed().as_secs_f64());
    response
}

/// API responses hold tokens and private data: never cached, never sniffed.
pub async fn protective_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

//! The one error type at the web edge.
//!
//! Every handler returns `Result<_, ApiError>`; every failure becomes the documented JSON
//! shape with a stable [`ErrorCode`]. A 401 carries `WWW-Authenticate`, a 429 or 503 carries
//! `Retry-After`. A 500's body is opaque; its cause goes to the log, never to the client.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{Outage, StoreError};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: Cow<'static, str>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many requests; retry later",
        )
        .retry_after(retry_after_secs)
    }

    pub fn overloaded(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "the server is busy; retry later",
        )
        .retry_after(retry_after_secs)
    }

    /// The storage cannot take writes (disk full, read-only or failing file system): 503 with
    /// `storage_unavailable` and `Retry-After`, so clients retry instead of giving up on an
    /// opaque 500. The cause is logged here; the client learns which outage it is.
    pub fn storage_unavailable(outage: Outage, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, %outage, "storage unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            storage_message(outage),
        )
        .retry_after(STORAGE_RETRY_AFTER_SECS)
    }

    /// An unexpected failure: logged here with its cause, opaque to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

/// How long a client is told to wait before retrying a write the storage refused: long
/// enough not to hammer a server whose operator must free space, short enough to notice
/// the recovery soon.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 30;

/// What a client is told when the storage cannot take a write (the same words on REST and
/// WebSocket).
pub fn storage_message(outage: Outage) -> &'static str {
    match outage {
        Outage::Full => "the server's storage is full; nothing was stored, retry later",
        Outage::ReadOnly => "the server's storage is read-only; nothing was stored, retry later",
        Outage::Failing => "the server's storage is failing; nothing was stored, retry later",
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable { outage, .. } => Self::storage_unavailable(outage, err),
            StoreError::Forbidden(why) => Self::forbidden(why),
            // Conflicts are handled where they have a meaning; reaching here means a bug,
            // logged with its cause.
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody::new(self.code, self.message.into_owned())),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"unhidra\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A full or read-only data dir is a 503 the client can act on, not an opaque 500.
    #[test]
    fn storage_outages_are_503_storage_unavailable_with_retry_after() {
        for (outage, words) in [
            (Outage::Full, "full"),
            (Outage::ReadOnly, "read-only"),
            (Outage::Failing, "failing"),
        ] {
            let err = StoreError::unavailable(outage, std::io::Error::other("test"));
            let api = ApiError::from(err);
            assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(api.code(), ErrorCode::StorageUnavailable);
            assert!(api.message.contains(words), "{}", api.message);
            let response = api.into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        }
        let other = ApiError::from(StoreError::backend(std::io::Error::other("bug")));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

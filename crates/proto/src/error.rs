//! The one error shape every client sees: `{"error":{"code":"…","message":"…"}}`.
//!
//! Codes are stable identifiers that clients may branch on; messages are for people and may
//! change. The same codes are used on REST and (later) on the WebSocket.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed in a way no more specific code describes.
    BadRequest,
    /// The body is not valid JSON, or not the JSON this route expects.
    InvalidJson,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// The username does not meet the rules (see `docs/api.md`).
    InvalidUsername,
    /// The password does not meet the rules (see `docs/api.md`).
    WeakPassword,
    /// The username is already registered.
    UsernameTaken,
    /// The resource conflicts with an existing one (e.g. a channel name).
    Conflict,
    /// A field other than username or password is invalid.
    InvalidField,
    /// A WebSocket frame the protocol does not accept (binary, or not UTF-8).
    UnsupportedFrame,
    /// Wrong username or password (the two are indistinguishable on purpose).
    InvalidCredentials,
    /// Missing, malformed, expired or revoked credentials.
    Unauthorized,
    /// The refresh token is unknown, expired, revoked or was already used.
    InvalidRefreshToken,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// No such resource (or not one the caller may see).
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The request took longer than the server allows (a body sent too slowly).
    Timeout,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// The server is busy; retry later (see `Retry-After`).
    Overloaded,
    /// A dependency (the store) is not available.
    Unavailable,
    /// The server's storage cannot take writes now (its disk is full, or its file system is
    /// read-only or failing); nothing of the request was stored. Retry later (see
    /// `Retry-After`); reads may still work.
    StorageUnavailable,
    /// Something failed on the server; the cause is in the server's log.
    Internal,
    /// A code this client does not know yet (a newer server's). The server never sends it;
    /// it lets older clients and firmware still read error frames with new codes.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidJson => "invalid_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidUsername => "invalid_username",
            Self::WeakPassword => "weak_password",
            Self::UsernameTaken => "username_taken",
            Self::Conflict => "conflict",
            Self::InvalidField => "invalid_field",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Unauthorized => "unauthorized",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::StorageUnavailable => "storage_unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_from_a_newer_server_parse_as_unknown() {
        let code: super::ErrorCode = serde_json::from_str("\"teapot\"").unwrap();
        assert_eq!(code, super::ErrorCode::Unknown);
        let code: super::ErrorCode = serde_json::from_str("\"not_found\"").unwrap();
        assert_eq!(code, super::ErrorCode::NotFound);
    }

    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::InvalidJson,
            ErrorCode::RateLimited,
            ErrorCode::InvalidRefreshToken,
            ErrorCode::StorageUnavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ErrorBody::new(ErrorCode::NotFound, "no such device");
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": {"code": "not_found", "message": "no such device"}})
        );
    }
}

//! Extractors that parse requests into checked values at the boundary.
//!
//! - [`ApiJson`]: a JSON body whose every rejection is an [`ApiError`] (415, 400, 413).
//! - [`ApiPath`], [`ApiQuery`]: path and query parameters; a malformed one is a 400.
//! - [`ClientIp`]: the client's address, believing `X-Forwarded-For` only from trusted proxies.
//! - [`AuthUser`], [`AdminUser`]: a person with a valid access token in a live session.
//! - [`AuthDevice`]: a device presenting its API key as a Bearer token.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use unhidra_proto::ErrorCode;
use unhidra_store::User;

use super::ApiError;
use crate::auth::sessions::{check_access_token, TokenCheck};
use crate::devices::DEVICE_KEY_PREFIX;
use crate::state::SharedState;

/// A JSON request body: `Content-Type: application/json` (or `+json`), at most
/// `max_body_bytes`, and a JSON object, as every body of the API is. serde would read a struct
/// from an array too (`["alice", "…"]`), which no document describes: that is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "request body is too large",
                )
            } else {
                ApiError::bad_request(ErrorCode::BadRequest, rejection.body_text())
            }
        })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json`, or any `application/…+json`, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(err) => ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("malformed JSON: {}", err.body_text()),
        ),
        JsonRejection::JsonDataError(err) => {
            ApiError::bad_request(ErrorCode::InvalidJson, err.body_text())
        }
        other => ApiError::bad_request(ErrorCode::InvalidJson, other.body_text()),
    }
}

/// Path parameters; a malformed one (not UTF-8, not a number where one is expected) is a
/// 400 `bad_request` in the API's error format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters; a malformed or unknown one, or a missing required one, is a 400
/// `bad_request` in the API's error format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                rejection.body_text(),
            )),
        }
    }
}

/// A page size from the query: `default` when absent, refused (400 `bad_request`) outside
/// `1..=max`, as the document declares, rather than silently clamped.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            ErrorCode::BadRequest,
            format!("limit must be 1 to {max}, not {n}"),
        )),
    }
}

/// The client's IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<SharedState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
            .ok_or_else(|| ApiError::internal("request without peer address"))?;
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// The address a request came from: the peer, unless the peer is a trusted proxy, in which
/// case `X-Forwarded-For` is walked from the right past every trusted proxy. Entries left of
/// the first untrusted hop were written by the client and are never believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The credential in `Authorization: Bearer …`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A person authenticated by an access token whose session is still live.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
    pub session_id: String,
}

impl FromRequestParts<SharedState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(&parts.headers) else {
            crate::metrics::auth_failure("missing_token");
            return Err(ApiError::unauthorized("missing bearer token"));
        };
        if token.starts_with(DEVICE_KEY_PREFIX) {
            crate::metrics::auth_failure("device_key_on_user_route");
            return Err(ApiError::unauthorized(
                "this route needs a user's access token",
            ));
        }
        let claims = match check_access_token(state, token).await? {
            TokenCheck::Valid(claims) => claims,
            TokenCheck::Refused { reason, error } => {
                crate::metrics::auth_failure(reason);
                tracing::debug!(reason, "access token refused");
                return Err(error);
            }
        };
        Ok(Self {
            user_id: claims.sub,
            session_id: claims.sid,
        })
    }
}

/// An authenticated administrator.
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

impl FromRequestParts<SharedState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let auth = AuthUser::from_request_parts(parts, state).await?;
        match state.store.user_by_id(&auth.user_id).await? {
            Some(user) if user.is_admin => Ok(Self(user)),
            _ => Err(ApiError::forbidden("administrators only")),
        }
    }
}

/// A device authenticated by its API key (`Authorization: Bearer unh_dk_…`).
#[derive(Debug, Clone)]
pub struct AuthDevice {
    pub device_id: String,
    pub owner_id: String,
}

impl FromRequestParts<SharedState> for AuthDevice {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Some(key) = bearer(&parts.headers) else {
            crate::metrics::auth_failure("missing_token");
            return Err(ApiError::unauthorized("missing device key"));
        };
        crate::devices::authenticate(&*state.store, &state.device_keys, key)
            .await
            .map_err(|err| match err {
                crate::devices::DeviceAuthError::Store(e) => ApiError::from(e),
                other => {
                    crate::metrics::auth_failure(other.reason());
                    ApiError::unauthorized("invalid or revoked device key")
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted = vec!["10.0.0.1/32".parse().unwrap()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&["1.2.3.4"]), &[]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_is_walked_past_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged "6.6.6.6"; the first untrusted hop from the right is the client.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        // Garbage stops the walk at the last address we could believe.
        let h = headers(&["nonsense, 10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.3"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn bearer_is_parsed_case_insensitively_and_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}

//! `GET /ws`: everything that happens before the upgrade.
//!
//! Order: the per-IP handshake limit → the origin check (browsers) → the credential from
//! `Sec-WebSocket-Protocol` (`unhidra.v1` plus `bearer.<access token>` or `device.<api key>`;
//! browsers cannot set headers and tokens never go in URLs) → the per-user limit → upgrade.
//! The server answers with `unhidra.v1` only, never echoing the credential. Every refusal is a
//! plain HTTP answer (401, 403, 429) with the usual error body, counted by reason.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use unhidra_proto::ws::{Principal, BEARER_PREFIX, DEVICE_PREFIX, PROTOCOL};
use unhidra_proto::ErrorCode;

use super::session::{self, SessionStart};
use crate::auth::sessions::{check_access_token, TokenCheck};
use crate::http::extract::ClientIp;
use crate::http::ApiError;
use crate::rate_limit::Limit;
use crate::state::{AppState, SharedState};

/// What the client presented.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    Bearer(&'a str),
    Device(&'a str),
}

fn refuse(reason: &'static str, err: ApiError) -> ApiError {
    metrics::counter!(crate::metrics::GATEWAY_AUTH_FAILURES, "reason" => reason).increment(1);
    tracing::info!(reason, "websocket handshake refused");
    err
}

/// Reads the offered subprotocols: `unhidra.v1` must be among them, with exactly one
/// credential.
fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.contains(&PROTOCOL) {
        return Err(refuse(
            "missing_protocol",
            ApiError::bad_request(
                ErrorCode::BadRequest,
                "offer the subprotocol unhidra.v1 (see docs/protocol.md)",
            ),
        ));
    }
    let mut credentials = offered.iter().filter_map(|p| {
        p.strip_prefix(BEARER_PREFIX)
            .map(Credential::Bearer)
            .or_else(|| p.strip_prefix(DEVICE_PREFIX).map(Credential::Device))
    });
    match (credentials.next(), credentials.next()) {
        (Some(c), None) => Ok(c),
        (None, _) => Err(refuse(
            "missing_credential",
            ApiError::unauthorized(
                "offer bearer.<access token> or device.<api key> as a subprotocol",
            ),
        )),
        (Some(_), Some(_)) => Err(refuse(
            "several_credentials",
            ApiError::unauthorized("offer exactly one credential"),
        )),
    }
}

/// Browsers send `Origin`; it must be the server's own or a configured one. Clients that
/// send no `Origin` (devices, native apps) are not browsers and pass.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = ["http://", "https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host) && !host.is_empty());
    let listed = state
        .config
        .gateway
        .allowed_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin));
    if own || listed {
        Ok(())
    } else {
        Err(refuse(
            "origin",
            ApiError::forbidden("this origin may not open a WebSocket here"),
        ))
    }
}

/// Who the credential names: a user (with the login session of the token) or a device (with
/// its owner).
struct Authenticated {
    principal: Principal,
    session_id: Option<String>,
    device_owner: Option<String>,
}

async fn authenticate(
    state: &AppState,
    credential: Credential<'_>,
) -> Result<Authenticated, ApiError> {
    match credential {
        Credential::Bearer(token) => match check_access_token(state, token).await? {
            TokenCheck::Valid(claims) => Ok(Authenticated {
                principal: Principal::User { id: claims.sub },
                session_id: Some(claims.sid),
                device_owner: None,
            }),
            TokenCheck::Refused { reason, error } => Err(refuse(reason, error)),
        },
        Credential::Device(key) => {
            match crate::devices::authenticate(&*state.store, &state.device_keys, key).await {
                Ok(device) => Ok(Authenticated {
                    principal: Principal::Device {
                        id: device.device_id,
                    },
                    session_id: None,
                    device_owner: Some(device.owner_id),
                }),
                Err(crate::devices::DeviceAuthError::Store(err)) => Err(err.into()),
                Err(err) => Err(refuse(
                    err.reason(),
                    ApiError::unauthorized("invalid or revoked device key"),
                )),
            }
        }
    }
}

/// Open a WebSocket (`unhidra.v1`). Offer the subprotocols `unhidra.v1` and either
/// `bearer.<access token>` or `device.<api key>`; the server answers with `unhidra.v1`.
#[utoipa::path(
    get, path = "/ws", tag = "gateway",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol unhidra.v1"),
        (status = 400, description = "Not a WebSocket upgrade, or unhidra.v1 not offered", body = unhidra_proto::ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked credential", body = unhidra_proto::ErrorBody),
        (status = 403, description = "A browser origin that is not allowed", body = unhidra_proto::ErrorBody),
        (status = 429, description = "Too many handshakes from this address or user", body = unhidra_proto::ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    state.limits.check(Limit::WsConnect, ip)?;
    check_origin(&state, &headers)?;
    let credential = credential(&headers)?;
    let Authenticated {
        principal,
        session_id,
        device_owner,
    } = authenticate(&state, credential).await?;
    if let Principal::User { id } = &principal {
        state.limits.check_ws_user(id)?;
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("not a WebSocket upgrade: {}", rejection.body_text()),
        )
    })?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let max_message_bytes = state.config.gateway.max_message_bytes;
    let start = SessionStart {
        principal,
        session_id,
        device_owner,
        ip,
        user_agent,
    };
    let sessions = state.gateway.sessions.clone();
    let state = state.clone();
    Ok(super::socket::configure(upgrade, max_message_bytes)
        .on_upgrade(move |socket| sessions.track_future(session::run(socket, state, start)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn offered(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn credentials_are_read_from_the_offered_subprotocols() {
        assert_eq!(
            credential(&offered(&["unhidra.v1, bearer.abc"])).unwrap(),
            Credential::Bearer("abc")
        );
        assert_eq!(
            credential(&offered(&["device.unh_dk_x", "unhidra.v1"])).unwrap(),
            Credential::Device("unh_dk_x")
        );
        assert_eq!(
            credential(&offered(&["bearer.abc"])).unwrap_err().status(),
            400
        );
        assert_eq!(
            credential(&offered(&["unhidra.v1"])).unwrap_err().status(),
            401
        );
        assert_eq!(
            credential(&offered(&["unhidra.v1, bearer.a, device.b"]))
                .unwrap_err()
                .status(),
            401
        );
    }
}

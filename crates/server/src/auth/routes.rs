//! `/api/v1/auth/*` and `/api/v1/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use secrecy::SecretString;
use serde_json::json;
use unhidra_proto::auth::{
    LoginRequest, Me, RefreshRequest, RegisterRequest, RegisterResponse, TokenPair,
};
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{NewUser, RotateOutcome, StoreError};
use unhidra_tokens::opaque::hash_refresh_token;

use super::{policy, sessions};
use unhidra_proto::ws::close;

use crate::audit::{kind, Event};
use crate::gateway::registry::Kick;
use crate::http::extract::{ApiJson, AuthUser, ClientIp};
use crate::http::ApiError;
use crate::rate_limit::Limit;
use crate::state::SharedState;

/// How sockets of an ended session are closed.
const SESSION_ENDED: Kick = Kick {
    code: close::POLICY_VIOLATION,
    reason: "session ended",
};

fn invalid_refresh() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidRefreshToken,
        "the refresh token is invalid, expired or was already used",
    )
}

/// Create an account.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = RegisterResponse),
        (status = 400, description = "Invalid username, weak password or malformed body", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    state.limits.check(Limit::Register, ip)?;
    let username = policy::username(&body.username)?;
    policy::password(&body.password, &username)?;
    let taken = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::UsernameTaken,
            "username is taken",
        )
    };
    // Cheap pre-check so that a taken name costs no hashing; the insert still decides.
    if state.store.user_by_username(&username).await?.is_some() {
        return Err(taken());
    }
    let password_hash = state
        .passwords
        .hash(SecretString::from(body.password))
        .await?;
    let user = state
        .store
        .create_user(NewUser {
            id: uuid::Uuid::now_v7().to_string(),
            username,
            password_hash,
            is_admin: false,
            created_at: state.clock.now(),
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict(_) => taken(),
            other => other.into(),
        })?;
    state
        .audit
        .record(Event {
            kind: kind::REGISTER,
            actor: Some(&user.id),
            subject: Some(&user.id),
            ip: Some(ip),
            detail: json!({ "username": user.username }),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse { user_id: user.id }),
    ))
}

/// Log in with a username and password.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
        (status = 503, description = "Too many logins in progress", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    if let Err(err) = state.limits.check(Limit::Login, ip) {
        metrics::counter!(crate::metrics::LOGIN_ATTEMPTS, "result" => "rate_limited").increment(1);
        return Err(err);
    }
    // A malformed name cannot exist; it still goes through the dummy verification.
    let user = match policy::username(&body.username) {
        Ok(name) => state.store.user_by_username(&name).await?,
        Err(_) => None,
    };
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = state
        .passwords
        .verify(SecretString::from(body.password), phc)
        .await?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            metrics::counter!(crate::metrics::LOGIN_ATTEMPTS, "result" => "invalid_credentials")
                .increment(1);
            let subject = body.username.chars().take(64).collect::<String>();
            state
                .audit
                .record(Event {
                    kind: kind::LOGIN_FAILED,
                    actor: None,
                    subject: Some(&subject),
                    ip: Some(ip),
                    detail: json!({}),
                })
                .await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            ));
        }
    };
    let (session_id, tokens) = sessions::start(&state, &user.id).await?;
    metrics::counter!(crate::metrics::LOGIN_ATTEMPTS, "result" => "ok").increment(1);
    state
        .audit
        .record(Event {
            kind: kind::LOGIN_OK,
            actor: Some(&user.id),
            subject: Some(&user.id),
            ip: Some(ip),
            detail: json!({ "session_id": session_id }),
        })
        .await?;
    Ok(Json(tokens))
}

/// Exchange a refresh token for a new token pair. Each refresh token works once; presenting
/// one that was already used ends its whole session (it was stolen or replayed).
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is now used up", body = TokenPair),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let presented = hash_refresh_token(&body.refresh_token);
    let (refresh, next) = sessions::next_refresh_token();
    let outcome = state
        .store
        .rotate_refresh_token(&presented, next, state.clock.now())
        .await?;
    match outcome {
        RotateOutcome::Rotated(session) => {
            let pair = sessions::continue_session(
                &state,
                &session.user_id,
                &session.session_id,
                &refresh,
            )?;
            Ok(Json(pair))
        }
        RotateOutcome::Reused(session) => {
            state
                .gateway
                .registry
                .close_session(&session.session_id, SESSION_ENDED);
            tracing::warn!(
                user_id = %session.user_id,
                session_id = %session.session_id,
                "refresh token reused; session revoked"
            );
            state
                .audit
                .record(Event {
                    kind: kind::REFRESH_REUSE,
                    actor: None,
                    subject: Some(&session.user_id),
                    ip: Some(ip),
                    detail: json!({ "session_id": session.session_id }),
                })
                .await?;
            Err(invalid_refresh())
        }
        RotateOutcome::Dead(_) | RotateOutcome::Unknown => Err(invalid_refresh()),
    }
}

/// End the session of a refresh token (its whole family). Always 204, so the answer tells
/// nothing about the token.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session is ended (or was not live)"),
        (status = 400, description = "Malformed body", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let presented = hash_refresh_token(&body.refresh_token);
    if let Some(session) = state
        .store
        .revoke_session_by_token(&presented, state.clock.now())
        .await?
    {
        state
            .gateway
            .registry
            .close_session(&session.session_id, SESSION_ENDED);
        state
            .audit
            .record(Event {
                kind: kind::LOGOUT,
                actor: Some(&session.user_id),
                subject: Some(&session.user_id),
                ip: Some(ip),
                detail: json!({ "session_id": session.session_id }),
            })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the calling user, everywhere.
#[utoipa::path(
    post, path = "/api/v1/auth/logout-all", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the caller is ended"),
    )
)]
pub async fn logout_all(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    auth: AuthUser,
) -> Result<StatusCode, ApiError> {
    let ended = state
        .store
        .revoke_user_sessions(&auth.user_id, state.clock.now())
        .await?;
    state
        .gateway
        .registry
        .close_user(&auth.user_id, SESSION_ENDED);
    state
        .audit
        .record(Event {
            kind: kind::LOGOUT_ALL,
            actor: Some(&auth.user_id),
            subject: Some(&auth.user_id),
            ip: Some(ip),
            detail: json!({ "sessions": ended }),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The authenticated user.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
    )
)]
pub async fn me(State(state): State<SharedState>, auth: AuthUser) -> Result<Json<Me>, ApiError> {
    let user = state
        .store
        .user_by_id(&auth.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    Ok(Json(Me {
        user_id: user.id,
        username: user.username,
        is_admin: user.is_admin,
        created_at: user.created_at,
    }))
}

//! Starting and continuing login sessions: each session is a refresh-token family; each
//! refresh rotates the token, and every response carries a fresh access token.

use time::Duration;
use unhidra_proto::auth::TokenPair;
use unhidra_store::{NewSession, NextRefreshToken};
use unhidra_tokens::opaque::RefreshToken;

use unhidra_tokens::jwt::AccessClaims;

use crate::http::ApiError;
use crate::state::AppState;

fn pair(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    refresh: &RefreshToken,
) -> Result<TokenPair, ApiError> {
    let (access_token, _claims) = state
        .tokens
        .issue(user_id, session_id, state.clock.now())
        .map_err(ApiError::internal)?;
    Ok(TokenPair {
        access_token,
        refresh_token: refresh.expose().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: u64::try_from(state.tokens.ttl().whole_seconds()).unwrap_or(0),
    })
}

/// Starts a new session for `user_id`; returns its id and first token pair.
pub async fn start(state: &AppState, user_id: &str) -> Result<(String, TokenPair), ApiError> {
    let now = state.clock.now();
    let session_id = uuid::Uuid::now_v7().to_string();
    let refresh = RefreshToken::generate();
    state
        .store
        .create_session(NewSession {
            id: session_id.clone(),
            user_id: user_id.to_owned(),
            created_at: now,
            expires_at: now + Duration::seconds(i64::from(state.config.auth.session_ttl_secs)),
            token_hash: refresh.hash().to_vec(),
        })
        .await?;
    let tokens = pair(state, user_id, &session_id, &refresh)?;
    Ok((session_id, tokens))
}

/// The next refresh token of a rotation, generated before the store decides.
pub fn next_refresh_token() -> (RefreshToken, NextRefreshToken) {
    let refresh = RefreshToken::generate();
    let next = NextRefreshToken {
        token_hash: refresh.hash().to_vec(),
    };
    (refresh, next)
}

/// The pair handed out after a successful rotation.
pub fn continue_session(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    refresh: &RefreshToken,
) -> Result<TokenPair, ApiError> {
    pair(state, user_id, session_id, refresh)
}

/// What checking a presented access token found.
pub enum TokenCheck {
    Valid(AccessClaims),
    /// Refused: `reason` labels the metric and log line, `error` goes to the client.
    Refused {
        reason: &'static str,
        error: ApiError,
    },
}

/// Checks an access token for both the REST extractor and the WebSocket handshake: the
/// signature and claims at the clock's time, then that its session is still live (so logout
/// and refresh-token reuse take effect at once) and belongs to the token's subject (a token
/// naming one user with another's session is refused). `Err` is a store failure, not a
/// refusal.
pub async fn check_access_token(state: &AppState, token: &str) -> Result<TokenCheck, ApiError> {
    let now = state.clock.now();
    let claims = match state.tokens.verify(token, now) {
        Ok(claims) => claims,
        Err(err) => {
            return Ok(TokenCheck::Refused {
                reason: err.reason(),
                error: ApiError::unauthorized("invalid or expired access token"),
            })
        }
    };
    if !state
        .store
        .session_is_live(&claims.sid, &claims.sub, now)
        .await?
    {
        return Ok(TokenCheck::Refused {
            reason: "session_ended",
            error: ApiError::unauthorized("the session has ended; log in again"),
        });
    }
    Ok(TokenCheck::Valid(claims))
}

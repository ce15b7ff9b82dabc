//! `/api/v1/channels`: the minimal channel management that delivery needs (the full chat
//! feature set builds on it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use unhidra_proto::channels::{AddMemberRequest, CreateChannelRequest, CreatedChannel};
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{NewChannel, StoreError};

use crate::http::extract::{ApiJson, AuthUser};
use crate::http::ApiError;
use crate::state::SharedState;

fn channel_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_ascii_lowercase();
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "name must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// Create a channel; the caller becomes its first member.
#[utoipa::path(
    post, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    request_body = CreateChannelRequest,
    responses(
        (status = 201, description = "Created", body = CreatedChannel),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<CreateChannelRequest>,
) -> Result<(StatusCode, Json<CreatedChannel>), ApiError> {
    let name = channel_name(&body.name)?;
    let channel = state
        .store
        .create_channel(NewChannel {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            private: body.private,
            created_by: auth.user_id,
            created_at: state.clock.now(),
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "a channel with this name exists",
            ),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(CreatedChannel { id: channel.id })))
}

/// Add a member. Anyone may add themselves to a public channel; otherwise only members may
/// add people. A private channel the caller is not in is 404, as if it did not exist.
#[utoipa::path(
    post, path = "/api/v1/channels/{id}/members", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = AddMemberRequest,
    responses(
        (status = 204, description = "The user is a member"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Only members may add others", body = ErrorBody),
        (status = 404, description = "No such channel or user", body = ErrorBody),
    )
)]
pub async fn add_member(
    State(state): State<SharedState>,
    auth: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddMemberRequest>,
) -> Result<StatusCode, ApiError> {
    let no_channel = || ApiError::not_found("no such channel");
    let channel = state
        .store
        .channel_by_id(&id)
        .await?
        .ok_or_else(no_channel)?;
    let caller_is_member = state.store.is_member(&channel.id, &auth.user_id).await?;
    if channel.private && !caller_is_member {
        return Err(no_channel());
    }
    let joining_self = body.user_id == auth.user_id;
    if !caller_is_member && !joining_self {
        return Err(ApiError::forbidden("only members may add others"));
    }
    if state.store.user_by_id(&body.user_id).await?.is_none() {
        return Err(ApiError::not_found("no such user"));
    }
    state
        .store
        .add_member(&channel.id, &body.user_id, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

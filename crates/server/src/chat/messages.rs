//! `/api/v1/channels/{id}/messages/{message_id}…`: editing, deleting and reacting to a
//! message. Each change is a channel event: stored with the channel's next seq, then fanned
//! out to the channel's sockets (see [`super::events`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use unhidra_proto::channels::{ChatMessage, EditMessageRequest, RevisionInfo, RevisionList};
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{Actor, Message, MessageEdit, ReactionOutcome, Role};

use super::events::publish_stored;
use super::routes::member_of;
use super::{check_body, mentioned_members, wire, ChatError};
use crate::audit::{kind, Event};
use crate::http::extract::{ApiJson, ApiPath, AuthUser};
use crate::http::ApiError;
use crate::state::{AppState, SharedState};

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::Store(store) => store.into(),
            ChatError::NotMember => ApiError::forbidden("not a member of this channel"),
            ChatError::Invalid(ErrorCode::Forbidden, why) => ApiError::forbidden(why),
            ChatError::Invalid(code, why) => ApiError::bad_request(code, why),
        }
    }
}

/// The live (not deleted) message, or 404.
async fn live_message(
    state: &AppState,
    channel_id: &str,
    message_id: &str,
) -> Result<Message, ApiError> {
    state
        .store
        .message_by_id(channel_id, message_id)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("no such message"))
}

fn archived() -> ApiError {
    ApiError::forbidden("the channel is archived")
}

/// Whether the user may moderate the channel: its owners and admins, and server admins.
async fn moderates(state: &AppState, role: Role, user_id: &str) -> Result<bool, ApiError> {
    if role >= Role::Admin {
        return Ok(true);
    }
    Ok(state
        .store
        .user_by_id(user_id)
        .await?
        .is_some_and(|u| u.is_admin))
}

/// Edit a message (its author only). The old body is kept for the channel's admins.
#[utoipa::path(
    patch, path = "/api/v1/channels/{id}/messages/{message_id}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
    ),
    request_body = EditMessageRequest,
    responses(
        (status = 200, description = "The edited message", body = ChatMessage),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "Not the author, or the channel is archived", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn edit(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, message_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<EditMessageRequest>,
) -> Result<Json<ChatMessage>, ApiError> {
    let (channel, _) = member_of(&state, &id, &auth.user_id).await?;
    if channel.archived_at.is_some() {
        return Err(archived());
    }
    check_body(&body.body)?;
    let message = live_message(&state, &id, &message_id).await?;
    if message.sender_id != auth.user_id {
        return Err(ApiError::forbidden("only the author edits a message"));
    }
    let mentions = mentioned_members(&state, &id, &body.body).await?;
    let (edited, seq) = state
        .store
        .edit_message(MessageEdit {
            channel_id: id.clone(),
            message_id,
            author_id: auth.user_id,
            body: body.body,
            mentions,
            at: state.clock.now(),
        })
        .await?
        // Deleted in between.
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    let edited = wire(edited);
    let frame = ServerFrame::MessageEdited {
        channel: id.clone(),
        seq,
        message: edited.clone(),
    };
    publish_stored(&state, &id, seq, &frame);
    Ok(Json(edited))
}

/// Delete a message: its author, the channel's owners and admins, or a server admin. The
/// message becomes a tombstone; its body, earlier bodies and reactions are erased.
#[utoipa::path(
    delete, path = "/api/v1/channels/{id}/messages/{message_id}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Neither the author nor a moderator", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, message_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, role) = member_of(&state, &id, &auth.user_id).await?;
    let message = live_message(&state, &id, &message_id).await?;
    if message.sender_id != auth.user_id && !moderates(&state, role, &auth.user_id).await? {
        return Err(ApiError::forbidden(
            "only the author or a channel admin deletes a message",
        ));
    }
    let by = Actor {
        user_id: auth.user_id.clone(),
        at: state.clock.now(),
    };
    let seq = state
        .store
        .delete_message(&id, &message_id, &by)
        .await?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    let frame = ServerFrame::MessageDeleted {
        channel: id.clone(),
        seq,
        id: message_id,
        by: by.user_id,
        ts: by.at,
    };
    publish_stored(&state, &id, seq, &frame);
    if message.sender_id != auth.user_id {
        state
            .audit
            .record(Event {
                kind: kind::MESSAGE_MODERATED,
                actor: Some(&auth.user_id),
                subject: Some(&message.id),
                ip: None,
                detail: serde_json::json!({"channel": id, "author": message.sender_id}),
            })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A message's earlier bodies (the channel's owners and admins, and server admins).
#[utoipa::path(
    get, path = "/api/v1/channels/{id}/messages/{message_id}/revisions", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 200, description = "Earlier bodies, oldest first", body = RevisionList),
        (status = 403, description = "Not a moderator of the channel", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn revisions(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, message_id)): ApiPath<(String, String)>,
) -> Result<Json<RevisionList>, ApiError> {
    let (_, role) = member_of(&state, &id, &auth.user_id).await?;
    if !moderates(&state, role, &auth.user_id).await? {
        return Err(ApiError::forbidden(
            "only channel admins see a message's history",
        ));
    }
    state
        .store
        .message_by_id(&id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    let revisions = state.store.message_revisions(&message_id).await?;
    Ok(Json(RevisionList {
        revisions: revisions
            .into_iter()
            .map(|r| RevisionInfo {
                rev: r.rev,
                body: r.body,
                replaced_at: r.replaced_at,
            })
            .collect(),
    }))
}

/// An emoji: 1 to 64 bytes without white space or control characters (a Unicode emoji or a
/// `:shortcode:`).
fn check_emoji(emoji: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&emoji.len())
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "an emoji is 1 to 64 bytes without spaces or control characters",
        ))
    }
}

/// Adds or removes the caller's reaction; either is idempotent.
async fn react(
    state: &AppState,
    auth: AuthUser,
    (id, message_id, emoji): (String, String, String),
    add: bool,
) -> Result<StatusCode, ApiError> {
    check_emoji(&emoji)?;
    let (channel, _) = member_of(state, &id, &auth.user_id).await?;
    if channel.archived_at.is_some() {
        return Err(archived());
    }
    let by = Actor {
        user_id: auth.user_id,
        at: state.clock.now(),
    };
    match state
        .store
        .set_reaction(&id, &message_id, &emoji, add, &by)
        .await?
    {
        ReactionOutcome::NoMessage => Err(ApiError::not_found("no such message")),
        ReactionOutcome::Unchanged => Ok(StatusCode::NO_CONTENT),
        ReactionOutcome::Changed(seq) => {
            let channel_id = id.clone();
            let (channel, id, user, ts) = (id, message_id, by.user_id, by.at);
            let frame = if add {
                ServerFrame::ReactionAdded {
                    channel,
                    seq,
                    id,
                    user,
                    emoji,
                    ts,
                }
            } else {
                ServerFrame::ReactionRemoved {
                    channel,
                    seq,
                    id,
                    user,
                    emoji,
                    ts,
                }
            };
            publish_stored(state, &channel_id, seq, &frame);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// React to a message with an emoji (members; not in archived channels).
#[utoipa::path(
    put, path = "/api/v1/channels/{id}/messages/{message_id}/reactions/{emoji}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
        ("emoji" = String, Path, max_length = 64, pattern = r"^[^\s\x00-\x1F\x7F-\x9F]+$",
            description = "The emoji, percent-encoded: 1 to 64 bytes without white space or \
                control characters"),
    ),
    responses(
        (status = 204, description = "The reaction is there"),
        (status = 400, description = "Invalid emoji", body = ErrorBody),
        (status = 403, description = "The channel is archived", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn add_reaction(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(path): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    react(&state, auth, path, true).await
}

/// Take back the caller's reaction.
#[utoipa::path(
    delete, path = "/api/v1/channels/{id}/messages/{message_id}/reactions/{emoji}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
        ("emoji" = String, Path, max_length = 64, pattern = r"^[^\s\x00-\x1F\x7F-\x9F]+$",
            description = "The emoji, percent-encoded: 1 to 64 bytes without white space or \
                control characters"),
    ),
    responses(
        (status = 204, description = "The reaction is gone"),
        (status = 400, description = "Invalid emoji", body = ErrorBody),
        (status = 403, description = "The channel is archived", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn remove_reaction(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(path): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    react(&state, auth, path, false).await
}

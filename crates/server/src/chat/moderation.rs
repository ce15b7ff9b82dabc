//! What the automatic moderation (`ml.moderation`) leaves to administrators: held messages
//! to release or reject, and flagged ones to look at.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;
use unhidra_proto::channels::{ChatMessage, HeldMessageInfo, ModerationQueue};
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::ErrorBody;
use unhidra_store::HeldMessage;

use super::events::publish_stored;
use super::wire;
use crate::audit::{kind, Event};
use crate::http::extract::{AdminUser, ApiPath};
use crate::http::ApiError;
use crate::state::SharedState;

/// Most held and flagged messages listed at once.
const LIST_LIMIT: u32 = 200;

fn held_info(h: HeldMessage) -> HeldMessageInfo {
    HeldMessageInfo {
        id: h.id,
        channel: h.channel_id,
        sender: h.sender_id,
        body: h.body,
        client_msg_id: h.client_msg_id,
        thread_root: h.thread_root_id,
        reasons: h.reasons,
        ts: h.created_at,
    }
}

/// Held messages (oldest first) and flagged ones (newest first), administrators only.
#[utoipa::path(get, path = "/api/v1/admin/moderation", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What waits for an administrator", body = ModerationQueue),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ))]
pub async fn queue(
    State(state): State<SharedState>,
    _admin: AdminUser,
) -> Result<Json<ModerationQueue>, ApiError> {
    let held = state.store.held_messages(LIST_LIMIT).await?;
    let flagged = state.store.flagged_messages(LIST_LIMIT).await?;
    Ok(Json(ModerationQueue {
        held: held.into_iter().map(held_info).collect(),
        flagged: flagged.into_iter().map(wire).collect(),
    }))
}

/// Releases a held message: it is appended to its channel now (with its reasons as its
/// flag) and delivered like any other.
#[utoipa::path(post, path = "/api/v1/admin/moderation/held/{id}/release", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Held message id")),
    responses(
        (status = 200, description = "The message as it now stands in its channel", body = ChatMessage),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such held message", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<SharedState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChatMessage>, ApiError> {
    let held = state
        .store
        .held_message(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such held message"))?;
    let channel_id = held.channel_id.clone();
    // Appended first, then forgotten: a crash in between leaves it held, and releasing it
    // again finds the stored message (same sender and client_msg_id) instead of a second.
    let appended = state.store.append_message(held.into_new_message()).await?;
    state.store.remove_held(&id).await?;
    let message = wire(appended.message);
    if !appended.duplicate {
        publish_stored(
            &state,
            &channel_id,
            message.seq,
            &ServerFrame::Message(message.clone()),
        );
    }
    state
        .audit
        .record(Event {
            kind: kind::MESSAGE_RELEASED,
            actor: Some(&admin.id),
            subject: Some(&id),
            ip: None,
            detail: json!({ "channel_id": channel_id }),
        })
        .await?;
    Ok(Json(message))
}

/// Rejects a held message: it is deleted and never reaches its channel.
#[utoipa::path(delete, path = "/api/v1/admin/moderation/held/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Held message id")),
    responses(
        (status = 204, description = "Rejected and deleted"),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such held message", body = ErrorBody),
    ))]
pub async fn reject(
    State(state): State<SharedState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let held = state
        .store
        .held_message(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such held message"))?;
    if !state.store.remove_held(&id).await? {
        return Err(ApiError::not_found("no such held message"));
    }
    state
        .audit
        .record(Event {
            kind: kind::MESSAGE_REJECTED,
            actor: Some(&admin.id),
            subject: Some(&id),
            ip: None,
            detail: json!({ "channel_id": held.channel_id, "sender_id": held.sender_id }),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Channels and messages: who may read and post where, and the one path a message takes
//! from a publisher to its subscribers.
//!
//! A publish: `Store::post_message` checks membership and the archived flag and assigns the
//! channel's next seq in the transaction that stores it → the hub fans the stored message
//! out. The caller acks only
//! after this returns, so an ack always means "durably stored". A retry with the same
//! `client_msg_id` returns the stored message and is not fanned out again.
//!
//! Every later change to a channel (edit, deletion, reaction, member joined or left, rename,
//! archive) is stored the same way, as a channel event with the next seq, and fanned out as
//! its frame: a client that resubscribes with `since` is replayed messages and events in
//! order. Typing, read receipts and presence are not stored; they go to whoever listens now
//! (see [`events`]).

pub mod events;
pub mod messages;
pub mod moderation;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use unhidra_proto::channels::{ChatMessage, ReactionInfo};
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::ErrorCode;
use unhidra_store::{Appended, Message, NewMessage, StoreError, ARCHIVED, NOT_A_MEMBER};

use crate::config::ModerationMode;
use crate::gateway::hub::Delivery;
use crate::state::{AppState, SharedState};

/// Largest message body, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
const MAX_CLIENT_MSG_ID: usize = 64;
/// Most files attached to one message.
pub const MAX_ATTACHMENTS: usize = 10;

/// Why a chat action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{1}")]
    Invalid(ErrorCode, &'static str),
    #[error("not a member of this channel")]
    NotMember,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(code, _) => *code,
            Self::NotMember => ErrorCode::Forbidden,
            Self::Store(StoreError::Unavailable { .. }) => ErrorCode::StorageUnavailable,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// The message a client sees (a store failure's cause stays in the log).
    pub fn client_message(&self) -> String {
        match self {
            Self::Store(err @ StoreError::Unavailable { outage, .. }) => {
                tracing::error!(error = %err, "chat store failure");
                crate::http::error::storage_message(*outage).to_owned()
            }
            Self::Store(err) => {
                tracing::error!(error = %err, "chat store failure");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// Whether `user_id` may read and post in `channel_id`: members only. (Public channels are
/// joined through `POST /api/v1/channels/{id}/members` first.)
pub async fn is_member(
    state: &AppState,
    user_id: &str,
    channel_id: &str,
) -> Result<bool, ChatError> {
    Ok(state.store.is_member(channel_id, user_id).await?)
}

/// A stored message as clients see it, in history, search and `message` frames.
pub fn wire(m: Message) -> ChatMessage {
    ChatMessage {
        id: m.id,
        channel: m.channel_id,
        seq: m.seq,
        sender: m.sender_id,
        body: m.body,
        client_msg_id: m.client_msg_id,
        ts: m.created_at,
        thread_root: m.thread_root_id,
        reply_count: m.reply_count,
        last_reply_at: m.last_reply_at,
        edited_at: m.edited_at,
        deleted: m.deleted_at.is_some(),
        reactions: m
            .reactions
            .into_iter()
            .map(|r| ReactionInfo {
                emoji: r.emoji,
                users: r.user_ids,
            })
            .collect(),
        attachments: m
            .attachments
            .into_iter()
            .map(crate::files::routes::wire)
            .collect(),
        flagged: m.flag_reasons,
    }
}

/// A frame as text; serializing frames of strings and numbers cannot fail.
pub fn frame_text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// The `message` frame for a stored message.
pub fn message_frame(message: &Message) -> Utf8Bytes {
    frame_text(&ServerFrame::Message(wire(message.clone())))
}

/// A message a user wants to post.
#[derive(Debug, Clone)]
pub struct Post {
    pub channel_id: String,
    pub body: String,
    pub client_msg_id: String,
    /// Reply in the thread of this message id.
    pub thread_root: Option<String>,
    /// Ids of files the sender uploaded to the channel.
    pub attachments: Vec<String>,
}

fn check_body(body: &str) -> Result<(), ChatError> {
    if body.trim().is_empty() || body.len() > MAX_BODY_BYTES {
        return Err(ChatError::Invalid(
            ErrorCode::InvalidField,
            "body must be 1 to 32768 bytes, not only white space",
        ));
    }
    Ok(())
}

/// Most distinct `@username` mentions looked up per message.
const MAX_MENTIONS: usize = 20;

/// The members of the channel that `body` mentions as `@username`.
pub async fn mentioned_members(
    state: &AppState,
    channel_id: &str,
    body: &str,
) -> Result<Vec<String>, ChatError> {
    let mut names: Vec<String> = Vec::new();
    for (at, _) in body.match_indices('@') {
        // A mention starts a word: `a@b` is an address, not a mention.
        let starts_word = body
            .get(..at)
            .and_then(|before| before.chars().next_back())
            .is_none_or(|c| !c.is_alphanumeric());
        let name: String = body
            .get(at + 1..)
            .unwrap_or_default()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect::<String>()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if starts_word && !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        if names.len() >= MAX_MENTIONS {
            break;
        }
    }
    let mut ids = Vec::new();
    for name in names {
        if let Some(user) = state.store.user_by_username(&name).await? {
            if state.store.is_member(channel_id, &user.id).await? {
                ids.push(user.id);
            }
        }
    }
    Ok(ids)
}

/// Refuses a sender who may not post in the channel now, by reading the store (see
/// [`publish`] for when this runs before the write that decides it anyway).
async fn refuse_unless_member(
    state: &AppState,
    sender_id: &str,
    channel_id: &str,
) -> Result<(), ChatError> {
    if !is_member(state, sender_id, channel_id).await? {
        return Err(ChatError::NotMember);
    }
    let archived = state
        .store
        .channel_by_id(channel_id)
        .await?
        .is_some_and(|c| c.archived_at.is_some());
    if archived {
        return Err(ChatError::Invalid(ErrorCode::Forbidden, ARCHIVED));
    }
    Ok(())
}

/// A publish that passed every check the store does not make itself, ready to be stored.
#[derive(Debug)]
pub struct Ready {
    message: NewMessage,
    received_at: Instant,
}

/// What became of a publish's checks.
#[derive(Debug)]
pub enum Prepared {
    /// To be stored by [`store`].
    Ready(Ready),
    /// Held for review by the automatic moderation (`ml.moderation = "hold"`).
    Held(unhidra_store::HeldMessage),
}

/// Checks a publish and, with moderation on, scores its text: a flagged message carries the
/// reasons, or is held. Membership and the archived flag are left to [`store`], which the
/// store decides in the transaction that stores the message (one visit to the store per
/// publish); only when the ML worker is to be called is a non-member turned away first.
pub async fn prepare(
    state: &AppState,
    sender_id: &str,
    post: Post,
    received_at: Instant,
) -> Result<Prepared, ChatError> {
    let Post {
        channel_id,
        body,
        client_msg_id,
        thread_root,
        attachments,
    } = post;
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ChatError::Invalid(
            ErrorCode::InvalidField,
            "at most 10 attachments per message",
        ));
    }
    // A message with attachments may have no text; any other needs some.
    if !body.is_empty() || attachments.is_empty() {
        check_body(&body)?;
    }
    if client_msg_id.is_empty()
        || client_msg_id.len() > MAX_CLIENT_MSG_ID
        || client_msg_id.chars().any(char::is_control)
    {
        return Err(ChatError::Invalid(
            ErrorCode::InvalidField,
            "client_msg_id must be 1 to 64 bytes without control characters",
        ));
    }
    if state.config.ml.moderation != ModerationMode::Off {
        refuse_unless_member(state, sender_id, &channel_id).await?;
    }
    let mentions = mentioned_members(state, &channel_id, &body).await?;
    let flag_reasons = crate::ml::moderate(state, &body).await;
    let message = NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        channel_id,
        sender_id: sender_id.to_owned(),
        client_msg_id,
        body,
        created_at: state.clock.now(),
        thread_root_id: thread_root,
        mentions,
        attachments,
        flag_reasons,
    };
    if !message.flag_reasons.is_empty() && state.config.ml.moderation == ModerationMode::Hold {
        let (held, new) = state.store.hold_message(message).await?;
        if new {
            tracing::info!(message = %held.id, channel = %held.channel_id, "message held for review");
        }
        return Ok(Prepared::Held(held));
    }
    Ok(Prepared::Ready(Ready {
        message,
        received_at,
    }))
}

/// Stores a prepared message and fans it out; see the module docs. A retry with the same
/// `client_msg_id` returns the stored message and is not fanned out again.
///
/// The store takes posts in the order their futures are first polled
/// ([`unhidra_store::Store::post_message`]): a connection that polls each publish once as
/// it reads it keeps its messages in the order it sent them while their commits overlap.
pub async fn store(state: SharedState, ready: Ready) -> Result<Appended, ChatError> {
    let Ready {
        message,
        received_at,
    } = ready;
    let sent_body = message.body.clone();
    let appended = state
        .store
        .post_message(message)
        .await
        .map_err(|err| match err {
            StoreError::Invalid(why) => ChatError::Invalid(ErrorCode::InvalidField, why),
            StoreError::Forbidden(NOT_A_MEMBER) => ChatError::NotMember,
            StoreError::Forbidden(why) => ChatError::Invalid(ErrorCode::Forbidden, why),
            other => ChatError::Store(other),
        })?;
    if appended.duplicate && appended.message.body != sent_body {
        return Err(ChatError::Invalid(
            ErrorCode::Conflict,
            "this client_msg_id was already used for a different message",
        ));
    }
    if !appended.duplicate {
        state.gateway.hub.publish(Arc::new(Delivery {
            channel: appended.message.channel_id.clone(),
            seq: appended.message.seq,
            frame: message_frame(&appended.message),
            received_at,
        }));
    }
    Ok(appended)
}

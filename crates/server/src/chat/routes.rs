//! `/api/v1/channels`: the minimal channel management that delivery needs (the full chat
//! feature set builds on it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use unhidra_proto::channels::{
    AddMemberRequest, ChannelDevice, ChannelDeviceList, ChannelList, CreateChannelRequest,
    CreatedChannel, DirectConversation, MarkReadRequest, MemberInfo, MemberList, MessagePage,
    OpenDirectRequest, ReadPosition, SearchResults, Thread, UpdateChannelRequest, UserInfo,
};
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{Actor, Channel, NewChannel, Role, SearchQuery, StoreError};
use utoipa::IntoParams;

use super::events::{
    announce_channel_added, announce_channel_removed, publish_passing, publish_stored, summary,
};
use super::wire;
use crate::http::extract::{page_limit, ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::http::ApiError;
use crate::state::{AppState, SharedState};

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
            created_by: auth.user_id.clone(),
            created_at: state.clock.now(),
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict(_) => name_taken(),
            other => other.into(),
        })?;
    announce_channel_added(&state, &auth.user_id, &channel.id).await;
    Ok((StatusCode::CREATED, Json(CreatedChannel { id: channel.id })))
}

fn name_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "a channel with this name exists",
    )
}

fn fixed_members() -> ApiError {
    ApiError::forbidden("a direct conversation's members are fixed; open another one")
}

/// The channel and the caller's role in it. A private channel the caller is not in is 404,
/// as if it did not exist; a public one is 403 until they join.
pub(super) async fn member_of(
    state: &AppState,
    channel_id: &str,
    user_id: &str,
) -> Result<(Channel, Role), ApiError> {
    let no_channel = || ApiError::not_found("no such channel");
    let channel = state
        .store
        .channel_by_id(channel_id)
        .await?
        .ok_or_else(no_channel)?;
    match state.store.member_role(channel_id, user_id).await? {
        Some(role) => Ok((channel, role)),
        None if channel.private => Err(no_channel()),
        None => Err(ApiError::forbidden("join the channel first")),
    }
}

/// The caller's channels with unread counts, by name.
#[utoipa::path(
    get, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's channels", body = ChannelList),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    auth: AuthUser,
) -> Result<Json<ChannelList>, ApiError> {
    let memberships = state.store.memberships_of(&auth.user_id).await?;
    Ok(Json(ChannelList {
        channels: memberships.into_iter().map(summary).collect(),
    }))
}

/// Rename or (un)archive a channel (owners and admins). An archived channel keeps its
/// history and takes no new messages.
#[utoipa::path(
    patch, path = "/api/v1/channels/{id}", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = UpdateChannelRequest,
    responses(
        (status = 204, description = "Updated"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 403, description = "Not an owner or admin of the channel", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateChannelRequest>,
) -> Result<StatusCode, ApiError> {
    let (channel, role) = member_of(&state, &id, &auth.user_id).await?;
    if channel.direct {
        return Err(fixed_members());
    }
    if role < Role::Admin {
        return Err(ApiError::forbidden(
            "only owners and admins change a channel",
        ));
    }
    let by = Actor {
        user_id: auth.user_id,
        at: state.clock.now(),
    };
    let mut seqs = Vec::new();
    if let Some(name) = body.name {
        let name = channel_name(&name)?;
        let seq = state
            .store
            .rename_channel(&id, &name, &by)
            .await
            .map_err(|err| match err {
                StoreError::Conflict(_) => name_taken(),
                other => other.into(),
            })?;
        seqs.extend(seq);
    }
    if let Some(archived) = body.archived {
        seqs.extend(state.store.set_archived(&id, archived, &by).await?);
    }
    // One frame per stored event, each with the state after the whole update: a client
    // applies the last it sees.
    if !seqs.is_empty() {
        let now = state
            .store
            .channel_by_id(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        for seq in seqs {
            let frame = ServerFrame::ChannelUpdated {
                channel: id.clone(),
                seq,
                name: now.name.clone(),
                archived: now.archived_at.is_some(),
                by: by.user_id.clone(),
            };
            publish_stored(&state, &id, seq, &frame);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Leave a channel, or remove someone (owners and admins; an owner cannot be removed, and
/// an owner cannot leave). Their live sockets stop receiving the channel at once.
#[utoipa::path(
    delete, path = "/api/v1/channels/{id}/members/{user_id}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("user_id" = String, Path, description = "The member to remove (the caller to leave)"),
    ),
    responses(
        (status = 204, description = "No longer a member"),
        (status = 403, description = "Not allowed to remove this member", body = ErrorBody),
        (status = 404, description = "No such channel or member", body = ErrorBody),
        (status = 409, description = "An owner cannot leave or be removed", body = ErrorBody),
    )
)]
pub async fn remove_member(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (channel, caller_role) = member_of(&state, &id, &auth.user_id).await?;
    if channel.direct {
        return Err(fixed_members());
    }
    let target_role = state
        .store
        .member_role(&id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such member"))?;
    if target_role == Role::Owner {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "an owner cannot leave or be removed",
        ));
    }
    if user_id != auth.user_id && caller_role < Role::Admin {
        return Err(ApiError::forbidden("only owners and admins remove members"));
    }
    let by = Actor {
        user_id: auth.user_id,
        at: state.clock.now(),
    };
    if let Some(seq) = state.store.remove_member(&id, &user_id, &by).await? {
        let frame = ServerFrame::MemberLeft {
            channel: id.clone(),
            seq,
            user: user_id.clone(),
            by: by.user_id,
            ts: by.at,
        };
        publish_stored(&state, &id, seq, &frame);
    }
    state.gateway.registry.unsubscribe_user(&user_id, &id);
    announce_channel_removed(&state, &user_id, &id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages with a smaller seq (paging back); the default is the newest.
    before: Option<i64>,
    /// Messages with a larger seq (catching up); excludes `before`.
    after: Option<i64>,
    /// At most this many (1–200, default 50); outside that range, 400.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// A page of a channel's history, oldest first (members only).
#[utoipa::path(
    get, path = "/api/v1/channels/{id}/messages", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 403, description = "A public channel the caller has not joined", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = page_limit(query.limit, 50, 200)?;
    member_of(&state, &id, &auth.user_id).await?;
    // One more than asked tells whether more remain.
    let (mut messages, has_more) = match (query.before, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                "give before or after, not both",
            ))
        }
        (None, Some(after)) => {
            let mut page = state.store.messages_after(&id, after, limit + 1).await?;
            let more = page.len() > limit as usize;
            page.truncate(limit as usize);
            (page, more)
        }
        (before, None) => {
            let before = before.unwrap_or(i64::MAX);
            let mut page = state.store.messages_before(&id, before, limit + 1).await?;
            let more = page.len() > limit as usize;
            if more {
                page.remove(0);
            }
            (page, more)
        }
    };
    Ok(Json(MessagePage {
        messages: messages.drain(..).map(wire).collect(),
        has_more,
    }))
}

/// Mark a channel read up to `seq` (the position never moves back).
#[utoipa::path(
    post, path = "/api/v1/channels/{id}/read", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = MarkReadRequest,
    responses(
        (status = 200, description = "The read position now stored", body = ReadPosition),
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn mark_read(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MarkReadRequest>,
) -> Result<Json<ReadPosition>, ApiError> {
    member_of(&state, &id, &auth.user_id).await?;
    let last_read_seq = state
        .store
        .mark_read(&id, &auth.user_id, body.seq)
        .await?
        .ok_or_else(|| ApiError::not_found("no such channel"))?;
    let receipt = ServerFrame::Receipt {
        channel: id.clone(),
        user: auth.user_id,
        seq: last_read_seq,
    };
    publish_passing(&state, &id, &receipt);
    Ok(Json(ReadPosition { last_read_seq }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words that must all appear (any order, accents ignored); at most 256 bytes.
    q: String,
    /// Only this channel.
    channel: Option<String>,
    /// Only messages from this user id.
    author: Option<String>,
    /// At most this many (1–100, default 20); outside that range, 400.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// Full-text search over the messages the caller may read, best match first.
#[utoipa::path(
    get, path = "/api/v1/search", tag = "channels",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Matching messages", body = SearchResults),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    let limit = page_limit(params.limit, 20, 100)?;
    if params.q.len() > 256 {
        return Err(ApiError::bad_request(
            ErrorCode::BadRequest,
            "q must be at most 256 bytes",
        ));
    }
    let found = state
        .store
        .search_messages(SearchQuery {
            user_id: auth.user_id,
            text: params.q,
            channel_id: params.channel,
            sender_id: params.author,
            limit,
        })
        .await?;
    Ok(Json(SearchResults {
        messages: found.into_iter().map(wire).collect(),
    }))
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
        (status = 403, description = "Only members may add others", body = ErrorBody),
        (status = 404, description = "No such channel or user", body = ErrorBody),
    )
)]
pub async fn add_member(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
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
    if channel.direct {
        return Err(fixed_members());
    }
    let joining_self = body.user_id == auth.user_id;
    if !caller_is_member && !joining_self {
        return Err(ApiError::forbidden("only members may add others"));
    }
    if state.store.user_by_id(&body.user_id).await?.is_none() {
        return Err(ApiError::not_found("no such user"));
    }
    let by = Actor {
        user_id: auth.user_id,
        at: state.clock.now(),
    };
    if let Some(seq) = state
        .store
        .add_member(&channel.id, &body.user_id, &by)
        .await?
    {
        let frame = ServerFrame::MemberJoined {
            channel: channel.id.clone(),
            seq,
            user: body.user_id.clone(),
            by: by.user_id,
            ts: by.at,
        };
        publish_stored(&state, &channel.id, seq, &frame);
        announce_channel_added(&state, &body.user_id, &channel.id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    /// Replies with a larger seq (paging forward).
    after: Option<i64>,
    /// At most this many replies (1–200, default 100); outside that range, 400.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// A thread: its root message and its replies, oldest first (members only).
#[utoipa::path(
    get, path = "/api/v1/channels/{id}/threads/{root_id}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("root_id" = String, Path, description = "The thread's root message id"),
        ThreadQuery,
    ),
    responses(
        (status = 200, description = "The thread", body = Thread),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 403, description = "A public channel the caller has not joined", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn thread(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, root_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ThreadQuery>,
) -> Result<Json<Thread>, ApiError> {
    let limit = page_limit(query.limit, 100, 200)?;
    member_of(&state, &id, &auth.user_id).await?;
    let root = state
        .store
        .message_by_id(&id, &root_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    let mut replies = state
        .store
        .thread_replies(&id, &root.id, query.after.unwrap_or(0), limit + 1)
        .await?;
    let has_more = replies.len() > limit as usize;
    replies.truncate(limit as usize);
    Ok(Json(Thread {
        root: wire(root),
        replies: replies.into_iter().map(wire).collect(),
        has_more,
    }))
}

/// Open (find or create) the direct conversation of the caller and `user_ids`.
#[utoipa::path(
    post, path = "/api/v1/dms", tag = "channels",
    security(("bearer" = [])),
    request_body = OpenDirectRequest,
    responses(
        (status = 200, description = "The existing conversation", body = DirectConversation),
        (status = 201, description = "A new conversation", body = DirectConversation),
        (status = 400, description = "No one else, or more than 7 others", body = ErrorBody),
        (status = 404, description = "A user does not exist", body = ErrorBody),
    )
)]
pub async fn open_direct(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<OpenDirectRequest>,
) -> Result<(StatusCode, Json<DirectConversation>), ApiError> {
    let mut members = body.user_ids;
    members.push(auth.user_id.clone());
    members.sort_unstable();
    members.dedup();
    if !(2..=8).contains(&members.len()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "a direct conversation has 1 to 7 people besides you",
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let (channel, created) = state
        .store
        .open_direct(
            NewChannel {
                name: format!("dm-{id}"),
                id,
                private: true,
                created_by: auth.user_id,
                created_at: state.clock.now(),
            },
            &members,
        )
        .await
        .map_err(|err| match err {
            StoreError::Invalid(_) => ApiError::not_found("no such user"),
            other => other.into(),
        })?;
    if created {
        for member in &members {
            announce_channel_added(&state, member, &channel.id).await;
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(DirectConversation {
            id: channel.id,
            created,
        }),
    ))
}

/// A channel's members, by username (members only).
#[utoipa::path(
    get, path = "/api/v1/channels/{id}/members", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The members", body = MemberList),
        (status = 403, description = "A public channel the caller has not joined", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn members(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MemberList>, ApiError> {
    member_of(&state, &id, &auth.user_id).await?;
    let members = state.store.members_of(&id).await?;
    Ok(Json(MemberList {
        members: members
            .into_iter()
            .map(|m| MemberInfo {
                presence: state.gateway.presence.status(&m.user_id),
                user_id: m.user_id,
                username: m.username,
                role: m.role.as_str().to_owned(),
                last_read_seq: m.last_read_seq,
            })
            .collect(),
    }))
}

/// The devices linked to a channel (members only): their names, for their event messages.
#[utoipa::path(
    get, path = "/api/v1/channels/{id}/devices", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The linked devices", body = ChannelDeviceList),
        (status = 403, description = "A public channel the caller has not joined", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn devices(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelDeviceList>, ApiError> {
    member_of(&state, &id, &auth.user_id).await?;
    let devices = state.store.devices_in_channel(&id).await?;
    Ok(Json(ChannelDeviceList {
        devices: devices
            .into_iter()
            .map(|d| ChannelDevice {
                device_id: d.id,
                name: d.name,
                kind: d.kind,
            })
            .collect(),
    }))
}

/// Another user by id.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = UserInfo),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn user(
    State(state): State<SharedState>,
    _auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(UserInfo {
        user_id: user.id,
        username: user.username,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserLookup {
    /// The exact username (case-insensitive).
    username: String,
}

/// Find a user by username, to add them to a channel or open a conversation.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "channels",
    security(("bearer" = [])),
    params(UserLookup),
    responses(
        (status = 200, description = "The user", body = UserInfo),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn lookup_user(
    State(state): State<SharedState>,
    _auth: AuthUser,
    ApiQuery(query): ApiQuery<UserLookup>,
) -> Result<Json<UserInfo>, ApiError> {
    let name = query.username.trim().to_ascii_lowercase();
    let user = state
        .store
        .user_by_username(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(UserInfo {
        user_id: user.id,
        username: user.username,
    }))
}

//! Commands from people to devices. A command is stored first (so it survives the device
//! being offline, and a restart), then handed to the device's live connections on the
//! `device:<id>` topic; a device that connects is sent its pending commands in order. It is
//! delivered until the device answers it (`command_result`) or its TTL passes, and never
//! after it was answered. The answer goes to the sender's connections.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use time::OffsetDateTime;
use unhidra_proto::devices::{CommandInfo, SendCommandRequest};
use unhidra_proto::ws::ServerFrame;
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{Command, NewCommand, StoreError};

use crate::chat::events::{publish_passing, publish_stored, user_topic};
use crate::http::extract::{ApiJson, ApiPath, AuthUser};
use crate::http::ApiError;
use crate::state::{AppState, SharedState};

/// Default and longest time a command waits for its device.
pub const DEFAULT_TTL_SECS: u32 = 3600;
pub const MAX_TTL_SECS: u32 = 7 * 86_400;
/// Pending commands sent to a device when it connects; more wait for its next connection.
pub const PENDING_PAGE: u32 = 256;
const MAX_ARGS_BYTES: usize = 4096;

/// The hub topic of one device's connections.
pub fn device_topic(device_id: &str) -> String {
    format!("{}{device_id}", crate::gateway::hub::DEVICE_TOPIC_PREFIX)
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("no such device")]
    NoDevice,
    #[error("the device is revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidField,
            Self::NoDevice => ErrorCode::NotFound,
            Self::Revoked => ErrorCode::Conflict,
            Self::Store(StoreError::Unavailable { .. }) => ErrorCode::StorageUnavailable,
            Self::Store(_) => ErrorCode::Internal,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Invalid(why) => ApiError::bad_request(ErrorCode::InvalidField, why),
            CommandError::NoDevice => ApiError::not_found("no such device"),
            CommandError::Revoked => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "the device is revoked",
            ),
            CommandError::Store(err) => err.into(),
        }
    }
}

/// What a user asks a device to do.
#[derive(Debug, Clone)]
pub struct Order {
    pub device_id: String,
    pub name: String,
    pub args: serde_json::Value,
    pub ttl_secs: Option<u32>,
}

fn check(order: &Order) -> Result<(), CommandError> {
    let name_ok = (1..=64).contains(&order.name.len())
        && order
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(CommandError::Invalid(
            "name must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if order.args.to_string().len() > MAX_ARGS_BYTES {
        return Err(CommandError::Invalid("args must be at most 4 KiB of JSON"));
    }
    if order
        .ttl_secs
        .is_some_and(|ttl| !(1..=MAX_TTL_SECS).contains(&ttl))
    {
        return Err(CommandError::Invalid("ttl_secs must be 1 to 604800"));
    }
    Ok(())
}

/// Whether the user may command the device: its owner, or a server administrator. Others
/// are told there is no such device.
async fn may_command(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> Result<unhidra_store::Device, CommandError> {
    let device = state
        .store
        .device_by_id(device_id)
        .await?
        .ok_or(CommandError::NoDevice)?;
    if device.owner_id != user_id
        && !state
            .store
            .user_by_id(user_id)
            .await?
            .is_some_and(|u| u.is_admin)
    {
        return Err(CommandError::NoDevice);
    }
    Ok(device)
}

/// Stores the command and hands it to the device's live connections.
pub async fn send(
    state: &AppState,
    sender_id: &str,
    order: Order,
) -> Result<Command, CommandError> {
    check(&order)?;
    let device = may_command(state, sender_id, &order.device_id).await?;
    if device.revoked_at.is_some() {
        return Err(CommandError::Revoked);
    }
    let now = state.clock.now();
    let ttl = order.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    let command = state
        .store
        .create_command(NewCommand {
            id: uuid::Uuid::now_v7().to_string(),
            device_id: device.id,
            sender_id: sender_id.to_owned(),
            name: order.name,
            args: order.args,
            created_at: now,
            expires_at: now + time::Duration::seconds(i64::from(ttl)),
        })
        .await
        .map_err(|err| match err {
            StoreError::Invalid(_) => CommandError::NoDevice,
            other => other.into(),
        })?;
    // Ordered by the command's seq, so a connection skips what its pending replay sent.
    publish_stored(
        state,
        &device_topic(&command.device_id),
        command.seq,
        &device_frame(&command),
    );
    Ok(command)
}

/// The frame that hands a command to its device.
pub fn device_frame(command: &Command) -> ServerFrame {
    ServerFrame::Command {
        id: command.id.clone(),
        name: command.name.clone(),
        args: command.args.clone(),
    }
}

/// Stores a device's answer and tells the sender. `Ok(false)`: the device has no such
/// command (an answer repeated after it was stored is `Ok(true)` and changes nothing).
pub async fn answer(
    state: &AppState,
    device_id: &str,
    id: &str,
    ok: bool,
    output: serde_json::Value,
) -> Result<bool, StoreError> {
    let now = state.clock.now();
    match state
        .store
        .complete_command(device_id, id, ok, output, now)
        .await?
    {
        Some(command) => {
            let output = command.output.clone().unwrap_or_default();
            let mut summary = output.to_string();
            if summary.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|i| summary.is_char_boundary(*i))
                    .unwrap_or(0);
                summary.truncate(cut);
                summary.push('…');
            }
            let outcome = if ok { "done" } else { "failed" };
            crate::devices::events::post(
                state,
                &command.device_id,
                format!("command `{}` {outcome}: {summary}", command.name),
            )
            .await;
            let frame = ServerFrame::CommandResult {
                id: command.id,
                device: command.device_id,
                ok,
                output,
            };
            publish_passing(state, &user_topic(&command.sender_id), &frame);
            Ok(true)
        }
        None => Ok(state
            .store
            .command_by_id(id)
            .await?
            .is_some_and(|c| c.device_id == device_id)),
    }
}

/// A command as the API shows it.
pub fn info(c: Command, now: OffsetDateTime) -> CommandInfo {
    let status = if c.completed_at.is_some() {
        "completed"
    } else if c.expires_at <= now {
        "expired"
    } else if c.delivered_at.is_some() {
        "delivered"
    } else {
        "queued"
    };
    CommandInfo {
        id: c.id,
        device_id: c.device_id,
        name: c.name,
        args: c.args,
        status: status.to_owned(),
        created_at: c.created_at,
        expires_at: c.expires_at,
        delivered_at: c.delivered_at,
        completed_at: c.completed_at,
        ok: c.ok,
        output: c.output,
    }
}

/// Send a command to a device (its owner, or an administrator). It is delivered at once if
/// the device is connected, else when it connects, until answered or `ttl_secs` pass.
#[utoipa::path(
    post, path = "/api/v1/devices/{id}/commands", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    request_body = SendCommandRequest,
    responses(
        (status = 202, description = "Stored and on its way", body = CommandInfo),
        (status = 400, description = "Invalid command", body = ErrorBody),
        (status = 404, description = "No such device of the caller's", body = ErrorBody),
        (status = 409, description = "The device is revoked", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SendCommandRequest>,
) -> Result<(StatusCode, Json<CommandInfo>), ApiError> {
    let order = Order {
        device_id: id,
        name: body.name,
        args: body.args,
        ttl_secs: body.ttl_secs,
    };
    let command = send(&state, &auth.user_id, order).await?;
    Ok((StatusCode::ACCEPTED, Json(info(command, state.clock.now()))))
}

/// A command and what became of it (the device's owner, or an administrator).
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/commands/{command_id}", tag = "devices",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Device id"),
        ("command_id" = String, Path, description = "Command id"),
    ),
    responses(
        (status = 200, description = "The command", body = CommandInfo),
        (status = 404, description = "No such device or command", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath((id, command_id)): ApiPath<(String, String)>,
) -> Result<Json<CommandInfo>, ApiError> {
    may_command(&state, &auth.user_id, &id).await?;
    let command = state
        .store
        .command_by_id(&command_id)
        .await?
        .filter(|c| c.device_id == id)
        .ok_or_else(|| ApiError::not_found("no such command"))?;
    Ok(Json(info(command, state.clock.now())))
}

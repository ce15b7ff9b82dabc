//! `/api/v1/devices` (owners manage their devices) and `/api/v1/device` (a device asks who
//! it is).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use unhidra_proto::devices::{
    CreateDeviceRequest, CreatedDevice, Device, DeviceList, DeviceState, LinkChannelRequest,
};
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::NewDevice;
use unhidra_tokens::opaque::DeviceKey;

use unhidra_proto::ws::close;

use crate::audit::{kind, Event};
use crate::devices::live::LiveDevices;
use crate::gateway::registry::Kick;
use crate::http::extract::{ApiJson, ApiPath, AuthDevice, AuthUser, ClientIp};
use crate::http::ApiError;
use crate::rate_limit::Limit;
use crate::state::SharedState;

const MAX_METADATA_BYTES: usize = 4096;

/// The device as its owner sees it: what is stored, with the live state where it is
/// connected (or has been since the last write of its state).
fn to_wire(live: &LiveDevices, d: unhidra_store::Device) -> Device {
    let state = live.state(&d.id).unwrap_or(DeviceState {
        online: false,
        last_seen_at: d.last_seen_at,
        firmware_version: d.firmware_version.clone(),
        free_memory: d.free_memory,
        uptime_secs: None,
    });
    Device {
        state,
        channel_id: d.channel_id,
        device_id: d.id,
        owner_id: d.owner_id,
        name: d.name,
        kind: d.kind,
        metadata: d.metadata,
        key_id: d.key_id,
        created_at: d.created_at,
        revoked_at: d.revoked_at,
    }
}

fn invalid(message: &'static str) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidField, message)
}

struct ValidDevice {
    name: String,
    kind: Option<String>,
    metadata: Value,
}

fn validate(body: CreateDeviceRequest) -> Result<ValidDevice, ApiError> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name must be 1 to 64 characters without control characters",
        ));
    }
    let kind = match body.kind.map(|k| k.trim().to_owned()) {
        Some(k)
            if k.is_empty()
                || k.len() > 32
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
        {
            return Err(invalid(
                "kind must be 1 to 32 characters of letters, digits, '.', '_' and '-'",
            ));
        }
        other => other,
    };
    let metadata = match body.metadata {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::Object(map)) => Value::Object(map),
        Some(_) => return Err(invalid("metadata must be a JSON object")),
    };
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(invalid("metadata must be at most 4096 bytes"));
    }
    Ok(ValidDevice {
        name,
        kind,
        metadata,
    })
}

/// Register a device. The response holds its API key, which is never shown again.
#[utoipa::path(
    post, path = "/api/v1/devices", tag = "devices",
    security(("bearer" = [])),
    request_body = CreateDeviceRequest,
    responses(
        (status = 201, description = "Registered; `api_key` is shown only now", body = CreatedDevice),
        (status = 400, description = "Invalid name, kind or metadata", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    auth: AuthUser,
    ApiJson(body): ApiJson<CreateDeviceRequest>,
) -> Result<(StatusCode, Json<CreatedDevice>), ApiError> {
    state.limits.check(Limit::DeviceRegister, ip)?;
    let device = validate(body)?;
    let key = DeviceKey::generate();
    let created = state
        .store
        .create_device(NewDevice {
            id: uuid::Uuid::now_v7().to_string(),
            owner_id: auth.user_id.clone(),
            name: device.name,
            kind: device.kind,
            metadata: device.metadata,
            key_id: key.public_id().to_owned(),
            key_hash: state.device_keys.hash(key.secret()).to_vec(),
            created_at: state.clock.now(),
        })
        .await?;
    state
        .audit
        .record(Event {
            kind: kind::DEVICE_REGISTERED,
            actor: Some(&auth.user_id),
            subject: Some(&created.id),
            ip: Some(ip),
            detail: json!({ "name": created.name, "key_id": created.key_id }),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedDevice {
            device_id: created.id,
            api_key: key.expose_full(),
        }),
    ))
}

/// The caller's devices, oldest first, revoked ones included.
#[utoipa::path(
    get, path = "/api/v1/devices", tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's devices", body = DeviceList),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    auth: AuthUser,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.store.devices_of(&auth.user_id).await?;
    Ok(Json(DeviceList {
        devices: devices
            .into_iter()
            .map(|d| to_wire(&state.gateway.devices, d))
            .collect(),
    }))
}

/// One of the caller's devices. Another user's device is 404, as if it did not exist.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The device", body = Device),
        (status = 404, description = "No such device of the caller's", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Device>, ApiError> {
    match state.store.device_by_id(&id).await? {
        Some(device) if device.owner_id == auth.user_id => {
            Ok(Json(to_wire(&state.gateway.devices, device)))
        }
        _ => Err(ApiError::not_found("no such device")),
    }
}

/// Revoke one of the caller's devices: its key stops working at once.
#[utoipa::path(
    delete, path = "/api/v1/devices/{id}", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 404, description = "No such device of the caller's", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .store
        .revoke_device(&auth.user_id, &id, state.clock.now())
        .await?
    {
        return Err(ApiError::not_found("no such device"));
    }
    // Live connections of the device end now, not at their next reconnect.
    state.gateway.registry.close_device(
        &id,
        Kick {
            code: close::POLICY_VIOLATION,
            reason: crate::devices::REVOKED,
        },
    );
    state
        .audit
        .record(Event {
            kind: kind::DEVICE_REVOKED,
            actor: Some(&auth.user_id),
            subject: Some(&id),
            ip: Some(ip),
            detail: json!({}),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The device that presents its API key (`Authorization: Bearer unh_dk_…`).
#[utoipa::path(
    get, path = "/api/v1/device", tag = "devices",
    security(("device_key" = [])),
    responses(
        (status = 200, description = "The calling device", body = Device),
        (status = 401, description = "Missing, malformed, unknown or revoked device key", body = ErrorBody),
    )
)]
pub async fn whoami(
    State(state): State<SharedState>,
    device: AuthDevice,
) -> Result<Json<Device>, ApiError> {
    let found = state
        .store
        .device_by_id(&device.device_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked device key"))?;
    Ok(Json(to_wire(&state.gateway.devices, found)))
}

/// Link one of the caller's devices to a channel the caller is a member of: its coming and
/// going and its command results appear there as messages from the device. `null` unlinks.
#[utoipa::path(
    put, path = "/api/v1/devices/{id}/channel", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    request_body = LinkChannelRequest,
    responses(
        (status = 204, description = "Linked (or unlinked)"),
        (status = 404, description = "No such device of the caller's, or a channel the caller is not in", body = ErrorBody),
    )
)]
pub async fn link_channel(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LinkChannelRequest>,
) -> Result<StatusCode, ApiError> {
    if let Some(channel) = &body.channel_id {
        if !state.store.is_member(channel, &auth.user_id).await? {
            return Err(ApiError::not_found("no such channel"));
        }
    }
    let linked = state
        .store
        .set_device_channel(&auth.user_id, &id, body.channel_id.as_deref())
        .await
        .map_err(|err| match err {
            unhidra_store::StoreError::Invalid(_) => ApiError::not_found("no such channel"),
            other => other.into(),
        })?;
    if linked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such device"))
    }
}

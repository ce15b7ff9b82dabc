//! Operational endpoints: liveness, readiness, the public signing keys, the audit log.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use unhidra_proto::admin::{AuditEntry, AuditPage, ConnectionInfo, ConnectionList};
use unhidra_proto::ws::{close, Principal};
use unhidra_proto::ErrorBody;
use utoipa::IntoParams;

use crate::http::extract::{page_limit, AdminUser, ApiPath, ApiQuery};
use crate::http::ApiError;
use crate::state::SharedState;

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process is alive", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = Object),
        (status = 503, description = "The store is unreachable", body = Object),
    ))]
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": "unreachable" })),
            )
        }
    }
}

/// The public keys that verify access tokens (JWKS, RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops",
    responses((status = 200, description = "JSON Web Key Set with every current verification key", body = Object)))]
pub async fn jwks(State(state): State<SharedState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.tokens.jwks()),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many entries (1–500, default 100); outside that range, 400.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Only entries with a smaller id (for paging back).
    before: Option<i64>,
}

/// The audit log, newest first (administrators only).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<SharedState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = page_limit(query.limit, 100, 500)?;
    let events = state.store.audit_events(limit, query.before).await?;
    Ok(Json(AuditPage {
        events: events
            .into_iter()
            .map(|e| AuditEntry {
                id: e.id,
                at: e.at,
                kind: e.kind,
                actor: e.actor,
                subject: e.subject,
                ip: e.ip,
                detail: e.detail,
            })
            .collect(),
    }))
}

/// Every live WebSocket connection (administrators only).
#[utoipa::path(get, path = "/api/v1/admin/connections", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live connections", body = ConnectionList),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ))]
pub async fn connections(
    State(state): State<SharedState>,
    _admin: AdminUser,
) -> Json<ConnectionList> {
    let connections = state
        .gateway
        .registry
        .list()
        .iter()
        .map(|c| {
            let (kind, principal_id) = match &c.principal {
                Principal::User { id } => ("user", id.clone()),
                Principal::Device { id } => ("device", id.clone()),
            };
            ConnectionInfo {
                connection_id: c.id.clone(),
                kind: kind.to_owned(),
                principal_id,
                ip: c.ip.to_string(),
                user_agent: c.user_agent.clone(),
                connected_at: c.connected_at,
                frames_in: c.frames_in.load(Ordering::Relaxed),
                frames_out: c.frames_out.load(Ordering::Relaxed),
            }
        })
        .collect();
    Json(ConnectionList { connections })
}

/// Close a live WebSocket connection (administrators only); the client sees close code 1008.
#[utoipa::path(delete, path = "/api/v1/admin/connections/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 204, description = "The connection is being closed"),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such live connection", body = ErrorBody),
    ))]
pub async fn close_connection(
    State(state): State<SharedState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let kick = crate::gateway::registry::Kick {
        code: close::POLICY_VIOLATION,
        reason: "closed by an administrator",
    };
    if !state.gateway.registry.close_connection(&id, kick) {
        return Err(ApiError::not_found("no such live connection"));
    }
    state
        .audit
        .record(crate::audit::Event {
            kind: crate::audit::kind::ADMIN_CONNECTION_CLOSED,
            actor: Some(&admin.id),
            subject: Some(&id),
            ip: None,
            detail: json!({}),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Administrator-only bodies under `/api/v1/admin`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One recorded security event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increases with time; pass the smallest one seen as `before` for the next page.
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// A stable dotted name such as `auth.login.failed`.
    pub kind: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// `GET /api/v1/admin/audit`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub events: Vec<AuditEntry>,
}

/// A live WebSocket connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionInfo {
    pub connection_id: String,
    /// `user` or `device`.
    pub kind: String,
    /// The user's or device's id.
    pub principal_id: String,
    pub ip: String,
    pub user_agent: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub connected_at: OffsetDateTime,
    pub frames_in: u64,
    pub frames_out: u64,
}

/// `GET /api/v1/admin/connections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionList {
    pub connections: Vec<ConnectionInfo>,
}

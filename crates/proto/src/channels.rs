//! Channel bodies under `/api/v1/channels`.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/channels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateChannelRequest {
    /// 1–64 characters of `a-z 0-9 . _ -`, unique on the server.
    pub name: String,
    /// A private channel is readable only by its members; anyone may join a public one.
    #[serde(default)]
    pub private: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedChannel {
    pub id: String,
}

/// `POST /api/v1/channels/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub user_id: String,
}

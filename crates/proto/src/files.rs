//! File bodies under `/api/v1/channels/{id}/files` and `/api/v1/files`.
//!
//! An upload's body is the file itself (not JSON, not multipart); the server answers with
//! its [`FileInfo`]. Downloads are the bytes, served as an attachment.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A file uploaded to a channel, as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    pub id: String,
    pub channel_id: String,
    /// The name given at upload (1–255 bytes, no path, no control characters).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The media type declared at upload (`application/octet-stream` if none). Downloads
    /// carry it only when it is an inert type; anything else is served as
    /// `application/octet-stream`.
    pub content_type: String,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    pub uploader_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

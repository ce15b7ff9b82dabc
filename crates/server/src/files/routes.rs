//! `/api/v1/channels/{id}/files` and `/api/v1/files/{id}`: upload, download and describe
//! the files of a channel, for its members only.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use tokio_util::io::ReaderStream;
use unhidra_proto::files::FileInfo;
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::{NewFile, StoreError, StoredFile};
use utoipa::IntoParams;

use super::blobs::BlobError;
use super::{content_disposition, declared_type, file_name, served_type};
use crate::http::extract::{ApiPath, ApiQuery, AuthUser};
use crate::http::ApiError;
use crate::state::{AppState, SharedState};

/// How long a member's browser may keep a download: a file's bytes never change.
const CACHE_CONTROL: &str = "private, max-age=86400";

/// Scripts, plugins, forms and requests are all off, should a browser ever render a file.
const SANDBOX: &str = "sandbox; default-src 'none'";

pub fn wire(f: StoredFile) -> FileInfo {
    FileInfo {
        id: f.id,
        channel_id: f.channel_id,
        name: f.name,
        size: f.size,
        content_type: f.content_type,
        sha256: f.sha256,
        uploader_id: f.uploader_id,
        created_at: f.created_at,
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("a file may have at most {limit} bytes"),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name: 1–255 bytes, without `/`, `\`, control or bidirectional formatting
    /// characters. Refused, not repaired: send the base name. (Optional for serde only, so
    /// that its absence gets a message naming it.)
    #[param(
        value_type = String,
        required = true,
        min_length = 1,
        max_length = 255,
        pattern = r"^(?!\.\.?$)[^/\\\x00-\x1F\x7F-\x9F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]+$"
    )]
    name: Option<String>,
}

/// Upload a file to a channel (members only; not to an archived channel). The body is the
/// file itself, not multipart; its `Content-Type` is the file's declared type
/// (`application/octet-stream` when absent). At most `files.max_upload_bytes` (25 MiB by
/// default). The same content uploaded again is another file with the same `sha256`.
#[utoipa::path(
    post, path = "/api/v1/channels/{id}/files", tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), UploadQuery),
    request_body(
        description = "The file's bytes, as they are",
        content(("application/octet-stream"), ("*/*")),
    ),
    responses(
        (status = 201, description = "Stored", body = FileInfo),
        (status = 400, description = "Missing or invalid name, invalid Content-Type, or an unreadable body", body = ErrorBody),
        (status = 403, description = "A public channel the caller has not joined, or an archived channel", body = ErrorBody),
        (status = 404, description = "No such channel (or a private one the caller is not in)", body = ErrorBody),
        (status = 413, description = "Larger than files.max_upload_bytes", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(channel_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    // `Body` is not subject to the router's `DefaultBodyLimit` (only buffering extractors
    // are): the blob store counts the bytes against `files.max_upload_bytes` as they come.
    body: Body,
) -> Result<(StatusCode, Json<FileInfo>), ApiError> {
    let name = query.name.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            "name is required: POST /api/v1/channels/{id}/files?name=<file name>",
        )
    })?;
    let name = file_name(&name)?.to_owned();
    let content_type = declared_type(headers.get(header::CONTENT_TYPE))?;
    may_upload(&state, &channel_id, &auth.user_id).await?;

    let limit = state.config.files.max_upload_bytes;
    // A declared length over the limit is refused before a byte is read.
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let blob = state
        .files
        .put(body.into_data_stream(), limit)
        .await
        .map_err(|err| match err {
            BlobError::TooLarge { limit } => too_large(limit),
            BlobError::Body(cause) => {
                tracing::debug!(error = %cause, "upload body unreadable");
                ApiError::bad_request(ErrorCode::BadRequest, "the upload could not be read")
            }
            BlobError::Io(cause) => match unhidra_store::Outage::of_io(&cause) {
                Some(outage) => {
                    ApiError::storage_unavailable(outage, format!("storing an upload: {cause}"))
                }
                None => ApiError::internal(format!("storing an upload: {cause}")),
            },
        })?;
    let stored = state
        .store
        .insert_file(NewFile {
            id: uuid::Uuid::now_v7().to_string(),
            channel_id,
            uploader_id: auth.user_id,
            sha256: blob.sha256,
            size: blob.size,
            name,
            content_type,
            created_at: state.clock.now(),
        })
        .await
        .map_err(|err| match err {
            // The channel went away while the bytes came in.
            StoreError::Invalid(_) => ApiError::not_found("no such channel"),
            other => other.into(),
        })?;
    metrics::counter!(crate::metrics::FILES_UPLOADED).increment(1);
    metrics::counter!(crate::metrics::FILES_UPLOADED_BYTES).increment(stored.size);
    Ok((StatusCode::CREATED, Json(wire(stored))))
}

/// Whether the user may add a file to the channel, in the channels' terms: a private channel
/// the caller is not in is 404, as if it did not exist; a public one is 403 until joined; an
/// archived one takes nothing new.
async fn may_upload(state: &AppState, channel_id: &str, user_id: &str) -> Result<(), ApiError> {
    let no_channel = || ApiError::not_found("no such channel");
    let channel = state
        .store
        .channel_by_id(channel_id)
        .await?
        .ok_or_else(no_channel)?;
    if !state.store.is_member(channel_id, user_id).await? {
        return Err(if channel.private {
            no_channel()
        } else {
            ApiError::forbidden("join the channel first")
        });
    }
    if channel.archived_at.is_some() {
        return Err(ApiError::forbidden("the channel is archived"));
    }
    Ok(())
}

/// The file, if the user is a member of its channel. Everyone else, like an unknown id,
/// gets 404: whether a file exists is not revealed.
async fn readable_file(state: &AppState, id: &str, user_id: &str) -> Result<StoredFile, ApiError> {
    let not_found = || ApiError::not_found("no such file");
    let file = state.store.file_by_id(id).await?.ok_or_else(not_found)?;
    if state.store.is_member(&file.channel_id, user_id).await? {
        Ok(file)
    } else {
        Err(not_found())
    }
}

/// Download a file's bytes (members of its channel only), always as an attachment. It
/// carries its declared type only when that type is inert (images, PDF, plain text, audio,
/// video); HTML, SVG and anything else are `application/octet-stream`.
#[utoipa::path(
    get, path = "/api/v1/files/{id}", tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The file's bytes: the declared type when it is inert \
            (the types below), otherwise application/octet-stream",
            content(
                ([u8] = "application/octet-stream"),
                ([u8] = "image/png"), ([u8] = "image/jpeg"), ([u8] = "image/gif"),
                ([u8] = "image/webp"), ([u8] = "image/avif"), ([u8] = "application/pdf"),
                ([u8] = "text/plain"), ([u8] = "audio/mpeg"), ([u8] = "audio/ogg"),
                ([u8] = "audio/wav"), ([u8] = "audio/webm"), ([u8] = "audio/aac"),
                ([u8] = "audio/flac"), ([u8] = "audio/mp4"), ([u8] = "video/mp4"),
                ([u8] = "video/webm"), ([u8] = "video/ogg"), ([u8] = "video/quicktime"),
            ),
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"…\"; filename*=UTF-8''…"),
                ("Content-Security-Policy" = String, description = "sandbox; default-src 'none'"),
                ("X-Content-Type-Options" = String, description = "nosniff"),
                ("Cache-Control" = String, description = "private, max-age=86400"),
            )),
        (status = 404, description = "No such file, or not one the caller may read", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let file = readable_file(&state, &id, &auth.user_id).await?;
    let (blob, size) = state
        .files
        .open_blob(&file.sha256)
        .await
        .map_err(|err| ApiError::internal(format!("file {}: {err}", file.id)))?;
    if size != file.size {
        return Err(ApiError::internal(format!(
            "file {}: blob {} has {size} bytes, the store says {}",
            file.id, file.sha256, file.size
        )));
    }
    let mut response = Response::new(Body::from_stream(ReaderStream::new(blob)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(served_type(&file.content_type)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&file.name)?,
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    // Cached per access token: another user of the same browser does not get this copy.
    headers.insert(header::VARY, HeaderValue::from_static("authorization"));
    Ok(response)
}

/// A file's description (members of its channel only).
#[utoipa::path(
    get, path = "/api/v1/files/{id}/info", tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = FileInfo),
        (status = 404, description = "No such file, or not one the caller may read", body = ErrorBody),
    )
)]
pub async fn info(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FileInfo>, ApiError> {
    let file = readable_file(&state, &id, &auth.user_id).await?;
    Ok(Json(wire(file)))
}

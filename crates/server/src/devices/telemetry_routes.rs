//! `GET /api/v1/devices/{id}/telemetry`: a metric of a device, summarised per bucket; and
//! `GET /api/v1/devices/{id}/metrics`: which metrics it has.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use time::OffsetDateTime;
use unhidra_proto::devices::{DeviceMetrics, TelemetryBucket, TelemetrySeries};
use unhidra_proto::{ErrorBody, ErrorCode};
use unhidra_store::TelemetryQuery;
use utoipa::IntoParams;

use crate::http::extract::{ApiPath, ApiQuery, AuthUser};
use crate::http::ApiError;
use crate::state::SharedState;

/// Most buckets one query may ask for.
pub const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// The metric's name, as the device sends it.
    metric: String,
    /// Start, Unix seconds (inclusive); default: an hour before `to`.
    from: Option<i64>,
    /// End, Unix seconds (exclusive); default: now.
    to: Option<i64>,
    /// Bucket width in seconds, 1 s to 366 days (default 60); at most 10,000 buckets per
    /// query.
    #[param(minimum = 1, maximum = 31_622_400)]
    bucket: Option<i64>,
}

fn bad(message: &'static str) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidField, message)
}

/// The device, if the caller may read its telemetry: its owner, or an administrator.
/// Another user's device is 404, as if it did not exist.
async fn readable_device(
    state: &SharedState,
    auth: &AuthUser,
    id: &str,
) -> Result<unhidra_store::Device, ApiError> {
    let device = state
        .store
        .device_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such device"))?;
    if device.owner_id != auth.user_id {
        let admin = state
            .store
            .user_by_id(&auth.user_id)
            .await?
            .is_some_and(|u| u.is_admin);
        if !admin {
            return Err(ApiError::not_found("no such device"));
        }
    }
    Ok(device)
}

/// A metric of one of the caller's devices (administrators: any device), per bucket, with
/// min/max/avg/last/count. Another user's device is 404, as if it did not exist.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/telemetry", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id"), SeriesQuery),
    responses(
        (status = 200, description = "The buckets that hold points, oldest first", body = TelemetrySeries),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such device of the caller's", body = ErrorBody),
    )
)]
pub async fn series(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<SeriesQuery>,
) -> Result<Json<TelemetrySeries>, ApiError> {
    let device = readable_device(&state, &auth, &id).await?;
    let bucket = query.bucket.unwrap_or(60);
    // By default up to the end of the current second (`to` is exclusive): what was sent
    // a moment ago is in it.
    let to = query
        .to
        .unwrap_or_else(|| state.clock.now().unix_timestamp().saturating_add(1));
    let from = query.from.unwrap_or(to.saturating_sub(3600));
    if !(1..=366 * 86_400).contains(&bucket) {
        return Err(bad("bucket must be 1 second to 366 days"));
    }
    if from >= to {
        return Err(bad("from must be before to"));
    }
    if to.saturating_sub(from).saturating_add(bucket - 1) / bucket > MAX_BUCKETS {
        return Err(bad("at most 10000 buckets per query; widen bucket"));
    }
    let instant = |secs: i64| {
        OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|_| bad("from and to must be Unix seconds"))
    };
    let buckets = state
        .store
        .telemetry_buckets(TelemetryQuery {
            device_id: device.id.clone(),
            metric: query.metric.clone(),
            from: instant(from)?,
            to: instant(to)?,
            bucket_secs: bucket,
        })
        .await?;
    Ok(Json(TelemetrySeries {
        device_id: device.id,
        metric: query.metric,
        from,
        to,
        bucket,
        buckets: buckets
            .into_iter()
            .map(|b| TelemetryBucket {
                start: b.start.unix_timestamp(),
                count: b.count,
                min: b.min,
                max: b.max,
                avg: b.avg,
                last: b.last,
            })
            .collect(),
    }))
}

/// The names of the metrics a device has sent that still hold points, by name: what
/// `GET /api/v1/devices/{id}/telemetry?metric=` can be asked for. The caller's devices
/// (administrators: any device); another user's device is 404, as if it did not exist.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/metrics", tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The device's metric names, by name", body = DeviceMetrics),
        (status = 404, description = "No such device of the caller's", body = ErrorBody),
    )
)]
pub async fn metrics(
    State(state): State<SharedState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceMetrics>, ApiError> {
    let device = readable_device(&state, &auth, &id).await?;
    let metrics = state.store.telemetry_metrics(&device.id).await?;
    Ok(Json(DeviceMetrics {
        device_id: device.id,
        metrics,
    }))
}

//! Device telemetry: batched inserts, bucketed summaries, pruning by age.
//!
//! Points name their series (device, metric) by integer id. The ids of series seen before
//! are cached, so a batch of points from known series is one multi-row INSERT per 300 points
//! and nothing else.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use unhidra_store::{Result, StoreError, TelemetryBucket, TelemetryPoint, TelemetryQuery};

use crate::{db, from_ms, ms};

/// Points per INSERT statement (3 parameters each, well under SQLite's limit).
const POINTS_PER_STATEMENT: usize = 300;
/// Series pruned per transaction.
const SERIES_PER_PRUNE: i64 = 256;

/// Series ids by (device, metric), for series known to be stored.
#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    ids: Mutex<HashMap<(String, String), i64>>,
}

impl SeriesCache {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), i64>> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn missing_device(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
            StoreError::Invalid("telemetry for a device that does not exist")
        }
        _ => crate::db(err),
    }
}

async fn series_id(conn: &mut SqliteConnection, device_id: &str, metric: &str) -> Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO telemetry_series (device_id, metric) VALUES (?, ?)
         ON CONFLICT (device_id, metric) DO UPDATE SET metric = excluded.metric
         RETURNING id",
    )
    .bind(device_id)
    .bind(metric)
    .fetch_one(&mut *conn)
    .await
    .map_err(missing_device)?;
    Ok(id)
}

/// See [`unhidra_store::Store::append_telemetry`].
pub(crate) async fn append(
    writer: &SqlitePool,
    cache: &SeriesCache,
    points: &[TelemetryPoint],
) -> Result<u64> {
    if points.is_empty() {
        return Ok(0);
    }
    let mut tx = writer.begin().await.map_err(db)?;
    // Series ids, from the cache or created in this transaction (cached after the commit).
    let mut known = HashMap::new();
    let mut created = Vec::new();
    {
        let cached = cache.ids();
        for p in points {
            let key = (p.device_id.clone(), p.metric.clone());
            if let Some(id) = cached.get(&key) {
                known.insert(key, *id);
            }
        }
    }
    let mut rows = Vec::with_capacity(points.len());
    for p in points {
        let key = (p.device_id.clone(), p.metric.clone());
        let id = match known.get(&key) {
            Some(id) => *id,
            None => {
                let id = series_id(&mut tx, &p.device_id, &p.metric).await?;
                known.insert(key.clone(), id);
                created.push((key, id));
                id
            }
        };
        rows.push((id, ms(p.ts), p.value));
    }
    for chunk in rows.chunks(POINTS_PER_STATEMENT) {
        let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO telemetry (series_id, ts, value) VALUES {values}
             ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value"
        );
        let mut query = sqlx::query(&sql);
        for (id, ts, value) in chunk {
            query = query.bind(id).bind(ts).bind(value);
        }
        query.execute(&mut *tx).await.map_err(missing_device)?;
    }
    tx.commit().await.map_err(db)?;
    cache.ids().extend(created);
    Ok(points.len() as u64)
}

/// See [`unhidra_store::Store::telemetry_buckets`].
pub(crate) async fn buckets(
    reader: &SqlitePool,
    query: TelemetryQuery,
) -> Result<Vec<TelemetryBucket>> {
    let series: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM telemetry_series WHERE device_id = ? AND metric = ?")
            .bind(&query.device_id)
            .bind(&query.metric)
            .fetch_optional(reader)
            .await
            .map_err(db)?;
    let Some((series,)) = series else {
        return Ok(Vec::new());
    };
    let from = ms(query.from);
    let width = query.bucket_secs.max(1).saturating_mul(1000);
    // The inner query summarises each bucket and finds its newest point's time; the join
    // reads that point's value by primary key.
    let rows: Vec<(i64, i64, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT g.b, g.n, g.lo, g.hi, g.mean, t.value
         FROM (SELECT (ts - ?1) / ?2 AS b, COUNT(*) AS n, MIN(value) AS lo, MAX(value) AS hi,
                      AVG(value) AS mean, MAX(ts) AS last_ts
               FROM telemetry
               WHERE series_id = ?3 AND ts >= ?1 AND ts < ?4
               GROUP BY b) AS g
         JOIN telemetry t ON t.series_id = ?3 AND t.ts = g.last_ts
         ORDER BY g.b",
    )
    .bind(from)
    .bind(width)
    .bind(series)
    .bind(ms(query.to))
    .fetch_all(reader)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|(b, n, min, max, avg, last)| {
            Ok(TelemetryBucket {
                start: from_ms(from.saturating_add(b.saturating_mul(width)))?,
                count: u64::try_from(n).unwrap_or(0),
                min,
                max,
                avg,
                last,
            })
        })
        .collect()
}

/// See [`unhidra_store::Store::telemetry_metrics`]: the device's series that still hold a
/// point (pruning empties a series but keeps its row), each checked by its primary key.
pub(crate) async fn metrics(reader: &SqlitePool, device_id: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT s.metric FROM telemetry_series s
         WHERE s.device_id = ? AND EXISTS (SELECT 1 FROM telemetry t WHERE t.series_id = s.id)
         ORDER BY s.metric",
    )
    .bind(device_id)
    .fetch_all(reader)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(|(metric,)| metric).collect())
}

/// See [`unhidra_store::Store::prune_telemetry`]: each series' old range by primary key, a
/// few hundred series per transaction.
pub(crate) async fn prune(writer: &SqlitePool, before: OffsetDateTime) -> Result<u64> {
    let before = ms(before);
    let mut after = 0i64;
    let mut deleted = 0;
    loop {
        let mut tx = writer.begin().await.map_err(db)?;
        let series: Vec<(i64,)> =
            sqlx::query_as("SELECT id FROM telemetry_series WHERE id > ? ORDER BY id LIMIT ?")
                .bind(after)
                .bind(SERIES_PER_PRUNE)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        let Some((last,)) = series.last().copied() else {
            return Ok(deleted);
        };
        for (id,) in &series {
            let done = sqlx::query("DELETE FROM telemetry WHERE series_id = ? AND ts < ?")
                .bind(id)
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            deleted += done.rows_affected();
        }
        tx.commit().await.map_err(db)?;
        after = last;
        // Let queued writes (messages, telemetry) in between slices.
        tokio::task::yield_now().await;
    }
}

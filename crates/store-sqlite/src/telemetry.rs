//! Device telemetry: batched inserts, bucketed summaries, pruning by age.

use sqlx::SqlitePool;
use time::OffsetDateTime;
use unhidra_store::{Result, StoreError, TelemetryBucket, TelemetryPoint, TelemetryQuery};

use crate::{db, from_ms, ms};

/// Points per INSERT statement (4 parameters each, well under SQLite's limit).
const POINTS_PER_STATEMENT: usize = 256;

/// See [`unhidra_store::Store::append_telemetry`].
pub(crate) async fn append(writer: &SqlitePool, points: &[TelemetryPoint]) -> Result<u64> {
    if points.is_empty() {
        return Ok(0);
    }
    let mut tx = writer.begin().await.map_err(db)?;
    for chunk in points.chunks(POINTS_PER_STATEMENT) {
        let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO telemetry (device_id, metric, ts, value) VALUES {rows}
             ON CONFLICT (device_id, metric, ts) DO UPDATE SET value = excluded.value"
        );
        let mut query = sqlx::query(&sql);
        for p in chunk {
            query = query
                .bind(&p.device_id)
                .bind(&p.metric)
                .bind(ms(p.ts))
                .bind(p.value);
        }
        query.execute(&mut *tx).await.map_err(|err| match &err {
            sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
                StoreError::Invalid("telemetry for a device that does not exist")
            }
            _ => StoreError::backend(err),
        })?;
    }
    tx.commit().await.map_err(db)?;
    Ok(points.len() as u64)
}

/// See [`unhidra_store::Store::telemetry_buckets`].
pub(crate) async fn buckets(
    reader: &SqlitePool,
    query: TelemetryQuery,
) -> Result<Vec<TelemetryBucket>> {
    let from = ms(query.from);
    let width = query.bucket_secs.max(1).saturating_mul(1000);
    // The inner query summarises each bucket and finds its newest point's time; the join
    // reads that point's value by primary key.
    let rows: Vec<(i64, i64, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT g.b, g.n, g.lo, g.hi, g.mean, t.value
         FROM (SELECT (ts - ?1) / ?2 AS b, COUNT(*) AS n, MIN(value) AS lo, MAX(value) AS hi,
                      AVG(value) AS mean, MAX(ts) AS last_ts
               FROM telemetry
               WHERE device_id = ?3 AND metric = ?4 AND ts >= ?1 AND ts < ?5
               GROUP BY b) AS g
         JOIN telemetry t ON t.device_id = ?3 AND t.metric = ?4 AND t.ts = g.last_ts
         ORDER BY g.b",
    )
    .bind(from)
    .bind(width)
    .bind(&query.device_id)
    .bind(&query.metric)
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

/// See [`unhidra_store::Store::prune_telemetry`].
pub(crate) async fn prune(writer: &SqlitePool, before: OffsetDateTime, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM telemetry WHERE (device_id, metric, ts) IN
             (SELECT device_id, metric, ts FROM telemetry WHERE ts < ? LIMIT ?)",
    )
    .bind(ms(before))
    .bind(i64::from(limit))
    .execute(writer)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

//! Device telemetry: batched inserts, bucketed summaries, pruning by age.
//!
//! Points name their series (device, metric) by integer id. The ids of series seen before
//! are cached, so a batch of points from known series is one multi-row INSERT per 256
//! points on the writer and nothing else.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::Connection;
use sqlx::SqlitePool;
use time::OffsetDateTime;
use unhidra_store::{Result, TelemetryBucket, TelemetryPoint, TelemetryQuery};

use crate::writer::{failed, missing, stmt, Writer};
use crate::{db, from_ms, ms};

/// Points per INSERT statement (3 parameters each, well under SQLite's limit).
const POINTS_PER_STATEMENT: usize = 256;
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

/// See [`unhidra_store::Store::append_telemetry`].
pub(crate) async fn append(
    writer: &Writer,
    cache: &SeriesCache,
    points: &[TelemetryPoint],
) -> Result<u64> {
    if points.is_empty() {
        return Ok(0);
    }
    // Series ids from the cache; the others are created in the write (cached after commit).
    let known: HashMap<(String, String), i64> = {
        let cached = cache.ids();
        points
            .iter()
            .filter_map(|p| {
                let key = (p.device_id.clone(), p.metric.clone());
                cached.get(&key).map(|id| (key, *id))
            })
            .collect()
    };
    let points = points.to_vec();
    let created = writer
        .run(move |c| {
            let mut known = known;
            let mut created = Vec::new();
            let mut rows = Vec::with_capacity(points.len());
            for p in &points {
                let key = (p.device_id.clone(), p.metric.clone());
                let id = match known.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = series_id(c, &p.device_id, &p.metric)?;
                        known.insert(key.clone(), id);
                        created.push((key, id));
                        id
                    }
                };
                rows.push((id, ms(p.ts), p.value));
            }
            // Multi-row statements (prepared once per size): one statement per 256 points
            // costs far less than one per point.
            for chunk in rows.chunks(POINTS_PER_STATEMENT) {
                let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
                let mut insert = stmt(
                    c,
                    &format!(
                        "INSERT INTO telemetry (series_id, ts, value) VALUES {values}
                         ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value"
                    ),
                )?;
                let params: Vec<&dyn rusqlite::ToSql> = chunk
                    .iter()
                    .flat_map(|(id, ts, value)| {
                        [
                            id as &dyn rusqlite::ToSql,
                            ts as &dyn rusqlite::ToSql,
                            value,
                        ]
                    })
                    .collect();
                insert
                    .execute(params.as_slice())
                    .map_err(missing("telemetry for a device that does not exist"))?;
            }
            Ok((created, points.len() as u64))
        })
        .await?;
    let (created, stored) = created;
    cache.ids().extend(created);
    Ok(stored)
}

fn series_id(c: &Connection, device_id: &str, metric: &str) -> Result<i64> {
    stmt(
        c,
        "INSERT INTO telemetry_series (device_id, metric) VALUES (?, ?)
         ON CONFLICT (device_id, metric) DO UPDATE SET metric = excluded.metric
         RETURNING id",
    )?
    .query_row([device_id, metric], |row| row.get(0))
    .map_err(missing("telemetry for a device that does not exist"))
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
/// few hundred series per write, so that other writes (messages, telemetry) go in between.
pub(crate) async fn prune(writer: &Writer, before: OffsetDateTime) -> Result<u64> {
    let before = ms(before);
    let mut after = 0i64;
    let mut deleted = 0;
    loop {
        let slice = writer
            .run(move |c| {
                let series: Vec<i64> = stmt(
                    c,
                    "SELECT id FROM telemetry_series WHERE id > ? ORDER BY id LIMIT ?",
                )?
                .query_map([after, SERIES_PER_PRUNE], |row| row.get(0))
                .and_then(Iterator::collect)
                .map_err(failed)?;
                let mut delete = stmt(c, "DELETE FROM telemetry WHERE series_id = ? AND ts < ?")?;
                let mut deleted = 0;
                for id in &series {
                    deleted += delete.execute([*id, before]).map_err(failed)? as u64;
                }
                Ok((series.last().copied(), deleted))
            })
            .await?;
        let (last, slice_deleted) = slice;
        deleted += slice_deleted;
        match last {
            Some(last) => after = last,
            None => return Ok(deleted),
        }
    }
}

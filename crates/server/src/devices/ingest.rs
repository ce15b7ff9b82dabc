//! Storing telemetry: sessions hand their validated points to one writer task, which
//! commits whatever has queued in one transaction (up to [`MAX_BATCH_POINTS`]) and answers
//! each sender after the commit. One commit serves many devices, so the store keeps up with
//! tens of thousands of points a second (docs/benchmarks.md), and a device hears about a
//! point that could not be stored instead of losing it silently.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use unhidra_store::{Store, StoreError, TelemetryPoint};

/// Most points in one write. The store's writer runs one write at a time, so chat messages
/// queued behind a telemetry write wait for it: 8,192 points take 150–250 ms on this
/// project's test machine (docs/benchmarks.md). Smaller writes cost more per point (2,048:
/// 32,000 points/s against 52,000), so the way out is telemetry in a database file with a
/// writer of its own (issue 12), not a smaller batch.
pub const MAX_BATCH_POINTS: usize = 8192;
/// Frames waiting for the writer; beyond this, devices are told to slow down.
const QUEUE: usize = 4096;

/// Why points were not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("telemetry is arriving faster than it can be stored; slow down")]
    Overloaded,
    #[error("the server is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Job {
    points: Vec<TelemetryPoint>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side; cheap to share.
pub struct TelemetryIngest {
    jobs: mpsc::Sender<Job>,
}

impl TelemetryIngest {
    /// Starts the writer; it drains what is queued and ends when `stop` is cancelled. Await
    /// the returned future (it is the writer) on a task.
    pub fn new(
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        (Self { jobs }, writer(store, queue, stop))
    }

    /// Stores the points; returns once they are committed.
    pub async fn store(&self, points: Vec<TelemetryPoint>) -> Result<(), IngestError> {
        let (done, stored) = oneshot::channel();
        self.jobs
            .try_send(Job { points, done })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => IngestError::Stopped,
            })?;
        stored.await.map_err(|_| IngestError::Stopped)??;
        Ok(())
    }
}

async fn writer(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Job>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            job = queue.recv() => match job {
                Some(job) => job,
                None => return,
            },
            () = stop.cancelled() => {
                // Whatever was accepted before the stop is still stored.
                queue.close();
                match queue.recv().await {
                    Some(job) => job,
                    None => return,
                }
            }
        };
        let mut batch = vec![first];
        let mut points = batch.iter().map(|j| j.points.len()).sum::<usize>();
        while points < MAX_BATCH_POINTS {
            match queue.try_recv() {
                Ok(job) => {
                    points += job.points.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        commit(&*store, batch).await;
    }
}

/// Writes a batch in one transaction. If it is refused (a device was deleted meanwhile),
/// each job is retried alone so that one bad job does not fail the others.
async fn commit(store: &dyn Store, batch: Vec<Job>) {
    let all: Vec<TelemetryPoint> = batch.iter().flat_map(|j| j.points.clone()).collect();
    let count = all.len() as u64;
    match store.append_telemetry(&all).await {
        Ok(_) => {
            metrics::counter!(crate::metrics::TELEMETRY_POINTS_STORED).increment(count);
            for job in batch {
                let _ = job.done.send(Ok(()));
            }
        }
        Err(StoreError::Invalid(_)) if batch.len() > 1 => {
            for job in batch {
                let result = store.append_telemetry(&job.points).await.map(|n| {
                    metrics::counter!(crate::metrics::TELEMETRY_POINTS_STORED).increment(n);
                });
                let _ = job.done.send(result);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, points = count, "storing telemetry failed");
            for job in batch {
                let _ = job.done.send(Err(err.for_another()));
            }
        }
    }
}

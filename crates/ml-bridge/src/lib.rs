//! Machine learning in supervised Python worker processes, so that Python's GIL, memory and
//! crashes never reach the server.
//!
//! [`MlBridge::start`] creates a 0700 directory and, per worker, binds a Unix socket in it
//! (mode 0600) and starts `<program> <args…> --connect <socket> --max-frame-bytes <n>`; the
//! worker connects back, and that one connection carries its requests. Frames are a 4-byte
//! big-endian length and UTF-8 JSON ([`framing`], `tokio_util`'s length-delimited codec);
//! frames above [`Settings::max_frame_bytes`] are refused on both sides. Requests are
//! `{"id", "op", "payload"}` and answers `{"id", "ok", "result" | "error"}`, matched by `id`,
//! which is unique for the bridge's lifetime, so a late answer can never be taken for another
//! request's.
//!
//! [`MlBridge::call`] picks the ready worker with the fewest requests in flight. All workers
//! together hold at most [`Settings::queue`] requests (waiting or in flight); beyond that a
//! call fails at once with [`MlError::Busy`]: back-pressure, not unbounded buffering. Each call
//! has [`Settings::request_timeout`].
//!
//! Each worker has a supervisor task. A worker that exits, crashes, sends a frame it should
//! not (too large, not JSON), or misses its health ping ([`Settings::health_timeout`]) is
//! killed and started again after a backoff (doubling from [`Settings::backoff_base`] to
//! [`Settings::backoff_cap`], reset after a worker ran a while); its in-flight requests fail at
//! once with [`MlError::WorkerLost`]. [`MlBridge::shutdown`] closes the connections (workers
//! exit on end of stream), kills any that do not within a grace period, and removes the
//! sockets.

pub mod framing;
mod worker;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Metric names.
pub mod metric {
    /// Histogram of request round trips in seconds, by `op`.
    pub const REQUEST_DURATION: &str = "ml_request_duration_seconds";
    /// Failed requests by `op` and `kind` (see [`MlError::kind`](crate::MlError::kind)).
    pub const REQUEST_ERRORS: &str = "ml_request_errors_total";
    /// Worker restarts by `reason`.
    pub const WORKER_RESTARTS: &str = "ml_worker_restarts_total";
    /// Requests waiting or in flight.
    pub const QUEUE_DEPTH: &str = "ml_queue_depth";
    /// Workers connected and answering.
    pub const WORKERS_READY: &str = "ml_workers_ready";
}

/// How the workers are run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The interpreter (or any program speaking the protocol).
    pub program: PathBuf,
    /// Arguments before `--connect <socket>`, e.g. `["-m", "unhidra_ml"]`.
    pub args: Vec<String>,
    pub workers: usize,
    /// Created with mode 0700 (or, if it exists, refused unless it is a directory of ours
    /// that group and others cannot enter).
    pub socket_dir: PathBuf,
    pub request_timeout: Duration,
    /// Requests waiting or in flight, over all workers.
    pub queue: usize,
    pub max_frame_bytes: usize,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// How long a worker has to connect and answer its first health check.
    pub start_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Settings {
    /// Defaults for `program -m unhidra_ml` in `socket_dir`.
    pub fn new(program: impl Into<PathBuf>, socket_dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec!["-m".to_owned(), "unhidra_ml".to_owned()],
            workers: 2,
            socket_dir: socket_dir.into(),
            request_timeout: Duration::from_secs(2),
            queue: 1024,
            max_frame_bytes: 1024 * 1024,
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(20),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlError {
    #[error("the ML queue is full; try again later")]
    Busy,
    #[error("the ML request timed out")]
    Timeout,
    #[error("the ML worker was lost: {0}")]
    WorkerLost(String),
    #[error("no ML worker is ready")]
    Unavailable,
    #[error("the ML worker refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the ML request is larger than the frame limit")]
    TooLarge,
}

impl MlError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::WorkerLost(_) => "worker_lost",
            Self::Unavailable => "unavailable",
            Self::Refused { .. } => "refused",
            Self::TooLarge => "too_large",
        }
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ML socket directory {}: {source}", path.display())]
    SocketDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ML socket directory {} must be a directory that only this user can enter (mode 0700)", path.display())]
    SocketDirTooOpen { path: PathBuf },
    #[error("settings: {0}")]
    Settings(&'static str),
    /// No worker came up: the interpreter or the worker's packages are missing, most likely.
    #[error("no ML worker started: {0}")]
    NoWorker(String),
}

/// A request on its way to a worker.
struct Job {
    id: u64,
    frame: bytes::Bytes,
    reply: oneshot::Sender<Result<Value, MlError>>,
}

/// One worker's place in the pool.
#[derive(Default)]
struct Slot {
    /// The running worker's queue; `None` while it is (re)starting.
    jobs: RwLock<Option<mpsc::Sender<Job>>>,
    in_flight: AtomicUsize,
    pid: AtomicU32,
    restarts: AtomicU64,
}

impl Slot {
    fn jobs(&self) -> Option<mpsc::Sender<Job>> {
        self.jobs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_jobs(&self, jobs: Option<mpsc::Sender<Job>>) {
        *self
            .jobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = jobs;
    }
}

struct Inner {
    settings: Settings,
    slots: Vec<Slot>,
    queue: Arc<Semaphore>,
    next_id: AtomicU64,
    stop: CancellationToken,
    /// Cancelled once `start` has heard every worker's first outcome: a worker whose first
    /// start failed waits for it before trying again, so that a bridge that does not start
    /// at all says why once, in `start`'s error, not once per retry.
    started: CancellationToken,
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The pool of workers; cheap to clone.
#[derive(Clone)]
pub struct MlBridge {
    inner: Arc<Inner>,
    tasks: TaskTracker,
}

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    op: &'a str,
    payload: &'a Value,
}

impl MlBridge {
    /// Starts the workers and waits until each answered its first health check (or failed
    /// to). Fails when none did; workers that failed keep being retried with backoff.
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        if settings.workers == 0 || settings.queue == 0 || settings.max_frame_bytes < 1024 {
            return Err(StartError::Settings(
                "workers and queue must be at least 1, max_frame_bytes at least 1024",
            ));
        }
        prepare_dir(&settings.socket_dir)?;
        let inner = Arc::new(Inner {
            slots: (0..settings.workers).map(|_| Slot::default()).collect(),
            queue: Arc::new(Semaphore::new(settings.queue)),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
            started: CancellationToken::new(),
            settings,
        });
        let tasks = TaskTracker::new();
        let mut first = Vec::new();
        for index in 0..inner.slots.len() {
            let (ready, started) = oneshot::channel();
            first.push(started);
            tasks.spawn(worker::supervise(Arc::clone(&inner), index, ready));
        }
        tasks.close();
        let bridge = Self { inner, tasks };
        let mut failures = Vec::new();
        let mut ready = 0;
        for started in first {
            match started.await {
                Ok(Ok(())) => ready += 1,
                Ok(Err(why)) => failures.push(why),
                Err(_) => failures.push("supervisor ended".to_owned()),
            }
        }
        if ready == 0 {
            // Before the waiting supervisors are let go: they see `stop` and end quietly.
            bridge.inner.stop.cancel();
        }
        bridge.inner.started.cancel();
        if ready == 0 {
            bridge.shutdown().await;
            let why = failures
                .into_iter()
                .next()
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(StartError::NoWorker(why));
        }
        Ok(bridge)
    }

    /// Sends `op` with `payload` to a worker and waits for its answer.
    pub async fn call(&self, op: &str, payload: Value) -> Result<Value, MlError> {
        self.call_routed(op, payload, None).await
    }

    /// Like [`call`](Self::call), but calls with the same `key` go to the same worker while it
    /// is ready: for models that keep state per key (a device's series), which a worker
    /// holds in its own memory.
    pub async fn call_keyed(&self, op: &str, payload: Value, key: &str) -> Result<Value, MlError> {
        self.call_routed(op, payload, Some(key)).await
    }

    async fn call_routed(
        &self,
        op: &str,
        payload: Value,
        key: Option<&str>,
    ) -> Result<Value, MlError> {
        let started = Instant::now();
        let result = self.call_inner(op, &payload, key).await;
        let op_label = op.to_owned();
        match &result {
            Ok(_) => metrics::histogram!(metric::REQUEST_DURATION, "op" => op_label)
                .record(started.elapsed().as_secs_f64()),
            Err(err) => {
                metrics::counter!(metric::REQUEST_ERRORS, "op" => op_label, "kind" => err.kind())
                    .increment(1)
            }
        }
        result
    }

    async fn call_inner(
        &self,
        op: &str,
        payload: &Value,
        key: Option<&str>,
    ) -> Result<Value, MlError> {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(MlError::Unavailable);
        }
        let _permit = Arc::clone(&inner.queue)
            .try_acquire_owned()
            .map_err(|_| MlError::Busy)?;
        self.record_depth();
        let id = inner.next_id();
        let frame =
            serde_json::to_vec(&Request { id, op, payload }).map_err(|err| MlError::Refused {
                code: "bad_request".to_owned(),
                message: err.to_string(),
            })?;
        if frame.len() > inner.settings.max_frame_bytes {
            return Err(MlError::TooLarge);
        }
        let (slot, jobs) = key
            .and_then(|key| self.pick_keyed(key))
            .or_else(|| self.pick())
            .ok_or(MlError::Unavailable)?;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id,
            frame: frame.into(),
            reply,
        };
        let result = match jobs.try_send(job) {
            Ok(()) => match tokio::time::timeout(inner.settings.request_timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(MlError::WorkerLost("the worker went away".to_owned())),
                Err(_) => Err(MlError::Timeout),
            },
            Err(mpsc::error::TrySendError::Full(_)) => Err(MlError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(MlError::Unavailable),
        };
        slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(_permit);
        self.record_depth();
        result
    }

    fn record_depth(&self) {
        let depth = self.inner.settings.queue - self.inner.queue.available_permits();
        metrics::gauge!(metric::QUEUE_DEPTH).set(depth as f64);
    }

    /// The ready worker with the fewest requests in flight.
    fn pick(&self) -> Option<(&Slot, mpsc::Sender<Job>)> {
        self.inner
            .slots
            .iter()
            .filter_map(|slot| slot.jobs().map(|jobs| (slot, jobs)))
            .min_by_key(|(slot, _)| slot.in_flight.load(Ordering::Relaxed))
    }

    /// The worker that `key` hashes to, if it is ready.
    fn pick_keyed(&self, key: &str) -> Option<(&Slot, mpsc::Sender<Job>)> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let count = self.inner.slots.len() as u64;
        let index = usize::try_from(hasher.finish() % count.max(1)).ok()?;
        let slot = self.inner.slots.get(index)?;
        slot.jobs().map(|jobs| (slot, jobs))
    }

    /// Workers that are connected and answering now.
    pub fn ready_workers(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.jobs().is_some())
            .count()
    }

    /// The process id of each worker (`None` while it is restarting).
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        self.inner
            .slots
            .iter()
            .map(|s| match s.pid.load(Ordering::Relaxed) {
                0 => None,
                pid => Some(pid),
            })
            .collect()
    }

    /// Restarts so far, per worker.
    pub fn restarts(&self) -> Vec<u64> {
        self.inner
            .slots
            .iter()
            .map(|s| s.restarts.load(Ordering::Relaxed))
            .collect()
    }

    pub fn socket_dir(&self) -> &Path {
        &self.inner.settings.socket_dir
    }

    /// Stops the workers and waits for their supervisors.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Creates the socket directory 0700, or checks an existing one.
fn prepare_dir(dir: &Path) -> Result<(), StartError> {
    let io = |source| StartError::SocketDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    let own_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !meta.is_dir()
        || meta.permissions().mode() & 0o077 != 0
        || own_uid.is_some_and(|uid| uid != meta.uid())
    {
        return Err(StartError::SocketDirTooOpen {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// How long the supervisor waits before starting a worker again.
pub(crate) fn next_backoff(current: Duration, settings: &Settings) -> Duration {
    (current * 2).clamp(settings.backoff_base, settings.backoff_cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut s = Settings::new("python3", "/tmp/x");
        s.backoff_base = Duration::from_millis(100);
        s.backoff_cap = Duration::from_millis(350);
        let b1 = next_backoff(s.backoff_base, &s);
        assert_eq!(b1, Duration::from_millis(200));
        assert_eq!(next_backoff(b1, &s), Duration::from_millis(350));
    }

    #[test]
    fn a_socket_dir_open_to_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ml");
        prepare_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            prepare_dir(&dir),
            Err(StartError::SocketDirTooOpen { .. })
        ));
    }
}

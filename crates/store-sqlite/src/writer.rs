//! The store's one writer: a thread that owns the write connection and runs every write.
//!
//! A write is a closure over the connection ([`Writer::run`]). Writes queue in a channel
//! (in the order they are first polled); the thread takes what has queued, runs it as one transaction — each write inside
//! its own savepoint, so a refused write rolls back alone — commits once, and only then
//! answers each caller. One crossing between the async side and SQLite per batch, one fsync
//! per batch, and statements prepared once per connection (`prepare_cached`): under load a
//! message costs its statements and a share of a commit, not a thread wake-up per statement.
//!
//! Writes to the search index are the exception: a write records them ([`Tx::search`]) and
//! the batch applies them after its last write, before the commit (see [`search`] for why).
//!
//! A batch stops growing at [`MAX_BATCH`] writes or after [`BATCH_BUDGET`] of work, so that a
//! large write (a telemetry batch) holds the writes queued behind it for a bounded time.

use std::cell::RefCell;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};
use unhidra_store::{Outage, Result, StoreError};

use crate::search;

/// Most writes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;
/// A batch takes no further writes once its work has taken this long.
pub(crate) const BATCH_BUDGET: Duration = Duration::from_millis(10);
/// The writer thread's name (benchmarks find its CPU time by it; at most 15 bytes, as
/// Linux keeps thread names).
pub const THREAD_NAME: &str = "sqlite-writer";

/// How a write ended inside its savepoint.
enum Outcome {
    /// Keep its changes.
    Done,
    /// Roll back its savepoint; the rest of the batch goes on.
    Refused,
    /// The database failed (full disk, I/O error): SQLite may have rolled back the whole
    /// transaction already, so the batch ends here and nothing of it is committed.
    Outage(StoreError),
}

/// Answers the caller once the batch's fate is known: `Err` when it was not committed.
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A write: given the transaction, runs and says how it ended; given none (its transaction
/// could not be opened), does not run and answers with the failure.
type Job = Box<dyn FnOnce(Option<&Tx<'_>>) -> (Outcome, Answer) + Send>;

/// What a write sees of the batch's transaction: the connection (through `Deref`), and the
/// search index's changes, which are applied after the batch's last write (see
/// [`search`]).
pub(crate) struct Tx<'c> {
    conn: &'c Connection,
    search: &'c RefCell<search::Pending>,
}

impl Tx<'_> {
    /// The search index changes of this batch, to record a write's own.
    pub(crate) fn search(&self) -> std::cell::RefMut<'_, search::Pending> {
        self.search.borrow_mut()
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

enum Message {
    Write(Job),
    Stop(oneshot::Sender<()>),
}

/// The handle to the writer thread; cheap to clone.
///
/// The queue is unbounded so that taking a place in it never waits: a write is queued at
/// its first poll, synchronously, which is what keeps a pipelining connection's posts in
/// its order (a bounded queue that is full, or tokio's cooperative budget, would let a
/// later write overtake one still waiting to be queued). What bounds the queue is that
/// every caller waits for its answer: a session keeps at most its publish window waiting,
/// an HTTP request one write, the telemetry writer one batch.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Message>,
}

fn stopped() -> StoreError {
    StoreError::backend(std::io::Error::other("the store's writer has stopped"))
}

impl Writer {
    /// Opens the write connection to `path` (which exists and is migrated) and starts the
    /// thread that owns it.
    pub(crate) fn start(path: &Path) -> Result<Self> {
        let conn = open(path)?;
        let (queue, messages) = mpsc::unbounded_channel();
        let answerer = Answerer::spawn();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || run_loop(conn, &path, messages, &answerer))
            .map_err(StoreError::io)?;
        Ok(Self { queue })
    }

    /// Runs `work` on the writer connection inside the next batch's transaction and returns
    /// its result once that transaction is committed. When `work` fails, its changes are
    /// rolled back and the rest of the batch is not affected.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = conn.map(work);
            let outcome = match &result {
                Some(Ok(_)) => Outcome::Done,
                Some(Err(err @ StoreError::Unavailable { .. })) => {
                    Outcome::Outage(err.for_another())
                }
                Some(Err(_)) | None => Outcome::Refused,
            };
            let answer: Answer = Box::new(move |committed| {
                let result = match (committed, result) {
                    (Err(err), Some(Ok(_)) | None) => Err(err.for_another()),
                    (Ok(()), None) => Err(stopped()),
                    (_, Some(result)) => result,
                };
                // The caller may have gone away (its connection closed); the data is stored.
                let _ = reply.send(result);
            });
            (outcome, answer)
        });
        self.queue
            .send(Message::Write(job))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Finishes the writes queued before this call, closes the connection and ends the
    /// thread; later writes fail.
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    // WAL is a property of the file (set when it was created); `synchronous=FULL` makes a
    // commit durable before it is acknowledged. A savepoint's journal stays in memory
    // (past 64 KiB SQLite would spill it to a temporary file, 8% of this thread's time in
    // the pairs benchmark). The WAL is checkpointed at 10,000 pages (40 MiB) instead of
    // SQLite's 1,000: a checkpoint copies a page once however many commits changed it, and
    // with small commits spread over many channels checkpoints took a quarter of this
    // thread's time (docs/benchmarks.md). (A 64 MiB page cache instead of SQLite's
    // 2 MiB was measured: no faster, and the writer then spent 4% of its time truncating
    // the larger cache.)
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 10000;",
    )
    .map_err(failed)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Gives a batch's answers to their callers.
///
/// Answering a caller wakes its task. From the writer's thread every wake is a wake-up of a
/// runtime thread, and where they share a core the woken thread takes it over, handles that
/// one answer and sleeps again: with an answer at a time, `perf` found 17% of the writer
/// thread's samples in those switches (`store-append` on one core; after this change none,
/// though the rate moved less than its run-to-run spread). So the answers of a batch go
/// to a task on the runtime that opened the store in one message, one wake-up per batch, and
/// that task answers them from inside the runtime, where a wake is a push onto its queue.
/// Without a runtime (or once it has shut down), the writer answers them itself.
struct Answerer(Option<mpsc::UnboundedSender<(Vec<Answer>, Option<StoreError>)>>);

impl Answerer {
    fn spawn() -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self(None);
        };
        let (batches, mut answering) =
            mpsc::unbounded_channel::<(Vec<Answer>, Option<StoreError>)>();
        runtime.spawn(async move {
            while let Some((answers, failure)) = answering.recv().await {
                answer_all(answers, failure.as_ref());
            }
        });
        Self(Some(batches))
    }

    fn answer(&self, answers: Vec<Answer>, failure: Option<StoreError>) {
        let unsent = match &self.0 {
            Some(batches) => match batches.send((answers, failure)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(unsent)) => unsent,
            },
            None => (answers, failure),
        };
        answer_all(unsent.0, unsent.1.as_ref());
    }
}

fn answer_all(answers: Vec<Answer>, failure: Option<&StoreError>) {
    for answer in answers {
        answer(failure.map_or(Ok(()), Err));
    }
}

fn run_loop(
    mut conn: Connection,
    path: &Path,
    mut messages: mpsc::UnboundedReceiver<Message>,
    answerer: &Answerer,
) {
    let mut stop = None;
    let search = RefCell::new(search::Pending::default());
    while stop.is_none() {
        let Some(first) = messages.blocking_recv() else {
            break;
        };
        let first = match first {
            Message::Write(job) => job,
            Message::Stop(done) => {
                stop = Some(done);
                break;
            }
        };
        let (answers, failure) = run_batch(&conn, &search, first, &mut messages, &mut stop);
        search.borrow_mut().clear();
        if !conn.is_autocommit() {
            // A failed batch is rolled back; if that fails too, the connection is suspect
            // (SQLite may count it inside a transaction that never ends): a new one takes
            // over, so that no later write goes into a transaction that never commits.
            let _ = conn.execute_batch("ROLLBACK");
            if !conn.is_autocommit() {
                tracing::warn!(
                    "reopening the store's writer connection: its transaction could not be \
                     rolled back (disk full or I/O error)"
                );
                match open(path) {
                    Ok(fresh) => conn = fresh,
                    Err(err) => tracing::error!(%err, "reopening the store's writer failed"),
                }
            }
        }
        answerer.answer(answers, failure);
    }
    if let Err((_, err)) = conn.close() {
        tracing::warn!(%err, "closing the store's writer connection");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Runs `first` and whatever queues behind it (within the batch's bounds) as one
/// transaction. Returns the answers to give and, if nothing was committed, why.
fn run_batch(
    conn: &Connection,
    search: &RefCell<search::Pending>,
    first: Job,
    messages: &mut mpsc::UnboundedReceiver<Message>,
    stop: &mut Option<oneshot::Sender<()>>,
) -> (Vec<Answer>, Option<StoreError>) {
    let started = Instant::now();
    let mut answers = Vec::new();
    if let Err(err) = exec(conn, "BEGIN IMMEDIATE") {
        let (_, answer) = first(None);
        return (vec![answer], Some(failed(err)));
    }
    let mut next = Some(first);
    while let Some(job) = next.take() {
        if let Err(err) = exec(conn, "SAVEPOINT job") {
            let (_, answer) = job(None);
            answers.push(answer);
            return (answers, Some(failed(err)));
        }
        let mark = search.borrow().mark();
        let (outcome, answer) = job(Some(&Tx { conn, search }));
        answers.push(answer);
        let ended = match outcome {
            Outcome::Done => exec(conn, "RELEASE job"),
            Outcome::Refused => {
                search.borrow_mut().drop_since(mark);
                exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
            }
            Outcome::Outage(err) => return (answers, Some(err)),
        };
        if let Err(err) = ended {
            return (answers, Some(failed(err)));
        }
        if answers.len() < MAX_BATCH && started.elapsed() < BATCH_BUDGET {
            next = match messages.try_recv() {
                Ok(Message::Write(job)) => Some(job),
                Ok(Message::Stop(done)) => {
                    *stop = Some(done);
                    None
                }
                Err(_) => None,
            };
        }
    }
    if let Err(err) = search.borrow_mut().apply(conn) {
        return (answers, Some(failed(err)));
    }
    match exec(conn, "COMMIT") {
        Ok(()) => (answers, None),
        Err(err) => (answers, Some(failed(err))),
    }
}

/// Runs a statement without parameters or rows (transaction control), prepared once.
fn exec(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// A SQLite failure as the services see it: a full disk, a read-only database or an I/O
/// error is [`StoreError::Unavailable`] (nothing was written, and the same write may work
/// later); anything else is [`StoreError::Backend`].
pub(crate) fn failed(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let outage = match &err {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::DiskFull => Some(Outage::Full),
            ErrorCode::ReadOnly => Some(Outage::ReadOnly),
            // SQLite reports a write refused by a read-only file system as an I/O error.
            ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => Some(Outage::Failing),
            _ => None,
        },
        _ => None,
    };
    match outage {
        Some(outage) => StoreError::unavailable(outage, err),
        None => StoreError::backend(err),
    }
}

/// Which constraint a failed statement violated, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    Unique,
    ForeignKey,
}

pub(crate) fn violation(err: &rusqlite::Error) -> Option<Violation> {
    use rusqlite::ffi;
    match err {
        rusqlite::Error::SqliteFailure(e, _) => match e.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                Some(Violation::Unique)
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Violation::ForeignKey),
            _ => None,
        },
        _ => None,
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else as [`failed`].
pub(crate) fn conflict(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| match violation(&err) {
        Some(Violation::Unique) => StoreError::Conflict(what),
        _ => failed(err),
    }
}

/// Maps a foreign-key violation to [`StoreError::Invalid`], anything else as [`failed`].
pub(crate) fn missing(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| match violation(&err) {
        Some(Violation::ForeignKey) => StoreError::Invalid(what),
        _ => failed(err),
    }
}

/// A statement of the writer's, prepared once per connection.
pub(crate) fn stmt<'c>(
    conn: &'c Connection,
    statement: &str,
) -> Result<rusqlite::CachedStatement<'c>> {
    conn.prepare_cached(statement).map_err(failed)
}

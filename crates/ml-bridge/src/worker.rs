//! One worker's supervisor: start the process, take its connection, carry requests and
//! answers, ping it, and start it again when it goes wrong.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::framing::{self, Answer};
use crate::{metric, next_backoff, Inner, Job, MlError};

/// A worker that ran this long is considered healthy: its next failure restarts it quickly.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a worker has to exit after its connection is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long, after a failed worker exited, its last words may take to reach us (its stderr
/// may be held open by a process it started).
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// Why a worker's run ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    Failed(&'static str, String),
}

/// Runs worker `index` until the bridge stops. The first outcome (ready or why not) goes to
/// `ready`.
pub(crate) async fn supervise(
    inner: Arc<Inner>,
    index: usize,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = inner.settings.backoff_base;
    loop {
        let started = Instant::now();
        let ended = run_once(&inner, index, &mut ready).await;
        let slot = inner.slots.get(index);
        if let Some(slot) = slot {
            slot.set_jobs(None);
            slot.pid.store(0, Ordering::Relaxed);
        }
        let (reason, detail) = match ended {
            Ended::Stopped => return,
            Ended::Failed(reason, detail) => (reason, detail),
        };
        // A first start that failed is reported to `start`, which says why once. This worker
        // then waits until `start` has heard from every worker: if none came up the bridge
        // stops, and it ends quietly; otherwise it is restarted like any other.
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(format!("{reason}: {detail}")));
            tokio::select! {
                () = inner.stop.cancelled() => return,
                () = inner.started.cancelled() => {}
            }
        }
        if inner.stop.is_cancelled() {
            return;
        }
        if let Some(slot) = slot {
            slot.restarts.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(metric::WORKER_RESTARTS, "reason" => reason).increment(1);
        if started.elapsed() >= STABLE_AFTER {
            backoff = inner.settings.backoff_base;
        }
        tracing::warn!(worker = index, reason, detail, retry_in = ?backoff, "ML worker ended; starting it again");
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = next_backoff(backoff, &inner.settings);
    }
}

fn socket_path(inner: &Inner, index: usize) -> PathBuf {
    inner
        .settings
        .socket_dir
        .join(format!("worker-{index}.sock"))
}

/// Starts the worker and serves it until it fails or the bridge stops.
async fn run_once(
    inner: &Arc<Inner>,
    index: usize,
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Ended {
    let settings = &inner.settings;
    let path = socket_path(inner, index);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(err) => return Ended::Failed("socket", err.to_string()),
    };
    // The directory is 0700 already; the socket is 0600 besides.
    if let Err(err) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        return Ended::Failed("socket", err.to_string());
    }
    let mut child = match Command::new(&settings.program)
        .args(&settings.args)
        .arg("--connect")
        .arg(&path)
        .arg("--max-frame-bytes")
        .arg(settings.max_frame_bytes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            let _ = std::fs::remove_file(&path);
            return Ended::Failed("spawn", format!("{}: {err}", settings.program.display()));
        }
    };
    if let Some(pid) = child.id() {
        if let Some(slot) = inner.slots.get(index) {
            slot.pid.store(pid, Ordering::Relaxed);
        }
    }
    let (last_words, mut stderr_done) = forward_stderr(&mut child, index);
    let ended = serve(inner, index, &listener, &mut child, ready).await;
    drop(listener);
    let _ = std::fs::remove_file(&path);
    stop_child(&mut child).await;
    match ended {
        // What the worker said last often says why (a missing package, a traceback). Its
        // stderr ends when it exits; what it said last may still be on the way to us.
        Ended::Failed(reason, detail) => {
            let _ = tokio::time::timeout(STDERR_GRACE, &mut stderr_done).await;
            let said = last_words.lock().map(|l| l.clone()).unwrap_or_default();
            let detail = if said.is_empty() {
                detail
            } else {
                format!("{detail}; it said: {said}")
            };
            Ended::Failed(reason, detail)
        }
        stopped => stopped,
    }
}

/// Copies the worker's stderr to the log, line by line; keeps the last line. The task ends
/// at the end of the stream.
fn forward_stderr(
    child: &mut Child,
    index: usize,
) -> (Arc<std::sync::Mutex<String>>, tokio::task::JoinHandle<()>) {
    let last = Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take();
    let task = tokio::spawn({
        let last = Arc::clone(&last);
        async move {
            let Some(stderr) = stderr else { return };
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line: String = line.chars().take(1000).collect();
                tracing::info!(target: "unhidra::ml::worker", worker = index, "{line}");
                if let Ok(mut l) = last.lock() {
                    *l = line;
                }
            }
        }
    });
    (last, task)
}

async fn stop_child(child: &mut Child) {
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn status_text(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(err) => err.to_string(),
    }
}

async fn serve(
    inner: &Arc<Inner>,
    index: usize,
    listener: &UnixListener,
    child: &mut Child,
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Ended {
    let settings = &inner.settings;
    let stream = tokio::select! {
        () = inner.stop.cancelled() => return Ended::Stopped,
        status = child.wait() => return Ended::Failed("exited", format!("before connecting: {}", status_text(status))),
        accepted = tokio::time::timeout(settings.start_timeout, listener.accept()) => match accepted {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(err)) => return Ended::Failed("socket", err.to_string()),
            Err(_) => return Ended::Failed("start_timeout", "the worker did not connect".to_owned()),
        },
    };
    let (read, write) = stream.into_split();
    let mut frames_in = FramedRead::new(read, framing::codec(settings.max_frame_bytes));
    let mut frames_out = FramedWrite::new(write, framing::codec(settings.max_frame_bytes));

    // The first health check, within the start timeout.
    let first = inner.next_id();
    if let Err(err) = frames_out.send(framing::health_request(first)).await {
        return Ended::Failed("io", err.to_string());
    }
    let answered = tokio::select! {
        () = inner.stop.cancelled() => return Ended::Stopped,
        status = child.wait() => return Ended::Failed("exited", status_text(status)),
        frame = tokio::time::timeout(settings.start_timeout, frames_in.next()) => frame,
    };
    match answered {
        Ok(Some(Ok(frame))) => match framing::read_answer(&frame) {
            Ok(Answer {
                id,
                outcome: Ok(health),
            }) if id == first => {
                tracing::info!(worker = index, %health, "ML worker ready");
            }
            _ => {
                return Ended::Failed(
                    "unhealthy",
                    "a bad answer to its first health check".to_owned(),
                )
            }
        },
        Ok(Some(Err(err))) => return Ended::Failed("bad_frame", err.to_string()),
        Ok(None) => return Ended::Failed("closed", "before its first health check".to_owned()),
        Err(_) => {
            return Ended::Failed(
                "start_timeout",
                "no answer to its first health check".to_owned(),
            )
        }
    }

    let (jobs_tx, mut jobs) = mpsc::channel::<Job>(settings.queue);
    if let Some(slot) = inner.slots.get(index) {
        slot.set_jobs(Some(jobs_tx));
    }
    metrics::gauge!(metric::WORKERS_READY).increment(1.0);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    // Writing has its own task, so that answers are always read while requests are written:
    // a worker blocked on sending answers never blocks us sending it requests, nor the
    // other way round.
    let (to_writer, mut outgoing) = mpsc::channel::<bytes::Bytes>(settings.queue + 8);
    let mut writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            frames_out.send(frame).await?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value, MlError>>> = HashMap::new();
    let mut ping = tokio::time::interval(settings.health_interval);
    ping.reset();
    let mut ping_out: Option<(u64, Instant)> = None;
    let ended = loop {
        tokio::select! {
            () = inner.stop.cancelled() => break Ended::Stopped,
            status = child.wait() => break Ended::Failed("exited", status_text(status)),
            written = &mut writer => {
                let why = match written {
                    Ok(Ok(())) => "its writer ended".to_owned(),
                    Ok(Err(err)) => err.to_string(),
                    Err(err) => err.to_string(),
                };
                break connection_lost(child, "io", why).await;
            }
            job = jobs.recv() => {
                let Some(job) = job else { break Ended::Stopped };
                pending.insert(job.id, job.reply);
                if to_writer.try_send(job.frame).is_err() {
                    break Ended::Failed("hung", "its socket stopped taking requests".to_owned());
                }
            }
            frame = frames_in.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) if err.kind() == std::io::ErrorKind::InvalidData => {
                        break Ended::Failed("bad_frame", err.to_string());
                    }
                    Some(Err(err)) => break connection_lost(child, "closed", err.to_string()).await,
                    None => break connection_lost(child, "closed", "it closed its connection".to_owned()).await,
                };
                let Answer { id, outcome } = match framing::read_answer(&frame) {
                    Ok(answer) => answer,
                    Err(err) => break Ended::Failed("bad_frame", err.to_string()),
                };
                if ping_out.is_some_and(|(ping_id, _)| ping_id == id) {
                    ping_out = None;
                    continue;
                }
                // A request that timed out has no one waiting any more: its answer is dropped.
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(outcome);
                }
            }
            _ = ping.tick() => {
                if let Some((_, sent)) = ping_out {
                    if sent.elapsed() >= settings.health_timeout {
                        break Ended::Failed("hung", format!("no answer to a health check for {:?}", sent.elapsed()));
                    }
                    continue;
                }
                let id = inner.next_id();
                if to_writer.try_send(framing::health_request(id)).is_err() {
                    break Ended::Failed("hung", "its socket stopped taking requests".to_owned());
                }
                ping_out = Some((id, Instant::now()));
            }
        }
    };
    writer.abort();
    // No new work for this worker; what it held fails now, with the reason.
    if let Some(slot) = inner.slots.get(index) {
        slot.set_jobs(None);
    }
    metrics::gauge!(metric::WORKERS_READY).decrement(1.0);
    let why = match &ended {
        Ended::Stopped => "the ML bridge is stopping".to_owned(),
        Ended::Failed(reason, detail) => format!("{reason}: {detail}"),
    };
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(MlError::WorkerLost(why.clone())));
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(MlError::WorkerLost(why.clone())));
    }
    // Closing the connection asks the worker to exit.
    drop(frames_in);
    ended
}

/// The connection broke: if the worker died (the usual cause), that is the reason given.
async fn connection_lost(child: &mut Child, reason: &'static str, detail: String) -> Ended {
    match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(status) => Ended::Failed("exited", status_text(status)),
        Err(_) => Ended::Failed(reason, detail),
    }
}

//! Chaos: the Python ML workers are SIGKILLed again and again while messages (checked by the
//! moderation model) and telemetry (scored for anomalies) flow. The server keeps answering:
//! every publish is acked (a message the workers cannot check goes through unchecked), no
//! telemetry is refused, REST never answers 5xx. The workers come back each time, the metrics
//! count the restarts, and afterwards scoring and moderation work again.
//!
//! Needs the ML worker's venv (`UNHIDRA_TEST_ML_PYTHON`, see `unhidra-test-gates`).
//! `UNHIDRA_CHAOS_ML_KILLS` sets the number of kill rounds (default 3; scripts/ci-chaos.sh
//! runs 6); each kills every worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    metric, publish_ids, ws_recv_json, ws_send, ws_subscribe, Server, PASSWORD, RAISED_WS_LIMITS,
};

const WORKERS: usize = 2;
const DEFAULT_KILLS: usize = 3;
/// Readings a series needs before the worker calls anything an anomaly (docs/ml.md: 8).
const BASELINE_POINTS: usize = 20;

fn kills() -> usize {
    match std::env::var("UNHIDRA_CHAOS_ML_KILLS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("UNHIDRA_CHAOS_ML_KILLS={text:?} is not a number")),
        Err(_) => DEFAULT_KILLS,
    }
}

/// The server's ML workers: its children running `unhidra_ml`, found through /proc.
fn worker_pids(server_pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // The parent pid is the second field after the command name in parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(server_pid) && String::from_utf8_lossy(&cmdline).contains("unhidra_ml") {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

async fn workers_ready(server: &Server) -> f64 {
    metric(&server.metrics().await, "ml_workers_ready", &[]).unwrap_or(0.0)
}

/// Waits (bounded) until all workers run and are ready; returns their pids.
async fn wait_for_workers(server: &Server, pid: u32, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = worker_pids(pid);
        if pids.len() == WORKERS && workers_ready(server).await == WORKERS as f64 {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the ML workers did not come back within {timeout:?}: pids {pids:?}, ready {}",
            workers_ready(server).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(unhidra_ml),
    ignore = "needs UNHIDRA_TEST_ML_PYTHON: the ML worker's venv (scripts/setup-ml.sh makes .venv-ml)"
)]
async fn killing_the_ml_workers_under_load_loses_nothing_and_they_come_back() {
    let python = unhidra_test_gates::ml_python();
    let kills = kills();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = crate::helpers::write_config(
        tmp.path(),
        &format!(
            "{RAISED_WS_LIMITS}\n[ml]\npython = {:?}\nworkers = {WORKERS}\nmoderation = \"flag\"\n\
             anomaly_event_cooldown_secs = 1\n",
            python.to_str().unwrap()
        ),
    );
    let server = Server::start(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    let pid = server.process.pid();
    let mut pids = wait_for_workers(&server, pid, Duration::from_secs(60)).await;

    server.register("alice", PASSWORD).await;
    let alice = server.login("alice", PASSWORD).await;
    let channel = server.create_channel(&alice.access, "plant", &[]).await;
    let (device, key) = server.create_device(&alice.access, "boiler").await;
    let response = server
        .client
        .put(server.url(&format!("/api/v1/devices/{device}/channel")))
        .bearer_auth(&alice.access)
        .json(&json!({ "channel_id": channel }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // ---- Load: a publisher, a device sending telemetry, REST reads ----
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let (ws, _) = server.ws_connect(&alice.access).await;
    let publisher = tokio::spawn(publish_ids(
        ws,
        channel.clone(),
        "ml",
        {
            let stop = Arc::clone(&stop);
            (0..)
                .take_while(move |_| !stop.load(Ordering::SeqCst))
                .map(|n| format!("ml-{n}"))
        },
        4,
        Arc::clone(&acked),
        Duration::from_secs(300),
    ));
    let (mut dev, _) = server.ws_connect_device(&key).await;
    let telemetry = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let value = 20.0 + (sent % 5) as f64 * 0.1;
                ws_send(
                    &mut dev,
                    &json!({"type": "telemetry", "metrics": {"temp": value}}),
                )
                .await;
                // Frames are handled in order: a pong after the frame means it was stored,
                // an error frame before it that it was not.
                ws_send(&mut dev, &json!({"type": "ping"})).await;
                let answer = ws_recv_json(&mut dev).await;
                assert_eq!(answer["type"], "pong", "telemetry refused: {answer}");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (dev, sent)
        }
    });
    let reads = tokio::spawn({
        let (stop, client) = (Arc::clone(&stop), server.client.clone());
        let (health, history) = (
            server.url("/healthz"),
            server.url(&format!("/api/v1/channels/{channel}/messages")),
        );
        let token = alice.access.clone();
        async move {
            let mut count = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for request in [
                    client.get(&health),
                    client.get(&history).bearer_auth(&token),
                ] {
                    let status = request.send().await.unwrap().status();
                    assert!(!status.is_server_error(), "REST answered {status}");
                    count += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            count
        }
    });

    // ---- Kill every worker, again and again, and wait for them to come back ----
    for round in 0..kills {
        let before = acked.load(Ordering::SeqCst);
        for worker in &pids {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &worker.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -KILL {worker}");
        }
        let new_pids = wait_for_workers(&server, pid, Duration::from_secs(60)).await;
        assert!(
            new_pids.iter().all(|p| !pids.contains(p)),
            "round {round}: a killed worker is still listed: {pids:?} → {new_pids:?}"
        );
        pids = new_pids;
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::SeqCst) < before + 20 {
            assert!(
                Instant::now() < deadline,
                "round {round}: publishing stalled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    stop.store(true, Ordering::SeqCst);
    let log = tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("the publisher did not finish")
        .unwrap();
    assert_eq!(log.end, "every publish acked", "{}", log.end);
    let (mut dev, telemetry_sent) = tokio::time::timeout(Duration::from_secs(30), telemetry)
        .await
        .expect("the telemetry sender did not finish")
        .unwrap();
    let rest_requests = reads.await.unwrap();

    // ---- The restarts are counted ----
    let text = server.metrics().await;
    let restarts = metric(&text, "ml_worker_restarts_total", &[]).unwrap_or(0.0);
    assert!(
        restarts >= (kills * WORKERS) as f64,
        "ml_worker_restarts_total is {restarts} after {kills} rounds of {WORKERS} kills"
    );
    assert_eq!(workers_ready(&server).await, WORKERS as f64);

    // ---- Everything acked is stored, once ----
    let (mut reader, _) = server.ws_connect(&alice.access).await;
    let (messages, _) = ws_subscribe(&mut reader, &channel, Some(0)).await;
    let bodies: HashSet<String> = messages
        .iter()
        .filter(|m| m["sender"] != device.as_str())
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    for (id, _) in &log.acks {
        assert!(bodies.contains(id), "acked {id} is not stored");
    }
    assert_eq!(
        bodies.len(),
        log.acks.len(),
        "stored messages that were never acked"
    );

    // ---- Scoring and moderation work again ----
    for i in 0..BASELINE_POINTS {
        let value = 20.0 + (i % 5) as f64 * 0.1;
        ws_send(
            &mut dev,
            &json!({"type": "telemetry", "metrics": {"spike": value}}),
        )
        .await;
    }
    ws_send(
        &mut dev,
        &json!({"type": "telemetry", "metrics": {"spike": 95.0}}),
    )
    .await;
    let anomaly = next_from(&mut reader, &device, Duration::from_secs(30)).await;
    let text = anomaly["body"].as_str().unwrap();
    assert!(text.starts_with("anomaly in `spike`: 95"), "{anomaly}");
    ws_send(
        &mut reader,
        &json!({"type": "publish", "channel": channel,
                "body": "you are a fucking idiot and a piece of shit", "client_msg_id": "rude"}),
    )
    .await;
    let flagged = loop {
        let frame = ws_recv_json(&mut reader).await;
        if frame["type"] == "message" && frame["client_msg_id"] == "rude" {
            break frame;
        }
    };
    assert!(
        flagged["flagged"].as_array().is_some_and(|r| !r.is_empty()),
        "moderation did not come back: {flagged}"
    );

    eprintln!(
        "chaos ml: {kills} rounds killing {WORKERS} workers ({restarts} restarts counted), \
         {} messages acked and stored, {telemetry_sent} telemetry frames stored, \
         {rest_requests} REST requests without a 5xx, in {:.1} s",
        log.acks.len(),
        started.elapsed().as_secs_f64()
    );
    server.stop().await;
}

/// The next `message` frame sent by `sender` (others skipped).
async fn next_from(ws: &mut crate::helpers::Ws, sender: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            Instant::now() < deadline,
            "no message from {sender} within {timeout:?}"
        );
        let frame = ws_recv_json(ws).await;
        if frame["type"] == "message" && frame["sender"] == sender {
            return frame;
        }
    }
}

//! SIGTERM drains: requests in flight complete, then the process exits 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{wait_until, write_config, Server, PASSWORD};

/// Logins that are in flight together: with one hashing slot they queue behind each other,
/// so most of them are still running when the signal arrives.
const LOGINS: usize = 8;

#[tokio::test]
async fn sigterm_drains_in_flight_logins_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        "[auth]\nhash_concurrency = 1\n\
         [rate_limits]\nlogin_per_minute = 1000\nregister_per_hour = 1000\n",
    );
    let mut server = Server::start(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
        // tower-http logs each request as it starts: that is how the test knows the server
        // has accepted every login before it sends the signal.
        &[("RUST_LOG", "info,tower_http=debug")],
    )
    .await;
    server.register("alice", PASSWORD).await;

    let done = Arc::new(AtomicUsize::new(0));
    let mut requests = Vec::new();
    for i in 0..LOGINS {
        let client = server.client.clone();
        let url = server.url("/api/v1/auth/login");
        let done = Arc::clone(&done);
        // Half right, half wrong: both kinds must come back with a real answer.
        let password = if i % 2 == 0 {
            PASSWORD
        } else {
            "not the password at all"
        };
        requests.push(tokio::spawn(async move {
            let result = client
                .post(url)
                .json(&json!({ "username": "alice", "password": password }))
                .send()
                .await;
            done.fetch_add(1, Ordering::SeqCst);
            result.map(|r| r.status())
        }));
    }

    let started = || {
        server
            .json_logs()
            .iter()
            .filter(|r| {
                r["fields"]["message"] == "started processing request"
                    && r["span"]["uri"] == "/api/v1/auth/login"
            })
            .count()
    };
    wait_until(
        "every login to reach the server",
        Duration::from_secs(30),
        || started() >= LOGINS,
    )
    .await;
    let finished_before_signal = done.load(Ordering::SeqCst);
    server.sigterm();

    let mut ok = 0;
    let mut refused = 0;
    for request in requests {
        let status = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("a login did not finish within 10 s of SIGTERM")
            .expect("login task")
            .unwrap_or_else(|e| panic!("a login in flight failed at SIGTERM: {e}"));
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::UNAUTHORIZED => refused += 1,
            other => panic!("unexpected status {other} for a login in flight"),
        }
    }
    assert_eq!((ok, refused), (LOGINS / 2, LOGINS / 2));
    assert!(
        finished_before_signal < LOGINS,
        "every login had finished before SIGTERM; the test did not exercise draining"
    );

    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; output:\n{}",
        server.logs().join("\n")
    );
    let messages: Vec<_> = server
        .json_logs()
        .iter()
        .filter_map(|r| r["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.iter().any(|m| m == "SIGTERM: draining"),
        "{messages:?}"
    );
    assert_eq!(messages.last().map(String::as_str), Some("stopped"));
}

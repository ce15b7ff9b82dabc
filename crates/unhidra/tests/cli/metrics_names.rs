//! The Prometheus names dashboards and alerts depend on, and the login rate limit.

use reqwest::StatusCode;
use unhidra_server::metrics::{DESCRIPTIONS, KNOWN_SERIES};

use crate::helpers::{error_code, metric, Server, PASSWORD};

#[tokio::test]
async fn metrics_are_named_as_documented_and_logins_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[], &[]).await;
    server.register("alice", PASSWORD).await;
    let tokens = server.login("alice", PASSWORD).await;
    server.create_device(&tokens.access, "meter").await;

    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "auth_login_attempts_total", &[("result", "ok")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "auth_password_hash_duration_seconds_bucket", &[]).is_some(),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "http_request_duration_seconds_count",
            &[
                ("route", "/api/v1/auth/login"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "http_request_duration_seconds_bucket",
            &[("route", "/api/v1/auth/login")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "http_request_duration_seconds_bucket",
            &[("route", "/api/v1/devices")]
        )
        .is_some(),
        "{text}"
    );
    // Registered at 0 on start, so that rate() sees the first hit.
    assert_eq!(
        metric(&text, "http_rate_limit_hits_total", &[("limit", "login")]),
        Some(0.0)
    );

    // The default limit is 10 logins a minute per address; one is used. Ten more at once:
    // nine pass, one is turned away before any hashing.
    let burst = (0..10).map(|_| server.login_response("alice", PASSWORD));
    let responses = futures::future::join_all(burst).await;
    let mut limited = Vec::new();
    let mut ok = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited.push(response),
            other => panic!("unexpected login status {other}"),
        }
    }
    assert_eq!((ok, limited.len()), (9, 1));
    let response = limited.remove(0);
    let retry_after: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");

    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "http_rate_limit_hits_total", &[("limit", "login")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "auth_login_attempts_total", &[("result", "ok")]),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "auth_login_attempts_total",
            &[("result", "rate_limited")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "http_request_duration_seconds_count",
            &[("route", "/api/v1/auth/login"), ("status", "429")]
        ),
        Some(1.0),
        "{text}"
    );

    server.stop().await;
}

/// A counter that appeared only with its first event would be invisible to `rate()` until
/// then (`gateway_rate_limit_hits_total` was): every series with known labels is there at 0
/// on the first scrape, and every metric has its `# HELP`.
#[tokio::test]
async fn counters_with_known_labels_are_zero_from_the_start_and_every_metric_is_described() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[], &[]).await;
    let text = server.metrics().await;
    let mut series = 0;
    for (name, label_sets) in KNOWN_SERIES {
        for labels in *label_sets {
            assert_eq!(
                metric(&text, name, labels),
                Some(0.0),
                "{name} {labels:?}\n{text}"
            );
            series += 1;
        }
    }
    assert!(series > 50, "{series}");
    for gauge in ["gateway_connections_active", "mqtt_connections_active"] {
        assert_eq!(metric(&text, gauge, &[]), Some(0.0), "{gauge}");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help text"
        );
        assert!(
            DESCRIPTIONS.iter().any(|(described, _)| *described == name),
            "{name} is not in metrics::DESCRIPTIONS"
        );
    }
    server.stop().await;
}

/// docs/api.md lists every metric the server records.
#[test]
fn every_metric_is_in_the_api_docs() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let missing: Vec<&str> = DESCRIPTIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/api.md: {missing:?}");
}

//! What outside testing found, replayed against the real binary: with the process limited to
//! 1,024 open files, 1,100 connections from one address that send nothing (or half a request
//! head) once made `GET /healthz` time out for over a minute, with `accept error: Too many open
//! files` in the log, until the client let go. Now the address gets its share
//! (`connections.max_per_ip`, at most half of what the file limit allows), the rest are closed
//! at once, others are answered meanwhile, and the silent ones are closed after
//! `connections.header_timeout_secs`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{write_config, Server};

const SOCKETS: usize = 1100;
const HEADER_TIMEOUT_SECS: u64 = 3;

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the server has closed `stream` (EOF or reset) by `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_silent_sockets_from_one_address_under_a_1024_file_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        &format!("[connections]\nheader_timeout_secs = {HEADER_TIMEOUT_SECS}\n"),
    );
    let server = Server::start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    let pid = server.process.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limits}"
    );
    let baseline = open_descriptors(pid);

    let attacker: IpAddr = "127.0.0.1".parse().unwrap();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let mut stream = connect_from(attacker, server.api).await.unwrap();
        if i % 2 == 1 {
            // Half a request head, then nothing (a refused socket may already be closed).
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await;
        }
        sockets.push(stream);
    }

    // Others are answered while every one of them is open.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..5 {
        let response = other.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let metrics = other
        .get(format!("http://{}/metrics", server.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = counter(
        &metrics,
        "connections_refused_total{listener=\"api\",reason=\"per_address\"}",
    );
    // 1,024 files less 256 kept for the server: 768 connections, 384 for one address.
    assert_eq!(refused, (SOCKETS - 384) as f64, "{metrics}");
    let held = open_descriptors(pid);
    assert!(
        held < 1024 - 200,
        "the server holds {held} descriptors (started with {baseline})"
    );

    // The ones it kept are closed after the header timeout (and the refused ones at once).
    let deadline = Instant::now() + Duration::from_secs(HEADER_TIMEOUT_SECS * 4 + 5);
    let mut open = 0;
    for stream in &mut sockets {
        if !closed_by(stream, deadline).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "silent sockets still open after the header timeout"
    );
    drop(sockets);
    let after = open_descriptors(pid);
    assert!(
        after <= baseline + 8,
        "{after} descriptors open after every socket closed ({baseline} at the start)"
    );
    let response = other.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("Too many open files"),
        "the server ran out of descriptors:\n{logs}"
    );
    server.stop().await;
}

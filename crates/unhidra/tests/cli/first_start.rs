//! A default start on a machine without the ML worker's packages (`python3` is there, the
//! `unhidra_ml` package is not): the server runs and says once, in one line, that ML is off
//! and why, rather than a line per worker per retry.

use std::time::Duration;

use crate::helpers::Server;

#[tokio::test]
async fn without_the_ml_workers_packages_the_server_says_so_once() {
    let tmp = tempfile::tempdir().unwrap();
    // An interpreter without the package, whatever this machine has installed.
    let python = which_python3();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--ml-python", &python],
        &[("PYTHONPATH", ""), ("PYTHONNOUSERSITE", "1")],
    )
    .await;
    // Long enough for the supervisors' first retries (200 ms back-off) to have happened.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = server.logs();
    let disabled: Vec<_> = logs.iter().filter(|l| l.contains("ML disabled")).collect();
    assert_eq!(disabled.len(), 1, "{logs:#?}");
    assert!(
        disabled[0].contains("unhidra_ml"),
        "the reason is not given: {}",
        disabled[0]
    );
    let retries: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("starting it again"))
        .collect();
    assert!(retries.is_empty(), "{retries:#?}");
    server.stop().await;
}

/// The system's `python3` (not a virtualenv's, which might hold the worker's package).
fn which_python3() -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let path = format!("{dir}/python3");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    "python3".to_owned()
}

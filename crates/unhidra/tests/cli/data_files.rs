//! The data dir and its secret files: created private, and refused when they are not.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{chmod, key_files, mode, Process, Server};

/// Runs `unhidra serve` on `data_dir`, which is expected to refuse to start; returns its
/// output.
async fn refused_start(data_dir: &Path) -> String {
    let mut process = Process::spawn(
        &[
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
        None,
        None,
    );
    let status = process.wait_exit(Duration::from_secs(30)).await;
    let output = process.text();
    assert!(
        !status.success(),
        "the server started (or exited 0) on {}; output:\n{output}",
        data_dir.display()
    );
    output
}

fn assert_private(data: &Path) {
    assert_eq!(mode(data), 0o700, "data dir");
    let keys = key_files(data);
    assert_eq!(keys.len(), 1, "one signing key on a first start: {keys:?}");
    for key in &keys {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    assert_eq!(mode(&data.join("device-key.pepper")), 0o600, "pepper");
    assert_eq!(mode(&data.join("unhidra.db")), 0o600, "database");
    // SQLite's side files hold the same data as the database.
    for side in ["unhidra.db-wal", "unhidra.db-shm"] {
        let path = data.join(side);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{side}");
        }
    }
}

#[tokio::test]
async fn files_are_private_and_open_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let server = Server::start(&data, &[], &[]).await;
    server.register("alice", crate::helpers::PASSWORD).await;
    assert_private(&data);
    server.stop().await;
    assert_private(&data);

    // A signing key that others can read is refused, not repaired.
    let key = key_files(&data).remove(0);
    chmod(&key, 0o644);
    let output = refused_start(&data).await;
    let key_name = key.file_name().unwrap().to_string_lossy().into_owned();
    assert!(output.contains(&key_name), "{output}");
    assert!(output.contains("mode 644"), "{output}");
    assert_eq!(
        mode(&key),
        0o644,
        "the server must not change the mode itself"
    );

    // So is an open pepper.
    chmod(&key, 0o600);
    let pepper = data.join("device-key.pepper");
    chmod(&pepper, 0o640);
    let output = refused_start(&data).await;
    assert!(output.contains("device-key.pepper"), "{output}");
    assert!(output.contains("mode 640"), "{output}");
    chmod(&pepper, 0o600);

    // With everything private again, it starts.
    Server::start(&data, &[], &[]).await.stop().await;

    // A data dir that others can enter is refused with the fix in the message.
    chmod(&data, 0o755);
    let output = refused_start(&data).await;
    assert!(output.contains("chmod 700"), "{output}");
    assert!(output.contains(data.to_str().unwrap()), "{output}");
}

//! Logins do not leave the server's memory behind. Each login hashes with Argon2id in 19 MiB
//! of memory on a blocking thread; glibc's allocator kept those buffers resident (its mmap
//! threshold rises to the size of a freed block), about 2 MiB per login up to hundreds of MiB.
//! The binary uses jemalloc, which returns them (docs/benchmarks.md, "Memory after logins").

use std::time::Duration;

use futures::future::join_all;

use crate::helpers::{rss_kib, Server, PASSWORD};

const LOGINS: usize = 100;
/// The bound for 200 logins; here for 100.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn logins_leave_the_servers_memory_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_raised_limits(&tmp.path().join("data"), tmp.path()).await;
    server.register("alice", PASSWORD).await;
    // One login first: what every server holds once it has hashed at all.
    server.login("alice", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = rss_kib(server.process.pid());
    // Four at a time: the hashes run on several threads, as under real load.
    for _ in 0..LOGINS / 4 {
        join_all((0..4).map(|_| server.login("alice", PASSWORD))).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(server.process.pid());
    let growth = after.saturating_sub(start);
    assert!(
        growth < MAX_GROWTH_KIB,
        "{LOGINS} logins left {} MiB more resident ({} → {} MiB)",
        growth / 1024,
        start / 1024,
        after / 1024
    );
    server.stop().await;
}

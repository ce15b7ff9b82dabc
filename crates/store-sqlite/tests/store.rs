//! The shared store test suite against a fresh SQLite file, plus SQLite-specific checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ops::Deref;

use unhidra_store::Store;
use unhidra_store_sqlite::SqliteStore;

/// A store in its own temp dir, removed when the test ends.
struct Fresh {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Deref for Fresh {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

async fn fresh() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    Fresh { store, _dir: dir }
}

unhidra_store::store_testsuite!(fresh().await);

#[tokio::test]
async fn audit_rows_cannot_be_changed_or_deleted_even_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append_audit(unhidra_store::NewAuditEvent {
            at: time::OffsetDateTime::now_utc(),
            kind: "test".into(),
            actor: None,
            subject: None,
            ip: None,
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    store.close().await;

    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let update = sqlx::query("UPDATE audit_events SET kind = 'forged'")
        .execute(&pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .create_user(unhidra_store::NewUser {
            id: "u1".into(),
            username: "alice".into(),
            password_hash: "h".into(),
            is_admin: true,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    store.close().await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    let alice = reopened.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(alice.id, "u1");
    assert!(alice.is_admin);
}

#[tokio::test]
async fn database_files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.ping().await.unwrap();
    for name in ["test.db", "test.db-wal", "test.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

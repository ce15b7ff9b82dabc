//! Administration from the command line, on the data dir directly (no running server
//! needed): creating users, and rotating, listing and retiring token-signing keys.
//! Every action is written to the audit log with actor `cli`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use unhidra_store::{NewUser, Store, StoreError};
use unhidra_store_sqlite::SqliteStore;
use unhidra_tokens::jwt::{KeyError, KeyRing};

use crate::audit::{self, kind, Event};
use crate::auth::password::{PasswordError, Passwords};
use crate::auth::policy;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::launch::{paths, prepare_data_dir, LaunchError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Rejected(String),
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
}

async fn open_store(config: &Config) -> Result<SqliteStore, AdminError> {
    prepare_data_dir(&config.data_dir)?;
    let store = SqliteStore::open(&paths::database(&config.data_dir))
        .await
        .map_err(LaunchError::from)?;
    Ok(store)
}

/// Creates a user (an administrator with `is_admin`); returns the new user's id.
pub async fn create_user(
    config: &Config,
    username: &str,
    password: SecretString,
    is_admin: bool,
) -> Result<String, AdminError> {
    let username = policy::username(username).map_err(|r| AdminError::Rejected(r.message))?;
    policy::password(password.expose_secret(), &username)
        .map_err(|r| AdminError::Rejected(r.message))?;
    let store = open_store(config).await?;
    let passwords = Passwords::new(1, Duration::from_secs(60))?;
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| AdminError::Rejected(format!("hashing failed: {:?}", e.code())))?;
    let clock = SystemClock;
    let user = store
        .create_user(NewUser {
            id: uuid::Uuid::now_v7().to_string(),
            username: username.clone(),
            password_hash,
            is_admin,
            created_at: clock.now(),
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict(_) => AdminError::UsernameTaken(username.clone()),
            other => other.into(),
        })?;
    audit::record(
        &store,
        &clock,
        Event {
            kind: kind::ADMIN_USER_CREATED,
            actor: Some("cli"),
            subject: Some(&user.id),
            ip: None,
            detail: json!({ "username": user.username, "is_admin": is_admin }),
        },
    )
    .await?;
    store.close().await;
    Ok(user.id)
}

/// Whether `dir` holds any signing key yet (they are created on first start).
fn has_signing_keys(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("jwt-") && name.ends_with(".pem")
        })
    })
}

/// The signing keys' ids, oldest first, and the active one; `None` before the first start.
/// Never creates anything.
pub fn list_signing_keys(config: &Config) -> Result<Option<(Vec<String>, String)>, AdminError> {
    let dir = paths::signing_keys(&config.data_dir);
    if !has_signing_keys(&dir) {
        return Ok(None);
    }
    let ring = KeyRing::load_or_create(&dir)?;
    Ok(Some((ring.kids(), ring.active_kid().to_owned())))
}

/// Adds a new signing key, active from the server's next start; older keys keep verifying
/// until retired. On a fresh data dir this creates the first key. Returns the new key's id.
pub async fn rotate_signing_key(config: &Config) -> Result<String, AdminError> {
    let dir = paths::signing_keys(&config.data_dir);
    prepare_data_dir(&config.data_dir)?;
    let fresh = !has_signing_keys(&dir);
    let mut ring = KeyRing::load_or_create(&dir)?;
    let kid = if fresh {
        ring.active_kid().to_owned()
    } else {
        ring.rotate(&dir)?
    };
    record_cli(config, kind::ADMIN_KEY_ROTATED, &kid).await?;
    Ok(kid)
}

/// Removes a signing key that is no longer active: tokens it signed stop verifying.
pub async fn retire_signing_key(config: &Config, kid: &str) -> Result<(), AdminError> {
    let dir = paths::signing_keys(&config.data_dir);
    prepare_data_dir(&config.data_dir)?;
    let mut ring = KeyRing::load_or_create(&dir)?;
    ring.retire(&dir, kid)?;
    record_cli(config, kind::ADMIN_KEY_RETIRED, kid).await
}

async fn record_cli(config: &Config, event_kind: &str, subject: &str) -> Result<(), AdminError> {
    let store: Arc<SqliteStore> = Arc::new(open_store(config).await?);
    audit::record(
        &*store,
        &SystemClock,
        Event {
            kind: event_kind,
            actor: Some("cli"),
            subject: Some(subject),
            ip: None,
            detail: json!({}),
        },
    )
    .await?;
    store.close().await;
    Ok(())
}

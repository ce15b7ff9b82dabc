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
use crate::data_dir::{paths, prepare_data_dir, running_server, RunningServer};
use crate::launch::LaunchError;

/// Why an administration command failed. As with `LaunchError`, messages carry their cause's
/// text and no variant also exposes it as `source()` (the binary would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Rejected(String),
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("password hashing: {0}")]
    Password(PasswordError),
    #[error("signing keys: {0}")]
    Keys(KeyError),
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl From<PasswordError> for AdminError {
    fn from(err: PasswordError) -> Self {
        Self::Password(err)
    }
}

impl From<KeyError> for AdminError {
    fn from(err: KeyError) -> Self {
        Self::Keys(err)
    }
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

/// The signing keys on disk, and what a running server does with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeys {
    /// Every key's id, oldest first.
    pub kids: Vec<String>,
    /// The newest key: the one a server signs with from its next start.
    pub newest: String,
    /// The server running on the data dir, if any, with the key it signs with now (a key
    /// rotated in after it started is not used until it restarts).
    pub running: Option<RunningServer>,
}

fn running(config: &Config) -> Result<Option<RunningServer>, AdminError> {
    running_server(&config.data_dir).map_err(|error| {
        AdminError::Launch(LaunchError::DataDir {
            path: paths::lock(&config.data_dir),
            error,
        })
    })
}

/// The signing keys; `None` before the first start. Never creates anything.
pub fn list_signing_keys(config: &Config) -> Result<Option<SigningKeys>, AdminError> {
    let dir = paths::signing_keys(&config.data_dir);
    if !has_signing_keys(&dir) {
        return Ok(None);
    }
    let ring = KeyRing::load_or_create(&dir)?;
    Ok(Some(SigningKeys {
        kids: ring.kids(),
        newest: ring.active_kid().to_owned(),
        running: running(config)?,
    }))
}

/// Adds a new signing key, used from the server's next start; older keys keep verifying
/// until retired. On a fresh data dir this creates the first key. Returns the new key's id
/// and the server running now, if any (it keeps signing with its key until it restarts).
pub async fn rotate_signing_key(
    config: &Config,
) -> Result<(String, Option<RunningServer>), AdminError> {
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
    Ok((kid, running(config)?))
}

/// Removes a signing key that no longer signs: tokens it signed stop verifying (at once for
/// a server started later; a running server keeps the keys it loaded until it restarts). The
/// newest key cannot be retired, nor, without `force`, the key a running server signs with:
/// every session it has issued would end at its next restart.
pub async fn retire_signing_key(config: &Config, kid: &str, force: bool) -> Result<(), AdminError> {
    let dir = paths::signing_keys(&config.data_dir);
    prepare_data_dir(&config.data_dir)?;
    let mut ring = KeyRing::load_or_create(&dir)?;
    if let Some(server) = running(config)?.filter(|s| s.signing_kid == kid) {
        if !force && kid != ring.active_kid() {
            return Err(AdminError::Rejected(format!(
                "key {kid} signs the running server's access tokens (pid {}): retired now, \
                 every session it issued would end at its next restart. Restart the server \
                 first (it then signs with the newest key), or retire it anyway with --force",
                server.pid
            )));
        }
    }
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

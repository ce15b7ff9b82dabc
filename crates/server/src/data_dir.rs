//! The data dir: where things live in it, its creation (mode 0700), and the running server's
//! claim on it.
//!
//! A server holds `unhidra.lock` with an exclusive lock (`flock`) for as long as it runs, and
//! writes into it its pid and the kid of the key it signs tokens with. So a second server on
//! the same dir refuses to start (two processes would each keep their own in-memory state of
//! one database), and the administration commands, which work on the dir directly, can tell
//! what a running server does (`unhidra keys` uses it: a key rotated on disk is used only
//! from the server's next start). The kernel releases the lock when the process ends, however
//! it ends, so a crash never leaves a stale claim behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::launch::LaunchError;

/// Where things live inside the data dir.
pub mod paths {
    use std::path::{Path, PathBuf};

    pub fn database(data_dir: &Path) -> PathBuf {
        data_dir.join("unhidra.db")
    }
    pub fn signing_keys(data_dir: &Path) -> PathBuf {
        data_dir.join("keys")
    }
    pub fn device_key_pepper(data_dir: &Path) -> PathBuf {
        data_dir.join("device-key.pepper")
    }
    pub fn files(data_dir: &Path) -> PathBuf {
        data_dir.join("files")
    }
    /// Held by the running server; see [`ServerLock`](super::ServerLock).
    pub fn lock(data_dir: &Path) -> PathBuf {
        data_dir.join("unhidra.lock")
    }
}

/// Creates the data dir with mode 0700, or checks that an existing one is not open to others.
pub fn prepare_data_dir(dir: &Path) -> Result<(), LaunchError> {
    let io = |error| LaunchError::DataDir {
        path: dir.to_owned(),
        error,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LaunchError::DataDirTooOpen {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// What a running server says of itself in its lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningServer {
    pub pid: u32,
    /// The key that signs its access tokens (the newest key when it started).
    pub signing_kid: String,
}

/// The running server's claim on its data dir, released when dropped (or when the process
/// ends).
#[derive(Debug)]
pub struct ServerLock {
    file: File,
    path: std::path::PathBuf,
}

/// How long a starting server waits for the lock: `unhidra keys` may hold it, shared, for a
/// moment while it looks.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

impl ServerLock {
    /// Claims `data_dir` for this process, or says which server holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, LaunchError> {
        let path = paths::lock(data_dir);
        let io = |error| LaunchError::DataDir {
            path: path.clone(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = read_claim(&mut file).map(|c| c.pid);
                    return Err(LaunchError::DataDirInUse {
                        path: data_dir.to_owned(),
                        pid: holder,
                    });
                }
                Err(TryLockError::Error(err)) => return Err(io(err)),
            }
        }
        Ok(Self { file, path })
    }

    /// Says, in the lock file, which key this server signs with.
    pub fn record(&mut self, signing_kid: &str) -> Result<(), LaunchError> {
        let claim = RunningServer {
            pid: std::process::id(),
            signing_kid: signing_kid.to_owned(),
        };
        let text = serde_json::to_string(&claim).unwrap_or_default();
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .and_then(|()| self.file.write_all(text.as_bytes()));
        written.map_err(|error| LaunchError::DataDir {
            path: self.path.clone(),
            error,
        })
    }
}

/// The server running on `data_dir`, if one is. Never creates anything.
pub fn running_server(data_dir: &Path) -> std::io::Result<Option<RunningServer>> {
    let mut file = match File::open(paths::lock(data_dir)) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    match file.try_lock_shared() {
        // Nobody holds it exclusively: no server runs (the shared lock goes with `file`).
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(read_claim(&mut file)),
        Err(TryLockError::Error(err)) => Err(err),
    }
}

fn read_claim(file: &mut File) -> Option<RunningServer> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_per_data_dir_and_the_cli_sees_which() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(running_server(dir).unwrap(), None);
        let mut lock = ServerLock::acquire(dir).unwrap();
        lock.record("kid-1").unwrap();
        let seen = running_server(dir).unwrap().unwrap();
        assert_eq!(seen.pid, std::process::id());
        assert_eq!(seen.signing_kid, "kid-1");
        let second = ServerLock::acquire(dir).unwrap_err();
        assert!(
            second
                .to_string()
                .contains("in use by another unhidra server"),
            "{second}"
        );
        drop(lock);
        assert_eq!(running_server(dir).unwrap(), None);
        let mut again = ServerLock::acquire(dir).unwrap();
        again.record("kid-2").unwrap();
        assert_eq!(running_server(dir).unwrap().unwrap().signing_kid, "kid-2");
    }
}

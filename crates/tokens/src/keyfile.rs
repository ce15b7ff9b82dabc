//! Secret files on disk: signing keys, the device-key pepper.
//!
//! Every file this module writes is created with mode 0600, fully written and fsynced under a
//! temporary name in the same directory, and then hard-linked to its final name. Linking fails
//! when the target exists, so a file already on disk — including one a concurrent process has
//! just published — is never overwritten, and no reader ever sees a half-written file.
//!
//! Every file this module reads must be a regular file with no group or other permission bits
//! (`mode & 0o077 == 0`); anything looser is refused with [`KeyFileError::TooOpen`] rather than
//! silently fixed, so an operator notices that the secret may have leaked.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::RngCore;

/// The only mode this module writes secret files with.
const SECRET_FILE_MODE: u32 = 0o600;
/// Permission bits that must be clear on a secret file: anything for group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Why a secret file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file or its directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file exists but group or others have permissions on it (`mode` is its permission bits).
    #[error(
        "{} has mode {mode:o}, which lets group or others access it; \
         secret files must be 0600 (chmod 600 it if it has not leaked)",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    /// The path or file is unusable: no file name, not a regular file, wrong contents.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl KeyFileError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    fn is_already_exists(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

/// Read the secret file at `path`, refusing it unless it is a regular file with mode 0600 or
/// stricter.
///
/// The mode is checked on the opened file handle, so the file checked is the file read.
pub fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let mut file = File::open(path).map_err(|e| KeyFileError::io(path, e))?;
    let metadata = file.metadata().map_err(|e| KeyFileError::io(path, e))?;
    if !metadata.is_file() {
        return Err(KeyFileError::Invalid {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| KeyFileError::io(path, e))?;
    Ok(bytes)
}

/// Read the file at `path`; if it does not exist, create it with the bytes from `make()` and
/// return those.
///
/// `make` runs only when the file is missing. If another process creates the file between our
/// check and our write, its file wins and is what we return: nothing is ever overwritten.
pub fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, KeyFileError> {
    match read(path) {
        Err(e) if e.is_not_found() => {}
        other => return other,
    }
    let bytes = make();
    match write_new(path, &bytes) {
        Ok(()) => Ok(bytes),
        // Lost a race with a concurrent creator: theirs is the file on disk now.
        Err(e) if e.is_already_exists() => read(path),
        Err(e) => Err(e),
    }
}

/// Create the secret file `path` (mode 0600) holding `bytes`; fails if it already exists.
///
/// The bytes are written and fsynced under a temporary name in the same directory, then
/// hard-linked into place (which, unlike a rename, refuses to replace an existing file), and the
/// directory is fsynced so the new name survives a crash.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let file_name = path.file_name().ok_or_else(|| KeyFileError::Invalid {
        path: path.to_owned(),
        reason: "path has no file name".to_owned(),
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A leading dot keeps the temporary out of directory scans such as the key ring's `jwt-*`.
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{:016x}.tmp", OsRng.next_u64()));
    let temp_path = dir.join(temp_name);

    let result = write_temp(&temp_path, bytes)
        .and_then(|()| fs::hard_link(&temp_path, path).map_err(|e| KeyFileError::io(path, e)));
    // The temporary is only ever a second name (or a failed attempt); drop it either way.
    let cleanup = fs::remove_file(&temp_path);
    result?;
    cleanup.map_err(|e| KeyFileError::io(&temp_path, e))?;
    sync_dir(dir)
}

fn write_temp(temp_path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(temp_path)
        .map_err(|e| KeyFileError::io(temp_path, e))?;
    // `mode` above is filtered through the umask; make the result exactly 0600 regardless.
    file.set_permissions(Permissions::from_mode(SECRET_FILE_MODE))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| KeyFileError::io(temp_path, e))
}

/// Fsync a directory so that entries just added to or removed from it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), KeyFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyFileError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_file_has_mode_0600_and_the_made_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let bytes = load_or_create(&path, || b"fresh".to_vec()).unwrap();
        assert_eq!(bytes, b"fresh");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"fresh");
    }

    #[test]
    fn no_temporary_files_are_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(&dir.path().join("secret"), || b"x".to_vec()).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[test]
    fn existing_file_is_read_back_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        load_or_create(&path, || b"first".to_vec()).unwrap();
        let mut called = false;
        let bytes = load_or_create(&path, || {
            called = true;
            b"second".to_vec()
        })
        .unwrap();
        assert_eq!(bytes, b"first");
        assert!(!called, "make() must not run when the file exists");
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }

    #[test]
    fn existing_0644_file_is_refused_as_too_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, b"leaky").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        match load_or_create(&path, || b"replacement".to_vec()) {
            Err(KeyFileError::TooOpen { mode, path: p }) => {
                assert_eq!(mode, 0o644);
                assert_eq!(p, path);
            }
            other => panic!("expected TooOpen, got {other:?}"),
        }
        // Refused, not repaired or replaced.
        assert_eq!(fs::read(&path).unwrap(), b"leaky");
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn group_readable_only_is_also_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(read(&path), Err(KeyFileError::TooOpen { .. })));
    }

    #[test]
    fn stricter_than_0600_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, b"ro").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&path).unwrap(), b"ro");
    }

    #[test]
    fn write_new_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new(&path, b"one").unwrap();
        let err = write_new(&path, b"two").unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(read(&sub), Err(KeyFileError::Invalid { .. })));
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("secret");
        assert!(matches!(
            load_or_create(&path, || b"x".to_vec()),
            Err(KeyFileError::Io { .. })
        ));
    }
}

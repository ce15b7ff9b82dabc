//! File contents on disk, named by their SHA-256.
//!
//! ```text
//! <data_dir>/files/            0700
//!   sha256/<2 hex>/<64 hex>    blobs 0600, directories 0700
//!   tmp/                       uploads in progress
//! ```
//!
//! An upload is streamed into a temp file while it is hashed and counted, never held in
//! memory. Past the limit, reading stops. A complete upload is fsynced and renamed into
//! place (then its directory is fsynced), so a blob is either whole or absent, and the same
//! content is stored once. The temp file is removed on every failure, also when the upload
//! is abandoned (the client left and the request's future was dropped); what a crash leaves
//! in `tmp/` is removed at start.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The blob store under one directory (`<data_dir>/files`).
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

/// What a stored upload is: its hash (lowercase hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The content went past the limit; nothing was kept.
    #[error("the content is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body could not be read (the client went away, or sent a malformed body).
    #[error("reading the content failed: {0}")]
    Body(#[source] BoxError),
    /// The disk failed us.
    #[error("blob store: {0}")]
    Io(#[from] io::Error),
}

impl BlobStore {
    /// Creates the directories (0700) if needed and removes temp files left by a crash.
    pub fn open(root: &Path) -> io::Result<Self> {
        let blobs = root.join("sha256");
        let tmp = root.join("tmp");
        for dir in [root, &blobs, &tmp] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        for entry in std::fs::read_dir(&tmp)? {
            let path = entry?.path();
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "could not remove a temp file");
            }
        }
        Ok(Self { blobs, tmp })
    }

    /// Streams `content` into the store, hashing and counting it; more than `limit` bytes is
    /// [`BlobError::TooLarge`] and leaves nothing behind. Returns once the blob is durable.
    pub async fn put<S, B, E>(&self, content: S, limit: u64) -> Result<Blob, BlobError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: Into<BoxError>,
    {
        let temp = TempFile::new(self.tmp.join(format!("{}.part", uuid::Uuid::now_v7())));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp.path)
            .await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut content = std::pin::pin!(content);
        while let Some(chunk) = content.next().await {
            let chunk = chunk.map_err(|err| BlobError::Body(err.into()))?;
            let bytes = chunk.as_ref();
            size = size.saturating_add(bytes.len() as u64);
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(bytes);
            file.write_all(bytes).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);

        let sha256 = hex(&hasher.finalize());
        let (dir, path) = self.locate(&sha256)?;
        let new_dir = !tokio::fs::try_exists(&dir).await?;
        if new_dir {
            tokio::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .await?;
            sync_dir(&self.blobs).await?;
        }
        if tokio::fs::try_exists(&path).await? {
            // Stored before: the temp copy goes (when `temp` drops).
            return Ok(Blob { sha256, size });
        }
        tokio::fs::rename(&temp.path, &path).await?;
        temp.disarm();
        sync_dir(&dir).await?;
        Ok(Blob { sha256, size })
    }

    /// The stored blob with this hash, opened for reading, and its size on disk.
    pub async fn open_blob(&self, sha256: &str) -> Result<(tokio::fs::File, u64), BlobError> {
        let (_, path) = self.locate(sha256)?;
        let file = tokio::fs::File::open(&path).await?;
        let size = file.metadata().await?.len();
        Ok((file, size))
    }

    /// Where the blob with this hash lives (its directory and its path). Only a well-formed
    /// hash names a path, so a corrupt value can never point outside the store.
    fn locate(&self, sha256: &str) -> io::Result<(PathBuf, PathBuf)> {
        let well_formed = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match sha256.get(..2) {
            Some(shard) if well_formed => {
                let dir = self.blobs.join(shard);
                let path = dir.join(sha256);
                Ok((dir, path))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a SHA-256 hex digest: {sha256:?}"),
            )),
        }
    }
}

/// Makes a directory's entries (a rename, a new subdirectory) durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A temp file that is removed when dropped, unless it was renamed into place: however an
/// upload ends (error, limit, dropped future), no partial file stays behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // One unlink: cheap enough to do in place, even on an async worker.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "could not remove a temp file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Vec<u8>, io::Error>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(p.to_vec()))
                .collect::<Vec<Result<Vec<u8>, io::Error>>>(),
        )
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        all.sort();
        all
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    // SHA-256("hello world"), from `printf 'hello world' | sha256sum`.
    const HELLO: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    #[tokio::test]
    async fn content_is_stored_once_under_its_hash_privately() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let store = BlobStore::open(&root).unwrap();
        let blob = store
            .put(chunks(&[b"hello", b" ", b"world"]), 11)
            .await
            .unwrap();
        assert_eq!(
            blob,
            Blob {
                sha256: HELLO.into(),
                size: 11
            }
        );
        let path = root.join("sha256").join("b9").join(HELLO);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(mode(&path), 0o600);
        for d in [
            &root,
            &root.join("sha256"),
            &root.join("sha256/b9"),
            &root.join("tmp"),
        ] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }

        // The same content again: the same blob, still one file, no temp left.
        let again = store.put(chunks(&[b"hello world"]), 100).await.unwrap();
        assert_eq!(again, blob);
        assert_eq!(entries(&root.join("sha256/b9")), vec![path.clone()]);
        assert!(entries(&root.join("tmp")).is_empty());

        let (mut file, size) = store.open_blob(HELLO).await.unwrap();
        assert_eq!(size, 11);
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut read)
            .await
            .unwrap();
        assert_eq!(read, b"hello world");
    }

    #[tokio::test]
    async fn an_empty_upload_is_a_blob_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blob = store.put(chunks(&[]), 10).await.unwrap();
        assert_eq!(
            blob.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(blob.size, 0);
    }

    #[tokio::test]
    async fn past_the_limit_nothing_stays_and_reading_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let read = std::sync::atomic::AtomicUsize::new(0);
        let endless = futures::stream::repeat_with(|| {
            read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, io::Error>(vec![7u8; 1000])
        });
        let err = store.put(endless, 4500).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { limit: 4500 }), "{err}");
        assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert!(entries(&dir.path().join("tmp")).is_empty());
        assert!(entries(&dir.path().join("sha256")).is_empty());

        // Exactly at the limit is fine.
        let blob = store.put(chunks(&[&[1u8; 4500]]), 4500).await.unwrap();
        assert_eq!(blob.size, 4500);
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let broken = futures::stream::iter(vec![
            Ok(vec![1u8; 10]),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")),
        ]);
        let err = store.put(broken, 100).await.unwrap_err();
        assert!(matches!(err, BlobError::Body(_)), "{err}");
        assert!(entries(&dir.path().join("tmp")).is_empty());
        assert!(entries(&dir.path().join("sha256")).is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // A body whose second chunk never comes: the upload waits in the middle of it.
        let stalled = futures::stream::iter(vec![Ok::<_, io::Error>(vec![1u8; 10])])
            .chain(futures::stream::pending());
        let mut upload = Box::pin(store.put(stalled, 100));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut upload).await;
        assert!(waited.is_err(), "the upload cannot finish");
        let partial = entries(&dir.path().join("tmp"));
        assert_eq!(partial.len(), 1);
        assert_eq!(std::fs::read(&partial[0]).unwrap(), [1u8; 10]);
        assert_eq!(mode(&partial[0]), 0o600);
        // Dropped, as hyper drops a request's future when its client leaves.
        drop(upload);
        assert!(entries(&dir.path().join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn leftover_temp_files_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        BlobStore::open(dir.path()).unwrap();
        let leftover = dir.path().join("tmp").join("crashed.part");
        std::fs::write(&leftover, b"half").unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert!(!leftover.exists());
    }

    #[tokio::test]
    async fn only_well_formed_hashes_name_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        for bad in [
            "",
            "../../etc/passwd",
            "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9",
            &format!("{HELLO}0"),
            &format!("../{}", &HELLO[3..]),
        ] {
            let err = store.open_blob(bad).await.unwrap_err();
            assert!(
                matches!(&err, BlobError::Io(e) if e.kind() == io::ErrorKind::InvalidData),
                "{bad}: {err}"
            );
        }
        // Well formed but never stored.
        let err = store.open_blob(HELLO).await.unwrap_err();
        assert!(matches!(&err, BlobError::Io(e) if e.kind() == io::ErrorKind::NotFound));
    }
}

//! Argon2id password hashing off the async workers.
//!
//! Parameters are OWASP's minimum for Argon2id (m = 19 MiB, t = 2, p = 1), stored in each
//! PHC string so they can be raised later without breaking old hashes. Hashing runs on
//! tokio's blocking pool behind a semaphore sized to the CPU count: a login flood queues
//! there (and is turned away with 503 after a timeout) instead of stalling the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::http::ApiError;

/// OWASP's Argon2id minimum: 19 MiB of memory.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("argon2: {0}")]
    Argon2(String),
}

pub struct Passwords {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Verified against when the user does not exist, so that path costs the same.
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Argon2(e.to_string()))
}

fn verify_with(argon: &Argon2<'_>, password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(err) => {
            tracing::error!(error = %err, "stored password hash is not a valid PHC string");
            false
        }
    }
}

impl Passwords {
    /// `concurrency` 0 means one hash per CPU core.
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Result<Self, PasswordError> {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            concurrency
        };
        let argon = argon2()?;
        let dummy_hash = hash_with(&argon, "unhidra dummy password for timing equality")?;
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_timeout,
            dummy_hash,
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: SecretString) -> Result<String, ApiError> {
        let argon = self.argon.clone();
        self.run("hash", move || hash_with(&argon, password.expose_secret()))
            .await?
            .map_err(ApiError::internal)
    }

    /// Verifies `password` against `phc`; with no hash (unknown user) it verifies against a
    /// dummy hash and returns `false`, taking the same time.
    pub async fn verify(
        &self,
        password: SecretString,
        phc: Option<String>,
    ) -> Result<bool, ApiError> {
        let argon = self.argon.clone();
        let (phc, real) = match phc {
            Some(phc) => (phc, true),
            None => (self.dummy_hash.clone(), false),
        };
        let ok = self
            .run("verify", move || {
                verify_with(&argon, password.expose_secret(), &phc)
            })
            .await?;
        Ok(ok && real)
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                // Counted, not logged: under a flood this happens hundreds of times a second.
                metrics::counter!(crate::metrics::PASSWORD_QUEUE_REJECTIONS, "op" => op)
                    .increment(1);
                ApiError::overloaded(1)
            })?
            .map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let start = Instant::now();
            let out = work();
            metrics::histogram!(crate::metrics::PASSWORD_HASH_DURATION, "op" => op)
                .record(start.elapsed().as_secs_f64());
            out
        })
        .await
        .map_err(ApiError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let pw = Passwords::new(1, Duration::from_secs(5)).unwrap();
        let phc = pw
            .hash(secret("correct horse battery staple"))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(pw
            .verify(secret("correct horse battery staple"), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!pw.verify(secret("wrong"), Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_even_with_the_dummy_password() {
        let pw = Passwords::new(1, Duration::from_secs(5)).unwrap();
        assert!(!pw
            .verify(secret("unhidra dummy password for timing equality"), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_with_503() {
        let pw = Passwords::new(1, Duration::from_millis(1)).unwrap();
        let _held = pw.permits.clone().acquire_owned().await.unwrap();
        let err = pw.hash(secret("whatever it is")).await.unwrap_err();
        assert_eq!(err.status(), 503);
    }
}

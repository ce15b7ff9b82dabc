//! People's accounts and sessions: registration, login, refresh-token rotation, logout.
//!
//! A login: rate limit by IP (before any hashing) → Argon2id on the blocking pool behind a
//! bounded semaphore (an unknown user is verified against a dummy hash, so both failures take
//! the same time and say the same thing) → a new session (refresh-token family) and an access
//! token → audit event.

pub mod password;
pub mod policy;
pub mod routes;
pub mod sessions;

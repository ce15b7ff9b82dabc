//! Unhidra's token machinery: everything that turns a secret into a credential and back.
//!
//! - [`keyfile`]: secret files on disk (written 0600, atomically, never overwritten, and
//!   refused when group or others may read them).
//! - [`jwt`]: short-lived access tokens, Ed25519-signed JWTs carrying a `kid`, verified against a
//!   [`jwt::KeyRing`] that supports rotation and publishes a JWKS document.
//! - [`opaque`]: long-lived random credentials: refresh tokens (stored as SHA-256) and device
//!   API keys (stored as a public id plus HMAC-SHA256 under a server-side pepper).

pub mod jwt;
pub mod keyfile;
pub mod opaque;

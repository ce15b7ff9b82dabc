//! Access tokens: short-lived Ed25519-signed JWTs.
//!
//! Signing keys live in a directory as `jwt-<kid>.pem` files (PKCS#8 PEM, mode 0600), where the
//! kid is a UUIDv7 string: kids sort by creation time, the newest key signs, and every key in the
//! directory verifies. Rotation is "add a key, wait one access-token lifetime, retire the old
//! one"; [`KeyRing::jwks`] publishes the public halves for other verifiers.
//!
//! Verification is deliberately narrow. The header is inspected before anything else: `alg` must
//! be exactly `EdDSA` (so `none`, and HS256 "signed" with a public key, never reach a verifier)
//! and `kid` must name a key in the ring. `jsonwebtoken` then checks the signature, issuer,
//! audience and the presence of every claim; expiry and not-before are checked here against the
//! caller's `now`, never the system clock, so tests control time instead of sleeping.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::keyfile::{self, KeyFileError};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// The only `alg` header value accepted.
const ALG_EDDSA: &str = "EdDSA";
const KEY_FILE_PREFIX: &str = "jwt-";
const KEY_FILE_SUFFIX: &str = ".pem";
const KEY_DIR_MODE: u32 = 0o700;

/// The claims of an access token. Every field is required when verifying.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    /// The session: the id of the refresh-token family this token was issued under.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why the key ring could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written, or its permissions are too open.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The key directory could not be created, listed, or changed.
    #[error("{}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file named like a key is not one (bad kid, not PKCS#8 Ed25519 PEM).
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// The directory holds no key even after generating one.
    #[error("no JWT signing keys in {}", .0.display())]
    NoKeys(PathBuf),
    /// `retire` was asked to remove the key that signs new tokens.
    #[error("key {0} is the active signing key; rotate before retiring it")]
    RetireActive(String),
    /// `retire` was given a kid the ring does not hold.
    #[error("no key with kid {0} in the ring")]
    UnknownKid(String),
}

/// Why an access token was refused (or could not be made).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token uses a disallowed algorithm")]
    BadAlgorithm,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token from the wrong issuer")]
    WrongIssuer,
    #[error("token for the wrong audience")]
    WrongAudience,
    #[error("could not sign token")]
    Signing,
}

impl TokenError {
    /// A short snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadAlgorithm => "bad_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Signing => "signing",
        }
    }
}

/// One Ed25519 key pair, in the forms `jsonwebtoken` wants.
struct RingKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: [u8; 32],
}

impl RingKey {
    fn new(signing: &SigningKey) -> Result<Self, String> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode key as PKCS#8: {e}"))?;
        let public = signing.verifying_key().to_bytes();
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            // jsonwebtoken's Ed25519 "DER" decoding key is the raw 32-byte public key (the same
            // bytes `DecodingKey::from_ed_components` decodes from a JWK's `x`).
            decoding: DecodingKey::from_ed_der(&public),
            public,
        })
    }
}

/// A directory of Ed25519 signing keys: the newest signs, every one verifies.
///
/// Invariant: holds at least one key, and `active` is one of them.
pub struct KeyRing {
    keys: BTreeMap<String, RingKey>,
    active: String,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Load every `jwt-*.pem` in `dir` (creating `dir` with mode 0700 if missing); if there is
    /// none, generate one. Key files readable by group or others are refused.
    pub fn load_or_create(dir: &Path) -> Result<KeyRing, KeyError> {
        DirBuilder::new()
            .recursive(true)
            .mode(KEY_DIR_MODE)
            .create(dir)
            .map_err(|source| KeyError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        if let Some(ring) = Self::load(dir)? {
            return Ok(ring);
        }
        generate_key_file(dir)?;
        // Load again rather than using the key just made: a concurrent first start may have
        // written one too, and every process should agree on the newest.
        Self::load(dir)?.ok_or_else(|| KeyError::NoKeys(dir.to_owned()))
    }

    /// Read the key files in `dir`; `None` if there are none.
    fn load(dir: &Path) -> Result<Option<KeyRing>, KeyError> {
        let dir_error = |source| KeyError::Dir {
            path: dir.to_owned(),
            source,
        };
        let mut keys = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let path = entry.path();
            let Some(kid) = kid_from_file_name(&entry.file_name()) else {
                continue;
            };
            let kid = parse_kid(&kid).ok_or_else(|| KeyError::Invalid {
                path: path.clone(),
                reason: format!("{kid:?} is not a canonical UUID kid"),
            })?;
            let key = read_key_file(&path)?;
            keys.insert(kid, key);
        }
        Ok(Self::from_keys(keys))
    }

    fn from_keys(keys: BTreeMap<String, RingKey>) -> Option<KeyRing> {
        let active = keys.keys().next_back()?.clone();
        Some(KeyRing { keys, active })
    }

    /// Generate a new key in `dir`, written 0600, and make it the active signing key; returns
    /// its kid.
    ///
    /// Other processes sharing `dir` pick it up (as the active key) when they next load the ring.
    /// Publish it (JWKS) to other verifiers before they see tokens signed with it.
    pub fn rotate(&mut self, dir: &Path) -> Result<String, KeyError> {
        let (kid, key) = generate_key_file(dir)?;
        self.keys.insert(kid.clone(), key);
        self.active.clone_from(&kid);
        Ok(kid)
    }

    /// Delete a non-active key: tokens signed with it stop verifying.
    pub fn retire(&mut self, dir: &Path, kid: &str) -> Result<(), KeyError> {
        if kid == self.active {
            return Err(KeyError::RetireActive(kid.to_owned()));
        }
        if !self.keys.contains_key(kid) {
            return Err(KeyError::UnknownKid(kid.to_owned()));
        }
        let path = key_file_path(dir, kid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            // Already gone (another process retired it): the outcome we wanted.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyError::Dir { path, source }),
        }
        keyfile::sync_dir(dir)?;
        self.keys.remove(kid);
        Ok(())
    }

    /// The kid of the key that signs new tokens.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// Every kid in the ring, oldest first.
    pub fn kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// The public keys as a JWKS document (RFC 7517 / RFC 8037), oldest first.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.public),
                    "kid": kid,
                    "alg": ALG_EDDSA,
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn active_key(&self) -> Option<&RingKey> {
        self.keys.get(&self.active)
    }
}

fn key_file_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{KEY_FILE_PREFIX}{kid}{KEY_FILE_SUFFIX}"))
}

fn kid_from_file_name(name: &std::ffi::OsStr) -> Option<String> {
    let name = name.to_str()?;
    let kid = name
        .strip_prefix(KEY_FILE_PREFIX)?
        .strip_suffix(KEY_FILE_SUFFIX)?;
    Some(kid.to_owned())
}

/// A kid must be a UUID in canonical (lowercase, hyphenated) form, so that string order is
/// creation order and file names round-trip.
fn parse_kid(kid: &str) -> Option<String> {
    let canonical = Uuid::parse_str(kid).ok()?.hyphenated().to_string();
    (canonical == kid).then_some(canonical)
}

fn read_key_file(path: &Path) -> Result<RingKey, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let bytes = secrecy::zeroize::Zeroizing::new(keyfile::read(path)?);
    let pem = std::str::from_utf8(&bytes).map_err(|_| invalid("not UTF-8 PEM".to_owned()))?;
    let signing = SigningKey::from_pkcs8_pem(pem)
        .map_err(|e| invalid(format!("not a PKCS#8 Ed25519 private key: {e}")))?;
    RingKey::new(&signing).map_err(invalid)
}

fn generate_key_file(dir: &Path) -> Result<(String, RingKey), KeyError> {
    let kid = Uuid::now_v7().hyphenated().to_string();
    let path = key_file_path(dir, &kid);
    let invalid = |reason: String| KeyError::Invalid {
        path: path.clone(),
        reason,
    };
    let signing = SigningKey::generate(&mut OsRng);
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| invalid(format!("cannot encode key as PEM: {e}")))?;
    let key = RingKey::new(&signing).map_err(invalid)?;
    keyfile::write_new(&path, pem.as_bytes())?;
    Ok((kid, key))
}

/// The fields of a JWT header that matter before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// Critical extensions (RFC 7515 section 4.1.11): we implement none, so any is refused.
    crit: Option<serde_json::Value>,
}

/// Issues and verifies access tokens for one issuer and audience.
pub struct AccessTokens {
    keys: KeyRing,
    issuer: String,
    audience: String,
    ttl: time::Duration,
    validation: Validation,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub fn new(
        keys: KeyRing,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        ttl: time::Duration,
    ) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();

        let mut validation = Validation::new(Algorithm::EdDSA);
        // jsonwebtoken reads the system clock for these; `verify` checks them against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // Presence only (sid, iat and jti are required by `AccessClaims` itself).
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);

        Self {
            keys,
            issuer,
            audience,
            ttl,
            validation,
        }
    }

    pub fn ttl(&self) -> time::Duration {
        self.ttl
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.keys.jwks()
    }

    /// Sign a token for `sub` in session `sid`, valid from `now` for the configured ttl.
    pub fn issue(
        &self,
        sub: &str,
        sid: &str,
        now: OffsetDateTime,
    ) -> Result<(String, AccessClaims), TokenError> {
        let iat = now.unix_timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(self.ttl.whole_seconds()),
            jti: Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA); // typ "JWT"
        header.kid = Some(self.keys.active_kid().to_owned());
        let key = self.keys.active_key().ok_or(TokenError::Signing)?;
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|_| TokenError::Signing)?;
        Ok((token, claims))
    }

    /// Verify `token` as of `now` and return its claims.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
        let header = raw_header(token)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        if header.alg != ALG_EDDSA {
            return Err(TokenError::BadAlgorithm);
        }
        let key = header
            .kid
            .and_then(|kid| self.keys.keys.get(&kid))
            .ok_or(TokenError::UnknownKey)?;

        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;

        let now = now.unix_timestamp();
        if claims.exp <= now.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Decode the header of a compact JWS (exactly three dot-separated parts) without trusting it.
fn raw_header(token: &str) -> Result<RawHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::BadAlgorithm,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        // Bad base64, bad JSON, missing or mistyped claims, wrong shape.
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests;

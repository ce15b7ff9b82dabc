//! Opaque credentials: refresh tokens and device API keys.
//!
//! Both are 256 bits from the OS RNG behind a recognisable prefix (`unh_rt_`, `unh_dk_`), so
//! secret scanners can spot a leaked one. The server never stores either in clear:
//!
//! - A refresh token is stored as its SHA-256. A 256-bit random value cannot be guessed or
//!   brute-forced from its hash, so a slow password hash would add cost and nothing else.
//! - A device key is `unh_dk_<public_id>_<secret>`. The public id is stored in clear for an
//!   indexed lookup; the secret is stored as HMAC-SHA256 under a pepper that lives in a 0600
//!   file in the data directory, not in the database, so a database dump alone is not enough
//!   to even test a guess. Comparison is constant-time.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keyfile::{self, KeyFileError};

/// Prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "unh_rt_";
/// Prefix of every device API key.
pub const DEVICE_KEY_PREFIX: &str = "unh_dk_";

/// Random bytes in a refresh token or device-key secret.
const SECRET_BYTES: usize = 32;
/// Length of [`SECRET_BYTES`] in unpadded base64.
const SECRET_B64_LEN: usize = 43;
/// Random bytes in a device key's public id.
const PUBLIC_ID_BYTES: usize = 8;
/// Length of a device key's public id in hex.
const PUBLIC_ID_HEX_LEN: usize = 2 * PUBLIC_ID_BYTES;
/// Length of a pepper, in bytes.
const PEPPER_BYTES: usize = 32;

/// 32 bytes from the OS RNG, as unpadded base64url (43 characters).
fn random_secret() -> String {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    OsRng.fill_bytes(bytes.as_mut());
    URL_SAFE_NO_PAD.encode(bytes.as_ref())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A refresh token: `unh_rt_` + base64url (no padding) of 32 random bytes.
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn generate() -> Self {
        Self(format!("{REFRESH_TOKEN_PREFIX}{}", random_secret()).into())
    }

    /// The token itself, to hand to the client once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the server stores: SHA-256 of the whole token string.
    pub fn hash(&self) -> [u8; 32] {
        hash_refresh_token(self.expose())
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

/// SHA-256 of a presented refresh token (the whole string, prefix included), for lookup.
pub fn hash_refresh_token(presented: &str) -> [u8; 32] {
    sha256(presented.as_bytes())
}

/// A device API key: `unh_dk_<public_id>_<secret>`.
///
/// `public_id` is 16 lowercase hex characters (8 random bytes); `secret` is base64url (no
/// padding) of 32 random bytes.
pub struct DeviceKey {
    pub public_id: String,
    secret: SecretString,
}

impl DeviceKey {
    pub fn generate() -> Self {
        let mut id = [0u8; PUBLIC_ID_BYTES];
        OsRng.fill_bytes(&mut id);
        Self {
            public_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            secret: random_secret().into(),
        }
    }

    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    /// The full key string, shown to the owner once.
    pub fn expose_full(&self) -> String {
        format!(
            "{DEVICE_KEY_PREFIX}{}_{}",
            self.public_id,
            self.secret.expose_secret()
        )
    }

    /// The secret part alone, to hash with [`DeviceKeyHasher`].
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public_id", &self.public_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// A presented string is not a well-formed device key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceKeyError {
    #[error("malformed device key")]
    Malformed,
}

/// Split a presented device key into `(public_id, secret)`.
///
/// Strict: the prefix, exactly 16 lowercase hex characters, `_`, and exactly 43 base64url
/// characters that decode to 32 bytes (canonically: no stray trailing bits). The secret may
/// itself contain `_`, so the key is split by position, not by separator.
pub fn parse_device_key(presented: &str) -> Result<(String, SecretString), DeviceKeyError> {
    let rest = presented
        .strip_prefix(DEVICE_KEY_PREFIX)
        .ok_or(DeviceKeyError::Malformed)?;
    let (public_id, rest) = rest
        .split_at_checked(PUBLIC_ID_HEX_LEN)
        .ok_or(DeviceKeyError::Malformed)?;
    let secret = rest.strip_prefix('_').ok_or(DeviceKeyError::Malformed)?;

    let id_ok = public_id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == SECRET_B64_LEN
        && URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|bytes| Zeroizing::new(bytes).len() == SECRET_BYTES);
    if !(id_ok && secret_ok) {
        return Err(DeviceKeyError::Malformed);
    }
    Ok((public_id.to_owned(), secret.to_owned().into()))
}

/// Keyed hash (HMAC-SHA256 under a server-side pepper) for device-key secrets.
pub struct DeviceKeyHasher {
    pepper: SecretBox<[u8; PEPPER_BYTES]>,
}

impl fmt::Debug for DeviceKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKeyHasher { pepper: [REDACTED] }")
    }
}

impl DeviceKeyHasher {
    pub fn new(pepper: [u8; PEPPER_BYTES]) -> Self {
        Self {
            pepper: SecretBox::new(Box::new(pepper)),
        }
    }

    /// Load the pepper from the 0600 file at `path`, creating it with 32 random bytes if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = Zeroizing::new(keyfile::load_or_create(path, || {
            let mut pepper = vec![0u8; PEPPER_BYTES];
            OsRng.fill_bytes(&mut pepper);
            pepper
        })?);
        let pepper: [u8; PEPPER_BYTES] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyFileError::Invalid {
                    path: path.to_owned(),
                    reason: format!(
                        "pepper must be exactly {PEPPER_BYTES} bytes, found {}",
                        bytes.len()
                    ),
                })?;
        let hasher = Self::new(pepper);
        Ok(hasher)
    }

    /// HMAC-SHA256(pepper, secret).
    pub fn hash(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` hashes to `stored`, compared in constant time.
    pub fn verify(&self, secret: &str, stored: &[u8]) -> bool {
        self.hash(secret).ct_eq(stored).into()
    }

    /// An HMAC keyed with the pepper.
    ///
    /// HMAC zero-pads a key shorter than the hash's block size (RFC 2104, section 2), so padding
    /// the 32-byte pepper to SHA-256's 64-byte block here gives exactly the MAC that
    /// `Hmac::new_from_slice(pepper)` would, through a constructor that cannot fail.
    fn mac(&self) -> Hmac<Sha256> {
        let mut block = Zeroizing::new([0u8; 64]);
        for (dst, src) in block.iter_mut().zip(self.pepper.expose_secret()) {
            *dst = *src;
        }
        <Hmac<Sha256> as KeyInit>::new(&Key::<Hmac<Sha256>>::from(*block))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn refresh_token_has_prefix_and_length() {
        let token = RefreshToken::generate();
        let s = token.expose();
        let body = s.strip_prefix("unh_rt_").unwrap();
        assert_eq!(s.len(), 7 + 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
    }

    #[test]
    fn refresh_tokens_are_unique() {
        let tokens: HashSet<String> = (0..10_000)
            .map(|_| RefreshToken::generate().expose().to_owned())
            .collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn refresh_token_hash_is_stable_sha256_of_the_whole_string() {
        let token = RefreshToken::generate();
        assert_eq!(token.hash(), token.hash());
        assert_eq!(token.hash(), hash_refresh_token(token.expose()));
        let expected: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        assert_eq!(token.hash(), expected);
        assert_ne!(token.hash(), RefreshToken::generate().hash());
    }

    #[test]
    fn refresh_token_debug_is_redacted() {
        let token = RefreshToken::generate();
        let debug = format!("{token:?}");
        assert!(!debug.contains(token.expose()), "{debug}");
        assert!(!debug.contains(token.expose().trim_start_matches("unh_rt_")));
    }

    #[test]
    fn device_key_format() {
        let key = DeviceKey::generate();
        let full = key.expose_full();
        assert_eq!(full.len(), 7 + 16 + 1 + 43);
        assert!(full.starts_with("unh_dk_"));
        assert_eq!(key.public_id().len(), 16);
        assert!(key
            .public_id()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(key.public_id, key.public_id());
        assert_eq!(full, format!("unh_dk_{}_{}", key.public_id(), key.secret()));
    }

    #[test]
    fn device_key_secret_is_256_bits() {
        let key = DeviceKey::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(key.secret()).unwrap().len(), 32);
    }

    #[test]
    fn device_keys_are_unique() {
        let keys: Vec<DeviceKey> = (0..1_000).map(|_| DeviceKey::generate()).collect();
        let ids: HashSet<&str> = keys.iter().map(DeviceKey::public_id).collect();
        let secrets: HashSet<&str> = keys.iter().map(DeviceKey::secret).collect();
        assert_eq!(ids.len(), keys.len());
        assert_eq!(secrets.len(), keys.len());
    }

    #[test]
    fn parse_round_trips() {
        // Many keys, so secrets containing '_' and '-' are covered.
        for _ in 0..500 {
            let key = DeviceKey::generate();
            let (id, secret) = parse_device_key(&key.expose_full()).unwrap();
            assert_eq!(id, key.public_id());
            assert_eq!(secret.expose_secret(), key.secret());
        }
    }

    #[test]
    fn parse_rejects_malformed_keys() {
        let key = DeviceKey::generate();
        let id = key.public_id().to_owned();
        let secret = key.secret().to_owned();
        let upper_id = "ABCDEF0123456789";
        let cases = [
            String::new(),
            "unh_dk_".to_owned(),
            // Wrong prefixes.
            format!("unh_rt_{id}_{secret}"),
            format!("UNH_DK_{id}_{secret}"),
            format!("dk_{id}_{secret}"),
            format!("{id}_{secret}"),
            // Short or long parts.
            format!("unh_dk_{}_{secret}", &id[..15]),
            format!("unh_dk_{id}0_{secret}"),
            format!("unh_dk_{id}_{}", &secret[..42]),
            format!("unh_dk_{id}_{secret}A"),
            format!("unh_dk_{id}{secret}"),
            // Bad characters.
            format!("unh_dk_{upper_id}_{secret}"),
            format!("unh_dk_{}g_{secret}", &id[..15]),
            format!("unh_dk_{id}_{}+", &secret[..42]),
            format!("unh_dk_{id}_{}/", &secret[..42]),
            format!("unh_dk_{id}_{}=", &secret[..42]),
            format!("unh_dk_{id}_{}é", &secret[..41]),
            format!("unh_dk_{id}-{secret}"),
            // Extra parts.
            format!("unh_dk_{id}_{secret}_extra"),
            format!("unh_dk_{id}_{id}_{secret}"),
            format!(" unh_dk_{id}_{secret}"),
            format!("unh_dk_{id}_{secret}\n"),
            // 43 base64url characters with stray trailing bits: not a canonical 32-byte value.
            format!("unh_dk_{id}_{}", "B".repeat(43)),
        ];
        for case in &cases {
            assert_eq!(
                parse_device_key(case).map(|(id, _)| id),
                Err(DeviceKeyError::Malformed),
                "{case:?}"
            );
        }
        // The same key unmangled parses, so the rejections above are about the mangling.
        assert!(parse_device_key(&key.expose_full()).is_ok());
    }

    #[test]
    fn hasher_verifies_the_right_secret_only() {
        let hasher = DeviceKeyHasher::new([7; 32]);
        let key = DeviceKey::generate();
        let stored = hasher.hash(key.secret());
        assert!(hasher.verify(key.secret(), &stored));
        assert!(!hasher.verify(DeviceKey::generate().secret(), &stored));
        assert!(!hasher.verify(key.secret(), &stored[..31]));
        assert!(!hasher.verify(key.secret(), &[]));
    }

    #[test]
    fn hasher_with_another_pepper_does_not_verify() {
        let key = DeviceKey::generate();
        let stored = DeviceKeyHasher::new([7; 32]).hash(key.secret());
        let other = DeviceKeyHasher::new([8; 32]);
        assert!(!other.verify(key.secret(), &stored));
    }

    #[test]
    fn hasher_is_standard_hmac_sha256() {
        let pepper = [0x42; 32];
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&pepper).unwrap();
        reference.update(b"some secret");
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(DeviceKeyHasher::new(pepper).hash("some secret"), expected);
        // And not a plain hash of the secret.
        assert_ne!(expected, sha256(b"some secret"));
    }

    #[test]
    fn pepper_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device-key-pepper");
        let first = DeviceKeyHasher::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), 32);
        let again = DeviceKeyHasher::load_or_create(&path).unwrap();
        assert_eq!(first.hash("s"), again.hash("s"));
        let elsewhere = DeviceKeyHasher::load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(first.hash("s"), elsewhere.hash("s"));
    }

    #[test]
    fn pepper_file_of_wrong_length_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepper");
        keyfile::write_new(&path, &[1; 31]).unwrap();
        assert!(matches!(
            DeviceKeyHasher::load_or_create(&path),
            Err(KeyFileError::Invalid { .. })
        ));
    }

    #[test]
    fn debug_output_does_not_contain_secrets() {
        let key = DeviceKey::generate();
        let debug = format!("{key:?}");
        assert!(!debug.contains(key.secret()), "{debug}");
        assert!(debug.contains(key.public_id()), "{debug}");

        let (_, parsed) = parse_device_key(&key.expose_full()).unwrap();
        assert!(!format!("{parsed:?}").contains(key.secret()));

        let hasher = DeviceKeyHasher::new([0xab; 32]);
        let debug = format!("{hasher:?}");
        assert!(
            !debug.contains("171") && !debug.to_lowercase().contains("ab, "),
            "{debug}"
        );
    }
}

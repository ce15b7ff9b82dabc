//! The device registry and device authentication.
//!
//! A device's API key is `unh_dk_<key_id>_<secret>`: the key id is stored in clear and
//! indexed, the 256-bit secret only as HMAC-SHA256 under a pepper kept in a 0600 file in the
//! data dir (so a stolen database alone verifies nothing). A check is one indexed read and one
//! HMAC: microseconds, so ten thousand devices reconnecting at once cost well under a second of
//! CPU, where a password hash per key would cost minutes.

pub mod commands;
pub mod events;
pub mod ingest;
pub mod link;
pub mod live;
pub mod routes;
pub mod telemetry;
pub mod telemetry_routes;

use secrecy::ExposeSecret;
use unhidra_store::StoreError;
use unhidra_tokens::opaque::parse_device_key;

use unhidra_store::Store;
use unhidra_tokens::opaque::DeviceKeyHasher;

use crate::http::extract::AuthDevice;

pub use unhidra_tokens::opaque::DEVICE_KEY_PREFIX;

/// The reason a revoked device's live connections are closed with.
pub const REVOKED: &str = "device revoked";

/// Why a device key was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("malformed device key")]
    Malformed,
    #[error("unknown device key")]
    Unknown,
    #[error("wrong device key")]
    Mismatch,
    #[error("device revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeviceAuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "device_key_malformed",
            Self::Unknown => "device_key_unknown",
            Self::Mismatch => "device_key_mismatch",
            Self::Revoked => "device_revoked",
            Self::Store(_) => "store",
        }
    }
}

/// Checks a presented device key against the store.
pub async fn authenticate(
    store: &dyn Store,
    hasher: &DeviceKeyHasher,
    presented: &str,
) -> Result<AuthDevice, DeviceAuthError> {
    let result = check(store, hasher, presented).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(err) => err.reason(),
    };
    metrics::counter!(crate::metrics::DEVICE_AUTH, "result" => label).increment(1);
    result
}

async fn check(
    store: &dyn Store,
    hasher: &DeviceKeyHasher,
    presented: &str,
) -> Result<AuthDevice, DeviceAuthError> {
    let (key_id, secret) = parse_device_key(presented).map_err(|_| DeviceAuthError::Malformed)?;
    let credential = store
        .device_credential(&key_id)
        .await?
        .ok_or(DeviceAuthError::Unknown)?;
    if !hasher.verify(secret.expose_secret(), &credential.key_hash) {
        return Err(DeviceAuthError::Mismatch);
    }
    if credential.revoked {
        return Err(DeviceAuthError::Revoked);
    }
    Ok(AuthDevice {
        device_id: credential.device_id,
        owner_id: credential.owner_id,
    })
}

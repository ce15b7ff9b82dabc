//! What every handler shares: configuration, store, keys, limits, clock, audit.

use std::sync::Arc;

use unhidra_store::Store;
use unhidra_tokens::jwt::AccessTokens;
use unhidra_tokens::opaque::DeviceKeyHasher;

use crate::audit::Audit;
use crate::auth::password::Passwords;
use crate::clock::Clock;
use crate::config::Config;
use crate::devices::ingest::TelemetryIngest;
use crate::files::blobs::BlobStore;
use crate::gateway::Gateway;
use crate::rate_limit::RateLimits;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub tokens: AccessTokens,
    pub device_keys: DeviceKeyHasher,
    pub passwords: Passwords,
    pub limits: RateLimits,
    pub clock: Arc<dyn Clock>,
    pub audit: Audit,
    pub gateway: Gateway,
    pub files: BlobStore,
    pub telemetry: TelemetryIngest,
    /// The ML workers, when they started.
    pub ml: Option<unhidra_ml_bridge::MlBridge>,
    /// Stored telemetry goes here to be scored for anomalies.
    pub anomalies: crate::ml::AnomalyFeed,
}

//! Assembling and running the server.
//!
//! [`launch`] opens the store, loads (or creates) the keys, builds the shared state, serves
//! the API (over TLS when a certificate is configured) and the metrics listener, and runs
//! background tasks, all until the shutdown token is cancelled. It returns once in-flight
//! requests have drained and every task has finished.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use unhidra_store::StoreError;
use unhidra_store_sqlite::SqliteStore;
use unhidra_tokens::jwt::{AccessTokens, KeyError, KeyRing};
use unhidra_tokens::keyfile::KeyFileError;
use unhidra_tokens::opaque::DeviceKeyHasher;

use crate::audit::Audit;
use crate::auth::password::{PasswordError, Passwords};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::connections::{serve_http, Acceptor, ConnectionLimits, HttpTimeouts};
use crate::data_dir::{paths, prepare_data_dir, ServerLock};
use crate::devices::ingest::TelemetryIngest;
use crate::files::blobs::BlobStore;
use crate::gateway::hub::LocalHub;
use crate::gateway::Gateway;
use crate::rate_limit::RateLimits;
use crate::state::AppState;
use crate::tls::TlsError;

/// The sockets the server serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    /// `None` runs without the Prometheus listener.
    pub metrics: Option<TcpListener>,
    /// The native MQTT listener (`mqtt.listen`); `None` runs without it.
    pub mqtt: Option<TcpListener>,
}

/// Why the server could not start. Each message carries its cause's text, and no variant
/// also exposes that cause as `source()`: the binary prints the chain, which would say it
/// twice.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data dir {}: {error}", path.display())]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "data dir {} is accessible by other users (mode {mode:o}); run `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    DataDirTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "data dir {} is in use by another unhidra server{}",
        path.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    DataDirInUse { path: PathBuf, pid: Option<u32> },
    #[error("store: {0}")]
    Store(StoreError),
    #[error("signing keys: {0}")]
    Keys(KeyError),
    #[error("device key pepper: {0}")]
    Pepper(KeyFileError),
    #[error("password hashing: {0}")]
    Password(PasswordError),
    /// Its messages name the files and say "TLS" themselves.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

impl From<StoreError> for LaunchError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl From<KeyError> for LaunchError {
    fn from(err: KeyError) -> Self {
        Self::Keys(err)
    }
}

impl From<KeyFileError> for LaunchError {
    fn from(err: KeyFileError) -> Self {
        Self::Pepper(err)
    }
}

impl From<PasswordError> for LaunchError {
    fn from(err: PasswordError) -> Self {
        Self::Password(err)
    }
}

/// Runs the server with the system clock.
pub async fn launch(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), LaunchError> {
    launch_with_clock(config, listeners, shutdown, Arc::new(SystemClock)).await
}

/// Runs the server with the given clock (tests pass a [`ManualClock`](crate::ManualClock)).
pub async fn launch_with_clock(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> Result<(), LaunchError> {
    config.validate()?;
    // Before anything is created on disk: a bad certificate or an exposed key stops the start.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => None,
    };
    prepare_data_dir(&config.data_dir)?;
    // Held until `launch` returns: one server per data dir.
    let mut lock = ServerLock::acquire(&config.data_dir)?;
    let sqlite = SqliteStore::open(&paths::database(&config.data_dir)).await?;
    let store: Arc<dyn unhidra_store::Store> = Arc::new(sqlite.clone());
    let keys = KeyRing::load_or_create(&paths::signing_keys(&config.data_dir))?;
    lock.record(keys.active_kid())?;
    let tokens = AccessTokens::new(
        keys,
        config.auth.issuer.clone(),
        config.auth.audience.clone(),
        time::Duration::seconds(i64::from(config.auth.access_token_ttl_secs)),
    );
    let device_keys = DeviceKeyHasher::load_or_create(&paths::device_key_pepper(&config.data_dir))?;
    let files_dir = paths::files(&config.data_dir);
    let files = BlobStore::open(&files_dir).map_err(|error| LaunchError::DataDir {
        path: files_dir,
        error,
    })?;
    let passwords = Passwords::new(
        config.auth.hash_concurrency,
        Duration::from_secs(u64::from(config.auth.hash_queue_timeout_secs)),
    )?;
    let prometheus = crate::metrics::install();
    let limits = Arc::new(ConnectionLimits::new(
        &config.connections,
        &config.trusted_proxies,
    ));
    tracing::info!(
        max_open = limits.max_open(),
        max_per_ip = limits.max_per_ip(),
        open_file_limit = ?crate::connections::open_file_limit(),
        "connection limits"
    );
    let timeouts = HttpTimeouts::from(&config.connections);
    let hub = Arc::new(LocalHub::new(config.gateway.channel_buffer));
    let grace = Duration::from_millis(config.gateway.shutdown_grace_ms);

    // Stopped after the sessions, so what they accept while draining is still stored.
    let ingest_stop = CancellationToken::new();
    let (telemetry, telemetry_writer) =
        TelemetryIngest::new(Arc::clone(&store), ingest_stop.clone());

    let ml = crate::ml::start(&config.ml, &config.data_dir).await;
    let (anomalies, anomaly_queue) = crate::ml::anomaly_feed(ml.as_ref(), config.ml.anomaly);

    let state = Arc::new(AppState {
        telemetry,
        ml,
        anomalies,
        limits: RateLimits::new(&config.rate_limits),
        audit: Audit::new(Arc::clone(&store), Arc::clone(&clock)),
        gateway: Gateway::new(hub.clone(), shutdown.clone()),
        files,
        config,
        store,
        tokens,
        device_keys,
        passwords,
        clock,
    });

    let tasks = TaskTracker::new();
    tasks.spawn(telemetry_writer);
    if let Some(queue) = anomaly_queue {
        tasks.spawn(queue.run(Arc::clone(&state), shutdown.clone()));
    }
    tasks.spawn(housekeeping(
        Arc::clone(&state),
        hub,
        prometheus.clone(),
        shutdown.clone(),
    ));
    if let Some(listener) = listeners.metrics {
        let addr = listener.local_addr().map_err(LaunchError::Serve)?;
        tracing::info!(%addr, "metrics listening on /metrics");
        let app = Router::new().route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        );
        let acceptor = Acceptor::new(listener, Arc::clone(&limits), "metrics");
        tasks.spawn(serve_http(acceptor, None, app, timeouts, shutdown.clone()));
    }

    if let Some(listener) = listeners.mqtt {
        let addr = listener.local_addr().map_err(LaunchError::Serve)?;
        let scheme = if tls.is_some() { "mqtts" } else { "mqtt" };
        tracing::info!(%addr, scheme, "MQTT listening");
        tasks.spawn(crate::mqtt::listener::serve(
            Acceptor::new(listener, Arc::clone(&limits), "mqtt"),
            tls.clone(),
            Arc::clone(&state),
        ));
    }
    if let Some(url) = &state.config.mqtt.bridge {
        // Checked by `validate`; checked again here rather than trusted.
        let options =
            crate::mqtt::bridge::options(url).map_err(|err| ConfigError(err.to_string()))?;
        tasks.spawn(crate::mqtt::bridge::run(Arc::clone(&state), options));
    }

    let addr = listeners.api.local_addr().map_err(LaunchError::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "API listening");
    let app = crate::http::api_router(Arc::clone(&state));
    let acceptor = Acceptor::new(listeners.api, limits, "api");
    serve_http(
        acceptor,
        tls.map(TlsAcceptor::from),
        app,
        timeouts,
        shutdown.clone(),
    )
    .await;
    // The API listener has drained; everything else stops with it. Sessions close with
    // 1001 and flush what they owe; one that cannot within the grace period is abandoned.
    shutdown.cancel();
    state.gateway.sessions.close();
    if tokio::time::timeout(grace, state.gateway.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = state.gateway.registry.len(),
            "sessions still open after the shutdown grace period"
        );
    }
    ingest_stop.cancel();
    // What devices reported up to their last frame.
    flush_device_states(&state).await;
    tasks.close();
    tasks.wait().await;
    if let Some(ml) = &state.ml {
        ml.shutdown().await;
    }
    sqlite.close().await;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// Periodic clean-up: forgets recovered rate-limit keys and channel rings nobody listens
/// to, and folds recorded histogram samples into their buckets (the exporter otherwise keeps
/// every sample until the next scrape, so an unscraped server would grow without bound).
async fn housekeeping(
    state: Arc<AppState>,
    hub: Arc<LocalHub>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    let mut prune = tokio::time::interval(Duration::from_secs(600));
    let mut devices = tokio::time::interval(Duration::from_secs(10));
    let mut holds = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = holds.tick() => hub.release_overdue(),
            _ = sweep.tick() => {
                state.limits.evict();
                hub.sweep();
            }
            _ = upkeep.tick() => prometheus.run_upkeep(),
            _ = prune.tick() => prune_telemetry(&state).await,
            _ = devices.tick() => flush_device_states(&state).await,
        }
    }
}

/// Writes what devices reported since the last flush, in one transaction.
async fn flush_device_states(state: &AppState) {
    let seen = state.gateway.devices.take_dirty();
    if seen.is_empty() {
        return;
    }
    if let Err(err) = state.store.record_devices_seen(&seen).await {
        tracing::warn!(error = %err, devices = seen.len(), "storing device states failed");
    }
}

/// Deletes telemetry older than the retention (the store does it in slices, so that other
/// writers get the store in between).
async fn prune_telemetry(state: &AppState) {
    let days = state.config.telemetry.retention_days;
    if days == 0 {
        return;
    }
    let before = state.clock.now() - time::Duration::days(i64::from(days));
    match state.store.prune_telemetry(before).await {
        Ok(deleted) => {
            metrics::counter!(crate::metrics::TELEMETRY_POINTS_PRUNED).increment(deleted);
        }
        Err(err) => tracing::warn!(error = %err, "pruning old telemetry failed"),
    }
}

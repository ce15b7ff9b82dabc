//! TLS on the API listener, so that HTTPS and WSS work without a proxy in front.
//!
//! [`load`] reads the PEM certificate chain and private key named in the configuration and
//! builds a rustls server configuration: the `ring` provider, passed explicitly (no
//! process-wide default is installed or relied on), TLS 1.2 and 1.3 only, ALPN `http/1.1` (the
//! server speaks HTTP/1.1, which WebSocket upgrades need anyway). The key file must be a
//! regular file that group and others cannot access, the same rule as every other key file.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: `axum::serve` keeps serving, draining and
//! connection-info exactly as on plain TCP. Handshakes run concurrently inside the listener,
//! each bounded by [`HANDSHAKE_TIMEOUT`], so a client that stalls or fails its handshake never
//! holds up the next one; at most [`MAX_PENDING_HANDSHAKES`] run at once, beyond which new
//! connections wait in the kernel's backlog.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use secrecy::{ExposeSecret, SecretSlice};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use unhidra_tokens::keyfile::{self, KeyFileError};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the listen backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate file {}: {source}", path.display())]
    ReadCert { path: PathBuf, source: io::Error },
    #[error("TLS certificate file {}: {source}", path.display())]
    ParseCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate file {} holds no PEM certificate", path.display())]
    NoCert { path: PathBuf },
    /// Unreadable, or readable by group or others (the message says how to fix it).
    #[error("TLS private key: {0}")]
    KeyFile(#[from] KeyFileError),
    #[error(
        "TLS private key file {}: expected a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {source}",
        path.display()
    )]
    ParseKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// The key does not match the certificate, or is of a kind rustls cannot use.
    #[error("TLS certificate {} with key {}: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Reads the certificate chain (leaf first) and private key, both PEM, and builds the server
/// configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert)?;
    // The PEM text of the key is wiped from memory when dropped.
    let key_pem = SecretSlice::from(keyfile::read(key)?);
    let private_key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret()).map_err(|source| {
        TlsError::ParseKey {
            path: key.to_owned(),
            source,
        }
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(unusable)?;
    // HTTP/2 is not compiled into the server; WebSocket clients need HTTP/1.1 in any case.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCert {
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseCert {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// A handshake in progress: the finished stream and peer, or `None` if it failed.
type Handshake = BoxFuture<'static, Option<(TlsStream<TcpStream>, SocketAddr)>>;

/// A TCP listener that hands out connections whose TLS handshake has completed.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: FuturesUnordered::new(),
        }
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    /// Accepts TCP connections and drives their handshakes side by side, returning the first
    /// that completes. Cancel-safe: `axum::serve` drops this future when it stops accepting.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((tcp, peer)) => {
                        self.handshakes.push(handshake(self.acceptor.clone(), tcp, peer).boxed());
                    }
                    Err(err) => accept_error(err).await,
                },
                Some(done) = self.handshakes.next() => {
                    if let Some(connection) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        // Scanners, plain-HTTP clients and clients that do not trust the certificate end up
        // here; they are routine, not errors of the server.
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// As `axum::serve` does for plain TCP: a connection that died before it was accepted is
/// skipped; anything else (such as running out of file descriptors) is logged, and accepting
/// pauses for a second rather than spinning.
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Sets `TCP_NODELAY` on an accepted connection: small TLS records (WebSocket frames, acks)
/// go out at once instead of waiting on Nagle's algorithm.
pub fn set_nodelay(stream: &mut TlsStream<TcpStream>) {
    if let Err(err) = stream.get_ref().0.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
}

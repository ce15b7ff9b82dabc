//! Accepting connections on every listener (API, metrics, MQTT) under limits that keep sockets
//! which send nothing, or too little too slowly, from using up the server.
//!
//! - [`ConnectionLimits`]: at most `max_open` connections in all and `max_per_ip` from one
//!   address (IPv6 by /64; trusted proxies are not capped), counted from accept to close and
//!   shared by the listeners. A connection over a limit is closed at once, before any TLS or
//!   HTTP work, and counted in `connections_refused_total`. `max_open` stays below the
//!   process's open-file limit, so `accept` never fails with EMFILE and others still get in.
//! - [`Acceptor`]: a listener's accept loop with those limits and `TCP_NODELAY`.
//! - [`serve_http`]: HTTP/1.1 (with upgrades, for `/ws`) on hyper's own connection loop, so
//!   that a connection must send its request head within `header_timeout_secs` of opening or
//!   of its previous response (idle keep-alive connections end the same way); a TLS handshake
//!   has [`HANDSHAKE_TIMEOUT`]; a write that makes no progress for `send_timeout_secs` ends
//!   the connection ([`AdmittedStream`], which also holds the connection's place under the
//!   limits for as long as it lives, through an upgrade to a WebSocket too). Shutdown stops accepting, lets requests in flight
//!   finish, and returns when every connection has closed or been upgraded.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::config::ConnectionsConfig;
use crate::metrics::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors kept out of `max_open` by default, for the database, files and ML workers.
pub const RESERVED_DESCRIPTORS: usize = 256;
/// `max_per_ip` by default (or half of `max_open`, if less).
pub const DEFAULT_MAX_PER_IP: usize = 1000;

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_open` connections are open.
    ServerFull,
    /// `max_per_ip` connections are open from this address.
    PerAddress,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::ServerFull => "server_full",
            Self::PerAddress => "per_address",
        }
    }
}

/// The open connections, in all and per address, and their limits.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_open: usize,
    max_per_ip: usize,
    exempt: Vec<IpNet>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    /// The limits of `config`; an unset `max_open` comes from the open-file limit.
    pub fn new(config: &ConnectionsConfig, trusted_proxies: &[IpNet]) -> Self {
        let max_open = config
            .max_open
            .unwrap_or_else(|| default_max_open(open_file_limit()));
        Self::with(max_open, config.max_per_ip, trusted_proxies)
    }

    fn with(max_open: usize, max_per_ip: Option<usize>, exempt: &[IpNet]) -> Self {
        let max_open = max_open.max(2);
        Self {
            max_open,
            max_per_ip: match max_per_ip {
                Some(n) => n.clamp(1, max_open),
                // By default one address never takes more than half of everything.
                None => DEFAULT_MAX_PER_IP.min(max_open / 2),
            },
            exempt: exempt.to_vec(),
            counts: Mutex::default(),
        }
    }

    pub fn max_open(&self) -> usize {
        self.max_open
    }

    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    /// Counts a new connection from `ip`, or says why it may not stay.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        listener: &'static str,
    ) -> Result<Admitted, Refusal> {
        let key = crate::rate_limit::bucket(ip);
        let capped = !self.exempt.iter().any(|net| net.contains(&ip));
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.open >= self.max_open {
            return Err(Refusal::ServerFull);
        }
        let from_ip = counts.by_ip.get(&key).copied().unwrap_or(0);
        if capped && from_ip >= self.max_per_ip {
            return Err(Refusal::PerAddress);
        }
        counts.open += 1;
        counts.by_ip.insert(key, from_ip + 1);
        drop(counts);
        metrics::gauge!(CONNECTIONS_OPEN, "listener" => listener).increment(1.0);
        Ok(Admitted {
            limits: Arc::clone(self),
            key,
            listener,
        })
    }

    fn release(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.open = counts.open.saturating_sub(1);
        if let Some(n) = counts.by_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&key);
            }
        }
    }

    /// Connections open now, in all.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).open
    }
}

/// A connection's place under the limits, given back when dropped (when the connection
/// closes).
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
    listener: &'static str,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.release(self.key);
        metrics::gauge!(CONNECTIONS_OPEN, "listener" => self.listener).decrement(1.0);
    }
}

/// The soft limit on open files (`RLIMIT_NOFILE`); `None` when unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// `max_open` when the configuration leaves it unset.
fn default_max_open(limit: Option<u64>) -> usize {
    match limit.and_then(|n| usize::try_from(n).ok()) {
        // Never so small that the server could not answer at all.
        Some(n) => n.saturating_sub(RESERVED_DESCRIPTORS).max(64),
        None => 1 << 20,
    }
}

/// One listener's accepting, under the shared limits.
pub struct Acceptor {
    tcp: TcpListener,
    limits: Arc<ConnectionLimits>,
    /// The `listener` label of the metrics: `api`, `metrics` or `mqtt`.
    name: &'static str,
}

impl Acceptor {
    pub fn new(tcp: TcpListener, limits: Arc<ConnectionLimits>, name: &'static str) -> Self {
        Self { tcp, limits, name }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection that may stay. Those over a limit are closed here at once; a
    /// failed accept pauses rather than spins. Cancel-safe.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, peer)) => match self.limits.admit(peer.ip(), self.name) {
                    Ok(admitted) => {
                        tracing::trace!(%peer, listener = self.name, "connection accepted");
                        // Small frames (acks, deliveries) must not wait for Nagle's algorithm.
                        if let Err(err) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %err, "could not set TCP_NODELAY");
                        }
                        return (tcp, peer, admitted);
                    }
                    Err(refusal) => {
                        metrics::counter!(CONNECTIONS_REFUSED, "listener" => self.name, "reason" => refusal.label())
                            .increment(1);
                        tracing::debug!(%peer, reason = refusal.label(), listener = self.name, "connection refused");
                    }
                },
                Err(err) => accept_error(err).await,
            }
        }
    }
}

/// A connection that died before it was accepted is skipped; anything else (which the limits
/// should keep from happening, such as running out of file descriptors) is logged, and
/// accepting pauses rather than spinning.
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
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// An accepted connection's stream: TLS when the listener has a certificate, else plain TCP.
/// The TLS state is boxed: inline it would make every connection, plain ones too, 1.2 KB
/// larger wherever the stream is held.
pub type Stream = Either<Box<TlsStream<TcpStream>>, TcpStream>;

/// Opens an accepted connection: with `tls`, completes the handshake within
/// [`HANDSHAKE_TIMEOUT`]. `None` when the handshake failed (logged at debug: scanners,
/// plain-HTTP clients and clients that do not trust the certificate are routine) or shutdown
/// came first.
pub async fn open(
    tls: Option<&TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Either::Right(tcp));
    };
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return None,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
    };
    match handshake {
        Ok(Ok(tls)) => Some(Either::Left(Box::new(tls))),
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

/// The per-connection time limits of HTTP.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    pub header: Duration,
    pub send: Duration,
}

impl From<&ConnectionsConfig> for HttpTimeouts {
    fn from(config: &ConnectionsConfig) -> Self {
        Self {
            header: Duration::from_secs(u64::from(config.header_timeout_secs)),
            send: Duration::from_secs(u64::from(config.send_timeout_secs)),
        }
    }
}

/// Serves `router` over HTTP/1.1 (TLS when `tls` is given) on `acceptor` until `shutdown`,
/// then drains: requests in flight finish, idle connections close, and this returns when
/// every connection has ended. Each request carries `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    mut acceptor: Acceptor,
    tls: Option<TlsAcceptor>,
    router: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer, admitted) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = acceptor.accept() => accepted,
        };
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            if let Some(stream) = open(tls.as_ref(), tcp, peer, &shutdown).await {
                let io = AdmittedStream::new(stream, admitted, timeouts.send);
                serve_connection(io, peer, router, timeouts, shutdown).await;
            }
        });
    }
    drop(acceptor);
    connections.close();
    connections.wait().await;
}

/// One connection's HTTP/1.1 loop, ended gracefully on `shutdown`.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        // Header timeouts, resets and malformed requests: the client's doing, not ours.
        tracing::debug!(%peer, error = %err, "HTTP connection ended");
    }
}

/// An accepted connection's stream. It holds the connection's place under the limits until
/// it is dropped (an upgraded WebSocket keeps it), and its writes fail with `TimedOut` when
/// they make no progress for `limit`: a peer that stops reading cannot hold a connection, and
/// its buffers, forever.
pub struct AdmittedStream<T> {
    io: T,
    _admitted: Admitted,
    limit: Duration,
    /// Running while a write, flush or shutdown is pending.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> AdmittedStream<T> {
    pub fn new(io: T, admitted: Admitted, limit: Duration) -> Self {
        Self {
            io,
            _admitted: admitted,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on; while it is pending, runs the stall timer.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.stalled = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer stopped reading",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AdmittedStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AdmittedStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn each_address_is_capped_and_the_total_too() {
        let limits = Arc::new(ConnectionLimits::with(5, Some(2), &[]));
        let a1 = limits.admit(ip("10.0.0.1"), "api");
        let a2 = limits.admit(ip("10.0.0.1"), "api");
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(
            limits.admit(ip("10.0.0.1"), "api").err(),
            Some(Refusal::PerAddress)
        );
        let others: Vec<_> = ["10.0.0.2", "10.0.0.3", "10.0.0.2"]
            .iter()
            .map(|a| limits.admit(ip(a), "api"))
            .collect();
        assert!(others.iter().all(Result::is_ok));
        assert_eq!(limits.open(), 5);
        assert_eq!(
            limits.admit(ip("10.0.0.9"), "api").err(),
            Some(Refusal::ServerFull)
        );
        // Closing gives the place back.
        drop(a1);
        assert_eq!(limits.open(), 4);
        assert!(limits.admit(ip("10.0.0.1"), "api").is_ok());
    }

    #[test]
    fn by_default_one_address_gets_at_most_half_and_proxies_are_not_capped() {
        let proxy: IpNet = "192.0.2.0/24".parse().unwrap_or_else(|_| unreachable!());
        let limits = Arc::new(ConnectionLimits::with(10, None, &[proxy]));
        assert_eq!(limits.max_per_ip(), 5);
        assert_eq!(
            ConnectionLimits::with(100_000, None, &[]).max_per_ip(),
            1000
        );
        // Set explicitly, it is honoured (a load generator on one host needs it).
        assert_eq!(ConnectionLimits::with(10, Some(8), &[]).max_per_ip(), 8);
        let held: Vec<_> = (0..8)
            .map(|_| limits.admit(ip("192.0.2.7"), "api"))
            .collect();
        assert!(held.iter().all(Result::is_ok), "a trusted proxy is capped");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let limits = Arc::new(ConnectionLimits::with(100, Some(1), &[]));
        let _first = limits.admit(ip("2001:db8::1"), "api");
        assert_eq!(
            limits.admit(ip("2001:db8::2"), "api").err(),
            Some(Refusal::PerAddress)
        );
        assert!(limits.admit(ip("2001:db8:0:1::1"), "api").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_times_out_and_the_place_is_given_back() {
        use tokio::io::AsyncWriteExt;
        let limits = Arc::new(ConnectionLimits::with(10, Some(10), &[]));
        let admitted = limits
            .admit(ip("10.0.0.1"), "api")
            .unwrap_or_else(|_| unreachable!());
        // A peer that reads nothing: the pipe holds 64 bytes.
        let (ours, _peer) = tokio::io::duplex(64);
        let mut stream = AdmittedStream::new(ours, admitted, Duration::from_secs(30));
        stream
            .write_all(&[0; 64])
            .await
            .unwrap_or_else(|_| unreachable!());
        let started = tokio::time::Instant::now();
        let err = stream.write_all(&[0; 64]).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(limits.open(), 1);
        drop(stream);
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn the_default_keeps_descriptors_for_the_server_itself() {
        assert_eq!(default_max_open(Some(1024)), 768);
        assert_eq!(default_max_open(Some(20_000)), 19_744);
        assert_eq!(default_max_open(Some(100)), 64);
        assert_eq!(default_max_open(None), 1 << 20);
    }
}

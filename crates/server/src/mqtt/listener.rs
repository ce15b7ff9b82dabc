//! The native MQTT listener: accepts connections (plain TCP, or TLS with the API's
//! certificate) and runs a [`session`](super::session) for each, on the gateway's task
//! tracker so that shutdown waits for them like for WebSocket sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::{Listener, ListenerExt};
use rustls::ServerConfig;
use tokio::net::TcpListener;

use crate::state::SharedState;
use crate::tls::TlsListener;

/// Serves MQTT on `tcp` until shutdown; over TLS when `tls` is given.
pub async fn serve(tcp: TcpListener, tls: Option<Arc<ServerConfig>>, state: SharedState) {
    match tls {
        Some(tls) => {
            // MQTT clients either send no ALPN or their own ("mqtt", vendors' names): offer
            // none, so that rustls accepts any (HTTP's list would refuse them).
            let mut config = (*tls).clone();
            config.alpn_protocols.clear();
            let listener = TlsListener::new(tcp, Arc::new(config)).tap_io(crate::tls::set_nodelay);
            accept_loop(listener, state).await;
        }
        None => {
            let listener = tcp.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "could not set TCP_NODELAY");
                }
            });
            accept_loop(listener, state).await;
        }
    }
}

async fn accept_loop<L>(mut listener: L, state: SharedState)
where
    L: Listener<Addr = SocketAddr>,
{
    let shutdown = state.gateway.shutdown.clone();
    loop {
        // `accept` retries failed accepts itself (EMFILE and the like) after a pause.
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let session_state = state.clone();
        state
            .gateway
            .sessions
            .spawn(super::session::serve(io, peer, session_state));
    }
}

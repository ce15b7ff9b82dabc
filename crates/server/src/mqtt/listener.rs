//! The native MQTT listener: accepts connections (plain TCP, or TLS with the API's
//! certificate) under the shared connection limits and runs a [`session`](super::session) for
//! each, on the gateway's task tracker so that shutdown waits for them like for WebSocket
//! sessions.

use std::sync::Arc;

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::connections::{open, Acceptor};
use crate::state::SharedState;

/// Serves MQTT on `acceptor` until shutdown; over TLS when `tls` is given.
pub async fn serve(mut acceptor: Acceptor, tls: Option<Arc<ServerConfig>>, state: SharedState) {
    // MQTT clients either send no ALPN or their own ("mqtt", vendors' names): offer none, so
    // that rustls accepts any (HTTP's list would refuse them).
    let tls = tls.map(|tls| {
        let mut config = (*tls).clone();
        config.alpn_protocols.clear();
        TlsAcceptor::from(Arc::new(config))
    });
    let shutdown = state.gateway.shutdown.clone();
    loop {
        let (tcp, peer, admitted) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let session_state = state.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        state.gateway.sessions.spawn(async move {
            // Holds the connection's place under the limits until the session ends.
            let _admitted = admitted;
            if let Some(stream) = open(tls.as_ref(), tcp, peer, &shutdown).await {
                super::session::serve(stream, peer, session_state).await;
            }
        });
    }
}
